//go:build race

package main

// raceEnabled says the tests run with the race detector; the end-to-end
// binary is then built with it too.
const raceEnabled = true
