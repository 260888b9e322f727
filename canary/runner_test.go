package canary_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
)

// gaugeSource answers a threshold metric's query with the current value,
// or an error while failing; block, when set, holds every query until it
// is closed or the query's context ends. It records who asked, when.
type gaugeSource struct {
	name  string
	mu    sync.Mutex
	value float64
	err   error
	block chan struct{}
	calls []time.Time
}

func (g *gaugeSource) set(v float64, err error) {
	g.mu.Lock()
	g.value, g.err = v, err
	g.mu.Unlock()
}

func (g *gaugeSource) Instant(ctx context.Context, q string, at time.Time) ([]canary.Element, error) {
	g.mu.Lock()
	g.calls = append(g.calls, at)
	v, err, block := g.value, g.err, g.block
	g.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", canary.ErrSource, ctx.Err())
		}
	}
	if err != nil {
		return nil, err
	}
	return []canary.Element{{Labels: map[string]string{}, Value: v}}, nil
}

func (g *gaugeSource) Range(context.Context, string, time.Time, time.Time, time.Duration) ([]canary.Series, error) {
	return nil, errors.New("no range queries here")
}

func (g *gaugeSource) queries() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// recorder is a RunnerMetrics that remembers every call.
type recorder struct {
	mu      sync.Mutex
	phases  []string
	steps   []int
	verdict []canary.Verdict
	errs    []string
	lags    []time.Duration
	judged  int
}

func (r *recorder) PhaseChanged(tpl string, from, to canary.Phase) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, fmt.Sprintf("%s:%s->%s", tpl, from, to))
}

func (r *recorder) StepRecorded(tpl string, s *canary.Step) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s.Number)
	r.verdict = append(r.verdict, s.Report.Verdict)
}

func (r *recorder) MeasurementError(tpl, metric string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, tpl+"/"+metric)
}

func (r *recorder) JudgeDuration(time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.judged++
}

func (r *recorder) ScheduleLag(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lags = append(r.lags, d)
}

// gaugeTemplate has one critical threshold metric (at most 1).
func gaugeTemplate(name string, s canary.Schedule) *canary.Template {
	one := 1.0
	return &canary.Template{
		Name:     name,
		Metrics:  []canary.Metric{{Name: "gauge", Kind: canary.KindThreshold, Query: `g{ {{ .scope }} }`, Max: &one, Critical: true}},
		Schedule: s,
	}
}

// env is one synctest bubble's store, service and runners.
type env struct {
	t     *testing.T
	store *canarytest.Memory
	svc   *canary.Service
	logs  *bytes.Buffer
	mu    sync.Mutex
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, store: canarytest.NewMemory(), logs: &bytes.Buffer{}}
	e.svc = canary.NewService(e.store, nil)
	return e
}

func (e *env) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.Write(p)
}

func (e *env) logged() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

func (e *env) start(tpl *canary.Template) string {
	e.t.Helper()
	if _, err := e.svc.PutTemplate(e.t.Context(), tpl, canary.TemplateWrite{}); err != nil {
		e.t.Fatal(err)
	}
	sr, err := e.svc.Start(e.t.Context(), tpl.Name, canarytest.Args())
	if err != nil {
		e.t.Fatal(err)
	}
	return sr.ID
}

// runner starts a runner over store until the returned stop is called.
func (e *env) runner(store canary.Store, cfg canary.RunnerConfig) (stop func()) {
	e.t.Helper()
	cfg.Store = store
	cfg.Logger = slog.New(slog.NewTextHandler(e, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := canary.NewRunner(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run = %v; want nil", err)
		}
	}
}

func (e *env) run(id string) canary.StoredRun {
	e.t.Helper()
	sr, err := e.store.Run(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sr
}

func (e *env) steps(id string) []canary.Step {
	e.t.Helper()
	ms, err := e.store.Measurements(context.Background(), id, 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

func TestRunnerExecutesOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		t0 := time.Now()
		src := &gaugeSource{value: 0.5}
		met := &recorder{}
		id := e.start(gaugeTemplate("sched", canary.Schedule{Interval: canary.Duration(10 * time.Second), Count: 3, Warmup: canary.Duration(5 * time.Second)}))
		stop := e.runner(e.store, canary.RunnerConfig{Source: src, Metrics: met, Poll: 700 * time.Millisecond, Owner: "r1"})
		defer stop()

		time.Sleep(14 * time.Second)
		if sr := e.run(id); sr.Phase != canary.PhaseRunning || len(e.steps(id)) != 0 {
			t.Fatalf("at 14s: %s with %d steps; want Running (warm-up over at 5s) and no step before 15s", sr.Phase, len(e.steps(id)))
		}
		time.Sleep(30 * time.Second)
		sr := e.run(id)
		if sr.Phase != canary.PhaseSuccessful || sr.NextStep != 4 {
			t.Fatalf("at 44s: %s, next step %d (%s); want Successful after 3 steps", sr.Phase, sr.NextStep, sr.Message)
		}
		steps := e.steps(id)
		due := []time.Duration{15 * time.Second, 25 * time.Second, 35 * time.Second}
		if len(steps) != len(due) {
			t.Fatalf("%d steps stored; want %d", len(steps), len(due))
		}
		for i, s := range steps {
			lag := s.At.Sub(t0.Add(due[i]))
			if s.Number != i+1 || lag < 0 || lag >= 700*time.Millisecond || s.Report.Verdict != canary.VerdictPass {
				t.Errorf("step %d = #%d at %v (lag %v), %s; want #%d due at %v, started within one poll, pass", i, s.Number, s.At.Sub(t0), lag, s.Report.Verdict, i+1, due[i])
			}
			if !s.Window.Start.Equal(t0.Add(5 * time.Second)) {
				t.Errorf("step %d window starts at %v; want the end of warm-up (growing lookback)", i, s.Window.Start.Sub(t0))
			}
		}
		if len(sr.Steps) != 1 || sr.Steps[0].Number != 3 {
			t.Errorf("the stored run holds steps %v; want only the latest (3)", sr.Steps)
		}
		if n := len(src.queries()); n != 3 {
			t.Errorf("%d queries; want 3 (one per step, a threshold metric has no baseline)", n)
		}
		met.mu.Lock()
		defer met.mu.Unlock()
		wantPhases := []string{"sched:Pending->Running", "sched:Running->Successful"}
		if !slices.Equal(met.phases, wantPhases) || !slices.Equal(met.steps, []int{1, 2, 3}) || met.judged != 3 || len(met.lags) != 3 {
			t.Errorf("metrics: phases %v steps %v judged %d lags %v; want %v, [1 2 3], 3, 3", met.phases, met.steps, met.judged, met.lags, wantPhases)
		}
		for _, l := range met.lags {
			if l < 0 || l >= 700*time.Millisecond {
				t.Errorf("reported lag %v; want within one poll", l)
			}
		}
	})
}

func TestRunnerVerdicts(t *testing.T) {
	tests := []struct {
		name      string
		value     float64
		err       error
		phase     canary.Phase
		verdict   canary.Verdict
		errMetric bool
	}{
		{"healthy passes", 0.5, nil, canary.PhaseSuccessful, canary.VerdictPass, false},
		{"over the bound fails at once", 3, nil, canary.PhaseFailed, canary.VerdictFail, false},
		{"source down ends in error, never a pass", 0, fmt.Errorf("%w: connection refused", canary.ErrSource), canary.PhaseError, canary.VerdictError, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				src := &gaugeSource{}
				src.set(tc.value, tc.err)
				met := &recorder{}
				limit := 1
				id := e.start(gaugeTemplate("v", canary.Schedule{Interval: canary.Duration(time.Second), Count: 3, ConsecutiveErrorLimit: &limit}))
				stop := e.runner(e.store, canary.RunnerConfig{Source: src, Metrics: met, Poll: 100 * time.Millisecond})
				time.Sleep(10 * time.Second)
				stop()
				sr := e.run(id)
				if sr.Phase != tc.phase {
					t.Fatalf("phase %s (%s); want %s", sr.Phase, sr.Message, tc.phase)
				}
				for _, s := range e.steps(id) {
					if s.Report.Verdict != tc.verdict {
						t.Errorf("step %d verdict %s; want %s", s.Number, s.Report.Verdict, tc.verdict)
					}
				}
				met.mu.Lock()
				defer met.mu.Unlock()
				if got := len(met.errs) > 0; got != tc.errMetric {
					t.Errorf("measurement errors reported: %v; want any: %v", met.errs, tc.errMetric)
				}
				if tc.errMetric && met.errs[0] != "v/gauge" {
					t.Errorf("measurement error for %q; want v/gauge", met.errs[0])
				}
			})
		})
	}
}

// TestRunnersShareWork: three runners on one store execute 20 runs; each
// step of each run is recorded exactly once and on time.
func TestRunnersShareWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		srcs := []*gaugeSource{{name: "a", value: 0.5}, {name: "b", value: 0.5}, {name: "c", value: 0.5}}
		var ids []string
		for i := range 20 {
			ids = append(ids, e.start(gaugeTemplate(fmt.Sprintf("t%02d", i), canary.Schedule{Interval: canary.Duration(2 * time.Second), Count: 5})))
		}
		for _, s := range srcs {
			stop := e.runner(e.store, canary.RunnerConfig{Source: s, Owner: s.name, Poll: 250 * time.Millisecond, Parallel: 3})
			defer stop()
		}
		time.Sleep(15 * time.Second)
		total := 0
		for _, id := range ids {
			sr := e.run(id)
			if sr.Phase != canary.PhaseSuccessful {
				t.Errorf("run %s: %s; want Successful", id, sr.Phase)
			}
			var nums []int
			for _, s := range e.steps(id) {
				nums = append(nums, s.Number)
			}
			if !slices.Equal(nums, []int{1, 2, 3, 4, 5}) {
				t.Errorf("run %s steps %v; want 1..5 once each", id, nums)
			}
		}
		for _, s := range srcs {
			total += len(s.queries())
		}
		if total != 20*5 {
			t.Errorf("%d measurements taken across the runners; want %d (no step measured twice)", total, 20*5)
		}
		for _, s := range srcs {
			if len(s.queries()) == 0 {
				t.Errorf("runner %s did nothing: the work is not shared", s.name)
			}
		}
	})
}

// partitionable is a store a test can cut a runner off from.
type partitionable struct {
	canary.Store
	cut atomic.Bool
}

var errPartition = fmt.Errorf("network partition: %w", canary.ErrUnavailable)

func (p *partitionable) check() error {
	if p.cut.Load() {
		return errPartition
	}
	return nil
}

func (p *partitionable) DueRuns(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	return p.Store.DueRuns(ctx, now, limit)
}

func (p *partitionable) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	if err := p.check(); err != nil {
		return canary.StoredRun{}, err
	}
	return p.Store.Run(ctx, id)
}

func (p *partitionable) UpdateRun(ctx context.Context, u canary.RunUpdate) (canary.StoredRun, error) {
	if err := p.check(); err != nil {
		return canary.StoredRun{}, err
	}
	return p.Store.UpdateRun(ctx, u)
}

func (p *partitionable) AcquireLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if err := p.check(); err != nil {
		return canary.Lease{}, err
	}
	return p.Store.AcquireLease(ctx, id, owner, now, ttl)
}

func (p *partitionable) RenewLease(ctx context.Context, l canary.Lease, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if err := p.check(); err != nil {
		return canary.Lease{}, err
	}
	return p.Store.RenewLease(ctx, l, now, ttl)
}

func (p *partitionable) ReleaseLease(ctx context.Context, l canary.Lease) error {
	if err := p.check(); err != nil {
		return err
	}
	return p.Store.ReleaseLease(ctx, l)
}

// TestRunnerTakeover: runner A is cut off from the store in the middle of
// a step (it cannot renew or release its lease). Once the lease expires,
// runner B takes the run over at its next poll; A's late result, written
// after the partition heals, is fenced out; no step is recorded twice.
func TestRunnerTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		t0 := time.Now()
		id := e.start(gaugeTemplate("take", canary.Schedule{Interval: canary.Duration(5 * time.Second), Count: 4}))
		aStore := &partitionable{Store: e.store}
		srcA := &gaugeSource{name: "a", value: 0.5}
		stopA := e.runner(aStore, canary.RunnerConfig{Source: srcA, Owner: "a", Poll: time.Second, LeaseTTL: 3 * time.Second})
		defer stopA()

		time.Sleep(5*time.Second + 500*time.Millisecond) // A records step 1 at 5s
		if n := len(e.steps(id)); n != 1 {
			t.Fatalf("after 5.5s, %d steps; want A's first", n)
		}
		// A's step 2 (due at 10s) hangs in the source; A is cut off meanwhile.
		block := make(chan struct{})
		srcA.mu.Lock()
		srcA.block = block
		srcA.mu.Unlock()
		time.Sleep(5 * time.Second) // 10.5s: A is measuring step 2
		aStore.cut.Store(true)

		srcB := &gaugeSource{name: "b", value: 0.5}
		stopB := e.runner(e.store, canary.RunnerConfig{Source: srcB, Owner: "b", Poll: time.Second, LeaseTTL: 3 * time.Second})
		defer stopB()
		time.Sleep(2 * time.Second) // 12.5s: A's lease (renewed at 11s? no: cut off) still holds until 13s
		if n := len(srcB.queries()); n != 0 {
			t.Errorf("B measured while A's lease was live: %d queries", n)
		}
		time.Sleep(2 * time.Second) // 14.5s: B took over at 13s or 14s and recorded step 2
		steps := e.steps(id)
		if len(steps) != 2 || steps[1].At.Sub(t0) < 13*time.Second {
			t.Fatalf("steps %v; want step 2 by B after A's lease expired at 13s", steps)
		}
		// A heals and finishes measuring: its write is fenced.
		aStore.cut.Store(false)
		close(block)
		time.Sleep(10 * time.Second)
		sr := e.run(id)
		var nums []int
		for _, s := range e.steps(id) {
			nums = append(nums, s.Number)
		}
		if sr.Phase != canary.PhaseSuccessful || !slices.Equal(nums, []int{1, 2, 3, 4}) {
			t.Errorf("final %s with steps %v; want Successful with 1..4 once each", sr.Phase, nums)
		}
		if !strings.Contains(e.logged(), "lease lost during a step; result discarded") {
			t.Errorf("A's late write was not reported as fenced; logs:\n%s", e.logged())
		}
	})
}

// TestRunnerCancelledMidStep: a run cancelled while a step measures keeps
// its cancellation; the step's result is discarded.
func TestRunnerCancelledMidStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		id := e.start(gaugeTemplate("cancel", canary.Schedule{Interval: canary.Duration(time.Second), Count: 3}))
		block := make(chan struct{})
		src := &gaugeSource{value: 0.5, block: block}
		stop := e.runner(e.store, canary.RunnerConfig{Source: src, Poll: 100 * time.Millisecond})
		defer stop()
		time.Sleep(1500 * time.Millisecond)
		if n := len(src.queries()); n != 1 {
			t.Fatalf("%d queries in flight; want 1", n)
		}
		if _, err := e.svc.Cancel(context.Background(), id, "bad deploy"); err != nil {
			t.Fatal(err)
		}
		close(block)
		time.Sleep(3 * time.Second)
		sr := e.run(id)
		if sr.Phase != canary.PhaseCancelled || sr.Message != "bad deploy" || len(e.steps(id)) != 0 {
			t.Errorf("run %s %q with %d steps; want Cancelled \"bad deploy\" without steps", sr.Phase, sr.Message, len(e.steps(id)))
		}
	})
}

// TestRunnerStopReleasesLease: stopping a runner mid-step records nothing
// and releases the lease, so another replica continues at once.
func TestRunnerStopReleasesLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		id := e.start(gaugeTemplate("stop", canary.Schedule{Interval: canary.Duration(time.Second), Count: 2}))
		src := &gaugeSource{value: 0.5, block: make(chan struct{})}
		stop := e.runner(e.store, canary.RunnerConfig{Source: src, Poll: 100 * time.Millisecond, LeaseTTL: time.Hour})
		time.Sleep(1500 * time.Millisecond)
		stop()
		if n := len(e.steps(id)); n != 0 {
			t.Errorf("%d steps recorded by a stopped runner; want 0", n)
		}
		l, err := e.store.AcquireLease(context.Background(), id, "other", time.Now(), time.Second)
		if err != nil {
			t.Fatalf("the lease was not released on stop: %v", err)
		}
		_ = e.store.ReleaseLease(context.Background(), l)
		stop2 := e.runner(e.store, canary.RunnerConfig{Source: &gaugeSource{value: 0.5}, Poll: 100 * time.Millisecond})
		defer stop2()
		time.Sleep(3 * time.Second)
		if sr := e.run(id); sr.Phase != canary.PhaseSuccessful {
			t.Errorf("after handing over: %s; want Successful", sr.Phase)
		}
	})
}

// TestRunnerStoreOutage: while the store is down the runner logs once and
// keeps polling; afterwards the run continues, late steps skipped rather
// than caught up.
func TestRunnerStoreOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		t0 := time.Now()
		id := e.start(gaugeTemplate("outage", canary.Schedule{Interval: canary.Duration(2 * time.Second), Count: 5}))
		src := &gaugeSource{value: 0.5}
		stop := e.runner(e.store, canary.RunnerConfig{Source: src, Poll: 500 * time.Millisecond})
		defer stop()
		time.Sleep(2500 * time.Millisecond) // step 1 at 2s
		e.store.Fail(true)
		time.Sleep(5 * time.Second)
		e.store.Fail(false)
		time.Sleep(7 * time.Second)
		sr := e.run(id)
		steps := e.steps(id)
		if sr.Phase != canary.PhaseSuccessful || len(steps) != 5 {
			t.Fatalf("after the outage: %s with %d steps; want Successful with 5", sr.Phase, len(steps))
		}
		// Step 2 was due at 4s, during the outage: taken at 8s, when the
		// store came back; the next slots follow from there.
		if at := steps[1].At.Sub(t0); at < 7500*time.Millisecond || at > 8500*time.Millisecond {
			t.Errorf("step 2 at %v; want right after the store returned at 7.5s", at)
		}
		if c := strings.Count(e.logged(), "cannot list due analysis runs"); c != 1 {
			t.Errorf("the outage was logged %d times; want once:\n%s", c, e.logged())
		}
		if !strings.Contains(e.logged(), "works again") {
			t.Errorf("the recovery was not logged")
		}
	})
}

func TestNewRunnerRejectsBadConfig(t *testing.T) {
	store, src := canarytest.NewMemory(), &gaugeSource{}
	tests := []struct {
		name string
		cfg  canary.RunnerConfig
		want string
	}{
		{"no store", canary.RunnerConfig{Source: src}, "Store"},
		{"no source", canary.RunnerConfig{Store: store}, "Source"},
		{"negative poll", canary.RunnerConfig{Store: store, Source: src, Poll: -1}, "Poll"},
		{"negative ttl", canary.RunnerConfig{Store: store, Source: src, LeaseTTL: -1}, "LeaseTTL"},
		{"negative parallel", canary.RunnerConfig{Store: store, Source: src, Parallel: -1}, "Parallel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := canary.NewRunner(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewRunner = %v; want an error naming %s", err, tc.want)
			}
		})
	}
	r, err := canary.NewRunner(canary.RunnerConfig{Store: store, Source: src})
	if err != nil || !strings.HasPrefix(r.Owner(), "runner-") {
		t.Errorf("defaults: %v, owner %q", err, r.Owner())
	}
}

// brokenRuns fails reads of one run: with a malformed document (a
// persistent problem of that run) or as an outage.
type brokenRuns struct {
	canary.Store
	id     string
	outage atomic.Bool
	reads  atomic.Int64
}

func (b *brokenRuns) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	if id != b.id {
		return b.Store.Run(ctx, id)
	}
	b.reads.Add(1)
	if b.outage.Load() {
		return canary.StoredRun{}, fmt.Errorf("connection refused: %w", canary.ErrUnavailable)
	}
	return canary.StoredRun{}, errors.New("stored run is malformed")
}

// TestRunnerBacksOffBrokenRuns: a run that cannot be executed is retried
// less and less often (the others are not held up); a store outage is not
// the run's fault and is retried at every poll.
func TestRunnerBacksOffBrokenRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		bad := e.start(gaugeTemplate("bad", canary.Schedule{Interval: canary.Duration(time.Second), Count: 100}))
		good := e.start(gaugeTemplate("good", canary.Schedule{Interval: canary.Duration(time.Second), Count: 5}))
		store := &brokenRuns{Store: e.store, id: bad}
		stop := e.runner(store, canary.RunnerConfig{Source: &gaugeSource{value: 0.5}, Poll: 100 * time.Millisecond})
		defer stop()
		time.Sleep(20 * time.Second)
		// Without backoff: 200 reads in 20 s at a 100 ms poll. With it: 0.2,
		// 0.4, 0.8, … 12.8 s apart.
		if n := store.reads.Load(); n < 4 || n > 10 {
			t.Errorf("a broken run was read %d times in 20s; want a handful (backoff)", n)
		}
		if sr := e.run(good); sr.Phase != canary.PhaseSuccessful {
			t.Errorf("the healthy run beside it: %s; want Successful", sr.Phase)
		}
		if !strings.Contains(e.logged(), "retrying with backoff") {
			t.Errorf("the broken run was not reported")
		}
		store.outage.Store(true)
		time.Sleep(61 * time.Second) // past any backoff
		before := store.reads.Load()
		time.Sleep(2 * time.Second)
		if n := store.reads.Load() - before; n < 15 {
			t.Errorf("during an outage the run was read %d times in 2s; want every poll (no backoff for outages)", n)
		}
	})
}
