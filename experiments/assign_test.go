package experiments

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/internal/stat"
)

// Vectors from flagd's conformance suite (open-feature/flagd-testbed,
// evaluator/gherkin/fractional.feature, the "fractional-v2" examples): the
// variant flagd picks for a bucketing key under the given weights. They pin
// our hash and bucketing to flagd's, independently of our own targeting JSON.
func TestPickMatchesFlagdConformanceVectors(t *testing.T) {
	suits := []string{"clubs", "diamonds", "hearts", "spades"}
	quarters := []int{25, 25, 25, 25}
	halves := []int{50, 50}
	cases := []struct {
		name    string
		key     string
		weights []int
		arms    []string
		want    string
	}{
		{"shared seed seven", "shared-seed" + "seven", quarters, suits, "hearts"},
		{"shared seed eight", "shared-seed" + "eight", quarters, suits, "diamonds"},
		{"shared seed nine", "shared-seed" + "nine", quarters, suits, "clubs"},
		{"shared seed two", "shared-seed" + "two", quarters, suits, "spades"},
		{"flag key jack", "fractional-flag" + "jack", quarters, suits, "hearts"},
		{"flag key queen", "fractional-flag" + "queen", quarters, suits, "spades"},
		{"flag key ten", "fractional-flag" + "ten", quarters, suits, "clubs"},
		{"flag key nine", "fractional-flag" + "nine", quarters, suits, "diamonds"},
		{"flag key 3", "fractional-flag" + "3", quarters, suits, "clubs"},
		{"hash edge ejOoVL", "ejOoVL", halves, []string{"lower", "upper"}, "lower"},
		{"hash edge bY9fO-", "bY9fO-", halves, []string{"lower", "upper"}, "lower"},
		{"hash edge SI7p-", "SI7p-", halves, []string{"lower", "upper"}, "lower"},
		{"hash edge 6LvT0", "6LvT0", halves, []string{"lower", "upper"}, "upper"},
		{"hash edge ceQdGm", "ceQdGm", halves, []string{"lower", "upper"}, "upper"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.arms[pick(bucketHash(c.key), c.weights)]; got != c.want {
				t.Errorf("pick(%q) = %s, want %s", c.key, got, c.want)
			}
		})
	}
	// The same suite documents bucket values out of 100: jon@company.com → 36, user1 → 76.
	for key, want := range map[string]uint64{"jon@company.com": 36, "user1": 76} {
		if got := (uint64(bucketHash(key)) * 100) >> 32; got != want {
			t.Errorf("bucket(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestPickEdges(t *testing.T) {
	cases := []struct {
		name    string
		hash    uint32
		weights []int
		want    int
	}{
		{"zero hash is first", 0, []int{1, 1}, 0},
		{"max hash is last", math.MaxUint32, []int{1, 1}, 1},
		{"max hash with 99/1", math.MaxUint32, []int{99, 1}, 1},
		{"half boundary low", 1<<31 - 1, []int{1, 1}, 0},
		{"half boundary high", 1 << 31, []int{1, 1}, 1},
		{"no weights", 123, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := pick(c.hash, c.weights); got != c.want {
				t.Errorf("pick(%d, %v) = %d, want %d", c.hash, c.weights, got, c.want)
			}
		})
	}
}

func testExperiment() *Experiment {
	return &Experiment{
		Key:        "checkout-test",
		FlagKey:    "new-checkout",
		Control:    "off",
		Treatments: []string{"on"},
		Metrics:    []Metric{{Key: "purchase", Kind: KindConversion, Event: "purchase", Role: RoleGoal}},
	}
}

func TestTargetingJSON(t *testing.T) {
	e := testExperiment()
	e.Salt = "s1"
	got, err := e.Targeting()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"if":[{"var":"targetingKey"},{"fractional":[{"cat":["s1",":",{"var":"targetingKey"}]},["off",1],["on",1]]},"off"]}`
	if string(got) != want {
		t.Errorf("Targeting() =\n%s\nwant\n%s", got, want)
	}

	e.Traffic = 12.5
	e.Weights = []int{1, 3}
	got, err = e.Targeting()
	if err != nil {
		t.Fatal(err)
	}
	want = `{"if":[{"and":[{"var":"targetingKey"},{"==":[{"fractional":[{"cat":["s1",":traffic:",{"var":"targetingKey"}]},["in",1250],["out",8750]]},"in"]}]},` +
		`{"fractional":[{"cat":["s1",":",{"var":"targetingKey"}]},["off",1],["on",3]]},"off"]}`
	if string(got) != want {
		t.Errorf("Targeting() =\n%s\nwant\n%s", got, want)
	}

	bad := testExperiment()
	bad.Treatments = nil
	if _, err := bad.Targeting(); err == nil {
		t.Error("Targeting of an experiment without treatments: no error")
	}
}

// evalFlagd evaluates the JsonLogic subset that Targeting emits (if, and,
// ==, var, cat, fractional) with flagd's semantics, written independently of
// Assign: it is how flagd itself would read the rule.
func evalFlagd(t *testing.T, rule any, data map[string]any) any {
	t.Helper()
	switch r := rule.(type) {
	case []any:
		out := make([]any, len(r))
		for i, v := range r {
			out[i] = evalFlagd(t, v, data)
		}
		return out
	case map[string]any:
		if len(r) != 1 {
			t.Fatalf("operator object with %d keys", len(r))
		}
		for op, raw := range r {
			args, _ := raw.([]any)
			switch op {
			case "var":
				return data[raw.(string)]
			case "cat":
				s := ""
				for _, a := range args {
					if v := evalFlagd(t, a, data); v != nil {
						s += fmt.Sprint(v)
					}
				}
				return s
			case "if":
				for i := 0; i+1 < len(args); i += 2 {
					if truthy(evalFlagd(t, args[i], data)) {
						return evalFlagd(t, args[i+1], data)
					}
				}
				if len(args)%2 == 1 {
					return evalFlagd(t, args[len(args)-1], data)
				}
				return nil
			case "and":
				var v any
				for _, a := range args {
					if v = evalFlagd(t, a, data); !truthy(v) {
						return v
					}
				}
				return v
			case "==":
				return evalFlagd(t, args[0], data) == evalFlagd(t, args[1], data)
			case "fractional":
				key := evalFlagd(t, args[0], data).(string)
				var total uint64
				for _, b := range args[1:] {
					total += uint64(b.([]any)[1].(float64))
				}
				bucket := (uint64(flags.Murmur3(key)) * total) >> 32
				var end uint64
				for _, b := range args[1:] {
					pair := b.([]any)
					end += uint64(pair[1].(float64))
					if bucket < end {
						return pair[0]
					}
				}
				return nil
			}
			t.Fatalf("unexpected operator %q", op)
		}
	}
	return rule
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case float64:
		return x != 0
	}
	return true
}

// TestTargetingAgreesWithAssign evaluates the generated rule as flagd would
// for many users and checks that Assign predicts every variant, and that
// users outside the traffic get the control.
func TestTargetingAgreesWithAssign(t *testing.T) {
	cases := []struct {
		name    string
		traffic float64
		weights []int
		arms    []string
	}{
		{"full traffic 50/50", 100, nil, []string{"on"}},
		{"full traffic 1:2:3", 100, []int{1, 2, 3}, []string{"blue", "green"}},
		{"quarter traffic", 25, []int{50, 50}, []string{"on"}},
		{"tiny traffic", 0.5, nil, []string{"on", "turbo"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := testExperiment()
			e.Traffic, e.Weights, e.Treatments = c.traffic, c.weights, c.arms
			e.Defaults()
			raw, err := e.Targeting()
			if err != nil {
				t.Fatal(err)
			}
			var rule any
			if err := json.Unmarshal(raw, &rule); err != nil {
				t.Fatal(err)
			}
			in := 0
			const users = 4000
			for i := range users {
				key := fmt.Sprintf("user-%d", i)
				got := evalFlagd(t, rule, map[string]any{"targetingKey": key})
				a := e.Assign(key)
				if got != a.Variant {
					t.Fatalf("user %s: flagd rule gives %v, Assign gives %+v", key, got, a)
				}
				if a.InExperiment {
					in++
				} else if a.Variant != e.Control {
					t.Fatalf("user %s outside the experiment got %s", key, a.Variant)
				}
			}
			// The traffic share is right within 5 standard errors.
			p := c.traffic / 100
			if se := math.Sqrt(p * (1 - p) / users); math.Abs(float64(in)/users-p) > 5*se+1e-9 {
				t.Errorf("%d of %d users in the experiment, want about %.1f%%", in, users, c.traffic)
			}
			// No targeting key: control, never in the experiment.
			if got := evalFlagd(t, rule, map[string]any{}); got != e.Control {
				t.Errorf("no targeting key: rule gives %v", got)
			}
			if a := e.Assign(""); a.InExperiment || a.Variant != e.Control {
				t.Errorf("Assign(\"\") = %+v", a)
			}
		})
	}
}

func TestAssignSplitAndIndependence(t *testing.T) {
	e := testExperiment()
	e.Treatments = []string{"b", "c"}
	e.Weights = []int{2, 1, 1}
	e.Defaults()
	other := testExperiment()
	other.Key, other.Salt = "other-test", "other-test"

	const n = 40000
	counts := map[string]int64{}
	// 3×2 contingency of this experiment's arm against another experiment's.
	var joint [3][2]float64
	arm := map[string]int{"off": 0, "b": 1, "c": 2}
	for i := range n {
		key := fmt.Sprintf("u%07d", i)
		a := e.Assign(key)
		counts[a.Variant]++
		o := 0
		if other.Assign(key).Variant == "on" {
			o = 1
		}
		joint[arm[a.Variant]][o]++
	}
	srm := SampleRatioMismatch([]int64{counts["off"], counts["b"], counts["c"]}, e.Weights)
	if srm.PValue < 0.001 {
		t.Errorf("split %v against 2:1:1 has chi-square p = %g", counts, srm.PValue)
	}
	// Pearson's independence test on the contingency table.
	var rows [3]float64
	var cols [2]float64
	for i := range 3 {
		for j := range 2 {
			rows[i] += joint[i][j]
			cols[j] += joint[i][j]
		}
	}
	chi := 0.0
	for i := range 3 {
		for j := range 2 {
			exp := rows[i] * cols[j] / n
			chi += (joint[i][j] - exp) * (joint[i][j] - exp) / exp
		}
	}
	if p := stat.ChiSquareSF(chi, 2); p < 0.001 {
		t.Errorf("assignments of two experiments are dependent: chi-square %.1f, p = %g", chi, p)
	}
}

func TestAssignStability(t *testing.T) {
	e := testExperiment()
	e.Traffic = 10
	e.Defaults()
	wider := testExperiment()
	wider.Traffic = 30
	wider.Defaults()
	restarted := testExperiment()
	restarted.Salt = "checkout-test.r1"

	moved, changed := 0, 0
	for i := range 5000 {
		key := fmt.Sprintf("k%d", i)
		a, w := e.Assign(key), wider.Assign(key)
		if a.InExperiment && (!w.InExperiment || w.Variant != a.Variant) {
			moved++
		}
		if e2 := testExperiment(); e2.Assign(key) != restarted.Assign(key) {
			changed++
		}
	}
	if moved != 0 {
		t.Errorf("raising traffic from 10%% to 30%% moved %d users out of their arm", moved)
	}
	if changed < 2000 || changed > 3000 {
		t.Errorf("a new salt changed the arm of %d of 5000 users, want about half", changed)
	}
}

func TestAssignDoesNotAllocate(t *testing.T) {
	e := testExperiment()
	e.Traffic = 50
	e.Defaults()
	allocs := testing.AllocsPerRun(100, func() { _ = e.Assign("user-123456") })
	if allocs != 0 {
		t.Errorf("Assign allocates %v times per call", allocs)
	}
}

// TestTargetingOnTheFlagEngine compiles the generated rule with Flagpole's
// own flagd engine and checks that it serves exactly what Assign predicts.
func TestTargetingOnTheFlagEngine(t *testing.T) {
	for _, traffic := range []float64{100, 37.5} {
		t.Run(fmt.Sprint(traffic), func(t *testing.T) {
			e := testExperiment()
			e.Traffic = traffic
			e.Treatments = []string{"on", "turbo"}
			e.Weights = []int{2, 1, 1}
			e.Defaults()
			rule, err := e.Targeting()
			if err != nil {
				t.Fatal(err)
			}
			def := "off"
			doc := &flags.Document{Flags: map[string]*flags.Flag{e.FlagKey: {
				State:          flags.Enabled,
				Variants:       map[string]any{"off": "old", "on": "new", "turbo": "newer"},
				DefaultVariant: &def,
				Targeting:      rule,
			}}}
			set, err := flags.Compile(doc)
			if err != nil {
				t.Fatalf("the flag engine rejects the targeting: %v", err)
			}
			for i := range 3000 {
				key := fmt.Sprintf("account-%d", i)
				res := set.Evaluate(e.FlagKey, map[string]any{"targetingKey": key})
				if want := e.Assign(key).Variant; res.Variant != want {
					t.Fatalf("%s: engine serves %q (%s %s), Assign says %q", key, res.Variant, res.Reason, res.ErrorMessage, want)
				}
			}
			if res := set.Evaluate(e.FlagKey, map[string]any{}); res.Variant != "off" {
				t.Errorf("no targeting key: engine serves %q (%s)", res.Variant, res.Reason)
			}
		})
	}
}
