package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// app carries what every command needs from the outside world. Nothing in
// this package reads os.Getenv, os.Stdout or os.Stderr directly: tests
// substitute all of them.
type app struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError is a mistake in the command line itself (unknown flag, missing
// argument, invalid flag value). It is reported with a pointer to --help.
type usageError struct {
	cmd string // the command path, e.g. "flagpole flags get"
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError for cmd.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// run executes the flagpole command line args and returns the process exit
// code: 0 on success, 1 for any failure (usage errors, API errors, a server
// that cannot start), or the code a command chose (analysis gate and watch:
// 2 for an analysis that ended without a decision). Errors are written to
// stderr; results to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	a := &app{getenv: getenv, stdin: os.Stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(a.stdin)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError // a command that chose its exit code (analysis gate)
	if errors.As(err, &ee) {
		if ee.msg != "" {
			a.printError(err)
		}
		return ee.code
	}
	a.printError(err)
	return 1
}

// printError writes err to stderr in the form users see it.
func (a *app) printError(err error) {
	msg := err.Error()
	fmt.Fprintf(a.stderr, "flagpole: %s\n", strings.TrimRight(msg, "\n"))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", ue.cmd)
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "flagpole",
		Short: "Feature flags and production testing: the server and its command-line client",
		Long: `Flagpole serves feature flags to OpenFeature SDKs (OFREP), stores them in Redis,
and lets release engineers change them through an HTTP API and this CLI.

  flagpole serve ...            run the server (see 'flagpole serve --help')
  flagpole flags list           list the flags of an environment
  flagpole eval KEY --context   evaluate a flag as an SDK would
  flagpole analysis gate ...    gate a deployment on a canary analysis

Client commands find the server through --url or FLAGPOLE_URL (default
http://127.0.0.1:8080) and authenticate with --token or FLAGPOLE_TOKEN.
Every command exits 0 on success and 1 on any error ('analysis gate' and
'analysis watch' exit 2 for an analysis that ended without a decision).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          unknownSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	root.AddCommand(
		a.serveCommand(),
		a.envCommand(),
		a.flagsCommand(),
		a.evalCommand(),
		a.auditCommand(),
		a.keysCommand(),
		a.templatesCommand(),
		a.analysisCommand(),
		a.rolloutCommand(), a.killCommand(),
		a.experimentCommand(),
	)
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

// exactArgs is cobra.ExactArgs with the argument names in the message and
// the error marked as a usage error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(args) < len(names) {
			return usagef(cmd, "missing argument %s", strings.ToUpper(names[len(args)]))
		}
		return usagef(cmd, "unexpected argument %q", args[len(names)])
	}
}

// unknownSubcommand is the Args of commands that only group subcommands:
// without it cobra would print help and succeed for a mistyped subcommand.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "unexpected argument %q", args[0])
	}
	return nil
}
