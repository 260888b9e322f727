//go:build !race

package stream

// raceEnabled reports a race-detector build, whose shadow memory makes RSS
// figures meaningless.
const raceEnabled = false
