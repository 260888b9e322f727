package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// Environment variables read by `flagpole serve`. A flag given on the
// command line wins over its variable.
const (
	envAdminKey    = "FLAGPOLE_ADMIN_KEY"
	envDataDir     = "FLAGPOLE_DATA_DIR"
	envRedisURL    = "FLAGPOLE_REDIS_URL"
	envRedisPrefix = "FLAGPOLE_REDIS_PREFIX"
	envLogFormat   = "FLAGPOLE_LOG_FORMAT"
	envLogLevel    = "FLAGPOLE_LOG_LEVEL"
)

// embeddedEventLimit is about how many tracking events per environment the
// embedded store keeps.
const embeddedEventLimit = 100_000

// minAdminKeyLen is the shortest FLAGPOLE_ADMIN_KEY accepted.
const minAdminKeyLen = 16

// serveFlags are the options of `flagpole serve`.
type serveFlags struct {
	addr            string
	dataDir         string
	flagsFile       string
	env             string
	redisURL        string
	redisPrefix     string
	watch           bool
	watchInterval   time.Duration
	logFormat       string
	logLevel        string
	corsOrigins     []string
	rateLimit       float64
	shutdownTimeout time.Duration
	noopBench       bool
	analysis        analysisServeFlags
	deploy          deployServeFlags
}

func (a *app) serveCommand() *cobra.Command {
	var o serveFlags
	cmd := &cobra.Command{
		Use:   "serve [--addr HOST:PORT] [--redis URL | --data-dir DIR] [--flags FILE --env NAME [--watch]]",
		Short: "Run the Flagpole server",
		Long: `Run the Flagpole server: OFREP evaluation, the admin API, /metrics, /healthz
and /readyz on --addr.

Flag sets and API keys live in Redis (--redis URL: redis://, rediss://,
redis+sentinel://, redis+cluster://). Without --redis, an embedded store runs
in-process and persists to --data-dir: fine for trying Flagpole and single-node
set-ups; production uses real Redis.

--flags FILE loads a flagd flag file (JSON or YAML) into the environment --env
at every start, creating the environment if needed (the file wins over changes
made through the API since; an unchanged set writes nothing). With --watch the
file is re-read when it changes (checked every second). A file with problems is
refused as a whole: the last good flags stay and every problem is logged.

Environment: FLAGPOLE_ADMIN_KEY is a bootstrap admin key (at least 16
characters) that is made to exist at start. Without it, when no admin key
exists, one is created and printed once on standard error.
FLAGPOLE_DATA_DIR, FLAGPOLE_REDIS_URL, FLAGPOLE_REDIS_PREFIX,
FLAGPOLE_LOG_FORMAT and FLAGPOLE_LOG_LEVEL stand in for the flags of the
same names.

Canary analysis: templates and analyses live in the same store. With
--prometheus-url (or FLAGPOLE_PROMETHEUS_URL; a bearer token may be given in
FLAGPOLE_PROMETHEUS_TOKEN) this replica also executes analyses: every replica
with it shares the work, each measurement taken exactly once.

Orchestrators: Flagger's webhooks (/api/v1/deploy/flagger/{hook}) and Argo
Rollouts' web metric (/api/v1/deploy/argo/analyses) start and read analyses.
With --webhooks FILE (or FLAGPOLE_WEBHOOKS_FILE) analysis and rollout events
are sent to signed webhooks through a queue in the store (docs/deploy.md).

Rollouts and experiments: every replica runs the rollout controller
(FLAGPOLE_ROLLOUT_POLL, default 200ms; FLAGPOLE_ROLLOUT_LEASE_TTL, default
15s) and the experiment consumer, which folds tracking events and exposures
into per-arm statistics (FLAGPOLE_EXPERIMENT_METRICS_EVERY, default 15s, is
how often its gauges refresh). OFREP evaluations of experiment flags record
exposures (docs/rollouts.md, docs/experiments.md).

SIGINT or SIGTERM stop the server gracefully: it stops accepting connections,
ends the SDKs' change streams at once (they reconnect, to another replica if
there is one), lets in-flight requests finish (up to --shutdown-timeout) and
closes the store.`,
		Example: `  flagpole serve --addr 127.0.0.1:8080 --data-dir .data --flags examples/flags.yaml --env default
  flagpole serve --addr :8080 --redis redis://redis:6379/0 --log-format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.resolveServeFlags(cmd, &o); err != nil {
				return err
			}
			return a.serve(cmd.Context(), cmd, &o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on, HOST:PORT (\":8080\" for every interface)")
	fs.StringVar(&o.dataDir, "data-dir", ".data", "where the embedded store keeps its data (without --redis; $"+envDataDir+")")
	fs.StringVar(&o.flagsFile, "flags", "", "flagd flag file (JSON or YAML) to load into --env at start")
	fs.StringVar(&o.env, "env", "default", "environment that --flags is loaded into")
	fs.StringVar(&o.redisURL, "redis", "", "Redis URL; empty runs the embedded store ($"+envRedisURL+")")
	fs.StringVar(&o.redisPrefix, "redis-prefix", "", "prefix of every Redis key (default \"flagpole:\"; $"+envRedisPrefix+")")
	fs.BoolVar(&o.watch, "watch", false, "reload --flags when the file changes")
	fs.DurationVar(&o.watchInterval, "watch-interval", time.Second, "how often --watch checks the file")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json ($"+envLogFormat+")")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error ($"+envLogLevel+")")
	fs.StringArrayVar(&o.corsOrigins, "cors-origin", nil, "origin allowed to call OFREP from a browser (repeatable; \"*\" for any)")
	fs.Float64Var(&o.rateLimit, "rate-limit", 0, "OFREP requests per second allowed per API key; 0 for no limit")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown waits for in-flight requests")
	fs.BoolVar(&o.noopBench, "noop-bench", false, "serve POST /_bench/noop, a no-op handler for load-test comparisons")
	_ = fs.MarkHidden("watch-interval")
	_ = fs.MarkHidden("noop-bench")
	addAnalysisServeFlags(fs, &o.analysis)
	addDeployServeFlags(fs, &o.deploy)
	return cmd
}

// resolveServeFlags fills unset flags from the environment and checks every
// value; problems are usage errors naming the flag.
func (a *app) resolveServeFlags(cmd *cobra.Command, o *serveFlags) error {
	fs := cmd.Flags()
	fromEnv := func(flag, env string, dst *string) {
		if !fs.Changed(flag) {
			if v := a.getenv(env); v != "" {
				*dst = v
			}
		}
	}
	fromEnv("data-dir", envDataDir, &o.dataDir)
	fromEnv("redis", envRedisURL, &o.redisURL)
	fromEnv("redis-prefix", envRedisPrefix, &o.redisPrefix)
	fromEnv("log-format", envLogFormat, &o.logFormat)
	fromEnv("log-level", envLogLevel, &o.logLevel)

	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return usagef(cmd, "--addr %q: must be HOST:PORT, such as 127.0.0.1:8080 or :8080", o.addr)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usagef(cmd, "--log-format %q: must be text or json", o.logFormat)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return usagef(cmd, "--log-level %q: must be debug, info, warn or error", o.logLevel)
	}
	if err := flags.CheckEnvName(o.env); err != nil {
		var ie *flags.InputError
		if errors.As(err, &ie) {
			return usagef(cmd, "--env: %s", ie.Problem)
		}
		return usagef(cmd, "--env: %v", err)
	}
	if o.watch && o.flagsFile == "" {
		return usagef(cmd, "--watch needs --flags FILE")
	}
	if o.flagsFile != "" {
		if st, err := os.Stat(o.flagsFile); err != nil {
			return usagef(cmd, "--flags: %v", err)
		} else if st.IsDir() {
			return usagef(cmd, "--flags %s: is a directory, not a flag file", o.flagsFile)
		}
	}
	if o.redisURL == "" && o.dataDir == "" {
		return usagef(cmd, "--data-dir: required for the embedded store (or give --redis URL)")
	}
	if o.rateLimit < 0 {
		return usagef(cmd, "--rate-limit %v: must be 0 (no limit) or more", o.rateLimit)
	}
	if o.shutdownTimeout <= 0 {
		return usagef(cmd, "--shutdown-timeout %s: must be positive", o.shutdownTimeout)
	}
	if o.watchInterval <= 0 {
		return usagef(cmd, "--watch-interval %s: must be positive", o.watchInterval)
	}
	o.corsOrigins = slices.DeleteFunc(o.corsOrigins, func(s string) bool { return strings.TrimSpace(s) == "" })
	if k := a.getenv(envAdminKey); k != "" && len(k) < minAdminKeyLen {
		return usagef(cmd, "%s: must be at least %d characters", envAdminKey, minAdminKeyLen)
	}
	if err := a.resolveAnalysisServeFlags(cmd, &o.analysis); err != nil {
		return err
	}
	return a.resolveDeployServeFlags(cmd, &o.deploy)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// newLogger returns the server's logger writing to w.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the server until ctx ends, then shuts it down gracefully.
func (a *app) serve(ctx context.Context, cmd *cobra.Command, o *serveFlags) error {
	log := newLogger(a.stderr, o.logFormat, o.logLevel)

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", o.addr, err)
	}
	defer ln.Close()

	reg := prometheus.NewRegistry()
	storeOpts := redis.Options{URL: o.redisURL, Prefix: o.redisPrefix, Logger: log, Registerer: reg}
	// The store outlives the signal: it must serve in-flight requests during shutdown.
	storeCtx := context.WithoutCancel(ctx)
	var store *redis.Store
	storeKind := "redis"
	if o.redisURL != "" {
		store, err = redis.Open(storeCtx, storeOpts)
		if err != nil {
			return usagef(cmd, "--redis: %v", err)
		}
	} else {
		storeKind = "embedded"
		store, err = redis.OpenEmbedded(storeCtx, o.dataDir, storeOpts)
		if err != nil {
			return fmt.Errorf("opening the embedded store in %s: %w", o.dataDir, err)
		}
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()

	svc := flags.NewService(store, nil)
	// The embedded store rewrites its whole data file when it compacts, so
	// it keeps fewer tracking events than Redis does.
	eventLimit := int64(0)
	if storeKind == "embedded" {
		eventLimit = embeddedEventLimit
	}
	dep, err := a.newDeploy(&o.deploy, store, reg, log)
	if err != nil {
		return err
	}
	ro, err := a.newRollouts(store, svc, dep, reg, log)
	if err != nil {
		return err
	}
	// The recorder passes tracking events through to the event log and adds
	// the exposures of OFREP evaluations of experiment flags, off the hot path.
	exposures, err := api.NewExposureRecorder(store.EventLog(eventLimit), api.ExposureConfig{Registerer: reg, Logger: log})
	if err != nil {
		return fmt.Errorf("configuring exposures: %w", err)
	}
	server, err := api.New(api.Config{
		Store:       store,
		Keys:        store,
		Flags:       svc,
		Logger:      log,
		Registry:    reg,
		CORSOrigins: o.corsOrigins,
		RateLimit:   o.rateLimit,
		Analyses:    store,
		Events:      exposures,
		Experiments: store,
		Extra:       dep.routes,
		Rollouts:    ro.svc,
	})
	if err != nil {
		return fmt.Errorf("configuring the API: %w", err)
	}

	var gm *gitopsMetrics
	if o.flagsFile != "" {
		if gm, err = newGitopsMetrics(reg); err != nil {
			return err
		}
	}

	runCtx, stopRun := context.WithCancel(storeCtx)
	defer stopRun()
	var wg sync.WaitGroup
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- server.Run(runCtx) })
	wg.Go(func() { exposures.Run(runCtx) }) // flushes what is queued when runCtx ends
	if err := a.startAnalysisRunner(runCtx, &wg, &o.analysis, store, server, reg, log); err != nil {
		stopRun()
		wg.Wait()
		return err
	}
	dep.start(runCtx, &wg)
	ro.start(runCtx, &wg)
	if err := a.startExperimentConsumer(runCtx, &wg, store, reg, log); err != nil {
		stopRun()
		wg.Wait()
		return err
	}

	// Bootstrap the admin key and seed the flag file before accepting
	// requests when the store answers; otherwise keep trying in the background.
	setup := &setup{
		keys:   store,
		secret: a.getenv(envAdminKey),
		banner: a.stderr,
		log:    log,
	}
	if o.flagsFile != "" {
		setup.seeder = newSeeder(o.flagsFile, o.env, svc, log, gm)
	}
	firstTry, cancelFirstTry := context.WithTimeout(runCtx, 3*time.Second)
	done := setup.once(firstTry)
	cancelFirstTry()
	if !done {
		wg.Go(func() { setup.retry(runCtx) })
	}
	if o.watch {
		wg.Go(func() { setup.seeder.watch(runCtx, o.watchInterval) })
	}

	handler := server.Handler()
	if o.noopBench {
		handler = withNoopBench(handler)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(server.CloseStreams) // SDKs' change streams would hold Shutdown up
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("flagpole serving", "addr", ln.Addr().String(), "store", storeKind, "env", o.env, "flags", o.flagsFile, "watch", o.watch)

	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", o.shutdownTimeout.String())
	case err := <-serveErr:
		failure = fmt.Errorf("serving HTTP: %w", err)
	case err := <-runErr:
		if err == nil {
			err = errors.New("stopped early")
		}
		failure = fmt.Errorf("keeping flag sets current: %w", err)
	}
	if failure != nil {
		log.Error("shutting down after a failure", "err", failure)
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		log.Warn("in-flight requests did not finish in time; closing their connections", "err", err)
		_ = hs.Close()
	}
	stopRun()
	wg.Wait()
	if failure == nil {
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("flag set sync ended with an error", "err", err)
		}
	}
	log.Info("stopped")
	return failure
}
