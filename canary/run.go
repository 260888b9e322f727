package canary

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Phase is where an analysis run is in its life.
type Phase string

// The phases. Pending → Running → one of the terminal phases.
const (
	PhasePending      Phase = "Pending"
	PhaseRunning      Phase = "Running"
	PhaseSuccessful   Phase = "Successful"
	PhaseFailed       Phase = "Failed"
	PhaseInconclusive Phase = "Inconclusive"
	PhaseError        Phase = "Error"
	PhaseCancelled    Phase = "Cancelled"
)

// Terminal reports whether a run in phase p has ended.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseSuccessful, PhaseFailed, PhaseInconclusive, PhaseError, PhaseCancelled:
		return true
	}
	return false
}

// Errors of the run state machine.
var (
	// ErrRunEnded: the run is in a terminal phase and cannot change.
	ErrRunEnded = errors.New("canary: the run has ended")
	// ErrNotDue: no measurement is due (the run is pending, or it is not yet
	// time).
	ErrNotDue = errors.New("canary: no measurement is due")
	// ErrStaleStep: the step recorded is not the run's next step — another
	// executor has already recorded it, or skipped ahead.
	ErrStaleStep = errors.New("canary: the step is not the run's next step")
)

// Run is one analysis run and its whole state: a plain, serialisable value
// (JSON), so a store can persist it and any replica can resume it. It keeps a
// snapshot of its template, so editing the template does not change a run in
// flight. Every method takes the time from its caller; none reads a clock.
type Run struct {
	ID       string   `json:"id"`
	Template Template `json:"template"`
	Args     Args     `json:"args"`
	Phase    Phase    `json:"phase"`
	Message  string   `json:"message,omitempty"`
	// CreatedAt is when the run was started; StartedAt when warm-up ended and
	// data began to count; EndedAt when it reached a terminal phase.
	CreatedAt time.Time `json:"createdAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	// NextStep is the number (from 1) of the next measurement and NextAt the
	// time it is due (for a pending run, the end of warm-up).
	NextStep int       `json:"nextStep"`
	NextAt   time.Time `json:"nextAt,omitzero"`
	// Counters the schedule's limits apply to.
	Failures          int `json:"failures"`
	Inconclusives     int `json:"inconclusives"`
	Errors            int `json:"errors"`
	ConsecutiveErrors int `json:"consecutiveErrors"`
	// Steps holds every measurement with its report and evidence.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one recorded measurement.
type Step struct {
	Number int       `json:"number"`
	At     time.Time `json:"at"`
	Window Window    `json:"window"`
	Report Report    `json:"report"`
}

// Plan is a measurement that is due: its number and window.
type Plan struct {
	Step   int    `json:"step"`
	Window Window `json:"window"`
}

// NewRun starts a run of tpl with args at now, in phase Pending. It returns
// the template's *ValidationError, or one naming the bad arguments (a missing
// declared argument, an undeclared value, identical scopes).
func NewRun(id string, tpl *Template, args Args, now time.Time) (*Run, error) {
	if err := tpl.Validate(); err != nil {
		return nil, err
	}
	if err := tpl.CheckArgs(args); err != nil {
		return nil, err
	}
	snap := *tpl
	snap.Args = slices.Clone(tpl.Args)
	snap.Metrics = slices.Clone(tpl.Metrics)
	snap.Score.Groups = maps.Clone(tpl.Score.Groups)
	args.Values = maps.Clone(args.Values)
	return &Run{
		ID:        id,
		Template:  snap,
		Args:      args,
		Phase:     PhasePending,
		CreatedAt: now,
		NextStep:  1,
		NextAt:    now.Add(tpl.Schedule.Warmup.D()),
	}, nil
}

// Deadline returns when an undecided run ends, or the zero time if never.
func (r *Run) Deadline() time.Time {
	if d := r.Template.Schedule.Deadline.D(); d > 0 {
		return r.CreatedAt.Add(d)
	}
	return time.Time{}
}

// Advance applies what the passage of time alone decides: a pending run whose
// warm-up is over starts running, and a run past its deadline ends as the
// schedule's undecided outcome says. It reports whether the run changed.
func (r *Run) Advance(now time.Time) bool {
	if r.Phase.Terminal() {
		return false
	}
	changed := false
	if r.Phase == PhasePending && !now.Before(r.NextAt) {
		r.Phase = PhaseRunning
		r.StartedAt = r.NextAt
		r.NextAt = r.StartedAt.Add(r.Template.Schedule.Interval.D())
		changed = true
	}
	if dl := r.Deadline(); !dl.IsZero() && !now.Before(dl) {
		r.endUndecided(now, fmt.Sprintf("deadline %v passed without a decision", r.Template.Schedule.Deadline.D()))
		changed = true
	}
	return changed
}

// Due returns the measurement due at now, if any. It does not change the run;
// call Advance first so warm-up and the deadline are applied.
func (r *Run) Due(now time.Time) (Plan, bool) {
	if r.Phase != PhaseRunning || now.Before(r.NextAt) {
		return Plan{}, false
	}
	start := r.StartedAt
	if lb := r.Template.Schedule.Lookback; lb.Mode == LookbackSliding {
		if s := now.Add(-lb.Window.D()); s.After(start) {
			start = s
		}
	}
	return Plan{Step: r.NextStep, Window: Window{Start: start, End: now}}, true
}

// Record applies the report of measurement step, taken at at over window w,
// and moves the run on: limits reached end it, otherwise the next step is
// scheduled (skipping slots already missed, so a late executor does not
// measure twice to catch up). It returns ErrRunEnded for a finished run,
// ErrNotDue for a run not yet running, and ErrStaleStep when step is not the
// run's next step, in which case the run is unchanged.
func (r *Run) Record(step int, at time.Time, w Window, rep Report) error {
	switch {
	case r.Phase.Terminal():
		return ErrRunEnded
	case r.Phase != PhaseRunning:
		return ErrNotDue
	case step != r.NextStep:
		return fmt.Errorf("%w: got %d, next is %d", ErrStaleStep, step, r.NextStep)
	}
	s := &r.Template.Schedule
	r.Steps = append(r.Steps, Step{Number: step, At: at, Window: w, Report: rep})
	r.NextStep++
	where := fmt.Sprintf("measurement %d", step)
	switch rep.Verdict {
	case VerdictFail:
		r.Failures++
		r.ConsecutiveErrors = 0
		if r.Failures > s.FailureLimit {
			r.end(PhaseFailed, at, fmt.Sprintf("%s %s", where, rep.Reason))
			return nil
		}
	case VerdictPass:
		r.ConsecutiveErrors = 0
		if s.Count == 0 {
			r.end(PhaseSuccessful, at, fmt.Sprintf("%s passed: %s", where, rep.Reason))
			return nil
		}
	case VerdictInconclusive:
		r.Inconclusives++
		r.ConsecutiveErrors = 0
		if l := s.InconclusiveLimit; l != nil && r.Inconclusives > *l {
			r.end(PhaseInconclusive, at, fmt.Sprintf("%d inconclusive measurements exceed the limit of %d; last: %s", r.Inconclusives, *l, rep.Reason))
			return nil
		}
	default: // VerdictError, or anything unknown: never a pass.
		r.Errors++
		r.ConsecutiveErrors++
		if l := s.consecutiveErrorLimit(); r.ConsecutiveErrors > l {
			r.end(PhaseError, at, fmt.Sprintf("%d measurement errors in a row exceed the limit of %d; last: %s", r.ConsecutiveErrors, l, rep.Reason))
			return nil
		}
	}
	if s.Count > 0 && step >= s.Count {
		switch rep.Verdict {
		case VerdictPass:
			r.end(PhaseSuccessful, at, fmt.Sprintf("%s of %d passed: %s", where, s.Count, rep.Reason))
		case VerdictError:
			r.end(PhaseError, at, fmt.Sprintf("%s of %d could not be measured: %s", where, s.Count, rep.Reason))
		default:
			r.endUndecided(at, fmt.Sprintf("all %d measurements taken without a pass; last: %s", s.Count, rep.Reason))
		}
		return nil
	}
	iv := s.Interval.D()
	next := r.NextAt.Add(iv)
	if !next.After(at) {
		k := at.Sub(r.StartedAt)/iv + 1
		next = r.StartedAt.Add(k * iv)
	}
	r.NextAt = next
	return nil
}

// Cancel ends the run as Cancelled, or returns ErrRunEnded if it had ended.
func (r *Run) Cancel(now time.Time, reason string) error {
	if r.Phase.Terminal() {
		return ErrRunEnded
	}
	if reason == "" {
		reason = "cancelled"
	}
	r.end(PhaseCancelled, now, reason)
	return nil
}

// Last returns the latest measurement's report, or nil before the first.
func (r *Run) Last() *Report {
	if len(r.Steps) == 0 {
		return nil
	}
	return &r.Steps[len(r.Steps)-1].Report
}

func (r *Run) end(p Phase, at time.Time, msg string) {
	r.Phase = p
	r.Message = msg
	r.EndedAt = at
	r.NextAt = time.Time{}
}

func (r *Run) endUndecided(at time.Time, why string) {
	if r.Template.Schedule.undecided() == OutcomeFail {
		r.end(PhaseFailed, at, why+"; an undecided analysis fails (undecided: fail)")
		return
	}
	r.end(PhaseInconclusive, at, why)
}

// Execute does whatever is due at now: it advances the run, and if a
// measurement is due it measures through src, judges and records it. It
// reports whether the run changed. Source errors are recorded as error
// measurements, not returned; the error is non-nil only when the run could
// not record (see Record).
func (r *Run) Execute(ctx context.Context, src MetricSource, now time.Time) (bool, error) {
	changed := r.Advance(now)
	plan, ok := r.Due(now)
	if !ok {
		return changed, nil
	}
	var rep Report
	obs, err := Measure(ctx, src, &r.Template, r.Args, plan.Window)
	if err != nil {
		rep = Report{Verdict: VerdictError, Reason: "could not build the queries: " + err.Error(), Score: nan, Alpha: Float(r.Template.alpha())}
	} else {
		rep = Judge(&r.Template, obs)
	}
	if err := r.Record(plan.Step, now, plan.Window, rep); err != nil {
		return changed, err
	}
	return true, nil
}
