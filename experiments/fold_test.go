package experiments

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func foldExperiment() *Experiment {
	e := &Experiment{
		Key: "checkout-test", FlagKey: "checkout", Control: "old", Treatments: []string{"new"},
		Metrics: []Metric{
			{Key: "converted", Kind: KindConversion, Event: "purchase", Role: RoleGoal},
			{Key: "orders", Kind: KindCount, Event: "purchase", Role: RoleSecondary},
			{Key: "revenue", Kind: KindSum, Event: "purchase", Role: RoleSecondary, Cap: 100},
			{Key: "aov", Kind: KindMean, Event: "purchase", Role: RoleSecondary},
			{Key: "per-visit", Kind: KindRatio, Role: RoleGuardrail,
				Numerator: &Part{Event: "purchase", Aggregate: AggregateSum}, Denominator: &Part{Event: "visit", Aggregate: AggregateCount}},
		},
	}
	e.Defaults()
	return e
}

var foldT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func expo(user, variant string, ms int) Event {
	return Event{Name: ExposureEvent, TargetingKey: user, FlagKey: "checkout", Variant: variant, Time: foldT0.Add(time.Duration(ms) * time.Millisecond)}
}

func track(user, name string, v float64, ms int) Event {
	return Event{Name: name, TargetingKey: user, Value: &v, Time: foldT0.Add(time.Duration(ms) * time.Millisecond)}
}

// foldAll folds events in order over fresh states, as a consumer would.
func foldAll(f *Folder, events []Event) (Observations, map[string]*UserState) {
	var obs Observations
	states := map[string]*UserState{}
	for i := range events {
		ev := &events[i]
		if !f.Relevant(ev) {
			continue
		}
		st := states[ev.TargetingKey]
		if st == nil {
			st = &UserState{}
			states[ev.TargetingKey] = st
		}
		var d Observations
		f.Fold(st, ev, &d)
		obs.MergeDelta(d)
	}
	return obs, states
}

// direct computes the observations of users who each saw one arm from
// their tallies, with Stats.Add: the reference for folding.
func direct(e *Experiment, arms map[string]string, tallies map[string]map[string]Tally) Observations {
	obs := Observations{Users: map[string]int64{}, Metrics: map[string]map[string]Stats{}}
	for user, arm := range arms {
		obs.Users[arm]++
		for _, m := range e.Metrics {
			if obs.Metrics[m.Key] == nil {
				obs.Metrics[m.Key] = map[string]Stats{}
			}
			var den Tally
			if d := m.DenominatorEvent(); d != "" {
				den = tallies[user][d]
			}
			x, y := m.UserValue(tallies[user][m.NumeratorEvent()], den)
			s := obs.Metrics[m.Key][arm]
			s.Add(x, y)
			if !m.IsRatio() {
				s.DenominatorSum, s.DenominatorSumSquares, s.SumProducts = 0, 0, 0
			}
			obs.Metrics[m.Key][arm] = s
		}
	}
	return obs
}

func TestFoldRules(t *testing.T) {
	e := foldExperiment()
	f := NewFolder(e)
	var u1, u2 string // two users in the experiment, in arms old and new
	for i := 0; u1 == "" || u2 == ""; i++ {
		u := fmt.Sprintf("user-%d", i)
		switch e.Assign(u).Variant {
		case "old":
			u1 = u
		case "new":
			u2 = u
		}
	}
	grace := int(ExposureGrace / time.Millisecond)
	cases := []struct {
		name       string
		events     []Event
		wantUsers  map[string]int64
		wantCross  int64
		wantOrders map[string]float64 // Sum of the "orders" metric by arm
	}{
		{"events well before the exposure are ignored",
			[]Event{track(u1, "purchase", 10, -600_000), expo(u1, "old", 0), track(u1, "purchase", 10, -300_000), track(u1, "purchase", 10, 6)},
			map[string]int64{"old": 1}, 0, map[string]float64{"old": 1}},
		{"an event stamped slightly before its exposure counts (clock skew)",
			[]Event{expo(u1, "old", 60_000), track(u1, "purchase", 10, 0)},
			map[string]int64{"old": 1}, 0, map[string]float64{"old": 1}},
		{"the grace ends exactly ExposureGrace before the exposure",
			[]Event{expo(u1, "old", grace), track(u1, "purchase", 10, 0), track(u1, "purchase", 10, -1)},
			map[string]int64{"old": 1}, 0, map[string]float64{"old": 1}},
		{"a waiting event stamped slightly before its exposure counts (clock skew)",
			[]Event{track(u2, "purchase", 5, 0), track(u2, "purchase", 5, -1), expo(u2, "new", grace)},
			map[string]int64{"new": 1}, 0, map[string]float64{"new": 1}},
		{"events of users never exposed are not counted",
			[]Event{track(u1, "purchase", 10, 1), track(u2, "purchase", 10, 1), expo(u2, "new", 0)},
			map[string]int64{"new": 1}, 0, map[string]float64{"new": 1}},
		{"an event arriving before its exposure counts from the exposure's time",
			[]Event{track(u2, "purchase", 5, 20), track(u2, "purchase", 5, -300_000), expo(u2, "new", 10)},
			map[string]int64{"new": 1}, 0, map[string]float64{"new": 1}},
		{"a repeated exposure counts the user once",
			[]Event{expo(u1, "old", 0), expo(u1, "old", 1), expo(u1, "old", 2), track(u1, "purchase", 1, 3)},
			map[string]int64{"old": 1}, 0, map[string]float64{"old": 1}},
		{"a crossover is removed and counted once",
			[]Event{expo(u1, "old", 0), track(u1, "purchase", 1, 1), expo(u1, "new", 2), track(u1, "purchase", 1, 3), expo(u1, "old", 4), expo(u2, "new", 0)},
			map[string]int64{"old": 0, "new": 1}, 1, map[string]float64{"old": 0}},
		{"exposures to other variants or flags are ignored",
			[]Event{{Name: ExposureEvent, TargetingKey: u1, FlagKey: "checkout", Variant: "beta", Time: foldT0},
				{Name: ExposureEvent, TargetingKey: u1, FlagKey: "other", Variant: "new", Time: foldT0}, track(u1, "purchase", 1, 1)},
			nil, 0, nil},
		{"events no metric uses are ignored",
			[]Event{expo(u1, "old", 0), track(u1, "page_view", 1, 1)},
			map[string]int64{"old": 1}, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obs, _ := foldAll(f, tc.events)
			for arm, want := range tc.wantUsers {
				if got := obs.Users[arm]; got != want {
					t.Errorf("users[%s] = %d, want %d", arm, got, want)
				}
			}
			if obs.Crossovers != tc.wantCross {
				t.Errorf("crossovers = %d, want %d", obs.Crossovers, tc.wantCross)
			}
			for arm, want := range tc.wantOrders {
				s := obs.Metrics["orders"][arm]
				if s.Sum != want || s.SumSquares != want*want {
					t.Errorf("orders[%s] = %+v, want sum %v", arm, s, want)
				}
			}
			if tc.wantOrders == nil {
				for arm, s := range obs.Metrics["orders"] {
					if !s.IsZero() {
						t.Errorf("orders[%s] = %+v, want nothing", arm, s)
					}
				}
			}
		})
	}
}

func TestFoldCapAppliesToTheUserTotal(t *testing.T) {
	e := foldExperiment()
	f := NewFolder(e)
	u := ""
	for i := 0; u == ""; i++ {
		if a := e.Assign(fmt.Sprint("u", i)); a.InExperiment {
			u = fmt.Sprint("u", i)
		}
	}
	arm := e.Assign(u).Variant
	obs, _ := foldAll(f, []Event{expo(u, arm, 0), track(u, "purchase", 60, 1), track(u, "purchase", 60, 2), track(u, "purchase", 60, 3)})
	s := obs.Metrics["revenue"][arm]
	if s.Sum != 100 || s.SumSquares != 10000 || s.Conversions != 1 {
		t.Errorf("revenue = %+v, want the user capped at 100 once", s)
	}
}

// TestFoldMatchesDirect folds random event streams (shuffled exposures,
// events before exposures, crossovers, traffic below 100%) and checks the
// observations against Stats.Add on each counted user's final tallies.
func TestFoldMatchesDirect(t *testing.T) {
	for seed := range 5 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			e := foldExperiment()
			e.Traffic = 80
			e.Treatments = []string{"new", "newer"}
			e.Weights = []int{2, 1, 1}
			f := NewFolder(e)
			var events []Event
			arms := map[string]string{}
			tallies := map[string]map[string]Tally{}
			var crossovers int64
			for u := range 3000 {
				user := fmt.Sprintf("user-%d", u)
				a := e.Assign(user)
				// Times in seconds (as milliseconds), so that some events
				// fall in the grace before the exposure and most before it
				// fall well outside.
				exposedAt := rng.IntN(1000) * 1000
				events = append(events, expo(user, a.Variant, exposedAt))
				cross := a.InExperiment && rng.IntN(50) == 0
				if cross {
					other := e.Treatments[0]
					if a.Variant == other {
						other = e.Control
					}
					events = append(events, expo(user, other, exposedAt+rng.IntN(100)*1000))
					crossovers++
				} else if a.InExperiment {
					arms[user] = a.Variant
				}
				for range rng.IntN(6) {
					name := "purchase"
					if rng.IntN(2) == 0 {
						name = "visit"
					}
					v := math.Round(rng.ExpFloat64()*3000) / 100
					at := rng.IntN(2000) * 1000
					events = append(events, track(user, name, v, at))
					if at >= exposedAt-int(ExposureGrace/time.Millisecond) && a.InExperiment && !cross {
						if tallies[user] == nil {
							tallies[user] = map[string]Tally{}
						}
						tl := tallies[user][name]
						tl.Count++
						tl.Sum += v
						tallies[user][name] = tl
					}
				}
			}
			// Arrival order is not event order.
			rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
			got, states := foldAll(f, events)
			// Events of a user that arrived before their exposure beyond
			// MaxPendingEvents are dropped; with at most 6 events none is.
			want := direct(e, arms, tallies)
			if got.Crossovers != crossovers {
				t.Errorf("crossovers = %d, want %d", got.Crossovers, crossovers)
			}
			for arm, n := range want.Users {
				if got.Users[arm] != n {
					t.Errorf("users[%s] = %d, want %d", arm, got.Users[arm], n)
				}
			}
			for key, byArm := range want.Metrics {
				ratio := false
				for _, m := range e.Metrics {
					if m.Key == key {
						ratio = m.IsRatio()
					}
				}
				for arm, ws := range byArm {
					gs := got.Metrics[key][arm]
					gs.Users = ws.Users
					for _, p := range [][2]float64{{gs.Sum, ws.Sum}, {gs.SumSquares, ws.SumSquares}, {gs.DenominatorSum, ws.DenominatorSum},
						{gs.DenominatorSumSquares, ws.DenominatorSumSquares}, {gs.SumProducts, ws.SumProducts}, {float64(gs.Conversions), float64(ws.Conversions)}} {
						if math.Abs(p[0]-p[1]) > 1e-6*math.Max(1, math.Abs(p[1])) {
							t.Errorf("%s[%s] = %+v, want %+v", key, arm, gs, ws)
							break
						}
					}
					gsum, _ := gs.Summarize(ratio)
					wsum, _ := ws.Summarize(ratio)
					if math.Abs(gsum.Value-wsum.Value) > 1e-9*math.Max(1, math.Abs(wsum.Value)) {
						t.Errorf("%s[%s] summary %+v, want %+v", key, arm, gsum, wsum)
					}
				}
			}
			for user, st := range states {
				if st.Arm == "" && len(st.Pending) > MaxPendingEvents {
					t.Errorf("%s keeps %d pending events", user, len(st.Pending))
				}
			}
		})
	}
}

func TestFoldIgnoresEventsBeforeTheRunStarted(t *testing.T) {
	e := foldExperiment()
	start := foldT0.Add(time.Second)
	e.StartedAt = &start
	f := NewFolder(e)
	for i := 0; i < 50; i++ {
		u := fmt.Sprint("u", i)
		a := e.Assign(u)
		before, after := expo(u, a.Variant, 999), expo(u, a.Variant, 1000)
		if f.Relevant(&before) {
			t.Fatalf("an exposure before the start is relevant")
		}
		if got := f.Relevant(&after); got != a.InExperiment {
			t.Fatalf("exposure at the start: relevant = %v, want %v", got, a.InExperiment)
		}
	}
}
