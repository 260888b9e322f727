package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// RunnerMetrics receives what a Runner observes, for Prometheus or anything
// else. The runner calls it inline, from many goroutines: implementations
// must be safe for concurrent use and quick.
type RunnerMetrics interface {
	// PhaseChanged is called once a run's move between phases is stored.
	PhaseChanged(template string, from, to Phase)
	// StepRecorded is called once a measurement is stored. The step's
	// report carries the verdict, the score and every metric's evidence.
	StepRecorded(template string, step *Step)
	// MeasurementError is called for each metric of a stored step that
	// could not be measured (a query failed or answered nonsense).
	MeasurementError(template, metric string)
	// JudgeDuration is how long judging one measurement took.
	JudgeDuration(d time.Duration)
	// ScheduleLag is how late a due measurement started: now minus the
	// time it was due.
	ScheduleLag(d time.Duration)
}

// RunnerConfig configures a Runner. Store and Source are required.
type RunnerConfig struct {
	// Store holds the runs; the runner reads due runs, leases and writes
	// them there.
	Store Store
	// Source answers the metric queries.
	Source MetricSource
	// Logger receives run events and problems; nil discards them.
	Logger *slog.Logger
	// Metrics, when set, receives observations.
	Metrics RunnerMetrics
	// Now is the clock; nil means time.Now. Waiting uses the runtime's
	// timers (tests fake both with testing/synctest).
	Now func() time.Time
	// Owner names this runner in leases; it must differ between replicas.
	// Default: "runner-" and random hexadecimal digits.
	Owner string
	// Poll is how often the runner looks for due runs; default
	// DefaultPoll. A measurement starts at most about this late.
	Poll time.Duration
	// LeaseTTL is how long a lease lasts unless renewed; the runner renews
	// it every third of that while a step runs. A replica that dies
	// mid-step delays the run by at most this. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Parallel is how many steps run at once; default DefaultParallel.
	Parallel int
	// StepTimeout bounds one step's measurement; default DefaultStepTimeout.
	StepTimeout time.Duration
}

// Runner defaults.
const (
	DefaultPoll        = time.Second
	DefaultLeaseTTL    = 30 * time.Second
	DefaultParallel    = 16
	DefaultStepTimeout = 2 * time.Minute
	// maxBackoff caps how long a run that keeps failing is left alone.
	maxBackoff = time.Minute
	// releaseTimeout bounds the lease release after a step.
	releaseTimeout = 5 * time.Second
)

// Runner executes analysis runs: each replica runs one, and together they
// execute every due step exactly once. On every poll it asks the store for
// due runs, acquires each one's lease, does what is due through the pure
// Run methods (advance the schedule, Measure, Judge, Record), and stores the
// new state and the measurement in one write fenced by the lease's token,
// then releases the lease. A replica that dies mid-step holds its lease
// until it expires; another then takes the run over, and the fencing token
// keeps the dead replica's late write, if any, from being recorded.
//
// The runner does no I/O of its own beyond the Store, the MetricSource, the
// clock and the logger.
type Runner struct {
	store    Store
	src      MetricSource
	log      *slog.Logger
	met      RunnerMetrics
	now      func() time.Time
	owner    string
	poll     time.Duration
	ttl      time.Duration
	parallel int
	timeout  time.Duration

	mu       sync.Mutex
	inflight map[string]bool
	backoff  map[string]backoff
	down     bool // the store failed at the last poll
}

type backoff struct {
	failures int
	until    time.Time
}

// NewRunner checks cfg and returns a Runner; call Run to start it. Errors
// name the RunnerConfig field.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("canary: RunnerConfig.Store is required")
	case cfg.Source == nil:
		return nil, errors.New("canary: RunnerConfig.Source is required")
	case cfg.Poll < 0:
		return nil, fmt.Errorf("canary: RunnerConfig.Poll %v is negative", cfg.Poll)
	case cfg.LeaseTTL < 0:
		return nil, fmt.Errorf("canary: RunnerConfig.LeaseTTL %v is negative", cfg.LeaseTTL)
	case cfg.Parallel < 0:
		return nil, fmt.Errorf("canary: RunnerConfig.Parallel %d is negative", cfg.Parallel)
	case cfg.StepTimeout < 0:
		return nil, fmt.Errorf("canary: RunnerConfig.StepTimeout %v is negative", cfg.StepTimeout)
	}
	r := &Runner{
		store: cfg.Store, src: cfg.Source, log: cfg.Logger, met: cfg.Metrics, now: cfg.Now, owner: cfg.Owner,
		poll: cfg.Poll, ttl: cfg.LeaseTTL, parallel: cfg.Parallel, timeout: cfg.StepTimeout,
		inflight: map[string]bool{}, backoff: map[string]backoff{},
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.met == nil {
		r.met = noMetrics{}
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		r.owner = "runner-" + hex.EncodeToString(b[:])
	}
	if r.poll == 0 {
		r.poll = DefaultPoll
	}
	if r.ttl == 0 {
		r.ttl = DefaultLeaseTTL
	}
	if r.parallel == 0 {
		r.parallel = DefaultParallel
	}
	if r.timeout == 0 {
		r.timeout = DefaultStepTimeout
	}
	return r, nil
}

// Owner is the name this runner acquires leases under.
func (r *Runner) Owner() string { return r.owner }

// Run executes due steps until ctx ends, then waits for the steps in flight
// to stop (they are abandoned, not recorded, and their leases released)
// and returns nil. Store and source failures are logged and retried; they
// never stop the runner.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, r.parallel)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		// Blocking for free workers rather than leaving due runs to the
		// next poll keeps the lag at a poll plus the queue, whatever the load.
		ids, err := r.dueRuns(ctx)
		wait := r.poll
		if err == nil {
			if started, _ := r.start(ctx, ids, &wg, sem, true); started > 0 && len(ids) == r.batch() {
				wait = min(r.poll, 10*time.Millisecond) // more may be due than one batch held
			}
		}
		timer.Reset(wait)
	}
}

// RunOnce executes every step due now and returns once they are done, with
// how many steps it started: Run's work for one poll, repeated while whole
// batches come back, for tools and benchmarks. Errors: the store's when
// the due runs cannot be listed, ctx's when it ends.
func (r *Runner) RunOnce(ctx context.Context) (int, error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, r.parallel)
	total := 0
	for {
		ids, err := r.dueRuns(ctx)
		if err != nil {
			return total, err
		}
		started, err := r.start(ctx, ids, &wg, sem, true)
		total += started
		if err != nil || started == 0 || len(ids) < r.batch() {
			return total, err
		}
		wg.Wait() // a full batch: more may be due once these are done
	}
}

// batch is how many due runs one poll asks for.
func (r *Runner) batch() int { return 4 * r.parallel }

// start starts a step for each of ids not in flight or backing off. When
// every worker is busy it waits for one if block is set, and otherwise
// leaves the rest for a later poll.
func (r *Runner) start(ctx context.Context, ids []string, wg *sync.WaitGroup, sem chan struct{}, block bool) (int, error) {
	started := 0
	for _, id := range ids {
		if !r.claim(id) {
			continue
		}
		if block {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				r.unclaim(id)
				return started, ctx.Err()
			}
		} else {
			select {
			case sem <- struct{}{}:
			default:
				r.unclaim(id)
				return started, nil
			}
		}
		started++
		wg.Go(func() {
			defer func() { <-sem; r.unclaim(id) }()
			r.step(ctx, id)
		})
	}
	return started, nil
}

func (r *Runner) dueRuns(ctx context.Context) ([]string, error) {
	ids, err := r.store.DueRuns(ctx, r.now(), r.batch())
	r.mu.Lock()
	was := r.down
	r.down = err != nil && ctx.Err() == nil
	r.mu.Unlock()
	switch {
	case err != nil && ctx.Err() == nil && !was:
		r.log.Warn("cannot list due analysis runs; retrying every poll", "owner", r.owner, "error", err)
	case err == nil && was:
		r.log.Info("listing due analysis runs works again", "owner", r.owner)
	}
	return ids, err
}

// claim marks id in flight here, unless it already is or is backing off.
func (r *Runner) claim(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[id] {
		return false
	}
	if b, ok := r.backoff[id]; ok && r.now().Before(b.until) {
		return false
	}
	r.inflight[id] = true
	return true
}

func (r *Runner) unclaim(id string) {
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
}

// failed makes a run that could not be executed wait, longer each time.
func (r *Runner) failed(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.backoff[id]
	b.failures++
	wait := r.poll << min(b.failures, 16)
	b.until = r.now().Add(min(wait, maxBackoff))
	r.backoff[id] = b
}

func (r *Runner) succeeded(id string) {
	r.mu.Lock()
	delete(r.backoff, id)
	r.mu.Unlock()
}

var errLeaseLost = errors.New("the run's lease was lost")

// step executes whatever is due for run id under its lease.
func (r *Runner) step(ctx context.Context, id string) {
	lease, err := r.store.AcquireLease(ctx, id, r.owner, r.now(), r.ttl)
	switch {
	case errors.Is(err, ErrLeaseHeld), errors.Is(err, ErrNotFound), ctx.Err() != nil:
		return // another replica is on it, or it is gone, or we are stopping
	case errors.Is(err, ErrUnavailable):
		r.log.Debug("cannot lease analysis run: the store is unavailable; retrying at the next poll", "run", id, "error", err)
		return
	case err != nil:
		r.log.Warn("cannot lease analysis run", "run", id, "owner", r.owner, "error", err)
		r.failed(id)
		return
	}
	stepCtx, cancel := context.WithCancelCause(ctx)
	keeperDone := make(chan struct{})
	current := make(chan Lease, 1)
	current <- lease
	go r.keepLease(stepCtx, cancel, current, keeperDone)
	defer func() {
		cancel(nil)
		<-keeperDone
		l := <-current
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		if err := r.store.ReleaseLease(rctx, l); err != nil {
			r.log.Debug("cannot release analysis run lease; it expires by itself", "run", id, "error", err)
		}
	}()
	if err := r.execute(stepCtx, id, lease); err != nil {
		if cause := context.Cause(stepCtx); cause != nil {
			r.log.Debug("analysis step abandoned", "run", id, "owner", r.owner, "why", cause)
			return
		}
		if errors.Is(err, ErrUnavailable) {
			// An outage, not this run's fault: retried at the next poll.
			r.log.Debug("analysis step not stored: the store is unavailable; retrying at the next poll", "run", id, "error", err)
			return
		}
		r.log.Warn("analysis step failed; retrying with backoff", "run", id, "owner", r.owner, "error", err)
		r.failed(id)
		return
	}
	r.succeeded(id)
}

// keepLease renews the lease every third of its TTL until ctx ends; when
// the lease is lost it cancels the step.
func (r *Runner) keepLease(ctx context.Context, cancel context.CancelCauseFunc, current chan Lease, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(max(r.ttl/3, time.Millisecond))
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l := <-current
		nl, err := r.store.RenewLease(ctx, l, r.now(), r.ttl)
		switch {
		case err == nil:
			current <- nl
			failing = false
		case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrNotFound):
			current <- l
			cancel(errLeaseLost)
			return
		default:
			current <- l // keep trying; the fencing token still guards the write
			if ctx.Err() == nil && !failing {
				r.log.Warn("cannot renew analysis run lease; retrying", "run", l.RunID, "error", err)
			}
			failing = true
		}
	}
}

// execute reads the run, does what is due and stores the result fenced by
// the lease. Errors: the store's; ctx's when abandoned.
func (r *Runner) execute(ctx context.Context, id string, lease Lease) error {
	sr, err := r.store.Run(ctx, id)
	if err != nil {
		return err
	}
	run := sr.Run
	from := run.Phase
	now := r.now()
	changed := run.Advance(now)
	var step *Step
	if plan, due := run.Due(now); due {
		r.met.ScheduleLag(now.Sub(run.NextAt))
		mctx, mcancel := context.WithTimeout(ctx, r.timeout)
		obs, merr := Measure(mctx, r.src, &run.Template, run.Args, plan.Window)
		mcancel()
		if err := context.Cause(ctx); err != nil {
			return err // lost the lease or stopping: a measurement cut short is not recorded
		}
		t0 := r.now()
		var rep Report
		if merr != nil {
			rep = Report{Verdict: VerdictError, Reason: "could not build the queries: " + merr.Error(), Score: nan, Alpha: Float(run.Template.alpha())}
		} else {
			rep = Judge(&run.Template, obs)
		}
		r.met.JudgeDuration(r.now().Sub(t0))
		if err := run.Record(plan.Step, now, plan.Window, rep); err != nil {
			return fmt.Errorf("recording step %d: %w", plan.Step, err)
		}
		s := run.Steps[len(run.Steps)-1]
		step = &s
		// The run keeps its latest measurement only; the store keeps them all.
		run.Steps = run.Steps[len(run.Steps)-1:]
	}
	if !changed && step == nil {
		return nil
	}
	out, err := r.store.UpdateRun(ctx, RunUpdate{Run: &run, IfVersion: sr.Version, Token: lease.Token, Step: step})
	switch {
	case errors.Is(err, ErrConflict):
		// Cancelled or otherwise changed meanwhile: this step's result no
		// longer applies; the next poll looks at the run afresh.
		r.log.Debug("analysis run changed during a step; result discarded", "run", id)
		return nil
	case errors.Is(err, ErrLeaseLost):
		r.log.Warn("analysis run lease lost during a step; result discarded", "run", id, "owner", r.owner)
		return nil
	case err != nil:
		return err
	}
	tpl := run.Template.Name
	if step != nil {
		for _, m := range step.Report.Metrics {
			if m.Verdict == VerdictError {
				r.met.MeasurementError(tpl, m.Metric)
			}
		}
		r.met.StepRecorded(tpl, step)
		r.log.Debug("analysis step recorded", "run", id, "step", step.Number, "verdict", step.Report.Verdict, "score", float64(step.Report.Score))
	}
	if out.Phase != from {
		r.met.PhaseChanged(tpl, from, out.Phase)
		if out.Phase.Terminal() {
			r.log.Info("analysis run ended", "run", id, "template", tpl, "phase", out.Phase, "message", out.Message)
		} else {
			r.log.Info("analysis run started measuring", "run", id, "template", tpl, "phase", out.Phase)
		}
	}
	return nil
}

type noMetrics struct{}

func (noMetrics) PhaseChanged(string, Phase, Phase) {}
func (noMetrics) StepRecorded(string, *Step)        {}
func (noMetrics) MeasurementError(string, string)   {}
func (noMetrics) JudgeDuration(time.Duration)       {}
func (noMetrics) ScheduleLag(time.Duration)         {}
