package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	promsource "github.com/flagpole/flagpole/canary/prometheus"
	"github.com/flagpole/flagpole/canary/prometheus/promtest"
	"github.com/flagpole/flagpole/canary/prometheus/workload"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// The end-to-end analysis tests: a real prometheus scraping the synthetic
// workload every second, analyses executed by the real runner against a
// real redis-server, started and read through the real API (in-process)
// and the CLI.

// e2eTemplate judges the workload's error rate (a ratio) and latency (a
// histogram), both critical, on the given schedule. Its alpha is 0.001 (a
// healthy canary fails with probability at most 0.1 %, across all looks),
// so that the tests do not flake.
func e2eTemplate(name string, schedule string) string {
	return e2eTemplateOf(name, `  - name: error-rate
    kind: ratio
    numerator: sum(increase(workload_errors_total{ {{ .scope }} }[{{ .window }}]))
    denominator: sum(increase(workload_requests_total{ {{ .scope }} }[{{ .window }}]))
    margin: {relative: 0.5}
    critical: true
  - name: latency
    kind: histogram
    query: sum by (le) (increase(workload_request_duration_seconds_bucket{ {{ .scope }} }[{{ .window }}]))
    margin: {relative: 0.25}
    critical: true
`, schedule)
}

// e2eSeriesMetric judges the workload's gauge (CPU cores, say) as a series:
// the canary's mean may exceed the baseline's by at most 0.1 over
// time-aligned points a second apart. Five points decide, so that a run
// ends in a few seconds (the default is 20).
const e2eSeriesMetric = `  - name: cpu
    kind: series
    query: avg(workload_gauge{ {{ .scope }} })
    step: 1s
    minSamples: 5
    margin: {absolute: 0.1}
    critical: true
`

// e2eThresholdMetric bounds the canary's peak gauge over the window at 0.9,
// whatever the baseline's.
const e2eThresholdMetric = `  - name: cpu-peak
    kind: threshold
    query: max(max_over_time(workload_gauge{ {{ .scope }} }[{{ .window }}]))
    max: 0.9
    critical: true
`

// e2eTemplateOf is a template with the given metrics (YAML list items) and
// schedule, at alpha 0.001.
func e2eTemplateOf(name, metrics, schedule string) string {
	return fmt.Sprintf(`name: %s
description: end-to-end test of the workload
alpha: 0.001
metrics:
%sschedule:
%s`, name, metrics, schedule)
}

// healthy is a baseline (and a good canary): 2,000 requests a second, 2 %
// errors, latency around 100 ms, a gauge (CPU cores) at 0.5.
var healthy = workload.Behavior{RPS: 2000, ErrorRate: 0.02, Latency: workload.Latency{Median: 100 * time.Millisecond, Spread: 0.3}, Gauge: 0.5}

func with(b workload.Behavior, change func(*workload.Behavior)) workload.Behavior {
	change(&b)
	return b
}

// e2eSource is the Prometheus source with short timeouts and retries.
func e2eSource(t *testing.T, url string) *promsource.Source {
	t.Helper()
	src, err := promsource.New(promsource.Config{URL: url, Timeout: 2 * time.Second, MaxAttempts: 2, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func openRealStore(t *testing.T, rs *redistest.Server, prefix string) *redis.Store {
	t.Helper()
	s, err := redis.Open(context.Background(), redis.Options{URL: rs.URL(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// scopes are the run arguments selecting one workload's arms.
func scopes(w *workload.Workload) []string {
	return []string{
		"--baseline-scope", fmt.Sprintf(`instance=%q,arm="baseline"`, w.Addr()),
		"--canary-scope", fmt.Sprintf(`instance=%q,arm="canary"`, w.Addr()),
	}
}

// waitScrapes waits until Prometheus has scraped every target n times.
func waitScrapes(t *testing.T, p *promtest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitScrapes(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// apiRun reads an analysis through the API.
func (a *analysisAPI) apiRun(t *testing.T, id string) analysisReply {
	t.Helper()
	status, body := httpDo(t, http.MethodGet, a.url+"/api/v1/analyses/"+id, a.admin, "")
	if status != http.StatusOK {
		t.Fatalf("GET analysis %s: %d %s", id, status, body)
	}
	var r analysisReply
	mustJSON(t, string(body), &r)
	return r
}

// measurements reads every measurement of an analysis through the API.
func (a *analysisAPI) measurements(t *testing.T, id string) []canary.Step {
	t.Helper()
	status, body := httpDo(t, http.MethodGet, a.url+"/api/v1/analyses/"+id+"/measurements?limit=1000", a.admin, "")
	if status != http.StatusOK {
		t.Fatalf("GET measurements %s: %d %s", id, status, body)
	}
	var out struct {
		Measurements []canary.Step `json:"measurements"`
	}
	mustJSON(t, string(body), &out)
	return out.Measurements
}

// stepNumbers are the numbers of the steps, to check that none is missing
// or recorded twice.
func stepNumbers(steps []canary.Step) []int {
	var out []int
	for _, s := range steps {
		out = append(out, s.Number)
	}
	return out
}

func oneToN(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// gaugeEvidence checks a gauge metric's evidence: the canary's estimate is
// the gauge it was set to, the baseline's (series only; threshold metrics
// have none) the healthy 0.5, and a series rests on at least its five
// aligned points.
func gaugeEvidence(canaryGauge float64, series bool) func(*testing.T, canary.Evidence) {
	return func(t *testing.T, ev canary.Evidence) {
		t.Helper()
		near := func(got canary.Float, want float64) bool { return math.Abs(float64(got)-want) < 1e-9 }
		if ev.Canary == nil || !near(ev.Canary.Value, canaryGauge) {
			t.Errorf("canary estimate %+v; want the gauge %v", ev.Canary, canaryGauge)
		}
		switch {
		case !series && ev.Baseline != nil:
			t.Errorf("threshold evidence has a baseline estimate %+v; the baseline must not be queried", *ev.Baseline)
		case series && (ev.Baseline == nil || !near(ev.Baseline.Value, healthy.Gauge)):
			t.Errorf("baseline estimate %+v; want the gauge %v", ev.Baseline, healthy.Gauge)
		case series && (ev.Canary.N < 5 || ev.Baseline.N != ev.Canary.N):
			t.Errorf("series evidence on %v canary and %v baseline points; want the same n ≥ 5, time-aligned", ev.Canary.N, ev.Baseline.N)
		case series && !near(ev.Effect, canaryGauge-healthy.Gauge):
			t.Errorf("series effect %v; want the canary−baseline difference %v", ev.Effect, canaryGauge-healthy.Gauge)
		}
	}
}

// TestAnalysisScenarios: one Prometheus scrapes a workload per scenario;
// each scenario gates a canary through the CLI, in parallel. The baseline
// is always healthy.
func TestAnalysisScenarios(t *testing.T) {
	t.Parallel()
	gauge := func(v float64) workload.Behavior { return with(healthy, func(b *workload.Behavior) { b.Gauge = v }) }
	scenarios := []struct {
		name     string
		template string // "" is e2e (error rate and latency)
		canary   workload.Behavior
		code     int
		verdict  string
		metric   string // the metric whose verdict decides, named in the reason
		metricIs canary.Verdict
		evidence func(*testing.T, canary.Evidence) // checks the metric's last evidence, if set
	}{
		{"healthy canary passes", "", healthy, exitPass, "pass", "", "", nil},
		{"3x error rate fails naming the error metric", "", with(healthy, func(b *workload.Behavior) { b.ErrorRate = 0.06 }), exitFail, "fail", "error-rate", canary.VerdictFail, nil},
		{"slightly slower within the margin passes", "", with(healthy, func(b *workload.Behavior) { b.Latency.Median = 105 * time.Millisecond }), exitPass, "pass", "latency", canary.VerdictPass, nil},
		{"far slower fails naming latency", "", with(healthy, func(b *workload.Behavior) { b.Latency.Median = 250 * time.Millisecond }), exitFail, "fail", "latency", canary.VerdictFail, nil},
		{"no canary traffic is inconclusive, never a pass", "", with(healthy, func(b *workload.Behavior) { b.RPS = 0 }), exitInconclusive, "inconclusive", "error-rate", canary.VerdictInconclusive, nil},
		{"series: gauge equal to the baseline passes", "e2e-series", healthy, exitPass, "pass", "cpu", canary.VerdictPass, gaugeEvidence(0.5, true)},
		{"series: gauge above the margin fails naming it", "e2e-series", gauge(0.8), exitFail, "fail", "cpu", canary.VerdictFail, gaugeEvidence(0.8, true)},
		{"threshold: value within the bound passes", "e2e-threshold", gauge(0.7), exitPass, "pass", "cpu-peak", canary.VerdictPass, gaugeEvidence(0.7, false)},
		{"threshold: value beyond the bound fails naming it", "e2e-threshold", gauge(1.2), exitFail, "fail", "cpu-peak", canary.VerdictFail, gaugeEvidence(1.2, false)},
	}
	ws := make([]*workload.Workload, len(scenarios))
	var targets []promtest.Target
	for i, sc := range scenarios {
		ws[i] = workload.Start(t, workload.Options{Seed: uint64(i + 1)})
		if err := ws[i].Set(workload.Baseline, healthy); err != nil {
			t.Fatal(err)
		}
		if err := ws[i].Set(workload.Canary, sc.canary); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, promtest.Target{Addr: ws[i].Addr()})
	}
	prom := promtest.Start(t, promtest.Options{Targets: targets})
	rs := redistest.Start(t)
	srv := startAnalysisAPI(t, openRealStore(t, rs, "e2e-scenarios:"), e2eSource(t, prom.URL()))
	env := srv.env()
	const schedule = "  interval: 2s\n  deadline: 24s\n  undecided: inconclusive\n"
	dir := t.TempDir()
	for name, doc := range map[string]string{
		"e2e":           e2eTemplate("e2e", schedule),
		"e2e-series":    e2eTemplateOf("e2e-series", e2eSeriesMetric, schedule),
		"e2e-threshold": e2eTemplateOf("e2e-threshold", e2eThresholdMetric, schedule),
	} {
		runCLI(t, env, "templates", "apply", writeTemp(t, dir, name+".yaml", doc)).expect(t, 0, []string{"template " + name + " created"}, nil)
	}
	waitScrapes(t, prom, 2)

	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			tpl := cmp.Or(sc.template, "e2e")
			args := append([]string{"analysis", "gate", "-t", tpl, "--every", "500ms", "--timeout", "50s"}, scopes(ws[i])...)
			r := runCLI(t, env, args...)
			r.expect(t, sc.code, []string{strings.ToUpper(sc.verdict)}, nil)
			id := strings.Fields(r.stdout)[1]
			run := srv.apiRun(t, id)
			if run.Verdict.Verdict != sc.verdict || !run.Verdict.Final {
				t.Fatalf("analysis %s: verdict %s (%s); want final %s", id, run.Verdict.Verdict, run.Verdict.Reason, sc.verdict)
			}
			steps := srv.measurements(t, id)
			if !slices.Equal(stepNumbers(steps), oneToN(len(steps))) || len(steps) == 0 {
				t.Errorf("steps %v; want 1..n, each once", stepNumbers(steps))
			}
			last := steps[len(steps)-1].Report
			if sc.metric != "" {
				found := false
				for _, m := range last.Metrics {
					if m.Metric == sc.metric {
						found = true
						if m.Verdict != sc.metricIs {
							t.Errorf("metric %s: %s (%s); want %s", m.Metric, m.Verdict, m.Reason, sc.metricIs)
						}
						if sc.evidence != nil {
							sc.evidence(t, m.Evidence)
						}
					}
				}
				if !found {
					t.Errorf("last report has no metric %s", sc.metric)
				}
			}
			if sc.verdict == "fail" && !strings.Contains(run.Message, sc.metric) {
				t.Errorf("failed analysis says %q; want it to name %s", run.Message, sc.metric)
			}
			for _, s := range steps {
				if s.Report.Verdict == canary.VerdictPass && sc.verdict != "pass" {
					t.Errorf("step %d passed in a scenario that must never pass: %s", s.Number, s.Report.Reason)
				}
				if s.Report.Verdict == canary.VerdictError {
					t.Errorf("step %d could not be measured: %s", s.Number, s.Report.Reason)
				}
			}
			t.Logf("%s: %d steps, %s: %s", id, len(steps), run.Phase, run.Message)
		})
	}
}

// TestAnalysisPrometheusOutage: Prometheus stops in the middle of an
// analysis; the measurements taken meanwhile are errors (never a pass) and
// the analysis does not end; once Prometheus is back it continues to a
// verdict.
func TestAnalysisPrometheusOutage(t *testing.T) {
	t.Parallel()
	w := workload.Start(t, workload.Options{Seed: 42})
	for _, arm := range []string{workload.Baseline, workload.Canary} {
		if err := w.Set(arm, healthy); err != nil {
			t.Fatal(err)
		}
	}
	prom := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: w.Addr()}}})
	rs := redistest.Start(t)
	srv := startAnalysisAPI(t, openRealStore(t, rs, "e2e-outage:"), e2eSource(t, prom.URL()))
	env := srv.env()
	tpl := writeTemp(t, t.TempDir(), "outage.yaml", e2eTemplate("outage", "  interval: 2s\n  count: 10\n  consecutiveErrorLimit: 8\n"))
	runCLI(t, env, "templates", "apply", tpl).expect(t, 0, nil, nil)
	waitScrapes(t, prom, 2)

	r := runCLI(t, env, append([]string{"analysis", "start", "-t", "outage", "-o", "json"}, scopes(w)...)...)
	var started analysisReply
	mustJSON(t, r.stdout, &started)
	id := started.ID
	eventually(t, 20*time.Second, "two measurements before the outage", func() bool { return srv.apiRun(t, id).NextStep > 2 })
	if err := prom.Stop(); err != nil {
		t.Fatal(err)
	}
	before := srv.apiRun(t, id).NextStep - 1
	eventually(t, 20*time.Second, "two error measurements while Prometheus is down", func() bool {
		run := srv.apiRun(t, id)
		return run.Errors >= 2
	})
	during := srv.apiRun(t, id)
	if during.Phase.Terminal() {
		t.Fatalf("the analysis ended during the outage: %s %s", during.Phase, during.Message)
	}
	if err := prom.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, "the analysis to end after Prometheus returned", func() bool { return srv.apiRun(t, id).Phase.Terminal() })
	final := srv.apiRun(t, id)
	steps := srv.measurements(t, id)
	if !slices.Equal(stepNumbers(steps), oneToN(10)) {
		t.Fatalf("steps %v; want 1..10 once each", stepNumbers(steps))
	}
	var errs, after int
	for _, s := range steps {
		switch {
		case s.Report.Verdict == canary.VerdictError:
			errs++
			if !strings.Contains(s.Report.Reason, "unreachable") && !strings.Contains(s.Report.Reason, "Prometheus") {
				t.Errorf("error step %d says %q; want it to say Prometheus was unreachable", s.Number, s.Report.Reason)
			}
		case s.Number > before && errs > 0:
			after++
		}
	}
	if errs < 2 || after == 0 {
		t.Errorf("%d error steps and %d good ones after them; want the outage recorded as errors and the analysis measuring again after it", errs, after)
	}
	if final.Phase == canary.PhaseError {
		t.Errorf("the analysis ended in Error (%s); it should have continued after the outage", final.Message)
	}
	if final.Phase == canary.PhaseSuccessful && steps[9].Report.Verdict != canary.VerdictPass {
		t.Errorf("passed although the last step is %s", steps[9].Report.Verdict)
	}
	t.Logf("%s after %d error steps: %s", final.Phase, errs, final.Message)
}

// blockingSource wraps a source: while blocked, queries wait until
// unblocked (or their context ends). It records the instants measured.
type blockingSource struct {
	canary.MetricSource
	waiting atomic.Int32 // queries held right now
	mu      sync.Mutex
	blocked chan struct{}
	ats     map[int64]bool // instants measured, in Unix milliseconds
}

func (b *blockingSource) Instant(ctx context.Context, q string, at time.Time) ([]canary.Element, error) {
	b.mu.Lock()
	if b.ats == nil {
		b.ats = map[int64]bool{}
	}
	b.ats[at.UnixMilli()] = true
	ch := b.blocked
	b.mu.Unlock()
	if ch != nil {
		b.waiting.Add(1)
		defer b.waiting.Add(-1)
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", canary.ErrSource, ctx.Err())
		}
	}
	return b.MetricSource.Instant(ctx, q, at)
}

func (b *blockingSource) measured(at time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ats[at.UnixMilli()]
}

// cutStore is a store a replica can be cut off from (a network partition).
type cutStore struct {
	canary.Store
	cut atomic.Bool
}

var errCut = fmt.Errorf("partitioned: %w", canary.ErrUnavailable)

func (c *cutStore) DueRuns(ctx context.Context, now time.Time, n int) ([]string, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.Store.DueRuns(ctx, now, n)
}

func (c *cutStore) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	if c.cut.Load() {
		return canary.StoredRun{}, errCut
	}
	return c.Store.Run(ctx, id)
}

func (c *cutStore) UpdateRun(ctx context.Context, u canary.RunUpdate) (canary.StoredRun, error) {
	if c.cut.Load() {
		return canary.StoredRun{}, errCut
	}
	return c.Store.UpdateRun(ctx, u)
}

func (c *cutStore) AcquireLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if c.cut.Load() {
		return canary.Lease{}, errCut
	}
	return c.Store.AcquireLease(ctx, id, owner, now, ttl)
}

func (c *cutStore) RenewLease(ctx context.Context, l canary.Lease, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if c.cut.Load() {
		return canary.Lease{}, errCut
	}
	return c.Store.RenewLease(ctx, l, now, ttl)
}

func (c *cutStore) ReleaseLease(ctx context.Context, l canary.Lease) error {
	if c.cut.Load() {
		return errCut
	}
	return c.Store.ReleaseLease(ctx, l)
}

// TestAnalysisLeaseTakeover: two replicas' runners on one redis-server.
// Replica A executes the first steps, then is cut off in the middle of a
// measurement, holding the run's lease. Replica B takes the run over once
// the lease expires and finishes it; A's late result is fenced out. No
// step is measured for the record twice.
func TestAnalysisLeaseTakeover(t *testing.T) {
	t.Parallel()
	w := workload.Start(t, workload.Options{Seed: 7})
	for _, arm := range []string{workload.Baseline, workload.Canary} {
		if err := w.Set(arm, healthy); err != nil {
			t.Fatal(err)
		}
	}
	prom := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: w.Addr()}}})
	rs := redistest.Start(t)
	store := openRealStore(t, rs, "e2e-lease:")
	srv := startAnalysisAPI(t, store, nil)
	env := srv.env()
	runCLI(t, env, "templates", "apply", writeTemp(t, t.TempDir(), "lease.yaml", e2eTemplate("lease", "  interval: 2s\n  count: 6\n"))).expect(t, 0, nil, nil)
	waitScrapes(t, prom, 2)

	log := slog.New(slog.NewTextHandler(srv.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	srcA := &blockingSource{MetricSource: e2eSource(t, prom.URL())}
	storeA := &cutStore{Store: openRealStore(t, rs, "e2e-lease:")}
	srv.runner(t, ctx, &wg, storeA, srcA, "replica-a", log)

	r := runCLI(t, env, append([]string{"analysis", "start", "-t", "lease", "-o", "json"}, scopes(w)...)...)
	var started analysisReply
	mustJSON(t, r.stdout, &started)
	id := started.ID
	eventually(t, 20*time.Second, "replica A's first two steps", func() bool { return srv.apiRun(t, id).NextStep > 2 })
	// A's next measurement hangs; A is cut off from Redis meanwhile.
	unblock := make(chan struct{})
	srcA.mu.Lock()
	srcA.blocked = unblock
	srcA.mu.Unlock()
	eventually(t, 10*time.Second, "replica A to be held in step 3's measurement", func() bool { return srcA.waiting.Load() > 0 })
	if _, err := store.AcquireLease(context.Background(), id, "probe", time.Now(), time.Millisecond); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Fatalf("replica A measures without holding the lease: %v", err)
	}
	storeA.cut.Store(true)
	cutAt := time.Now()

	srcB := &blockingSource{MetricSource: e2eSource(t, prom.URL())}
	srv.runner(t, ctx, &wg, store, srcB, "replica-b", log)
	eventually(t, 45*time.Second, "replica B to finish the analysis", func() bool { return srv.apiRun(t, id).Phase.Terminal() })
	// A comes back with its stale measurement: fenced.
	storeA.cut.Store(false)
	close(unblock)
	eventually(t, 10*time.Second, "replica A's late write to be refused", func() bool {
		return strings.Contains(srv.logs.String(), "lease lost during a step; result discarded") ||
			strings.Contains(srv.logs.String(), "analysis step abandoned")
	})

	final := srv.apiRun(t, id)
	steps := srv.measurements(t, id)
	if final.Phase != canary.PhaseSuccessful || !slices.Equal(stepNumbers(steps), oneToN(6)) {
		t.Fatalf("%s with steps %v; want Successful with 1..6 once each (%s)", final.Phase, stepNumbers(steps), final.Message)
	}
	for _, s := range steps {
		byA, byB := srcA.measured(s.At), srcB.measured(s.At)
		switch {
		case s.Number <= 2 && !byA:
			t.Errorf("step %d was not measured by replica A", s.Number)
		case s.Number >= 3 && !byB:
			t.Errorf("step %d was not measured by replica B", s.Number)
		case s.Number >= 3 && s.At.Before(cutAt):
			t.Errorf("step %d recorded at %v, before A was cut off", s.Number, s.At)
		}
	}
	b, _ := json.Marshal(stepNumbers(steps))
	t.Logf("steps %s; takeover after %v", b, steps[2].At.Sub(cutAt).Round(100*time.Millisecond))
}

// TestServeRunsAnalyses: the binary, started with --prometheus-url, executes
// an analysis the CLI gates on.
func TestServeRunsAnalyses(t *testing.T) {
	t.Parallel()
	w := workload.Start(t, workload.Options{Seed: 9})
	for _, arm := range []string{workload.Baseline, workload.Canary} {
		if err := w.Set(arm, healthy); err != nil {
			t.Fatal(err)
		}
	}
	prom := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: w.Addr()}}})
	rs := redistest.Start(t)
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey, envPrometheusURL + "=" + prom.URL()},
		"--redis", rs.URL(), "--analysis-poll", "200ms")
	srv.waitReady()
	if _, ok := srv.logLine("canary analysis runner on"); !ok {
		t.Fatalf("the runner did not start:\n%s", srv.logs.String())
	}
	tpl := writeTemp(t, t.TempDir(), "serve.yaml", e2eTemplate("serve", "  interval: 2s\n  deadline: 30s\n"))
	srv.cli(testAdminKey, "templates", "apply", tpl).expect(t, 0, nil, nil)
	waitScrapes(t, prom, 2)
	r := srv.cli(testAdminKey, append([]string{"analysis", "gate", "-t", "serve", "--every", "500ms", "--timeout", "50s"}, scopes(w)...)...)
	r.expect(t, 0, []string{"PASS"}, nil)
	status, body := httpDo(t, http.MethodGet, srv.url+"/metrics", "", "")
	if status != 200 || !strings.Contains(string(body), `flagpole_canary_runs_total{phase="Successful",template="serve"} 1`) ||
		!strings.Contains(string(body), "flagpole_prometheus_query_duration_seconds") {
		t.Errorf("/metrics lacks the analysis and Prometheus metrics")
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("exit code %d after SIGTERM; want 0", code)
	}
}
