// Package canarytest is the conformance suite every canary.Store backend
// runs (the same tests against the embedded store, a real Redis, or anything
// else that claims to be a canary.Store), an in-memory store for tests of the
// store's callers, and small fixtures.
package canarytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// T0 is the suite's reference time.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Template returns a valid template named name: one critical ratio metric
// over {{ .scope }}, measured every interval, count times, no warm-up.
func Template(name string, interval time.Duration, count int) *canary.Template {
	return &canary.Template{
		Name:        name,
		Description: "test template " + name,
		Metrics: []canary.Metric{{
			Name:        "errors",
			Kind:        canary.KindRatio,
			Numerator:   `sum(increase(errors_total{ {{ .scope }} }[{{ .window }}]))`,
			Denominator: `sum(increase(requests_total{ {{ .scope }} }[{{ .window }}]))`,
			Margin:      canary.Margin{Relative: 0.2},
			Critical:    true,
		}},
		Schedule: canary.Schedule{Interval: canary.Duration(interval), Count: count},
	}
}

// Args are run arguments that fit Template.
func Args() canary.Args {
	return canary.Args{BaselineScope: `track="baseline"`, CanaryScope: `track="canary"`}
}

// NewRun returns a pending run of Template(tpl, time.Minute, 5) created at.
func NewRun(t testing.TB, id, tpl string, at time.Time) *canary.Run {
	t.Helper()
	r, err := canary.NewRun(id, Template(tpl, time.Minute, 5), Args(), at)
	if err != nil {
		t.Fatalf("NewRun: %v", err)
	}
	return r
}

// Run runs the suite. newStore must return an empty store of its own each
// time it is called; the suite calls it once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) canary.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s canary.Store)
	}{
		{"Templates", testTemplates},
		{"TemplateVersionsSurviveDelete", testTemplateDelete},
		{"Runs", testRuns},
		{"RunRoundTrip", testRunRoundTrip},
		{"RunListing", testRunListing},
		{"DueRuns", testDueRuns},
		{"Measurements", testMeasurements},
		{"Leases", testLeases},
		{"FencedWrites", testFencing},
		{"BadInput", testBadInput},
		{"ConcurrentExecutors", testConcurrentExecutors},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func mustPut(t *testing.T, s canary.Store, tpl *canary.Template, o canary.TemplateWrite) canary.StoredTemplate {
	t.Helper()
	st, err := s.PutTemplate(t.Context(), tpl, o)
	if err != nil {
		t.Fatalf("PutTemplate(%s, %+v): %v", tpl.Name, o, err)
	}
	return st
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testTemplates(t *testing.T, s canary.Store) {
	ctx := t.Context()
	if list, err := s.Templates(ctx); err != nil || len(list) != 0 {
		t.Fatalf("Templates on an empty store = %v, %v; want none", list, err)
	}
	a := Template("alpha", time.Minute, 3)
	a.Version = 42 // ignored: the store numbers versions
	st := mustPut(t, s, a, canary.TemplateWrite{Create: true, At: T0})
	if st.Version != 1 || st.Name != "alpha" || !st.UpdatedAt.Equal(T0) {
		t.Errorf("created template = v%d %q at %v; want v1 alpha at %v", st.Version, st.Name, st.UpdatedAt, T0)
	}
	want := *a
	want.Version = 1
	if got := jsonOf(t, st.Template); got != jsonOf(t, &want) {
		t.Errorf("stored template differs from the one put:\n got %s\nwant %s", got, jsonOf(t, &want))
	}
	if a.Version != 42 {
		t.Errorf("PutTemplate changed its argument's version to %d", a.Version)
	}
	b := Template("beta", time.Minute, 3)
	mustPut(t, s, b, canary.TemplateWrite{At: T0}) // create through replace
	a2 := Template("alpha", 2*time.Minute, 4)
	st2 := mustPut(t, s, a2, canary.TemplateWrite{IfVersion: 1, At: T0.Add(time.Hour)})
	if st2.Version != 2 || st2.Schedule.Count != 4 || !st2.UpdatedAt.Equal(T0.Add(time.Hour)) {
		t.Errorf("replaced template = v%d count %d at %v; want v2 count 4", st2.Version, st2.Schedule.Count, st2.UpdatedAt)
	}
	refused := []struct {
		name string
		tpl  string
		o    canary.TemplateWrite
		want error
	}{
		{"create over an existing one", "alpha", canary.TemplateWrite{Create: true}, canary.ErrExists},
		{"stale version", "alpha", canary.TemplateWrite{IfVersion: 1}, canary.ErrConflict},
		{"future version", "alpha", canary.TemplateWrite{IfVersion: 3}, canary.ErrConflict},
		{"version of a missing one", "gamma", canary.TemplateWrite{IfVersion: 1}, canary.ErrNotFound},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.PutTemplate(ctx, Template(tc.tpl, 5*time.Minute, 9), tc.o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("PutTemplate: err = %v; want %v", err, tc.want)
			}
			if got, err := s.Template(ctx, "alpha"); err != nil || got.Version != 2 || got.Schedule.Count != 4 {
				t.Errorf("after a refused put, alpha = v%d count %d (%v); want v2 count 4 unchanged", got.Version, got.Schedule.Count, err)
			}
		})
	}
	if _, err := s.Template(ctx, "gamma"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("Template(gamma) err = %v; want ErrNotFound (a refused put creates nothing)", err)
	}
	list, err := s.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range list {
		names = append(names, fmt.Sprintf("%s@%d", st.Name, st.Version))
	}
	if want := []string{"alpha@2", "beta@1"}; !slices.Equal(names, want) {
		t.Errorf("Templates = %v; want %v (sorted by name, current versions)", names, want)
	}
}

func testTemplateDelete(t *testing.T, s canary.Store) {
	ctx := t.Context()
	mustPut(t, s, Template("alpha", time.Minute, 1), canary.TemplateWrite{At: T0})
	mustPut(t, s, Template("alpha", time.Minute, 2), canary.TemplateWrite{At: T0})
	if err := s.DeleteTemplate(ctx, "alpha", 1); !errors.Is(err, canary.ErrConflict) {
		t.Errorf("DeleteTemplate at a stale version: err = %v; want ErrConflict", err)
	}
	if err := s.DeleteTemplate(ctx, "alpha", 2); err != nil {
		t.Fatalf("DeleteTemplate: %v", err)
	}
	if err := s.DeleteTemplate(ctx, "alpha", 0); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("deleting again: err = %v; want ErrNotFound", err)
	}
	if _, err := s.Template(ctx, "alpha"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("Template after delete: err = %v; want ErrNotFound", err)
	}
	if list, err := s.Templates(ctx); err != nil || len(list) != 0 {
		t.Errorf("Templates after delete = %d, %v; want none", len(list), err)
	}
	st := mustPut(t, s, Template("alpha", time.Minute, 3), canary.TemplateWrite{Create: true, At: T0})
	if st.Version != 3 {
		t.Errorf("re-created template is at version %d; want 3 (versions never repeat, so a run's snapshot stays unambiguous)", st.Version)
	}
}

func mustCreateRun(t *testing.T, s canary.Store, r *canary.Run) canary.StoredRun {
	t.Helper()
	sr, err := s.CreateRun(t.Context(), r)
	if err != nil {
		t.Fatalf("CreateRun(%s): %v", r.ID, err)
	}
	return sr
}

func testRuns(t *testing.T, s canary.Store) {
	ctx := t.Context()
	r := NewRun(t, "run-1", "alpha", T0)
	sr := mustCreateRun(t, s, r)
	if sr.Version != 1 || sr.ID != "run-1" || sr.Phase != canary.PhasePending {
		t.Fatalf("CreateRun = %s v%d %s; want run-1 v1 Pending", sr.ID, sr.Version, sr.Phase)
	}
	if _, err := s.CreateRun(ctx, NewRun(t, "run-1", "beta", T0)); !errors.Is(err, canary.ErrExists) {
		t.Errorf("creating run-1 twice: err = %v; want ErrExists", err)
	}
	if got, err := s.Run(ctx, "run-1"); err != nil || got.Template.Name != "alpha" || got.Version != 1 {
		t.Errorf("after a refused create, run-1 = %s v%d (%v); want the first, at v1", got.Template.Name, got.Version, err)
	}
	if _, err := s.Run(ctx, "ghost"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("Run(ghost): err = %v; want ErrNotFound", err)
	}

	// An update at the read version moves it on; stale ones change nothing.
	sr.Run.Advance(T0)
	up, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: 1})
	if err != nil || up.Version != 2 || up.Phase != canary.PhaseRunning {
		t.Fatalf("UpdateRun = v%d %s, %v; want v2 Running", up.Version, up.Phase, err)
	}
	stale := []struct {
		name    string
		id      string
		version int64
		want    error
	}{
		{"stale version", "run-1", 1, canary.ErrConflict},
		{"future version", "run-1", 3, canary.ErrConflict},
		{"missing run", "ghost", 1, canary.ErrNotFound},
	}
	for _, tc := range stale {
		t.Run(tc.name, func(t *testing.T) {
			r := sr.Run
			r.ID = tc.id
			_ = r.Cancel(T0, "stale writer")
			if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &r, IfVersion: tc.version}); !errors.Is(err, tc.want) {
				t.Fatalf("UpdateRun: err = %v; want %v", err, tc.want)
			}
			if got, err := s.Run(ctx, "run-1"); err != nil || got.Version != 2 || got.Phase != canary.PhaseRunning {
				t.Errorf("after a refused update run-1 = v%d %s (%v); want v2 Running", got.Version, got.Phase, err)
			}
		})
	}
}

// testRunRoundTrip: a run with evidence (NaN, infinities, nested data)
// comes back exactly, from Run and from Measurements.
func testRunRoundTrip(t *testing.T, s canary.Store) {
	ctx := t.Context()
	r := NewRun(t, "trip", "alpha", T0)
	sr := mustCreateRun(t, s, r)
	l, err := s.AcquireLease(ctx, "trip", "replica-a", T0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sr.Run.Advance(T0.Add(time.Minute))
	plan, ok := sr.Run.Due(T0.Add(time.Minute))
	if !ok {
		t.Fatalf("no step due")
	}
	rep := canary.Report{
		Verdict: canary.VerdictInconclusive, Reason: "too few requests: 40 < 100 (ünïcödé ✓)", Score: canary.Float(math.NaN()), Alpha: 0.05,
		Metrics: []canary.MetricResult{{
			Metric: "errors", Kind: canary.KindRatio, Verdict: canary.VerdictInconclusive, Group: "default", Weight: 1,
			Reason: "not enough data",
			Evidence: canary.Evidence{
				Baseline: &canary.ArmEstimate{Value: 0.01, N: 40}, Canary: &canary.ArmEstimate{Value: 0.02, N: 38},
				Effect: 1, Lower: canary.Float(math.Inf(-1)), Upper: canary.Float(math.Inf(1)), Unit: canary.UnitRelative,
				Margin: canary.Margin{Relative: 0.2}, Boundary: 0.2, EValue: 1.5, PValue: 0.66, PAdjusted: 0.66, PassPValue: 1,
				MDE: canary.Float(math.NaN()), Needed: 1234,
			},
		}},
	}
	if err := sr.Run.Record(plan.Step, T0.Add(time.Minute), plan.Window, rep); err != nil {
		t.Fatal(err)
	}
	step := sr.Run.Steps[len(sr.Run.Steps)-1]
	up, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version, Token: l.Token, Step: &step})
	if err != nil {
		t.Fatalf("UpdateRun with a step: %v", err)
	}
	got, err := s.Run(ctx, "trip")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := jsonOf(t, got.Run), jsonOf(t, &sr.Run); g != w {
		t.Errorf("stored run differs:\n got %s\nwant %s", g, w)
	}
	if g, w := jsonOf(t, up.Run), jsonOf(t, &sr.Run); g != w {
		t.Errorf("UpdateRun's result differs from the run written:\n got %s\nwant %s", g, w)
	}
	if e := got.Steps[0].Report.Metrics[0].Evidence; !math.IsNaN(float64(e.MDE)) || !math.IsInf(float64(e.Lower), -1) || !math.IsInf(float64(e.Upper), 1) {
		t.Errorf("non-finite evidence came back as MDE %v, interval [%v, %v]", e.MDE, e.Lower, e.Upper)
	}
	ms, err := s.Measurements(ctx, "trip", 0, 0)
	if err != nil || len(ms) != 1 {
		t.Fatalf("Measurements = %d, %v; want 1", len(ms), err)
	}
	if g, w := jsonOf(t, ms[0]), jsonOf(t, step); g != w {
		t.Errorf("stored measurement differs:\n got %s\nwant %s", g, w)
	}
}

func testRunListing(t *testing.T, s canary.Store) {
	ctx := t.Context()
	// Eight runs a second apart; the odd ones of template "odd", every third cancelled.
	var all []string
	for i := range 8 {
		tpl := "even"
		if i%2 == 1 {
			tpl = "odd"
		}
		id := fmt.Sprintf("run-%d", i)
		sr := mustCreateRun(t, s, NewRun(t, id, tpl, T0.Add(time.Duration(i)*time.Second)))
		if i%3 == 0 {
			_ = sr.Run.Cancel(T0, "test")
			if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version}); err != nil {
				t.Fatal(err)
			}
		}
		all = append([]string{id}, all...) // newest first
	}
	tests := []struct {
		name string
		q    canary.RunQuery
		want []string
	}{
		{"everything", canary.RunQuery{}, all},
		{"by template", canary.RunQuery{Template: "odd"}, []string{"run-7", "run-5", "run-3", "run-1"}},
		{"by phase", canary.RunQuery{Phases: []canary.Phase{canary.PhaseCancelled}}, []string{"run-6", "run-3", "run-0"}},
		{"by template and phases", canary.RunQuery{Template: "even", Phases: []canary.Phase{canary.PhasePending, canary.PhaseRunning}}, []string{"run-4", "run-2"}},
		{"no match", canary.RunQuery{Template: "none"}, nil},
	}
	for _, tc := range tests {
		for _, limit := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				q := tc.q
				q.Limit = limit
				var got []string
				for pages := 0; ; pages++ {
					if pages > 20 {
						t.Fatalf("paging does not end: %v", got)
					}
					page, err := s.Runs(ctx, q)
					if err != nil {
						t.Fatalf("Runs(%+v): %v", q, err)
					}
					if limit > 0 && len(page.Runs) > limit {
						t.Fatalf("page of %d runs; limit %d", len(page.Runs), limit)
					}
					for _, r := range page.Runs {
						got = append(got, r.ID)
						if r.Version < 1 || r.Template.Name == "" {
							t.Errorf("listed run %s lacks its version or template", r.ID)
						}
					}
					if page.Next == "" {
						break
					}
					q.Cursor = page.Next
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("Runs = %v; want %v", got, tc.want)
				}
			})
		}
	}
}

func testDueRuns(t *testing.T, s canary.Store) {
	ctx := t.Context()
	// a: due at T0+1m (its first step); b: warm-up until T0+2m;
	// c: ended; d: due at T0+1m too, created later.
	a := NewRun(t, "a", "t", T0)
	a.Advance(T0)
	mustCreateRun(t, s, a)
	b, err := canary.NewRun("b", func() *canary.Template {
		tpl := Template("t", time.Minute, 5)
		tpl.Schedule.Warmup = canary.Duration(2 * time.Minute)
		return tpl
	}(), Args(), T0)
	if err != nil {
		t.Fatal(err)
	}
	mustCreateRun(t, s, b)
	c := NewRun(t, "c", "t", T0)
	_ = c.Cancel(T0, "done")
	mustCreateRun(t, s, c)
	d := NewRun(t, "d", "t", T0)
	d.Advance(T0)
	mustCreateRun(t, s, d)
	tests := []struct {
		name  string
		now   time.Time
		limit int
		want  []string
	}{
		{"before anything", T0.Add(-time.Second), 10, []string{}},
		{"pending runs wake at the end of warm-up", T0, 10, []string{}},
		{"first steps due", T0.Add(time.Minute), 10, []string{"a", "d"}},
		{"limit", T0.Add(time.Minute), 1, []string{"a"}},
		{"warm-up over", T0.Add(2 * time.Minute), 10, []string{"a", "d", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.DueRuns(ctx, tc.now, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("DueRuns(%v) = %v; want %v", tc.now.Sub(T0), got, tc.want)
			}
		})
	}
	// Updating a run re-indexes it: a's next step moves to T0+2m, and a
	// cancelled d leaves the index.
	sa, _ := s.Run(ctx, "a")
	l, err := s.AcquireLease(ctx, "a", "me", T0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := sa.Run.Due(T0.Add(time.Minute))
	if err := sa.Run.Record(plan.Step, T0.Add(time.Minute), plan.Window, canary.Report{Verdict: canary.VerdictInconclusive}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sa.Run, IfVersion: sa.Version, Token: l.Token}); err != nil {
		t.Fatal(err)
	}
	sd, _ := s.Run(ctx, "d")
	_ = sd.Run.Cancel(T0, "no")
	if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sd.Run, IfVersion: sd.Version}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		now  time.Time
		want []string
	}{
		{T0.Add(time.Minute + 59*time.Second), []string{}},
		{T0.Add(2 * time.Minute), []string{"a", "b"}},
	} {
		got, err := s.DueRuns(ctx, tc.now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("after updates, DueRuns(%v) = %v; want %v", tc.now.Sub(T0), got, tc.want)
		}
	}
}

// recordNext measures nothing: it records verdict v as sr's next step
// under lease l and returns what the store answered.
func recordNext(t *testing.T, s canary.Store, sr canary.StoredRun, l canary.Lease, now time.Time, v canary.Verdict) (canary.StoredRun, *canary.Step, error) {
	t.Helper()
	sr.Run.Advance(now)
	plan, ok := sr.Run.Due(now)
	if !ok {
		t.Fatalf("run %s: nothing due at %v", sr.ID, now.Sub(T0))
	}
	if err := sr.Run.Record(plan.Step, now, plan.Window, canary.Report{Verdict: v, Reason: fmt.Sprintf("step %d", plan.Step), Score: 50}); err != nil {
		t.Fatal(err)
	}
	step := sr.Run.Steps[len(sr.Run.Steps)-1]
	out, err := s.UpdateRun(t.Context(), canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version, Token: l.Token, Step: &step})
	return out, &step, err
}

func testMeasurements(t *testing.T, s canary.Store) {
	ctx := t.Context()
	r := NewRun(t, "m", "alpha", T0)
	r.Template.Schedule.Count = 20
	sr := mustCreateRun(t, s, r)
	if ms, err := s.Measurements(ctx, "m", 0, 0); err != nil || len(ms) != 0 {
		t.Fatalf("Measurements of a new run = %v, %v; want none", ms, err)
	}
	l, err := s.AcquireLease(ctx, "m", "me", T0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 7; i++ {
		if sr, _, err = recordNext(t, s, sr, l, T0.Add(time.Duration(i)*time.Minute), canary.VerdictInconclusive); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	tests := []struct {
		after, limit int
		want         []int
	}{
		{0, 0, []int{1, 2, 3, 4, 5, 6, 7}},
		{0, 3, []int{1, 2, 3}},
		{3, 3, []int{4, 5, 6}},
		{6, 3, []int{7}},
		{7, 3, nil},
		{-5, 2, []int{1, 2}},
	}
	for _, tc := range tests {
		ms, err := s.Measurements(ctx, "m", tc.after, tc.limit)
		if err != nil {
			t.Fatalf("Measurements(after %d, limit %d): %v", tc.after, tc.limit, err)
		}
		var got []int
		for _, m := range ms {
			got = append(got, m.Number)
			if m.Report.Reason != fmt.Sprintf("step %d", m.Number) || !m.At.Equal(T0.Add(time.Duration(m.Number)*time.Minute)) {
				t.Errorf("step %d = %q at %v; want its own report and time", m.Number, m.Report.Reason, m.At)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Measurements(after %d, limit %d) = %v; want %v", tc.after, tc.limit, got, tc.want)
		}
	}
	// The same step again — a second executor that measured in parallel —
	// is refused and changes nothing.
	stale, _ := s.Run(ctx, "m")
	stale.Run.NextStep = 7 // pretend step 7 is still to come
	stale.Run.Steps = nil
	if err := stale.Run.Record(7, T0.Add(7*time.Minute), canary.Window{}, canary.Report{Verdict: canary.VerdictPass}); err != nil {
		t.Fatal(err)
	}
	dup := stale.Run.Steps[0]
	if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &stale.Run, IfVersion: stale.Version, Token: l.Token, Step: &dup}); !errors.Is(err, canary.ErrStepRecorded) {
		t.Errorf("recording step 7 twice: err = %v; want ErrStepRecorded", err)
	}
	after, _ := s.Run(ctx, "m")
	if after.Version != stale.Version || after.NextStep != 8 {
		t.Errorf("after a refused duplicate, run = v%d next %d; want v%d next 8", after.Version, after.NextStep, stale.Version)
	}
	if ms, _ := s.Measurements(ctx, "m", 6, 0); len(ms) != 1 || ms[0].Report.Verdict != canary.VerdictInconclusive {
		t.Errorf("step 7 after a refused duplicate = %+v; want the first recording", ms)
	}
	if _, err := s.Measurements(ctx, "ghost", 0, 0); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("Measurements(ghost): err = %v; want ErrNotFound", err)
	}
}

func testLeases(t *testing.T, s canary.Store) {
	ctx := t.Context()
	mustCreateRun(t, s, NewRun(t, "l", "alpha", T0))
	if _, err := s.AcquireLease(ctx, "ghost", "a", T0, time.Minute); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("AcquireLease(ghost): err = %v; want ErrNotFound", err)
	}
	a1, err := s.AcquireLease(ctx, "l", "a", T0, time.Minute)
	if err != nil || a1.Token != 1 || a1.Owner != "a" || a1.RunID != "l" || !a1.ExpiresAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("first AcquireLease = %+v, %v; want token 1 for a until T0+1m", a1, err)
	}
	again, err := s.AcquireLease(ctx, "l", "a", T0.Add(10*time.Second), time.Minute)
	if err != nil || again.Token != 1 || !again.ExpiresAt.Equal(T0.Add(70*time.Second)) {
		t.Errorf("re-acquiring one's own lease = %+v, %v; want token 1 extended to T0+70s", again, err)
	}
	if _, err := s.AcquireLease(ctx, "l", "b", T0.Add(69*time.Second), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("b acquiring a live lease: err = %v; want ErrLeaseHeld", err)
	}
	// a's lease lapses without anyone taking it: a may renew it.
	renewed, err := s.RenewLease(ctx, a1, T0.Add(2*time.Minute), time.Minute)
	if err != nil || renewed.Token != 1 || !renewed.ExpiresAt.Equal(T0.Add(3*time.Minute)) {
		t.Errorf("renewing a lapsed, untaken lease = %+v, %v; want token 1 until T0+3m", renewed, err)
	}
	// Once it lapses, b takes over with a higher token, and a has lost it.
	b2, err := s.AcquireLease(ctx, "l", "b", T0.Add(3*time.Minute), time.Minute)
	if err != nil || b2.Token != 2 || b2.Owner != "b" {
		t.Fatalf("b acquiring a lapsed lease = %+v, %v; want token 2", b2, err)
	}
	if _, err := s.RenewLease(ctx, a1, T0.Add(3*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("a renewing after b took over: err = %v; want ErrLeaseLost", err)
	}
	if _, err := s.AcquireLease(ctx, "l", "a", T0.Add(3*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("a re-acquiring b's live lease: err = %v; want ErrLeaseHeld", err)
	}
	// Releasing a stale lease does nothing; releasing the current one frees it.
	if err := s.ReleaseLease(ctx, a1); err != nil {
		t.Errorf("releasing a stale lease: %v; want nil", err)
	}
	if _, err := s.AcquireLease(ctx, "l", "c", T0.Add(3*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("a stale release freed b's lease: err = %v", err)
	}
	if err := s.ReleaseLease(ctx, b2); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if _, err := s.RenewLease(ctx, b2, T0.Add(3*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("renewing a released lease: err = %v; want ErrLeaseLost", err)
	}
	c3, err := s.AcquireLease(ctx, "l", "c", T0.Add(3*time.Minute), time.Minute)
	if err != nil || c3.Token != 3 {
		t.Errorf("acquiring a released lease = %+v, %v; want token 3", c3, err)
	}
	// The same owner after its own release gets a new token too.
	_ = s.ReleaseLease(ctx, c3)
	c4, err := s.AcquireLease(ctx, "l", "c", T0.Add(3*time.Minute), time.Minute)
	if err != nil || c4.Token != 4 {
		t.Errorf("re-acquiring after one's own release = %+v, %v; want token 4", c4, err)
	}
}

func testFencing(t *testing.T, s canary.Store) {
	ctx := t.Context()
	sr := mustCreateRun(t, s, NewRun(t, "f", "alpha", T0))
	a, err := s.AcquireLease(ctx, "f", "a", T0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// a stalls; its lease lapses and b takes over and records step 1.
	b, err := s.AcquireLease(ctx, "f", "b", T0.Add(2*time.Minute), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	byB, _, err := recordNext(t, s, sr, b, T0.Add(2*time.Minute), canary.VerdictInconclusive)
	if err != nil {
		t.Fatalf("b recording step 1: %v", err)
	}
	// a wakes up with step 1 measured on the version it read: fenced.
	if _, _, err := recordNext(t, s, sr, a, T0.Add(2*time.Minute), canary.VerdictPass); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("a's stale write: err = %v; want ErrLeaseLost", err)
	}
	// Even at the current version, a's token is refused.
	if _, _, err := recordNext(t, s, byB, a, T0.Add(3*time.Minute), canary.VerdictPass); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("a's write at the current version: err = %v; want ErrLeaseLost", err)
	}
	ms, _ := s.Measurements(ctx, "f", 0, 0)
	if len(ms) != 1 || ms[0].Report.Verdict != canary.VerdictInconclusive {
		t.Errorf("measurements = %+v; want only b's step 1", ms)
	}
	// A write without a token (a cancellation) needs only the version.
	cur, _ := s.Run(ctx, "f")
	_ = cur.Run.Cancel(T0.Add(3*time.Minute), "by hand")
	done, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &cur.Run, IfVersion: cur.Version})
	if err != nil || done.Phase != canary.PhaseCancelled {
		t.Fatalf("cancelling while b holds the lease = %s, %v; want Cancelled", done.Phase, err)
	}
	// b's next write, made from the version before the cancellation, conflicts.
	if _, _, err := recordNext(t, s, byB, b, T0.Add(3*time.Minute), canary.VerdictPass); !errors.Is(err, canary.ErrConflict) {
		t.Errorf("b writing over a cancellation: err = %v; want ErrConflict", err)
	}
	// After b releases, its token no longer writes.
	_ = s.ReleaseLease(ctx, b)
	if _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &done.Run, IfVersion: done.Version, Token: b.Token}); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("write with a released token: err = %v; want ErrLeaseLost", err)
	}
}

func testBadInput(t *testing.T, s canary.Store) {
	ctx := t.Context()
	sr := mustCreateRun(t, s, NewRun(t, "ok", "alpha", T0))
	step := canary.Step{Number: 1}
	bad := func(id string) *canary.Run { r := sr.Run; r.ID = id; return &r }
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"run with a brace in its ID", func() error { _, err := s.CreateRun(ctx, bad("a{b}")); return err }, "id"},
		{"run with an empty ID", func() error { _, err := s.CreateRun(ctx, bad("")); return err }, "id"},
		{"update without a run", func() error { _, err := s.UpdateRun(ctx, canary.RunUpdate{IfVersion: 1}); return err }, "run"},
		{"update without a version", func() error { _, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run}); return err }, "ifVersion"},
		{"step without a token", func() error {
			_, err := s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: 1, Step: &step})
			return err
		}, "token"},
		{"lease without an owner", func() error { _, err := s.AcquireLease(ctx, "ok", "", T0, time.Minute); return err }, "owner"},
		{"lease without a ttl", func() error { _, err := s.AcquireLease(ctx, "ok", "a", T0, 0); return err }, "ttl"},
		{"run page too large", func() error { _, err := s.Runs(ctx, canary.RunQuery{Limit: canary.MaxRunPage + 1}); return err }, "limit"},
		{"negative run page", func() error { _, err := s.Runs(ctx, canary.RunQuery{Limit: -1}); return err }, "limit"},
		{"made-up cursor", func() error { _, err := s.Runs(ctx, canary.RunQuery{Cursor: "yesterday"}); return err }, "cursor"},
		{"measurement page too large", func() error { _, err := s.Measurements(ctx, "ok", 0, canary.MaxMeasurementPage+1); return err }, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ve *canary.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 || ve.Problems[0].Field != tc.field {
				t.Fatalf("err = %v; want a *ValidationError naming %q", err, tc.field)
			}
		})
	}
	if got, err := s.Run(ctx, "ok"); err != nil || got.Version != 1 {
		t.Errorf("after bad input, run = v%d, %v; want v1 untouched", got.Version, err)
	}
	if _, err := s.Run(ctx, "a{b}"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("Run with an impossible ID: err = %v; want ErrNotFound", err)
	}
}

// testConcurrentExecutors: many executors race to execute every step of
// one run, each under a lease it acquired; every step is recorded exactly
// once and the run's counters match its measurements.
func testConcurrentExecutors(t *testing.T, s canary.Store) {
	const executors, steps = 8, 12
	ctx := t.Context()
	r := NewRun(t, "race", "alpha", T0)
	r.Template.Schedule.Count = steps
	mustCreateRun(t, s, r)
	var clock atomic.Int64 // minutes since T0: each successful step advances it
	var wins atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, executors)
	for e := range executors {
		owner := fmt.Sprintf("exec-%d", e)
		wg.Go(func() {
			for attempt := 0; attempt < 50_000; attempt++ {
				now := T0.Add(time.Duration(clock.Load()) * time.Minute)
				sr, err := s.Run(ctx, "race")
				if err != nil {
					errs <- err
					return
				}
				if sr.Phase.Terminal() {
					return
				}
				// A short ttl, often expired: takeovers happen all the time.
				l, err := s.AcquireLease(ctx, "race", owner, now, time.Millisecond)
				if errors.Is(err, canary.ErrLeaseHeld) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				next := now.Add(time.Minute)
				sr.Run.Advance(next)
				plan, ok := sr.Run.Due(next)
				if !ok {
					_ = s.ReleaseLease(ctx, l)
					continue
				}
				if err := sr.Run.Record(plan.Step, next, plan.Window, canary.Report{Verdict: canary.VerdictInconclusive, Reason: owner}); err != nil {
					errs <- err
					return
				}
				step := sr.Run.Steps[len(sr.Run.Steps)-1]
				_, err = s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version, Token: l.Token, Step: &step})
				switch {
				case err == nil:
					wins.Add(1)
					clock.Add(1)
				case errors.Is(err, canary.ErrConflict), errors.Is(err, canary.ErrLeaseLost), errors.Is(err, canary.ErrStepRecorded):
				default:
					errs <- err
					return
				}
				_ = s.ReleaseLease(ctx, l)
			}
			errs <- fmt.Errorf("%s never saw the run end", owner)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	final, err := s.Run(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := s.Measurements(ctx, "race", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, m := range ms {
		nums = append(nums, m.Number)
	}
	want := make([]int, steps)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(nums, want) || wins.Load() != steps {
		t.Errorf("measurements %v after %d acknowledged writes; want steps 1..%d, each once", nums, wins.Load(), steps)
	}
	if final.Phase != canary.PhaseInconclusive || final.Inconclusives != steps || final.NextStep != steps+1 {
		t.Errorf("final run %s, %d inconclusive, next step %d; want Inconclusive after %d steps", final.Phase, final.Inconclusives, final.NextStep, steps)
	}
}
