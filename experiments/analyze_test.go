package experiments

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// sim builds Observations user by user.
type sim struct {
	r   *rand.Rand
	obs Observations
}

func newSim(seed uint64) *sim {
	return &sim{
		r:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		obs: Observations{Users: map[string]int64{}, Metrics: map[string]map[string]Stats{}},
	}
}

// shopMetrics are the metric keys a user draw fills, in order.
var shopMetrics = [3]string{"purchase", "revenue", "latency"}

// users adds n exposed users to variant; draw returns each user's metric
// values (x, y) in the order of shopMetrics.
func (s *sim) users(variant string, n int, draw func(r *rand.Rand) [3][2]float64) {
	s.obs.Users[variant] += int64(n)
	var st [3]Stats
	for range n {
		v := draw(s.r)
		for i := range st {
			st[i].Add(v[i][0], v[i][1])
		}
	}
	for i, key := range shopMetrics {
		m := s.obs.Metrics[key]
		if m == nil {
			m = map[string]Stats{}
			s.obs.Metrics[key] = m
		}
		cur := m[variant]
		cur.Merge(st[i])
		m[variant] = cur
	}
}

func bernoulli(r *rand.Rand, p float64) float64 {
	if r.Float64() < p {
		return 1
	}
	return 0
}

// shopUser draws one user: conversion with probability p, revenue
// (exponential, mean 50 per buyer) scaled by lift, and page-load latency
// (mean of 1–4 loads around latency ms).
func shopUser(p, revenueLift, latency float64) func(r *rand.Rand) [3][2]float64 {
	return func(r *rand.Rand) [3][2]float64 {
		buy := bernoulli(r, p)
		loads := 1 + r.IntN(4)
		total := 0.0
		for range loads {
			total += latency * (0.5 + r.Float64())
		}
		return [3][2]float64{
			{buy, 0},
			{buy * r.ExpFloat64() * 50 * (1 + revenueLift), 0},
			{total, float64(loads)},
		}
	}
}

func shopExperiment(mode Mode) *Experiment {
	e := &Experiment{
		Key: "checkout", FlagKey: "new-checkout", Control: "off", Treatments: []string{"on"},
		Metrics: []Metric{
			{Key: "purchase", Kind: KindConversion, Event: "purchase", Role: RoleGoal},
			{Key: "revenue", Kind: KindSum, Event: "purchase", Role: RoleSecondary, Cap: 500},
			{Key: "latency", Kind: KindMean, Event: "page_load", Role: RoleGuardrail, Direction: LowerIsBetter},
		},
		Analysis: Analysis{Mode: mode, TuningUsers: 100000},
	}
	if err := e.Start(t0); err != nil {
		panic(err)
	}
	return e
}

func mustJSON(t *testing.T, r Results) {
	t.Helper()
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("results do not marshal: %v", err)
	}
}

func comparison(t *testing.T, r Results, metric string, i int) Comparison {
	t.Helper()
	for _, m := range r.Metrics {
		if m.Key == metric {
			return m.Comparisons[i]
		}
	}
	t.Fatalf("no metric %q", metric)
	return Comparison{}
}

// A planted 5% relative lift in conversion (30% → 31.5%) on 50,000 users per
// arm is found in every mode, with an interval that covers the truth, and
// the unchanged guardrail does not block shipping.
func TestPlantedLiftIsFound(t *testing.T) {
	for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
		t.Run(string(mode), func(t *testing.T) {
			s := newSim(7)
			s.users("off", 50000, shopUser(0.30, 0, 300))
			s.users("on", 50000, shopUser(0.315, 0.05, 300))
			e := shopExperiment(mode)
			r := Analyze(e, s.obs, t1)
			mustJSON(t, r)

			c := comparison(t, r, "purchase", 0)
			if c.Verdict != VerdictBetter {
				t.Fatalf("purchase verdict %s: %+v", c.Verdict, c)
			}
			if c.Relative.Lower > 0.05 || c.Relative.Upper < 0.05 || c.Relative.Lower <= 0 {
				t.Errorf("relative interval [%.4f, %.4f] should cover 0.05 and exclude 0", c.Relative.Lower, c.Relative.Upper)
			}
			if g := comparison(t, r, "latency", 0); g.Verdict == VerdictWorse {
				t.Errorf("unchanged guardrail judged worse: %+v", g)
			}
			if r.Health.Status != HealthOK {
				t.Errorf("health %+v", r.Health)
			}
			rec := r.Recommendation
			if rec.Action != ActionShip || rec.Variant != "on" || !strings.Contains(rec.Reason, "purchase") {
				t.Errorf("recommendation %+v", rec)
			}
			switch mode {
			case ModeBayesian:
				if c.ChanceToWin == nil || *c.ChanceToWin < 0.99 || c.PValue != nil {
					t.Errorf("bayesian comparison %+v", c)
				}
			default:
				if c.PValue == nil || c.AdjustedPValue == nil || *c.AdjustedPValue >= 0.05 || c.ChanceToWin != nil {
					t.Errorf("frequentist comparison %+v", c)
				}
			}
		})
	}
}

// The sequential interval is wider than the fixed one on the same data:
// the price of looking any number of times.
func TestSequentialWiderThanFixed(t *testing.T) {
	s := newSim(3)
	s.users("off", 20000, shopUser(0.3, 0, 300))
	s.users("on", 20000, shopUser(0.3, 0, 300))
	seq := comparison(t, Analyze(shopExperiment(ModeSequential), s.obs, t1), "purchase", 0)
	fix := comparison(t, Analyze(shopExperiment(ModeFixed), s.obs, t1), "purchase", 0)
	ws, wf := seq.Absolute.Upper-seq.Absolute.Lower, fix.Absolute.Upper-fix.Absolute.Lower
	if !(ws > wf) || seq.Absolute.Value != fix.Absolute.Value {
		t.Errorf("sequential width %v, fixed width %v", ws, wf)
	}
}

func TestGuardrailHarmRollsBack(t *testing.T) {
	s := newSim(11)
	s.users("off", 30000, shopUser(0.30, 0, 300))
	s.users("on", 30000, shopUser(0.33, 0, 330)) // better conversion, 10% slower pages
	r := Analyze(shopExperiment(ModeSequential), s.obs, t1)
	mustJSON(t, r)
	g := comparison(t, r, "latency", 0)
	if g.Verdict != VerdictWorse || g.HarmPValue == nil || *g.HarmPValue >= 0.05 || g.AdjustedPValue != nil {
		t.Errorf("guardrail %+v", g)
	}
	if rec := r.Recommendation; rec.Action != ActionRollback || !strings.Contains(rec.Reason, "guardrail latency") {
		t.Errorf("recommendation %+v", rec)
	}
}

func TestGoalWorseRollsBack(t *testing.T) {
	s := newSim(12)
	s.users("off", 30000, shopUser(0.30, 0, 300))
	s.users("on", 30000, shopUser(0.27, 0, 300))
	r := Analyze(shopExperiment(ModeSequential), s.obs, t1)
	if c := comparison(t, r, "purchase", 0); c.Verdict != VerdictWorse {
		t.Errorf("purchase %+v", c)
	}
	if rec := r.Recommendation; rec.Action != ActionRollback || !strings.Contains(rec.Reason, "goal metric purchase") {
		t.Errorf("recommendation %+v", rec)
	}
}

func TestLowerIsBetterGoal(t *testing.T) {
	e := shopExperiment(ModeFixed)
	e.Metrics = []Metric{{Key: "latency", Kind: KindMean, Event: "page_load", Role: RoleGoal, Direction: LowerIsBetter}}
	s := newSim(13)
	s.users("off", 5000, shopUser(0.3, 0, 300))
	s.users("on", 5000, shopUser(0.3, 0, 270))
	r := Analyze(e, s.obs, t1)
	if c := comparison(t, r, "latency", 0); c.Verdict != VerdictBetter || c.Relative.Value > -0.05 {
		t.Errorf("latency %+v", c)
	}
	if r.Recommendation.Action != ActionShip {
		t.Errorf("recommendation %+v", r.Recommendation)
	}
}

func TestShipsTheBestOfSeveralTreatments(t *testing.T) {
	e := shopExperiment(ModeSequential)
	e.Treatments = []string{"small", "big", "bad"}
	s := newSim(14)
	s.users("off", 30000, shopUser(0.30, 0, 300))
	s.users("small", 30000, shopUser(0.31, 0, 300))
	s.users("big", 30000, shopUser(0.33, 0, 300))
	s.users("bad", 30000, shopUser(0.27, 0, 300))
	r := Analyze(e, s.obs, t1)
	mustJSON(t, r)
	if len(r.Arms) != 4 || len(r.Metrics[0].Comparisons) != 3 {
		t.Fatalf("arms %d, comparisons %d", len(r.Arms), len(r.Metrics[0].Comparisons))
	}
	if rec := r.Recommendation; rec.Action != ActionShip || rec.Variant != "big" {
		t.Errorf("recommendation %+v", rec)
	}
	if c := comparison(t, r, "purchase", 2); c.Verdict != VerdictWorse {
		t.Errorf("bad arm %+v", c)
	}
	// Holm over 3 goal comparisons: every adjusted p is at least its raw p.
	for _, c := range r.Metrics[0].Comparisons {
		if *c.AdjustedPValue < *c.PValue {
			t.Errorf("adjusted p %v below raw %v", *c.AdjustedPValue, *c.PValue)
		}
	}
}

func TestKeepRunningEstimatesRemainingTime(t *testing.T) {
	s := newSim(15)
	s.users("off", 2000, shopUser(0.3, 0, 300))
	s.users("on", 2000, shopUser(0.3, 0, 300))
	e := shopExperiment(ModeSequential)
	r := Analyze(e, s.obs, t0.Add(24*time.Hour)) // 4,000 users in a day
	mustJSON(t, r)
	rec := r.Recommendation
	if rec.Action != ActionKeepRunning || rec.RemainingUsers <= 0 {
		t.Fatalf("recommendation %+v", rec)
	}
	// Time follows the observed rate of 4,000 users a day.
	if want := float64(rec.RemainingUsers) / 4000 * 86400; math.Abs(rec.RemainingSeconds-want) > 86400/4000.0 {
		t.Errorf("remaining %v s for %d users, want about %v s", rec.RemainingSeconds, rec.RemainingUsers, want)
	}
	if !strings.Contains(rec.Reason, "days at the current rate") || !strings.Contains(rec.Reason, "5.0% change in purchase") {
		t.Errorf("reason %q", rec.Reason)
	}
	if !r.Health.Underpowered || r.Health.Status != HealthOK {
		t.Errorf("health %+v", r.Health)
	}
	// The estimate is consistent: at the predicted size the MDE reaches 5%.
	c := comparison(t, r, "purchase", 0)
	n := c.users * float64(int64(r.Users)+rec.RemainingUsers) / float64(r.Users)
	se := math.Sqrt(c.variance * c.users / n)
	a := 0.05 // one treatment: Holm's planning alpha is alpha
	if mde := MinimumDetectableEffect(se, SequentialMultiplier(n, 100000, a), 0.8); mde > 0.05*c.control*1.001 {
		t.Errorf("MDE at the predicted size %v, want ≤ %v", mde, 0.05*c.control)
	}

	// Without a start time there is a user count but no time.
	e.StartedAt = nil
	if rec := Analyze(e, s.obs, t1).Recommendation; rec.RemainingSeconds != 0 || rec.RemainingUsers == 0 {
		t.Errorf("no start time: %+v", rec)
	}
}

func TestKeepRunningWhenPoweredButFlat(t *testing.T) {
	s := newSim(16)
	s.users("off", 100000, shopUser(0.3, 0, 300))
	s.users("on", 100000, shopUser(0.3, 0, 300))
	r := Analyze(shopExperiment(ModeSequential), s.obs, t1)
	rec := r.Recommendation
	if rec.Action != ActionKeepRunning || rec.RemainingUsers != 0 || !strings.Contains(rec.Reason, "stop with no decision") {
		t.Errorf("recommendation %+v", rec)
	}
	if r.Health.Underpowered {
		t.Errorf("200,000 users flagged underpowered: %+v", r.Health)
	}
}

func TestHealthChecks(t *testing.T) {
	balanced := func() *sim {
		s := newSim(17)
		s.users("off", 5000, shopUser(0.3, 0, 300))
		s.users("on", 5000, shopUser(0.3, 0, 300))
		return s
	}
	cases := []struct {
		name   string
		obs    func() Observations
		status HealthStatus
		action Action
		reason string
	}{
		{"no data", func() Observations { return Observations{} }, HealthNoData, ActionKeepRunning, "no users"},
		{"55/45 split", func() Observations {
			s := newSim(18)
			s.users("off", 5500, shopUser(0.3, 0, 300))
			s.users("on", 4500, shopUser(0.3, 0, 300))
			return s.obs
		}, HealthUnhealthy, ActionUnhealthy, "Sample ratio mismatch: the arms got 55.0% / 45.0% of users against a configured 50.0% / 50.0%"},
		{"crossovers", func() Observations {
			o := balanced().obs
			o.Crossovers = 1000
			return o
		}, HealthUnhealthy, ActionUnhealthy, "9.1% of exposed users saw more than one arm"},
		{"few crossovers", func() Observations {
			o := balanced().obs
			o.Crossovers = 10
			return o
		}, HealthOK, ActionKeepRunning, "Keep running"},
		{"one arm only", func() Observations {
			s := newSim(19)
			s.users("off", 5000, shopUser(0.3, 0, 300))
			return s.obs
		}, HealthUnhealthy, ActionUnhealthy, "Sample ratio mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Analyze(shopExperiment(ModeSequential), c.obs(), t1)
			mustJSON(t, r)
			if r.Health.Status != c.status || r.Recommendation.Action != c.action || !strings.Contains(r.Recommendation.Reason, c.reason) {
				t.Errorf("health %+v, recommendation %+v", r.Health, r.Recommendation)
			}
		})
	}
}

// Analyze must never fail or produce numbers JSON cannot carry, whatever
// the observations: negative counts, NaN sums, zero variance, zero controls.
func TestAnalyzeDegenerateData(t *testing.T) {
	cases := []struct {
		name string
		obs  Observations
	}{
		{"zero conversions everywhere", Observations{Users: map[string]int64{"off": 100, "on": 100}}},
		{"all convert in treatment only", Observations{
			Users:   map[string]int64{"off": 100, "on": 100},
			Metrics: map[string]map[string]Stats{"purchase": {"on": {Users: 100, Conversions: 100, Sum: 100, SumSquares: 100}}},
		}},
		{"garbage statistics", Observations{
			Users:      map[string]int64{"off": -5, "on": 3},
			Crossovers: -2,
			Metrics: map[string]map[string]Stats{
				"purchase": {"off": {Users: 7, Sum: math.NaN(), SumSquares: math.Inf(1)}},
				"latency":  {"on": {Users: 3, Sum: 10, SumSquares: -4, DenominatorSum: 0}},
			},
		}},
		{"unknown variants and metrics", Observations{
			Users:   map[string]int64{"purple": 1000},
			Metrics: map[string]map[string]Stats{"nope": {"purple": {Users: 1}}},
		}},
	}
	for _, c := range cases {
		for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
			t.Run(c.name+"/"+string(mode), func(t *testing.T) {
				r := Analyze(shopExperiment(mode), c.obs, t1)
				mustJSON(t, r)
				if r.Recommendation.Action == "" || r.Recommendation.Reason == "" {
					t.Errorf("empty recommendation %+v", r.Recommendation)
				}
			})
		}
	}
	// No variation yet (nobody converted): the minimum detectable effect is
	// unknown, not zero, and the experiment is underpowered.
	for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
		r := Analyze(shopExperiment(mode), cases[0].obs, t1)
		if c := comparison(t, r, "purchase", 0); c.MDE != nil || c.RelativeMDE != nil || !r.Health.Underpowered {
			t.Errorf("%s, zero conversions: MDE %v relative %v underpowered %v; want unknown and underpowered", mode, c.MDE, c.RelativeMDE, r.Health.Underpowered)
		}
	}
	// Zero variance and a real difference: the Welch test calls it.
	r := Analyze(shopExperiment(ModeFixed), cases[1].obs, t1)
	if c := comparison(t, r, "purchase", 0); c.Verdict != VerdictBetter || c.Relative != nil {
		t.Errorf("all-or-nothing conversion: %+v", c)
	}
}

func FuzzAnalyze(f *testing.F) {
	f.Add(int64(100), int64(90), 30.0, 500.0, 12.0, 1.0, int64(3))
	f.Fuzz(func(t *testing.T, nc, nt int64, sum, sumsq, den, prod float64, cross int64) {
		obs := Observations{
			Users:      map[string]int64{"off": nc, "on": nt},
			Crossovers: cross,
			Metrics: map[string]map[string]Stats{
				"purchase": {"off": {Users: nc, Sum: sum, SumSquares: sumsq}, "on": {Users: nt, Sum: sum / 2, SumSquares: sumsq}},
				"latency":  {"off": {Users: nc, Sum: sum, SumSquares: sumsq, DenominatorSum: den, DenominatorSumSquares: den * den, SumProducts: prod}},
			},
		}
		for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
			r := Analyze(shopExperiment(mode), obs, t1)
			if _, err := json.Marshal(r); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
		}
	})
}
