package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func runTemplate(s Schedule) *Template {
	return &Template{
		Name:     "run",
		Metrics:  []Metric{{Name: "err", Kind: KindRatio, Numerator: "e{ {{.scope}} }", Denominator: "r{ {{.scope}} }", Margin: Margin{Relative: 0.1}, Critical: true}},
		Schedule: s,
	}
}

func runArgs() Args { return Args{BaselineScope: "b", CanaryScope: "c"} }

func newRun(t *testing.T, s Schedule) *Run {
	t.Helper()
	r, err := NewRun("r1", runTemplate(s), runArgs(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func report(v Verdict) Report { return Report{Verdict: v, Reason: "because " + string(v)} }

// step runs the next due measurement at now with the given verdict.
func step(t *testing.T, r *Run, now time.Time, v Verdict) {
	t.Helper()
	r.Advance(now)
	p, ok := r.Due(now)
	if !ok {
		t.Fatalf("nothing due at %v (phase %s, next %v)", now.Sub(t0), r.Phase, r.NextAt.Sub(t0))
	}
	if err := r.Record(p.Step, now, p.Window, report(v)); err != nil {
		t.Fatal(err)
	}
}

const minute = time.Minute

func TestRunLifecycle(t *testing.T) {
	r := newRun(t, Schedule{Interval: Duration(minute), Warmup: Duration(2 * minute), Deadline: Duration(time.Hour)})
	if r.Phase != PhasePending || !r.NextAt.Equal(t0.Add(2*minute)) || r.NextStep != 1 {
		t.Fatalf("new run %+v", r)
	}
	if r.Advance(t0.Add(minute)) || r.Phase != PhasePending {
		t.Errorf("warm-up cut short: %s", r.Phase)
	}
	if _, ok := r.Due(t0.Add(3 * minute)); ok {
		t.Error("a pending run has a measurement due")
	}
	if !r.Advance(t0.Add(2*minute)) || r.Phase != PhaseRunning || !r.StartedAt.Equal(t0.Add(2*minute)) || !r.NextAt.Equal(t0.Add(3*minute)) {
		t.Fatalf("after warm-up %+v", r)
	}
	if _, ok := r.Due(t0.Add(2*minute + 59*time.Second)); ok {
		t.Error("due before the interval")
	}
	p, ok := r.Due(t0.Add(3 * minute))
	if !ok || p.Step != 1 || !p.Window.Start.Equal(t0.Add(2*minute)) || !p.Window.End.Equal(t0.Add(3*minute)) {
		t.Fatalf("plan %+v %v", p, ok)
	}
	if err := r.Record(1, t0.Add(3*minute), p.Window, report(VerdictInconclusive)); err != nil {
		t.Fatal(err)
	}
	if r.Phase != PhaseRunning || r.Inconclusives != 1 || !r.NextAt.Equal(t0.Add(4*minute)) {
		t.Fatalf("after an inconclusive step %+v", r)
	}
	// The growing lookback keeps its start.
	p, _ = r.Due(t0.Add(4 * minute))
	if p.Step != 2 || !p.Window.Start.Equal(t0.Add(2*minute)) {
		t.Errorf("second plan %+v", p)
	}
	if err := r.Record(2, t0.Add(4*minute), p.Window, report(VerdictPass)); err != nil {
		t.Fatal(err)
	}
	if r.Phase != PhaseSuccessful || !strings.Contains(r.Message, "measurement 2 passed: because pass") || !r.EndedAt.Equal(t0.Add(4*minute)) || !r.NextAt.IsZero() {
		t.Errorf("until decided, a pass ends the run: %+v", r)
	}
	if r.Last().Verdict != VerdictPass || len(r.Steps) != 2 {
		t.Errorf("last %+v, %d steps", r.Last(), len(r.Steps))
	}
	if err := r.Record(3, t0.Add(5*minute), Window{}, report(VerdictPass)); !errors.Is(err, ErrRunEnded) {
		t.Errorf("record after the end: %v", err)
	}
}

func TestRunOutcomes(t *testing.T) {
	limit := func(n int) *int { return &n }
	tests := []struct {
		name     string
		schedule Schedule
		verdicts []Verdict
		want     Phase
		steps    int // steps taken before the end
		frag     string
	}{
		{"count reached with a pass", Schedule{Count: 3}, []Verdict{VerdictInconclusive, VerdictPass, VerdictPass}, PhaseSuccessful, 3, "measurement 3 of 3 passed"},
		{"count reached undecided", Schedule{Count: 2}, []Verdict{VerdictPass, VerdictInconclusive}, PhaseInconclusive, 2, "all 2 measurements taken without a pass"},
		{"count reached undecided, undecided fails", Schedule{Count: 2, Undecided: OutcomeFail}, []Verdict{VerdictPass, VerdictInconclusive}, PhaseFailed, 2, "undecided: fail"},
		{"count reached on an error", Schedule{Count: 2}, []Verdict{VerdictPass, VerdictError}, PhaseError, 2, "could not be measured"},
		{"first failure fails", Schedule{Count: 5}, []Verdict{VerdictPass, VerdictFail}, PhaseFailed, 2, "measurement 2 because fail"},
		{"failure limit tolerates one", Schedule{Count: 5, FailureLimit: 1}, []Verdict{VerdictFail, VerdictPass, VerdictFail}, PhaseFailed, 3, "measurement 3"},
		{"failure within the limit, then passes", Schedule{Count: 3, FailureLimit: 1}, []Verdict{VerdictFail, VerdictPass, VerdictPass}, PhaseSuccessful, 3, "passed"},
		{"default consecutive error limit is 4", Schedule{Count: 10}, []Verdict{VerdictError, VerdictError, VerdictError, VerdictError, VerdictError}, PhaseError, 5, "5 measurement errors in a row exceed the limit of 4"},
		{"errors reset by a good step", Schedule{Count: 6, ConsecutiveErrorLimit: limit(1)}, []Verdict{VerdictError, VerdictInconclusive, VerdictError, VerdictInconclusive, VerdictError, VerdictError}, PhaseError, 6, "2 measurement errors in a row"},
		{"zero error limit", Schedule{Count: 6, ConsecutiveErrorLimit: limit(0)}, []Verdict{VerdictError}, PhaseError, 1, "1 measurement errors in a row"},
		{"inconclusive limit", Schedule{Count: 10, InconclusiveLimit: limit(2)}, []Verdict{VerdictInconclusive, VerdictInconclusive, VerdictInconclusive}, PhaseInconclusive, 3, "3 inconclusive measurements exceed the limit of 2"},
		{"unknown verdict counts as an error", Schedule{Count: 10, ConsecutiveErrorLimit: limit(0)}, []Verdict{"maybe"}, PhaseError, 1, "errors in a row"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.schedule
			s.Interval = Duration(minute)
			r := newRun(t, s)
			now := t0
			for i, v := range tc.verdicts {
				now = now.Add(minute)
				if r.Phase.Terminal() {
					t.Fatalf("ended after %d steps: %s %q", i, r.Phase, r.Message)
				}
				step(t, r, now, v)
			}
			if r.Phase != tc.want || len(r.Steps) != tc.steps || !strings.Contains(r.Message, tc.frag) {
				t.Errorf("phase %s after %d steps, message %q; want %s after %d with %q", r.Phase, len(r.Steps), r.Message, tc.want, tc.steps, tc.frag)
			}
		})
	}
}

func TestRunDeadline(t *testing.T) {
	for _, tc := range []struct {
		undecided Outcome
		want      Phase
	}{{"", PhaseInconclusive}, {OutcomeFail, PhaseFailed}} {
		t.Run(string(tc.want), func(t *testing.T) {
			r := newRun(t, Schedule{Interval: Duration(minute), Deadline: Duration(10 * minute), Undecided: tc.undecided})
			now := t0
			for range 9 {
				now = now.Add(minute)
				step(t, r, now, VerdictInconclusive)
			}
			if r.Advance(t0.Add(10*minute - time.Second)) {
				t.Error("changed before the deadline")
			}
			if !r.Advance(t0.Add(10*minute)) || r.Phase != tc.want || !strings.Contains(r.Message, "deadline 10m0s passed without a decision") {
				t.Errorf("at the deadline: %s %q", r.Phase, r.Message)
			}
			if _, ok := r.Due(t0.Add(11 * minute)); ok {
				t.Error("a measurement is due after the end")
			}
		})
	}
	// A run still warming up at its deadline ends too.
	r := newRun(t, Schedule{Interval: Duration(minute), Warmup: Duration(5 * minute), Deadline: Duration(7 * minute)})
	r.Advance(t0.Add(time.Hour))
	if r.Phase != PhaseInconclusive {
		t.Errorf("late first check: %s", r.Phase)
	}
}

func TestRunCancelAndStaleSteps(t *testing.T) {
	r := newRun(t, Schedule{Interval: Duration(minute), Count: 5})
	if err := r.Record(1, t0, Window{}, report(VerdictPass)); !errors.Is(err, ErrNotDue) {
		t.Errorf("record while pending: %v", err)
	}
	step(t, r, t0.Add(minute), VerdictInconclusive)
	// Another executor already recorded step 1: recording it again changes
	// nothing.
	before, _ := json.Marshal(r)
	if err := r.Record(1, t0.Add(2*minute), Window{}, report(VerdictFail)); !errors.Is(err, ErrStaleStep) {
		t.Errorf("duplicate step: %v", err)
	}
	if err := r.Record(3, t0.Add(2*minute), Window{}, report(VerdictFail)); !errors.Is(err, ErrStaleStep) {
		t.Errorf("skipped step: %v", err)
	}
	if after, _ := json.Marshal(r); string(after) != string(before) {
		t.Error("a stale record changed the run")
	}
	if err := r.Cancel(t0.Add(90*time.Second), ""); err != nil || r.Phase != PhaseCancelled || r.Message != "cancelled" {
		t.Errorf("cancel: %v %s %q", err, r.Phase, r.Message)
	}
	if err := r.Cancel(t0.Add(2*minute), "again"); !errors.Is(err, ErrRunEnded) {
		t.Errorf("second cancel: %v", err)
	}
	if r.Advance(t0.Add(time.Hour)) {
		t.Error("an ended run advanced")
	}
}

// A late executor measures once, then resumes the schedule at the next slot
// rather than catching up on the ones missed.
func TestRunSkipsMissedSlots(t *testing.T) {
	r := newRun(t, Schedule{Interval: Duration(minute), Count: 10})
	late := t0.Add(7*minute + 20*time.Second)
	step(t, r, late, VerdictInconclusive)
	if !r.NextAt.Equal(t0.Add(8*minute)) || r.NextStep != 2 {
		t.Errorf("next %v step %d, want 8m and 2", r.NextAt.Sub(t0), r.NextStep)
	}
	if _, ok := r.Due(t0.Add(7*minute + 59*time.Second)); ok {
		t.Error("due again before the next slot")
	}
}

func TestRunSlidingLookback(t *testing.T) {
	r := newRun(t, Schedule{Interval: Duration(minute), Count: 10, Lookback: Lookback{Mode: LookbackSliding, Window: Duration(3 * minute)}})
	r.Advance(t0)
	p, _ := r.Due(t0.Add(minute))
	if !p.Window.Start.Equal(t0) {
		t.Errorf("early window starts %v, want the run's start", p.Window.Start.Sub(t0))
	}
	for i := 1; i <= 4; i++ {
		step(t, r, t0.Add(time.Duration(i)*minute), VerdictInconclusive)
	}
	p, _ = r.Due(t0.Add(5 * minute))
	if !p.Window.Start.Equal(t0.Add(2*minute)) || !p.Window.End.Equal(t0.Add(5*minute)) {
		t.Errorf("sliding window %v–%v, want 2m–5m", p.Window.Start.Sub(t0), p.Window.End.Sub(t0))
	}
}

func TestNewRunErrors(t *testing.T) {
	bad := runTemplate(Schedule{})
	if _, err := NewRun("x", bad, runArgs(), t0); err == nil || !hasProblem(problemsOf(t, err), "schedule.interval", "required") {
		t.Errorf("invalid template: %v", err)
	}
	tpl := readTemplate(t)
	if _, err := NewRun("x", tpl, Args{BaselineScope: "a", CanaryScope: "b"}, t0); err == nil || !hasProblem(problemsOf(t, err), "values.service", "required") {
		t.Errorf("missing argument: %v", err)
	}
}

// A run keeps its own copy of the template, and survives a JSON round trip
// mid-flight — how another replica resumes it.
func TestRunSnapshotAndResume(t *testing.T) {
	tpl := readTemplate(t)
	args := httpArgs()
	r, err := NewRun("r", tpl, args, t0)
	if err != nil {
		t.Fatal(err)
	}
	tpl.Metrics[0].Name = "renamed"
	tpl.Score.Groups["errors"] = 100
	args.Values["service"] = "other"
	if r.Template.Metrics[0].Name != "error-rate" || r.Template.Score.Groups["errors"] != 3 || r.Args.Values["service"] != "checkout" {
		t.Fatal("the run shares state with its template or arguments")
	}
	r.Advance(t0.Add(2 * minute))
	now := t0.Add(3 * minute)
	if _, err := r.Execute(context.Background(), workload(1), now); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var resumed Run
	if err := json.Unmarshal(data, &resumed); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	again, _ := json.Marshal(&resumed)
	if string(again) != string(data) {
		t.Fatalf("round trip differs:\n%s\n%s", data, again)
	}
	if err := resumed.Record(1, now, Window{}, report(VerdictPass)); !errors.Is(err, ErrStaleStep) {
		t.Errorf("resumed run re-recorded step 1: %v", err)
	}
	if changed, err := resumed.Execute(context.Background(), workload(3), now.Add(minute)); err != nil || !changed {
		t.Fatalf("resumed execute: %v %v", changed, err)
	}
	if resumed.Phase != PhaseFailed || !strings.Contains(resumed.Message, "error-rate") || resumed.Steps[1].Number != 2 {
		t.Errorf("resumed run: %s %q", resumed.Phase, resumed.Message)
	}
}

// flakySource fails while down is set.
type flakySource struct {
	down atomic.Bool
	*fakeSource
}

func (f *flakySource) Instant(ctx context.Context, q string, at time.Time) ([]Element, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("%w: connection refused", ErrSource)
	}
	return f.fakeSource.Instant(ctx, q, at)
}

func (f *flakySource) Range(ctx context.Context, q string, s, e time.Time, st time.Duration) ([]Series, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("%w: connection refused", ErrSource)
	}
	return f.fakeSource.Range(ctx, q, s, e, st)
}

// drive executes a run on a fake clock until it ends or until stop, sleeping
// to each next due time as a scheduler would.
func drive(ctx context.Context, r *Run, src MetricSource, stop time.Time) error {
	for !r.Phase.Terminal() && time.Now().Before(stop) {
		if _, err := r.Execute(ctx, src, time.Now()); err != nil {
			return err
		}
		if r.Phase.Terminal() {
			break
		}
		next := r.NextAt
		if dl := r.Deadline(); !dl.IsZero() && dl.Before(next) {
			next = dl
		}
		time.Sleep(time.Until(next))
	}
	return nil
}

func TestRunExecuteOnAFakeClock(t *testing.T) {
	tests := []struct {
		name      string
		errFactor float64
		outage    [2]int // measurements (from 1) during which the source is down
		want      Phase
		frag      string
	}{
		{"healthy canary passes", 1, [2]int{}, PhaseSuccessful, "passed"},
		{"3x error canary fails naming the metric", 3, [2]int{}, PhaseFailed, "error-rate"},
		{"source down mid-run, then back: the run continues", 1, [2]int{1, 3}, PhaseSuccessful, "passed"},
		{"source down for good: error, never a pass", 1, [2]int{1, 99}, PhaseError, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tpl := readTemplate(t)
				tpl.Metrics[2].NoData = "" // the fake gauge data is fine; keep defaults
				src := &flakySource{fakeSource: workload(tc.errFactor)}
				start := time.Now()
				r, err := NewRun("r", tpl, httpArgs(), start)
				if err != nil {
					t.Fatal(err)
				}
				// Toggle the outage by measurement number.
				ctx := context.Background()
				for !r.Phase.Terminal() {
					n := r.NextStep
					src.down.Store(n >= tc.outage[0] && n <= tc.outage[1] && tc.outage[1] > 0)
					if err := drive(ctx, r, src, r.NextAt.Add(time.Second)); err != nil {
						t.Fatal(err)
					}
				}
				if r.Phase != tc.want || !strings.Contains(r.Message, tc.frag) {
					t.Errorf("phase %s %q after %d steps, want %s with %q", r.Phase, r.Message, len(r.Steps), tc.want, tc.frag)
				}
				for _, s := range r.Steps {
					if s.Report.Verdict == VerdictPass && tc.outage[1] > 0 && s.Number <= tc.outage[1] {
						t.Errorf("step %d passed during the outage", s.Number)
					}
				}
				if tc.outage[1] == 3 {
					// The gauge needs 20 aligned points (10 minutes at a 30s
					// step) before it can pass, so the run goes on after the
					// outage.
					if r.Errors != 3 || r.Steps[3].Report.Verdict == VerdictError || len(r.Steps) <= 3 {
						t.Errorf("outage of 3: %d errors over %d steps", r.Errors, len(r.Steps))
					}
				}
				// Warm-up is honoured: the first window starts after it.
				if w := r.Steps[0].Window; !w.Start.Equal(start.Add(2 * minute)) {
					t.Errorf("first window starts %v after creation", w.Start.Sub(start))
				}
			})
		})
	}
}
