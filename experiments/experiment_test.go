package experiments

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/flags"
)

func problemPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	var paths []string
	for _, p := range ve.Problems {
		if p.Message == "" {
			t.Errorf("problem at %s has no message", p.Path)
		}
		paths = append(paths, p.Path)
	}
	return paths
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		modify func(e *Experiment)
		want   []string // problem paths, in order
	}{
		{"valid minimal", func(e *Experiment) {}, nil},
		{"valid full", func(e *Experiment) {
			e.Weights = []int{50, 50}
			e.Traffic = 33.33
			e.Metrics = append(e.Metrics,
				Metric{Key: "revenue", Kind: KindSum, Event: "purchase", Role: RoleSecondary, Cap: 1000},
				Metric{Key: "aov", Kind: KindRatio, Role: RoleSecondary,
					Numerator: &Part{Event: "purchase", Aggregate: AggregateSum}, Denominator: &Part{Event: "purchase", Aggregate: AggregateCount}},
				Metric{Key: "latency", Kind: KindMean, Event: "page_load", Role: RoleGuardrail, Direction: LowerIsBetter})
			e.Analysis = Analysis{Mode: ModeBayesian, Alpha: 0.1, Power: 0.9, Correction: CorrectionBH, PriorStdDev: 1}
		}, nil},
		{"everything missing", func(e *Experiment) { *e = Experiment{} },
			[]string{"key", "flagKey", "control", "treatments", "metrics"}},
		{"bad key characters", func(e *Experiment) { e.Key = "-bad key" }, []string{"key"}},
		{"key too long", func(e *Experiment) { e.Key = strings.Repeat("k", 129) }, []string{"key"}},
		{"control char in variant", func(e *Experiment) { e.Control = "of\nf" }, []string{"control"}},
		{"duplicate arms", func(e *Experiment) { e.Treatments = []string{"on", "off", "on"} },
			[]string{"treatments[1]", "treatments[2]"}},
		{"too many arms", func(e *Experiment) {
			e.Treatments = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
		}, []string{"treatments"}},
		{"weights length", func(e *Experiment) { e.Weights = []int{1, 2, 3} }, []string{"weights"}},
		{"weights values", func(e *Experiment) { e.Weights = []int{0, MaxWeight + 1} }, []string{"weights[0]", "weights[1]"}},
		{"traffic too high", func(e *Experiment) { e.Traffic = 100.5 }, []string{"traffic"}},
		{"traffic negative", func(e *Experiment) { e.Traffic = -1 }, []string{"traffic"}},
		{"traffic NaN", func(e *Experiment) { e.Traffic = math.NaN() }, []string{"traffic"}},
		{"traffic three decimals", func(e *Experiment) { e.Traffic = 12.345 }, []string{"traffic"}},
		{"no goal", func(e *Experiment) { e.Metrics[0].Role = RoleSecondary }, []string{"metrics"}},
		{"metric problems", func(e *Experiment) {
			e.Metrics = append(e.Metrics,
				Metric{Key: "purchase", Kind: "median", Role: "boss", Direction: "up", Cap: -1},
				Metric{Key: "r", Kind: KindRatio, Event: "x", Role: RoleGoal, Numerator: &Part{Event: "a", Aggregate: "avg"}},
				Metric{Key: "c", Kind: KindConversion, Role: RoleGoal, Cap: 3, Numerator: &Part{}},
			)
		}, []string{
			"metrics[1].kind", "metrics[1].role", "metrics[1].direction", "metrics[1].cap", "metrics[1].key",
			"metrics[2].event", "metrics[2].numerator.aggregate", "metrics[2].denominator",
			"metrics[3].event", "metrics[3].numerator", "metrics[3].cap",
		}},
		{"analysis problems", func(e *Experiment) {
			e.Analysis = Analysis{Mode: "frequentist", Alpha: 0.7, Power: 1, Correction: "bonferroni",
				MinimumEffect: -0.1, TuningUsers: -5, PriorMean: math.Inf(1), PriorStdDev: -1}
		}, []string{"analysis.mode", "analysis.alpha", "analysis.power", "analysis.correction",
			"analysis.minimumEffect", "analysis.tuningUsers", "analysis.priorMean", "analysis.priorStdDev"}},
		{"decision on a draft", func(e *Experiment) { e.Decision = &StopDecision{Outcome: OutcomeNone} }, []string{"decision"}},
		{"bad decision when stopped", func(e *Experiment) {
			e.Status = StatusStopped
			e.Decision = &StopDecision{Outcome: OutcomeShip, Variant: "purple"}
		}, []string{"decision.variant"}},
		{"unknown status", func(e *Experiment) { e.Status = "paused" }, []string{"status"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := testExperiment()
			c.modify(e)
			got := problemPaths(t, e.Validate())
			if !slices.Equal(got, c.want) {
				t.Errorf("problems at %q, want %q (error: %v)", got, c.want, e.Validate())
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	e := testExperiment()
	e.Key, e.Traffic = "", 200
	err := e.Validate()
	msg := err.Error()
	for _, want := range []string{"invalid experiment", "key: is required", "traffic: must be a percentage"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	b, _ := json.Marshal(err.(*ValidationError).Problems[0])
	if string(b) != `{"field":"key","problem":"is required"}` {
		t.Errorf("problem JSON = %s", b)
	}
}

func TestCheckFlag(t *testing.T) {
	flag := &flags.Flag{State: flags.Enabled, Variants: map[string]any{"off": false, "on": true}}
	cases := []struct {
		name string
		flag *flags.Flag
		arms []string
		want []string
	}{
		{"fits", flag, []string{"on"}, nil},
		{"missing flag", nil, []string{"on"}, []string{"flagKey"}},
		{"disabled", &flags.Flag{State: flags.Disabled, Variants: flag.Variants}, []string{"on"}, []string{"flagKey"}},
		{"unknown treatment", flag, []string{"on", "maybe"}, []string{"treatments[1]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := testExperiment()
			e.Treatments = c.arms
			if got := problemPaths(t, e.CheckFlag(c.flag)); !slices.Equal(got, c.want) {
				t.Errorf("problems at %q, want %q", got, c.want)
			}
		})
	}
}

var (
	t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	t1 = t0.Add(48 * time.Hour)
)

func TestLifecycle(t *testing.T) {
	e := testExperiment()
	if err := e.Start(t0); err != nil {
		t.Fatal(err)
	}
	if e.Status != StatusRunning || !e.StartedAt.Equal(t0) || e.Salt != "checkout-test" || e.Analysis.Mode != ModeSequential {
		t.Fatalf("after Start: %+v", e)
	}
	if err := e.Start(t1); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("second Start: %v, want ErrInvalidTransition", err)
	}
	if err := e.Archive(t1); !errors.Is(err, ErrInvalidTransition) || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("Archive while running: %v", err)
	}
	if err := e.Restart(t1, ""); err != nil {
		t.Fatal(err)
	}
	if e.Salt != "checkout-test.r1" || e.Restarts != 1 || !e.StartedAt.Equal(t1) {
		t.Errorf("after Restart: salt %q restarts %d started %v", e.Salt, e.Restarts, e.StartedAt)
	}
	if got := problemPaths(t, e.Restart(t1, e.Salt)); !slices.Equal(got, []string{"salt"}) {
		t.Errorf("Restart with the same salt: problems %q", got)
	}
	if got := problemPaths(t, e.Stop(t1, StopDecision{Outcome: OutcomeShip})); !slices.Equal(got, []string{"decision.variant"}) {
		t.Errorf("Stop ship without variant: problems %q", got)
	}
	if got := problemPaths(t, e.Stop(t1, StopDecision{Outcome: "maybe"})); !slices.Equal(got, []string{"decision.outcome"}) {
		t.Errorf("Stop with unknown outcome: problems %q", got)
	}
	if e.Status != StatusRunning {
		t.Fatalf("failed Stop changed the status to %s", e.Status)
	}
	if err := e.Stop(t1, StopDecision{Outcome: OutcomeShip, Variant: "on", Note: "clear win"}); err != nil {
		t.Fatal(err)
	}
	if e.Status != StatusStopped || e.Decision.Variant != "on" || !e.StoppedAt.Equal(t1) {
		t.Errorf("after Stop: %+v", e)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("stopped experiment invalid: %v", err)
	}
	for name, f := range map[string]func() error{
		"restart": func() error { return e.Restart(t1, "") },
		"stop":    func() error { return e.Stop(t1, StopDecision{Outcome: OutcomeNone}) },
		"start":   func() error { return e.Start(t1) },
	} {
		if err := f(); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("%s when stopped: %v, want ErrInvalidTransition", name, err)
		}
	}
	if err := e.Archive(t1); err != nil {
		t.Fatal(err)
	}
	if err := e.Archive(t1); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("second Archive: %v", err)
	}
	if err := e.Update(*e, t1, false); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("Update when archived: %v", err)
	}

	draft := testExperiment()
	if err := draft.Archive(t0); err != nil || draft.Status != StatusArchived {
		t.Errorf("archiving a draft: %v, status %s", err, draft.Status)
	}
	invalid := testExperiment()
	invalid.Metrics = nil
	if got := problemPaths(t, invalid.Start(t0)); !slices.Equal(got, []string{"metrics"}) || invalid.Status != "" {
		t.Errorf("Start of an invalid draft: problems %q, status %q", got, invalid.Status)
	}
}

func TestUpdate(t *testing.T) {
	running := func() *Experiment {
		e := testExperiment()
		e.Traffic = 20
		if err := e.Start(t0); err != nil {
			t.Fatal(err)
		}
		return e
	}
	cases := []struct {
		name    string
		start   func() *Experiment
		change  func(n *Experiment)
		restart bool
		check   func(t *testing.T, e *Experiment, err error)
	}{
		{"draft takes anything", testExperiment, func(n *Experiment) {
			n.Weights, n.FlagKey, n.Treatments = []int{1, 4}, "other-flag", []string{"x"}
		}, false, func(t *testing.T, e *Experiment, err error) {
			if err != nil || e.FlagKey != "other-flag" || e.Weights[1] != 4 {
				t.Errorf("err %v, experiment %+v", err, e)
			}
		}},
		{"weights need a restart", running, func(n *Experiment) { n.Weights = []int{1, 3} }, false,
			func(t *testing.T, e *Experiment, err error) {
				var rr *RestartRequiredError
				if !errors.As(err, &rr) || !errors.Is(err, ErrRestartRequired) || !slices.Equal(rr.Fields, []string{"weights"}) {
					t.Errorf("err = %v", err)
				}
				if e.Weights != nil {
					t.Errorf("refused update changed weights to %v", e.Weights)
				}
			}},
		{"weights with restart", running, func(n *Experiment) { n.Weights = []int{1, 3} }, true,
			func(t *testing.T, e *Experiment, err error) {
				if err != nil || !slices.Equal(e.Weights, []int{1, 3}) || e.Restarts != 1 || e.Salt == "checkout-test" || !e.StartedAt.Equal(t1) {
					t.Errorf("err %v, weights %v restarts %d salt %q", err, e.Weights, e.Restarts, e.Salt)
				}
			}},
		{"same split spelled out is no change", running, func(n *Experiment) { n.Weights = []int{1, 1} }, false,
			func(t *testing.T, e *Experiment, err error) {
				if err != nil || e.Restarts != 0 {
					t.Errorf("err %v restarts %d", err, e.Restarts)
				}
			}},
		{"arms and lower traffic", running, func(n *Experiment) { n.Treatments = []string{"on", "blue"}; n.Traffic = 10 }, false,
			func(t *testing.T, e *Experiment, err error) {
				var rr *RestartRequiredError
				if !errors.As(err, &rr) || !slices.Equal(rr.Fields, []string{"treatments", "traffic (lowering it)"}) {
					t.Errorf("err = %v", err)
				}
			}},
		{"alpha needs a restart", running, func(n *Experiment) { n.Analysis.Alpha = 0.1 }, false,
			func(t *testing.T, e *Experiment, err error) {
				if !errors.Is(err, ErrRestartRequired) {
					t.Errorf("err = %v", err)
				}
			}},
		{"raising traffic, metrics and planning are fine", running, func(n *Experiment) {
			n.Traffic = 50
			n.Hypothesis = "faster checkout sells more"
			n.Metrics = append(n.Metrics, Metric{Key: "revenue", Kind: KindSum, Event: "purchase", Role: RoleSecondary})
			n.Analysis.MinimumEffect = 0.02
		}, false, func(t *testing.T, e *Experiment, err error) {
			if err != nil || e.Traffic != 50 || len(e.Metrics) != 2 || e.Analysis.MinimumEffect != 0.02 || e.Restarts != 0 {
				t.Errorf("err %v, experiment %+v", err, e)
			}
		}},
		{"flag of a running experiment", running, func(n *Experiment) { n.FlagKey = "other" }, true,
			func(t *testing.T, e *Experiment, err error) {
				if got := problemPaths(t, err); !slices.Equal(got, []string{"flagKey"}) {
					t.Errorf("problems %q", got)
				}
			}},
		{"key never changes", testExperiment, func(n *Experiment) { n.Key = "renamed" }, false,
			func(t *testing.T, e *Experiment, err error) {
				if got := problemPaths(t, err); !slices.Equal(got, []string{"key"}) {
					t.Errorf("problems %q", got)
				}
			}},
		{"invalid change", running, func(n *Experiment) { n.Traffic = 300 }, false,
			func(t *testing.T, e *Experiment, err error) {
				if got := problemPaths(t, err); !slices.Equal(got, []string{"traffic"}) || e.Traffic != 20 {
					t.Errorf("problems %q, traffic %v", got, e.Traffic)
				}
			}},
		{"stopped takes only the hypothesis", func() *Experiment {
			e := running()
			if err := e.Stop(t1, StopDecision{Outcome: OutcomeRollback}); err != nil {
				t.Fatal(err)
			}
			return e
		}, func(n *Experiment) { n.Hypothesis = "it did not work"; n.Traffic = 50 }, false,
			func(t *testing.T, e *Experiment, err error) {
				if !errors.Is(err, ErrInvalidTransition) || !strings.Contains(err.Error(), "traffic") {
					t.Errorf("err = %v", err)
				}
			}},
		{"lifecycle fields are ignored", running, func(n *Experiment) {
			n.Status, n.Salt, n.Restarts = StatusDraft, "forged", 9
		}, false, func(t *testing.T, e *Experiment, err error) {
			if err != nil || e.Status != StatusRunning || e.Salt != "checkout-test" || e.Restarts != 0 {
				t.Errorf("err %v, status %s salt %q restarts %d", err, e.Status, e.Salt, e.Restarts)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := c.start()
			next := e.clone()
			c.change(&next)
			err := e.Update(next, t1, c.restart)
			c.check(t, e, err)
		})
	}
}

func TestUpdateDoesNotAlias(t *testing.T) {
	e := testExperiment()
	next := e.clone()
	next.Metrics[0].Numerator = nil
	if err := e.Update(next, t0, false); err != nil {
		t.Fatal(err)
	}
	next.Metrics[0].Key = "mutated"
	next.Treatments[0] = "mutated"
	if e.Metrics[0].Key == "mutated" || e.Treatments[0] == "mutated" {
		t.Error("Update kept references to the caller's slices")
	}
}

func TestMetricUserValue(t *testing.T) {
	sumPart := &Part{Event: "purchase", Aggregate: AggregateSum}
	countPart := &Part{Event: "session", Aggregate: AggregateCount}
	cases := []struct {
		name     string
		m        Metric
		num, den Tally
		x, y     float64
	}{
		{"conversion yes", Metric{Kind: KindConversion}, Tally{Count: 3, Sum: 10}, Tally{}, 1, 0},
		{"conversion no", Metric{Kind: KindConversion}, Tally{}, Tally{}, 0, 0},
		{"count", Metric{Kind: KindCount}, Tally{Count: 3}, Tally{}, 3, 0},
		{"count capped", Metric{Kind: KindCount, Cap: 2}, Tally{Count: 3}, Tally{}, 2, 0},
		{"sum", Metric{Kind: KindSum}, Tally{Count: 2, Sum: 25.5}, Tally{}, 25.5, 0},
		{"sum capped both ways", Metric{Kind: KindSum, Cap: 10}, Tally{Count: 1, Sum: -40}, Tally{}, -10, 0},
		{"sum NaN ignored", Metric{Kind: KindSum}, Tally{Count: 1, Sum: math.NaN()}, Tally{}, 0, 0},
		{"mean", Metric{Kind: KindMean, Event: "e"}, Tally{Count: 4, Sum: 10}, Tally{Count: 4, Sum: 10}, 10, 4},
		{"ratio", Metric{Kind: KindRatio, Numerator: sumPart, Denominator: countPart}, Tally{Count: 2, Sum: 30}, Tally{Count: 5}, 30, 5},
		{"ratio capped numerator", Metric{Kind: KindRatio, Numerator: sumPart, Denominator: countPart, Cap: 20}, Tally{Count: 2, Sum: 30}, Tally{Count: 5}, 20, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x, y := c.m.UserValue(c.num, c.den)
			if x != c.x || y != c.y {
				t.Errorf("UserValue = (%v, %v), want (%v, %v)", x, y, c.x, c.y)
			}
		})
	}
	m := Metric{Kind: KindRatio, Numerator: sumPart, Denominator: countPart}
	if m.NumeratorEvent() != "purchase" || m.DenominatorEvent() != "session" || !m.IsRatio() {
		t.Errorf("ratio events %q / %q", m.NumeratorEvent(), m.DenominatorEvent())
	}
	mean := Metric{Kind: KindMean, Event: "load"}
	if mean.NumeratorEvent() != "load" || mean.DenominatorEvent() != "load" {
		t.Errorf("mean events %q / %q", mean.NumeratorEvent(), mean.DenominatorEvent())
	}
	conv := Metric{Kind: KindConversion, Event: "buy"}
	if conv.DenominatorEvent() != "" || conv.IsRatio() {
		t.Errorf("conversion has a denominator %q", conv.DenominatorEvent())
	}
}

// FuzzExperimentJSON feeds arbitrary JSON through the model: nothing may
// panic, and a valid experiment's targeting must agree with Assign.
func FuzzExperimentJSON(f *testing.F) {
	seed, _ := json.Marshal(testExperiment())
	f.Add(seed)
	f.Add([]byte(`{"key":"k","flagKey":"f","control":"a","treatments":["b","c"],"weights":[1,2,3],"traffic":12.34,` +
		`"metrics":[{"key":"m","kind":"ratio","role":"goal","numerator":{"event":"x","aggregate":"sum"},"denominator":{"event":"y","aggregate":"count"}}]}`))
	f.Add([]byte(`{"key":"k","weights":[-1,0],"traffic":-3,"status":"stopped","decision":{"outcome":"ship","variant":"zzz"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Experiment
		if json.Unmarshal(data, &e) != nil {
			return
		}
		_ = e.Assign("someone")
		_ = Analyze(&e, Observations{Users: map[string]int64{e.Control: 10}}, t1)
		valid := e.Validate() == nil
		raw, err := e.Targeting()
		c := e.clone()
		c.Defaults()
		if (err == nil) != (c.Validate() == nil) {
			t.Fatalf("Targeting error %v but Validate after defaults says %v", err, c.Validate())
		}
		if err == nil {
			var rule any
			if err := json.Unmarshal(raw, &rule); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"u1", "u2", "someone else"} {
				if got, want := evalFlagd(t, rule, map[string]any{"targetingKey": key}), c.Assign(key).Variant; got != want {
					t.Fatalf("%s: rule gives %v, Assign %q", key, got, want)
				}
			}
		}
		next := e.clone()
		next.Traffic = 50
		_ = e.Update(next, t1, true)
		if valid && e.status() == StatusDraft {
			if err := e.Start(t0); err != nil && !errors.Is(err, ErrInvalidTransition) {
				if _, ok := err.(*ValidationError); !ok {
					t.Fatalf("Start of a valid draft: %v", err)
				}
			}
		}
	})
}
