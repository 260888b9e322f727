// Command example shows Flagpole's OpenFeature provider in a Go program: it
// connects to a Flagpole server (or runs offline from a flag file),
// evaluates a flag for a user, prints every change as it arrives, and
// tracks an event.
//
//	FLAGPOLE_URL=http://127.0.0.1:8080 FLAGPOLE_SDK_KEY=<sdk key> \
//	  go run ./sdk/example -env default -flag new-checkout -user user-42
//
//	go run ./sdk/example -bootstrap examples/flags.yaml -flag new-checkout -once
//
// Create an SDK key with `flagpole keys create --role sdk --env default -o json`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/flagpole/flagpole/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// run is the program; it returns when ctx ends (or after one evaluation
// with -once).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", getenv("FLAGPOLE_URL"), "Flagpole server URL (env FLAGPOLE_URL); empty: offline from -bootstrap")
	key := fs.String("key", getenv("FLAGPOLE_SDK_KEY"), "SDK key (env FLAGPOLE_SDK_KEY)")
	env := fs.String("env", "default", "environment")
	remote := fs.Bool("remote", false, "evaluate remotely over OFREP instead of in-process")
	bootstrap := fs.String("bootstrap", "", "flag file to start from (flagd JSON or YAML)")
	cache := fs.String("cache", "", "file that keeps the last flag set across restarts")
	flagKey := fs.String("flag", "new-checkout", "boolean flag to evaluate")
	user := fs.String("user", "user-42", "targeting key")
	email := fs.String("email", "ann@example.com", "the user's email attribute")
	once := fs.Bool("once", false, "evaluate once and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}

	opts := []sdk.Option{
		sdk.WithEnvironment(*env),
		sdk.WithInitTimeout(5 * time.Second),
		sdk.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	}
	if *url != "" {
		opts = append(opts, sdk.WithURL(*url), sdk.WithSDKKey(*key))
	}
	if *remote {
		opts = append(opts, sdk.WithRemoteEvaluation())
	}
	if *bootstrap != "" {
		opts = append(opts, sdk.WithBootstrapFile(*bootstrap))
	}
	if *cache != "" {
		opts = append(opts, sdk.WithCacheFile(*cache))
	}

	// An application would use the global API (openfeature.SetProviderAndWait);
	// an isolated one keeps this program's state its own.
	api := isolated.NewAPI()
	defer func() { _ = api.Shutdown(context.Background()) }() // flushes tracked events

	evalCtx := openfeature.NewEvaluationContext(*user, map[string]any{"email": *email})
	client := api.NewClient()
	show := func(why string) {
		d, err := client.BooleanValueDetails(ctx, *flagKey, false, evalCtx)
		fmt.Fprintf(stdout, "%s: %s = %v (variant %q, reason %s)", why, *flagKey, d.Value, d.Variant, d.Reason)
		if err != nil {
			fmt.Fprintf(stdout, " error: %v", err)
		}
		fmt.Fprintln(stdout)
	}
	changed := func(d openfeature.EventDetails) {
		fmt.Fprintf(stdout, "flags changed: %v\n", d.FlagChanges)
		show("after the change")
	}
	stale := func(d openfeature.EventDetails) { fmt.Fprintf(stdout, "stale: %s\n", d.Message) }
	api.AddHandler(openfeature.ProviderConfigChange, &changed)
	api.AddHandler(openfeature.ProviderStale, &stale)

	if err := api.SetProviderAndWait(ctx, sdk.NewProvider(opts...)); err != nil {
		var ie *openfeature.ProviderInitError
		if errors.As(err, &ie) && ie.ErrorCode == openfeature.ProviderFatalCode {
			return err
		}
		fmt.Fprintf(stdout, "not ready yet (%v); serving defaults until flags arrive\n", err)
	}
	show("start")
	client.Track(ctx, "example-run", evalCtx, openfeature.NewTrackingEventDetails(1))
	if *once {
		return nil
	}
	<-ctx.Done()
	return nil
}
