// Command flagpole is Flagpole's one binary: `flagpole serve` runs the
// service (OFREP, change streams, admin API, canary analyses, rollouts,
// experiments, orchestrator hooks, /metrics) on Redis or on an embedded
// store, and the other subcommands (env, flags, eval, audit, keys,
// templates, analysis, rollout, kill, experiment) are a command-line client
// of that service's HTTP API.
//
// This package is the only place that reads configuration and wires the
// concrete store, service and server together. main is thin; [run] holds the
// logic so that tests can drive it with their own arguments, environment and
// output streams.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling so that a
		// second Ctrl-C ends a shutdown that takes too long.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
