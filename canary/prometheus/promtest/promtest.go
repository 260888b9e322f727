// Package promtest runs a real prometheus binary for integration tests: on a
// free 127.0.0.1 port, with a generated configuration that scrapes the given
// targets every second (by default), storing into a temporary directory.
// The server can be stopped and restarted on the same port with the same
// data, to test what callers do while Prometheus is away.
//
// Prometheus hands new targets to its scrape manager in batches every five
// seconds, so the first scrape of a target comes about 5s after Start or
// SetTargets; WaitScrapes waits for it.
//
// The binary is $PROMETHEUS_BIN, else "prometheus" on PATH (`make deps`
// installs the Debian package). When it is missing, Start fails the test if
// the environment has CI=true and skips it otherwise.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// DefaultJob is the job label of targets that name none.
const DefaultJob = "workload"

// Target is one scrape target.
type Target struct {
	// Addr is the target's host:port; it becomes the instance label.
	Addr string
	// Job is the job label; default DefaultJob. Targets of one job share
	// one MetricsPath.
	Job string
	// MetricsPath is the path scraped; default "/metrics".
	MetricsPath string
	// Labels are added to every series scraped from this target; "job" and
	// "instance" are not allowed here (use Job; instance is Addr).
	Labels map[string]string
}

// Options configures Start. The zero value starts a Prometheus scraping
// nothing.
type Options struct {
	// Targets are scraped from the start; see also Server.SetTargets.
	Targets []Target
	// ScrapeInterval is the scrape (and rule evaluation) interval;
	// default 1s. The scrape timeout equals it.
	ScrapeInterval time.Duration
	// Binary is the prometheus executable; default $PROMETHEUS_BIN, else
	// "prometheus" on PATH.
	Binary string
	// StartTimeout bounds each start until /-/ready answers; default 30s.
	StartTimeout time.Duration
	// Args are extra command-line flags, e.g. "--query.lookback-delta=10s".
	Args []string
}

// Server is a running (or stopped) prometheus process. Its methods are safe
// for concurrent use and, apart from Start, report failures as errors rather
// than failing the test, so they may be called from any goroutine.
type Server struct {
	bin          string
	dir          string
	addr         string
	interval     time.Duration
	startTimeout time.Duration
	args         []string
	http         *http.Client
	api          v1.API

	mu      sync.Mutex
	targets []Target
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
}

// errAddrInUse: the chosen port was taken between picking and binding.
var errAddrInUse = errors.New("address already in use")

// Start starts Prometheus and waits until it is ready. It calls tb.Fatal if
// the options are invalid or Prometheus does not become ready, tb.Skip (or
// tb.Fatal with CI=true) if the binary is missing, and registers a
// tb.Cleanup that stops the server and, if the test failed, logs the tail of
// Prometheus's log. Call it from the test goroutine.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := findBinary(opts.Binary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("promtest: %v (CI=true: install it with `make deps`)", err)
		}
		tb.Skipf("promtest: %v; skipping (install prometheus or set PROMETHEUS_BIN)", err)
	}
	if err := validate(opts); err != nil {
		tb.Fatal(err)
	}
	s := &Server{
		bin:          bin,
		dir:          tb.TempDir(),
		interval:     opts.ScrapeInterval,
		startTimeout: opts.StartTimeout,
		args:         slices.Clone(opts.Args),
		targets:      normalize(opts.Targets),
		http:         &http.Client{Timeout: 2 * time.Second},
	}
	if s.interval == 0 {
		s.interval = time.Second
	}
	if s.startTimeout == 0 {
		s.startTimeout = 30 * time.Second
	}
	if err := s.writeConfig(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("promtest: %v", err)
		}
		if tb.Failed() {
			tb.Logf("promtest: prometheus log (tail):\n%s", s.logTail(40))
		}
	})
	for try := 1; ; try++ {
		if s.addr, err = freeAddr(); err != nil {
			tb.Fatal(err)
		}
		err = s.start()
		if err == nil || !errors.Is(err, errAddrInUse) || try == 3 {
			break
		}
	}
	if err != nil {
		tb.Fatalf("promtest: %v", err)
	}
	client, err := api.NewClient(api.Config{Address: s.URL()})
	if err != nil {
		tb.Fatalf("promtest: %v", err)
	}
	s.api = v1.NewAPI(client)
	return s
}

func findBinary(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("PROMETHEUS_BIN")
	}
	if bin == "" {
		bin = "prometheus"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("prometheus binary %q not found: %w", bin, err)
	}
	return path, nil
}

func validate(opts Options) error {
	switch {
	case opts.ScrapeInterval < 0 || (opts.ScrapeInterval > 0 && opts.ScrapeInterval%time.Millisecond != 0):
		return fmt.Errorf("promtest: Options.ScrapeInterval %s must be a positive whole number of milliseconds", opts.ScrapeInterval)
	case opts.StartTimeout < 0:
		return fmt.Errorf("promtest: Options.StartTimeout %s is negative", opts.StartTimeout)
	}
	return validateTargets(opts.Targets)
}

func validateTargets(targets []Target) error {
	paths := map[string]string{}
	for i, t := range normalize(targets) {
		if _, _, err := net.SplitHostPort(t.Addr); err != nil {
			return fmt.Errorf("promtest: Targets[%d].Addr %q: %w", i, t.Addr, err)
		}
		if !strings.HasPrefix(t.MetricsPath, "/") {
			return fmt.Errorf("promtest: Targets[%d].MetricsPath %q must start with /", i, t.MetricsPath)
		}
		if p, ok := paths[t.Job]; ok && p != t.MetricsPath {
			return fmt.Errorf("promtest: Targets[%d].MetricsPath %q differs from %q of another target of job %q", i, t.MetricsPath, p, t.Job)
		}
		paths[t.Job] = t.MetricsPath
		for name := range t.Labels {
			if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
				return fmt.Errorf("promtest: Targets[%d].Labels: %q is not a valid label name", i, name)
			}
			if name == model.JobLabel || name == model.InstanceLabel {
				return fmt.Errorf("promtest: Targets[%d].Labels: %q is set by Job and Addr", i, name)
			}
		}
	}
	return nil
}

func normalize(targets []Target) []Target {
	out := make([]Target, len(targets))
	for i, t := range targets {
		if t.Job == "" {
			t.Job = DefaultJob
		}
		if t.MetricsPath == "" {
			t.MetricsPath = "/metrics"
		}
		out[i] = t
	}
	return out
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("promtest: finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// URL is Prometheus's base URL, e.g. "http://127.0.0.1:41234". It stays the
// same across Restart.
func (s *Server) URL() string { return "http://" + s.addr }

// Addr is Prometheus's host:port.
func (s *Server) Addr() string { return s.addr }

// ScrapeInterval is the configured scrape interval.
func (s *Server) ScrapeInterval() time.Duration { return s.interval }

// DataDir is the TSDB directory, kept across Restart.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// API is a client_golang v1 client for this server, for test assertions.
func (s *Server) API() v1.API { return s.api }

// Targets returns the current scrape targets, defaults filled in.
func (s *Server) Targets() []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.targets)
}

// Running reports whether the process is up (it may not be ready yet).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

func (s *Server) configPath() string { return filepath.Join(s.dir, "prometheus.yml") }
func (s *Server) logPath() string    { return filepath.Join(s.dir, "prometheus.log") }

// writeConfig writes the configuration as JSON, which is valid YAML.
func (s *Server) writeConfig() error {
	s.mu.Lock()
	targets := slices.Clone(s.targets)
	s.mu.Unlock()
	type staticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels,omitempty"`
	}
	type scrapeConfig struct {
		JobName       string         `json:"job_name"`
		MetricsPath   string         `json:"metrics_path"`
		StaticConfigs []staticConfig `json:"static_configs"`
	}
	var jobs []*scrapeConfig
	for _, t := range targets {
		i := slices.IndexFunc(jobs, func(j *scrapeConfig) bool { return j.JobName == t.Job })
		if i < 0 {
			jobs = append(jobs, &scrapeConfig{JobName: t.Job, MetricsPath: t.MetricsPath})
			i = len(jobs) - 1
		}
		jobs[i].StaticConfigs = append(jobs[i].StaticConfigs, staticConfig{Targets: []string{t.Addr}, Labels: t.Labels})
	}
	interval := model.Duration(s.interval).String()
	cfg := map[string]any{
		"global": map[string]string{
			"scrape_interval":     interval,
			"scrape_timeout":      interval,
			"evaluation_interval": interval,
		},
		"scrape_configs": jobs,
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("promtest: encoding the configuration: %w", err)
	}
	if err := os.WriteFile(s.configPath(), b, 0o600); err != nil {
		return fmt.Errorf("promtest: writing the configuration: %w", err)
	}
	return nil
}

// start launches the process on s.addr and waits for /-/ready.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening the log: %w", err)
	}
	defer logf.Close()
	offset, _ := logf.Seek(0, 2)
	args := append([]string{
		"--config.file=" + s.configPath(),
		"--storage.tsdb.path=" + s.DataDir(),
		"--web.listen-address=" + s.addr,
		"--web.enable-lifecycle",
		"--log.level=info",
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status shows in the log
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.NewTimer(s.startTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			log := s.logSince(offset)
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("prometheus on %s: %w", s.addr, errAddrInUse)
			}
			return fmt.Errorf("prometheus exited while starting on %s; log:\n%s", s.addr, tail(log, 20))
		case <-deadline.C:
			_ = s.Stop()
			return fmt.Errorf("prometheus on %s not ready after %s; log:\n%s", s.addr, s.startTimeout, tail(s.logSince(offset), 20))
		case <-poll.C:
			if s.ready() {
				return nil
			}
		}
	}
}

func (s *Server) ready() bool {
	resp, err := s.http.Get(s.URL() + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop stops Prometheus (SIGTERM, then SIGKILL after 10s) and waits for it
// to exit; its data stays for Restart. Stopping a stopped server does
// nothing. The error says the process could not be signalled.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		select {
		case <-exited:
			return nil
		default:
			return fmt.Errorf("stopping prometheus: %w", err)
		}
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return nil
}

// Restart stops Prometheus if it runs and starts it again on the same port
// with the same data and configuration, waiting until it is ready. The error
// says why it did not come back (e.g. the port was taken meanwhile).
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("promtest: restarting: %w", err)
	}
	return nil
}

// SetTargets replaces the scrape targets and reloads the configuration
// (HTTP /-/reload), which takes effect at once. The error names a bad
// target field or says the reload failed; on a failed reload the running
// configuration is unchanged until the next Restart.
func (s *Server) SetTargets(targets ...Target) error {
	if err := validateTargets(targets); err != nil {
		return err
	}
	s.mu.Lock()
	s.targets = normalize(targets)
	s.mu.Unlock()
	if err := s.writeConfig(); err != nil {
		return err
	}
	resp, err := s.http.Post(s.URL()+"/-/reload", "text/plain", nil)
	if err != nil {
		return fmt.Errorf("promtest: reloading the configuration: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return fmt.Errorf("promtest: reloading the configuration: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(body.String()))
	}
	return nil
}

// scrapeMargin keeps WaitScrapes on the safe side of Prometheus's timestamp
// alignment, which may move a scrape's timestamp by up to 2ms.
const scrapeMargin = 5 * time.Millisecond

// WaitScrapes returns once every target has been scraped successfully n
// times (n >= 1), each scrape starting after the call, and those samples are
// queryable: a change made to a target before the call is then visible in
// Prometheus. It polls until ctx ends; the error then lists each target's
// last health ("up" value and sample time). With no targets it returns at once.
func (s *Server) WaitScrapes(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("promtest: WaitScrapes n %d must be at least 1", n)
	}
	targets := s.Targets()
	if len(targets) == 0 {
		return nil
	}
	need := time.Now().Add(scrapeMargin + time.Duration(n-1)*s.interval)
	poll := time.NewTicker(max(s.interval/10, 20*time.Millisecond))
	defer poll.Stop()
	var lastErr error
	for {
		done, err := s.scrapedSince(ctx, targets, need)
		if err == nil && done {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			why := ""
			if lastErr != nil {
				why = "; last query error: " + lastErr.Error()
			}
			return fmt.Errorf("promtest: waiting for %d scrapes of %d targets since %s: %w (%s%s)",
				n, len(targets), need.UTC().Format(time.RFC3339Nano), ctx.Err(), s.health(targets), why)
		case <-poll.C:
		}
	}
}

// scrapedSince reports whether every target's latest successful scrape
// started at or after need.
func (s *Server) scrapedSince(ctx context.Context, targets []Target, need time.Time) (bool, error) {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	val, _, _, err := s.api.Query(qctx, "timestamp(up) and (up == 1)", time.Time{})
	if err != nil {
		return false, err
	}
	vec, _ := val.(model.Vector)
	latest := map[string]time.Time{}
	for _, smp := range vec {
		key := string(smp.Metric[model.JobLabel]) + "\x00" + string(smp.Metric[model.InstanceLabel])
		latest[key] = time.UnixMilli(int64(math.Round(float64(smp.Value) * 1000)))
	}
	for _, t := range targets {
		if ts, ok := latest[t.Job+"\x00"+t.Addr]; !ok || ts.Before(need) {
			return false, nil
		}
	}
	return true, nil
}

// health describes each target's last scrape, for error messages.
func (s *Server) health(targets []Target) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := s.api.Targets(ctx)
	if err != nil {
		return "target health unknown: " + err.Error()
	}
	var parts []string
	for _, at := range res.Active {
		p := fmt.Sprintf("%s %s: %s, last scrape %s", at.Labels[model.JobLabel], at.ScrapeURL, at.Health, at.LastScrape.Format(time.RFC3339Nano))
		if at.LastError != "" {
			p += ", error " + at.LastError
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("no active targets; want %d", len(targets))
	}
	return strings.Join(parts, "; ")
}

// Log returns Prometheus's log output so far, across restarts.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath())
	return string(b)
}

func (s *Server) logSince(offset int64) string {
	b, _ := os.ReadFile(s.logPath())
	if int(offset) > len(b) {
		return ""
	}
	return string(b[offset:])
}

func (s *Server) logTail(lines int) string { return tail(s.Log(), lines) }

func tail(log string, lines int) string {
	all := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
