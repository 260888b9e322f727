// Package storetest is the conformance suite of experiments.Store: every
// backend runs it (see Run) to show that it keeps experiments, versions and
// folded statistics as the contract says.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/flagpole/flagpole/experiments"
)

// Harness is what the suite needs from a backend.
type Harness struct {
	// New returns an empty store for one test.
	New func(t *testing.T) experiments.Store
	// Ingest, when set, appends events to env's event log and returns once
	// the store has folded every one of them; the statistics tests are
	// skipped without it.
	Ingest func(t *testing.T, s experiments.Store, env string, events []experiments.Event)
}

// T0 is the start of the suite's running experiments.
var T0 = time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)

// Sample returns a valid draft experiment on flag "checkout" (variants
// "old", control, and "new") with a conversion goal, a capped sum, a mean
// and a ratio metric.
func Sample(key string) *experiments.Experiment {
	e := &experiments.Experiment{
		Key: key, FlagKey: "checkout", Hypothesis: "the new checkout converts better", Control: "old", Treatments: []string{"new"},
		Metrics: []experiments.Metric{
			{Key: "converted", Kind: experiments.KindConversion, Event: "purchase", Role: experiments.RoleGoal},
			{Key: "revenue", Kind: experiments.KindSum, Event: "purchase", Role: experiments.RoleSecondary, Cap: 200},
			{Key: "aov", Kind: experiments.KindMean, Event: "purchase", Role: experiments.RoleSecondary},
			{Key: "per-visit", Kind: experiments.KindRatio, Role: experiments.RoleGuardrail,
				Numerator:   &experiments.Part{Event: "purchase", Aggregate: experiments.AggregateSum},
				Denominator: &experiments.Part{Event: "visit", Aggregate: experiments.AggregateCount}},
		},
	}
	e.Defaults()
	return e
}

// Running returns Sample(key) started at T0.
func Running(key string) *experiments.Experiment {
	e := Sample(key)
	if err := e.Start(T0); err != nil {
		panic(err)
	}
	return e
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	t.Run("create get list", func(t *testing.T) {
		s := h.New(t)
		for _, k := range []string{"b", "a", "c"} {
			st, err := s.CreateExperiment(ctx, "prod", Sample(k), T0)
			if err != nil {
				t.Fatalf("CreateExperiment(%s): %v", k, err)
			}
			if st.Version != 1 || !st.CreatedAt.Equal(T0) || !st.UpdatedAt.Equal(T0) || st.Key != k {
				t.Errorf("created %+v, want version 1 at %v", st, T0)
			}
		}
		if _, err := s.CreateExperiment(ctx, "prod", Sample("a"), T0); !errors.Is(err, experiments.ErrExists) {
			t.Errorf("second create: %v, want ErrExists", err)
		}
		got, err := s.Experiment(ctx, "prod", "a")
		if err != nil {
			t.Fatalf("Experiment: %v", err)
		}
		want := Sample("a")
		if got.Hypothesis != want.Hypothesis || len(got.Metrics) != 4 || *got.Metrics[3].Numerator != *want.Metrics[3].Numerator || got.Version != 1 {
			t.Errorf("read back %+v, want %+v", got.Experiment, want)
		}
		list, err := s.Experiments(ctx, "prod")
		if err != nil {
			t.Fatalf("Experiments: %v", err)
		}
		var keys []string
		for _, st := range list {
			keys = append(keys, st.Key)
		}
		if !slices.Equal(keys, []string{"a", "b", "c"}) {
			t.Errorf("list = %v, want a b c", keys)
		}
		if list, err := s.Experiments(ctx, "staging"); err != nil || len(list) != 0 {
			t.Errorf("other environment: %v %v, want empty", list, err)
		}
		if _, err := s.Experiment(ctx, "staging", "a"); !errors.Is(err, experiments.ErrNotFound) {
			t.Errorf("other environment's experiment: %v, want ErrNotFound", err)
		}
		if _, err := s.Experiment(ctx, "prod", "zzz"); !errors.Is(err, experiments.ErrNotFound) {
			t.Errorf("missing: %v, want ErrNotFound", err)
		}
	})

	t.Run("update versions", func(t *testing.T) {
		s := h.New(t)
		if _, err := s.CreateExperiment(ctx, "prod", Sample("x"), T0); err != nil {
			t.Fatal(err)
		}
		e := Running("x")
		at := T0.Add(time.Minute)
		st, err := s.UpdateExperiment(ctx, "prod", e, experiments.Write{IfVersion: 1, At: at})
		if err != nil {
			t.Fatalf("UpdateExperiment: %v", err)
		}
		if st.Version != 2 || st.Status != experiments.StatusRunning || !st.UpdatedAt.Equal(at) || !st.CreatedAt.Equal(T0) {
			t.Errorf("updated = %+v", st)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", e, experiments.Write{IfVersion: 1, At: at}); !errors.Is(err, experiments.ErrConflict) {
			t.Errorf("stale version: %v, want ErrConflict", err)
		}
		if st, err := s.UpdateExperiment(ctx, "prod", e, experiments.Write{At: at}); err != nil || st.Version != 3 {
			t.Errorf("any version: %v %v, want version 3", st.Version, err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", Sample("nope"), experiments.Write{At: at}); !errors.Is(err, experiments.ErrNotFound) {
			t.Errorf("missing: %v, want ErrNotFound", err)
		}
		got, _ := s.Experiment(ctx, "prod", "x")
		if got.StartedAt == nil || !got.StartedAt.Equal(T0) {
			t.Errorf("startedAt = %v, want %v", got.StartedAt, T0)
		}
	})

	t.Run("delete", func(t *testing.T) {
		s := h.New(t)
		if _, err := s.CreateExperiment(ctx, "prod", Sample("x"), T0); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteExperiment(ctx, "prod", "x", 7); !errors.Is(err, experiments.ErrConflict) {
			t.Errorf("stale version: %v, want ErrConflict", err)
		}
		if err := s.DeleteExperiment(ctx, "prod", "x", 1); err != nil {
			t.Fatalf("DeleteExperiment: %v", err)
		}
		if err := s.DeleteExperiment(ctx, "prod", "x", 0); !errors.Is(err, experiments.ErrNotFound) {
			t.Errorf("again: %v, want ErrNotFound", err)
		}
		if list, _ := s.Experiments(ctx, "prod"); len(list) != 0 {
			t.Errorf("list after delete = %v", list)
		}
		if st, err := s.CreateExperiment(ctx, "prod", Sample("x"), T0); err != nil || st.Version != 1 {
			t.Errorf("re-create: %v %v", st.Version, err)
		}
	})

	t.Run("empty observations", func(t *testing.T) {
		s := h.New(t)
		e := Sample("x")
		if _, err := s.CreateExperiment(ctx, "prod", e, T0); err != nil {
			t.Fatal(err)
		}
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatalf("Observations: %v", err)
		}
		if obs.Crossovers != 0 || len(obs.Users) != 2 || obs.Users["old"] != 0 || obs.Users["new"] != 0 || len(obs.Metrics) != 4 {
			t.Errorf("observations = %+v, want every arm and metric at zero", obs)
		}
	})

	if h.Ingest == nil {
		return
	}

	t.Run("folded statistics match the direct computation", func(t *testing.T) {
		s := h.New(t)
		e := Running("x")
		if _, err := s.CreateExperiment(ctx, "prod", e, T0); err != nil {
			t.Fatal(err)
		}
		events, want := Traffic(e, 400, 1)
		h.Ingest(t, s, "prod", events)
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatalf("Observations: %v", err)
		}
		CheckObservations(t, e, obs, want)
	})

	t.Run("restart discards statistics and stopped experiments do not fold", func(t *testing.T) {
		s := h.New(t)
		e := Running("x")
		st, err := s.CreateExperiment(ctx, "prod", e, T0)
		if err != nil {
			t.Fatal(err)
		}
		events, _ := Traffic(e, 50, 2)
		h.Ingest(t, s, "prod", events)
		if obs, _ := s.Observations(ctx, "prod", e); obs.Users["old"]+obs.Users["new"] == 0 {
			t.Fatalf("nothing folded: %+v", obs)
		}
		r := *e
		if err := r.Restart(T0.Add(time.Hour), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &r, experiments.Write{IfVersion: st.Version, At: T0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		obs, err := s.Observations(ctx, "prod", &r)
		if err != nil {
			t.Fatal(err)
		}
		if n := obs.Users["old"] + obs.Users["new"]; n != 0 || obs.Metrics["converted"]["old"].Sum != 0 {
			t.Errorf("after restart: %+v, want nothing", obs)
		}
		stopped := r
		if err := stopped.Stop(T0.Add(2*time.Hour), experiments.StopDecision{Outcome: experiments.OutcomeNone}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &stopped, experiments.Write{At: T0.Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		late, _ := Traffic(&r, 50, 3)
		h.Ingest(t, s, "prod", late)
		if obs, _ := s.Observations(ctx, "prod", &stopped); obs.Users["old"]+obs.Users["new"] != 0 {
			t.Errorf("a stopped experiment folded: %+v", obs)
		}
	})
}

// Expected is what a batch of Traffic should fold into.
type Expected struct {
	Users      map[string]int64
	Crossovers int64
	// Tallies are the counted users' events after their exposure.
	Tallies map[string]map[string]experiments.Tally
	Arms    map[string]string
}

// Traffic generates the events of users users of running experiment e
// (seeded): an exposure each (a little over ExposureGrace after e
// started), a crossover for about one user in 40, and purchases and visits
// long before the exposure (not counted), within the grace before it
// (counted) and after it, the treatment converting more. It returns them
// with what they fold into.
func Traffic(e *experiments.Experiment, users int, seed uint64) ([]experiments.Event, Expected) {
	rng := rand.New(rand.NewPCG(seed, 99))
	start := T0
	if e.StartedAt != nil {
		start = *e.StartedAt
	}
	want := Expected{Users: map[string]int64{}, Tallies: map[string]map[string]experiments.Tally{}, Arms: map[string]string{}}
	var events []experiments.Event
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	grace := int(experiments.ExposureGrace / time.Millisecond)
	for u := range users {
		user := fmt.Sprintf("s%d-user-%d", seed, u)
		a := e.Assign(user)
		exposed := grace + 10_000 + rng.IntN(1000)
		events = append(events, experiments.Event{Name: experiments.ExposureEvent, TargetingKey: user, FlagKey: e.FlagKey, Variant: a.Variant, Time: at(exposed)})
		cross := rng.IntN(40) == 0
		if cross {
			other := e.Treatments[0]
			if a.Variant == other {
				other = e.Control
			}
			events = append(events, experiments.Event{Name: experiments.ExposureEvent, TargetingKey: user, FlagKey: e.FlagKey, Variant: other, Time: at(exposed + 5)})
			want.Crossovers++
		} else {
			want.Users[a.Variant]++
			want.Arms[user] = a.Variant
		}
		p := 0.2
		if a.Variant != e.Control {
			p = 0.3
		}
		for range 1 + rng.IntN(3) {
			var ms int
			switch rng.IntN(3) {
			case 0: // long before the exposure, beyond the grace
				ms = rng.IntN(3000)
			case 1: // within the grace before it
				ms = exposed - 1 - rng.IntN(grace-1)
			default: // after it
				ms = exposed + rng.IntN(3000)
			}
			events = append(events, experiments.Event{Name: "visit", TargetingKey: user, Time: at(ms)})
			if ms >= exposed-grace && !cross {
				addTally(want.Tallies, user, "visit", 0)
			}
			if rng.Float64() < p {
				v := math.Round(rng.ExpFloat64()*8000) / 100
				events = append(events, experiments.Event{Name: "purchase", TargetingKey: user, Value: &v, Time: at(ms + 1)})
				if ms+1 >= exposed-grace && !cross {
					addTally(want.Tallies, user, "purchase", v)
				}
			}
		}
	}
	return events, want
}

func addTally(m map[string]map[string]experiments.Tally, user, name string, v float64) {
	if m[user] == nil {
		m[user] = map[string]experiments.Tally{}
	}
	t := m[user][name]
	t.Count++
	t.Sum += v
	m[user][name] = t
}

// Direct computes e's observations from want with Stats.Add per user.
func Direct(e *experiments.Experiment, want Expected) experiments.Observations {
	obs := experiments.Observations{Users: map[string]int64{}, Crossovers: want.Crossovers, Metrics: map[string]map[string]experiments.Stats{}}
	for _, arm := range e.Arms() {
		obs.Users[arm] = want.Users[arm]
	}
	for _, m := range e.Metrics {
		obs.Metrics[m.Key] = map[string]experiments.Stats{}
		for _, arm := range e.Arms() {
			obs.Metrics[m.Key][arm] = experiments.Stats{}
		}
	}
	for user, arm := range want.Arms {
		for _, m := range e.Metrics {
			var den experiments.Tally
			if d := m.DenominatorEvent(); d != "" {
				den = want.Tallies[user][d]
			}
			x, y := m.UserValue(want.Tallies[user][m.NumeratorEvent()], den)
			s := obs.Metrics[m.Key][arm]
			s.Add(x, y)
			obs.Metrics[m.Key][arm] = s
		}
	}
	return obs
}

// CheckObservations compares folded observations with Direct(e, want): users,
// crossovers, every statistic and every arm's Summary.
func CheckObservations(t testing.TB, e *experiments.Experiment, got experiments.Observations, want Expected) {
	t.Helper()
	ref := Direct(e, want)
	if got.Crossovers != ref.Crossovers {
		t.Errorf("crossovers = %d, want %d", got.Crossovers, ref.Crossovers)
	}
	for arm, n := range ref.Users {
		if got.Users[arm] != n {
			t.Errorf("users[%s] = %d, want %d", arm, got.Users[arm], n)
		}
	}
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
	for _, m := range e.Metrics {
		for _, arm := range e.Arms() {
			g, w := got.Metrics[m.Key][arm], ref.Metrics[m.Key][arm]
			if g.Users != w.Users || g.Conversions != w.Conversions || !close(g.Sum, w.Sum) || !close(g.SumSquares, w.SumSquares) {
				t.Errorf("%s[%s] = %+v, want %+v", m.Key, arm, g, w)
				continue
			}
			if m.IsRatio() && (!close(g.DenominatorSum, w.DenominatorSum) || !close(g.DenominatorSumSquares, w.DenominatorSumSquares) || !close(g.SumProducts, w.SumProducts)) {
				t.Errorf("%s[%s] ratio sums = %+v, want %+v", m.Key, arm, g, w)
				continue
			}
			gs, gok := g.Summarize(m.IsRatio())
			ws, wok := w.Summarize(m.IsRatio())
			if gok != wok || !close(gs.Value, ws.Value) || !close(gs.Variance, ws.Variance) {
				t.Errorf("%s[%s] summary = %+v, want %+v", m.Key, arm, gs, ws)
			}
		}
	}
}
