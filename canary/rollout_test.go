package canary_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// op is one thing that happens to a rollout in a state-machine case.
type op struct {
	at   time.Duration // after t0
	do   string        // pause, resume, promote, abort, retry, start, eval, synced
	run  canary.Phase  // for eval: the analysis run's phase ("" none)
	want error         // the error expected, nil for none
}

func TestRolloutStateMachine(t *testing.T) {
	gated := []canary.RolloutStep{
		{Percent: 1, MinDuration: "5m", Analysis: &canary.StepAnalysis{Template: "t"}},
		{Percent: 50, MinDuration: "10m"},
		{Percent: 100},
	}
	holding := []canary.RolloutStep{{Percent: 10, MinDuration: "1m"}, {Percent: 25.5, MinDuration: "1m"}}
	gated100 := []canary.RolloutStep{{Percent: 50, MinDuration: "1m"}, {Percent: 100, MinDuration: "1m"}}
	tests := []struct {
		name    string
		steps   []canary.RolloutStep
		onFail  canary.OnFail
		startAt time.Duration // > 0: scheduled
		ops     []op
		state   canary.RolloutState
		step    int
		percent float64
		flag    string // DesiredFlag: "default" or "default W" (basis points), "" for no write
		events  string // history events after "created"
	}{
		{name: "starts at once at the first step", steps: gated,
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started"},
		{name: "scheduled waits, then starts", steps: gated, startAt: time.Hour,
			ops:   []op{{at: time.Hour, do: "start"}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "scheduled started"},
		{name: "a scheduled rollout does not touch the flag", steps: gated, startAt: time.Hour,
			state: canary.RolloutScheduled, flag: "", events: "scheduled"},
		{name: "analysis pass before minDuration waits for it", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval", run: canary.PhaseSuccessful}, {at: 4 * time.Minute, do: "eval", run: canary.PhaseSuccessful}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started analysis analysis"},
		{name: "analysis pass and minDuration move to the next step", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 5 * time.Minute, do: "eval", run: canary.PhaseSuccessful}},
			state: canary.RolloutRunning, step: 1, percent: 50, flag: "off 5000", events: "started analysis analysis step"},
		{name: "minDuration alone is not enough while the analysis runs", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: time.Hour, do: "eval", run: canary.PhaseRunning}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started analysis"},
		{name: "a failed analysis rolls back at once", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval", run: canary.PhaseFailed}},
			state: canary.RolloutFailed, step: 0, percent: 0, flag: "off", events: "started analysis failed"},
		{name: "a failed analysis pauses under onFail pause", steps: gated, onFail: canary.OnFailPause,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval", run: canary.PhaseFailed}},
			state: canary.RolloutPaused, step: 0, percent: 1, flag: "off 100", events: "started analysis paused"},
		{name: "an inconclusive analysis pauses", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval", run: canary.PhaseInconclusive}},
			state: canary.RolloutPaused, step: 0, percent: 1, flag: "off 100", events: "started analysis paused"},
		{name: "an analysis that vanished pauses", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval"}},
			state: canary.RolloutPaused, step: 0, percent: 1, flag: "off 100", events: "started analysis paused"},
		{name: "retry after a rollback restarts the failed step", steps: gated,
			ops: []op{{do: "synced"}, {at: time.Minute, do: "analysis"}, {at: 2 * time.Minute, do: "eval", run: canary.PhaseFailed},
				{do: "synced"}, {at: 3 * time.Minute, do: "retry"}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started analysis failed retried"},
		{name: "pause, resume", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "pause"}, {do: "synced"}, {at: 2 * time.Minute, do: "resume"}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started paused resumed"},
		{name: "resume restarts the step's minDuration", steps: holding,
			ops: []op{{do: "synced"}, {at: 50 * time.Second, do: "pause"}, {do: "synced"}, {at: 55 * time.Second, do: "resume"}, {do: "synced"},
				{at: 90 * time.Second, do: "eval"}},
			state: canary.RolloutRunning, step: 0, percent: 10, flag: "off 1000", events: "started paused resumed"},
		{name: "promote serves the new variant to everyone", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "promote"}},
			state: canary.RolloutSucceeded, step: 2, percent: 100, flag: "on", events: "started promoted succeeded"},
		{name: "abort rolls back", steps: gated,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "abort"}},
			state: canary.RolloutAborted, step: 0, percent: 0, flag: "off", events: "started aborted"},
		{name: "abort of a scheduled rollout leaves the flag alone", steps: gated, startAt: time.Hour,
			ops:   []op{{at: time.Minute, do: "abort"}},
			state: canary.RolloutAborted, flag: "", events: "scheduled aborted"},
		{name: "ramps to a last step below 100 and holds", steps: holding,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "eval"}, {do: "synced"}, {at: 2 * time.Minute, do: "eval"}, {at: time.Hour, do: "eval"}},
			state: canary.RolloutRunning, step: 1, percent: 25.5, flag: "off 2550", events: "started step holding"},
		{name: "a gated 100% step serves everyone, then succeeds", steps: gated100,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "eval"}, {do: "synced"}, {at: 90 * time.Second, do: "eval"}},
			state: canary.RolloutRunning, step: 1, percent: 100, flag: "on", events: "started step"},
		{name: "a gated 100% step succeeds when it passes", steps: gated100,
			ops:   []op{{do: "synced"}, {at: time.Minute, do: "eval"}, {do: "synced"}, {at: 2 * time.Minute, do: "eval"}},
			state: canary.RolloutSucceeded, step: 1, percent: 100, flag: "on", events: "started step succeeded"},
		{name: "nothing moves while effects are pending", steps: holding,
			ops:   []op{{at: time.Hour, do: "eval"}},
			state: canary.RolloutRunning, step: 0, percent: 10, flag: "off 1000", events: "started"},
		{name: "pause of a paused rollout is refused", steps: gated,
			ops:   []op{{do: "pause"}, {do: "pause", want: canary.ErrRolloutState}},
			state: canary.RolloutPaused, step: 0, percent: 1, flag: "off 100", events: "started paused"},
		{name: "actions on an ended rollout are refused", steps: gated,
			ops: []op{{do: "abort"}, {do: "pause", want: canary.ErrRolloutState}, {do: "resume", want: canary.ErrRolloutState},
				{do: "promote", want: canary.ErrRolloutState}, {do: "abort", want: canary.ErrRolloutState}, {do: "retry", want: canary.ErrRolloutState}},
			state: canary.RolloutAborted, step: 0, percent: 0, flag: "off", events: "started aborted"},
		{name: "resume of a running rollout is refused", steps: gated,
			ops:   []op{{do: "resume", want: canary.ErrRolloutState}, {do: "retry", want: canary.ErrRolloutState}},
			state: canary.RolloutRunning, step: 0, percent: 1, flag: "off 100", events: "started"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Time{}
			if tc.startAt > 0 {
				start = t0.Add(tc.startAt)
			}
			r := canary.NewRollout("ro_sm", "prod", "checkout", "on", "off", tc.steps, tc.onFail, "", start, t0, "alice", "")
			for i, o := range tc.ops {
				now := t0.Add(o.at)
				var err error
				switch o.do {
				case "pause":
					err = r.Pause(now, "bob", "hold")
				case "resume":
					err = r.Resume(now, "bob", "")
				case "promote":
					err = r.Promote(now, "bob", "")
				case "abort":
					err = r.Abort(now, "bob", "stop")
				case "retry":
					err = r.Retry(now, "bob", "")
				case "start":
					err = r.Start(now, "ctl")
				case "synced":
					r.Pending = false
				case "analysis":
					if !r.NeedsAnalysis() {
						t.Fatalf("op %d: the step needs no analysis", i)
					}
					r.AnalysisStarted(now, r.NextRunID(), "ctl")
				case "eval":
					var run *canary.Run
					if o.run != "" {
						run = &canary.Run{ID: r.AnalysisID, Phase: o.run, Message: "judged"}
					}
					r.Evaluate(now, run, "ctl")
				}
				if !errors.Is(err, o.want) || (o.want == nil) != (err == nil) {
					t.Fatalf("op %d %s: error %v, want %v", i, o.do, err, o.want)
				}
			}
			if r.State != tc.state || r.Step != tc.step || r.Percent != tc.percent {
				t.Errorf("state %s step %d percent %v, want %s %d %v", r.State, r.Step, r.Percent, tc.state, tc.step, tc.percent)
			}
			if got := describeFlag(r.DesiredFlag()); got != tc.flag {
				t.Errorf("desired flag %q, want %q", got, tc.flag)
			}
			var evs []string
			for _, e := range r.History[1:] {
				evs = append(evs, e.Event)
			}
			if got := strings.Join(evs, " "); got != tc.events {
				t.Errorf("history %q, want %q", got, tc.events)
			}
			if r.State.Terminal() != !r.EndedAt.IsZero() {
				t.Errorf("state %s with endedAt %v", r.State, r.EndedAt)
			}
		})
	}
}

// describeFlag writes a FlagWrite as "default" or "default W".
func describeFlag(fw canary.FlagWrite) string {
	if !fw.Write {
		return ""
	}
	if fw.Targeting == nil {
		return fw.DefaultVariant
	}
	var m struct {
		Fractional [][]any `json:"fractional"`
	}
	_ = json.Unmarshal(fw.Targeting, &m)
	return fmt.Sprintf("%s %v", fw.DefaultVariant, m.Fractional[0][1])
}

func TestValidateSteps(t *testing.T) {
	tests := []struct {
		name   string
		steps  []canary.RolloutStep
		onFail canary.OnFail
		fields string
	}{
		{"valid", []canary.RolloutStep{{Percent: 0.5, MinDuration: "1m"}, {Percent: 100}}, "", ""},
		{"none", nil, "", "steps"},
		{"zero", []canary.RolloutStep{{Percent: 0, MinDuration: "1m"}}, "", "steps[0].percent"},
		{"above 100", []canary.RolloutStep{{Percent: 101, MinDuration: "1m"}}, "", "steps[0].percent"},
		{"three decimals", []canary.RolloutStep{{Percent: 1.125, MinDuration: "1m"}}, "", "steps[0].percent"},
		{"not increasing", []canary.RolloutStep{{Percent: 5, MinDuration: "1m"}, {Percent: 5, MinDuration: "1m"}}, "", "steps[1].percent"},
		{"bad duration", []canary.RolloutStep{{Percent: 5, MinDuration: "5 minutes"}}, "", "steps[0].minDuration"},
		{"negative duration", []canary.RolloutStep{{Percent: 5, MinDuration: "-1m"}}, "", "steps[0].minDuration"},
		{"ungated step", []canary.RolloutStep{{Percent: 5}, {Percent: 100}}, "", "steps[0]"},
		{"analysis without template", []canary.RolloutStep{{Percent: 5, Analysis: &canary.StepAnalysis{}}}, "", "steps[0].analysis.template"},
		{"bad onFail", []canary.RolloutStep{{Percent: 100}}, "explode", "onFail"},
		{"analysis at 100%", []canary.RolloutStep{{Percent: 50, MinDuration: "1m"}, {Percent: 100, Analysis: &canary.StepAnalysis{Template: "t"}}}, "", "steps[1].analysis"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := canary.ValidateSteps(tc.steps, tc.onFail)
			var fields []string
			var ve *canary.ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					fields = append(fields, p.Field)
				}
			} else if err != nil {
				t.Fatalf("error %T %v, want a *ValidationError", err, err)
			}
			if got := strings.Join(fields, ","); got != tc.fields {
				t.Errorf("fields %q, want %q (%v)", got, tc.fields, err)
			}
		})
	}
}

// TestFractionalUsersOnlyMoveForward evaluates 20,000 users with the
// flags engine at every step of a ramp: a user served the new variant at
// one step is served it at every later step, and each step serves about
// its percentage.
func TestFractionalUsersOnlyMoveForward(t *testing.T) {
	for _, bucketBy := range []string{"", "userId"} {
		t.Run("bucketBy="+bucketBy, func(t *testing.T) {
			const users = 20000
			onBefore := make([]bool, users)
			for _, pct := range []float64{0.5, 1, 5, 12.25, 25, 50, 99.99} {
				doc := fmt.Sprintf(`{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":%s}}}`,
					canary.FractionalTargeting("on", "off", bucketBy, pct))
				set, err := flags.Load([]byte(doc))
				if err != nil {
					t.Fatalf("%v%%: the targeting does not load: %v", pct, err)
				}
				on := 0
				for u := range users {
					ctx := map[string]any{"targetingKey": fmt.Sprintf("user-%d", u), "userId": fmt.Sprintf("u%d", u)}
					res := set.Evaluate("checkout", ctx)
					if res.Reason != flags.ReasonTargetingMatch {
						t.Fatalf("%v%%: user %d resolved %s (%s)", pct, u, res.Reason, res.ErrorMessage)
					}
					isOn := res.Variant == "on"
					if onBefore[u] && !isOn {
						t.Fatalf("%v%%: user %d moved from the new variant back to the old one", pct, u)
					}
					onBefore[u] = isOn
					if isOn {
						on++
					}
				}
				share := 100 * float64(on) / users
				if d := share - pct; d > 1 || d < -1 {
					t.Errorf("%v%%: %.2f%% of users served the new variant", pct, share)
				}
			}
		})
	}
}

func TestOwnsTargeting(t *testing.T) {
	for _, tc := range []struct {
		targeting string
		want      bool
	}{
		{"", true},
		{"null", true},
		{"{}", true},
		{string(canary.FractionalTargeting("on", "off", "", 5)), true},
		{string(canary.FractionalTargeting("on", "off", "userId", 5)), true},
		{string(canary.FractionalTargeting("off", "on", "", 5)), false},
		{`{"fractional":[["on",1],["off",1],["x",1]]}`, false},
		{`{"if":[{"==":[{"var":"plan"},"pro"]},"on","off"]}`, false},
		{`{"fractional":[["on","x"],["off",1]]}`, false},
	} {
		if got := canary.OwnsTargeting(json.RawMessage(tc.targeting), "on", "off"); got != tc.want {
			t.Errorf("OwnsTargeting(%s) = %v, want %v", tc.targeting, got, tc.want)
		}
	}
}

// TestAnalysisRunIDs: one run ID per step and attempt, so a start repeated
// after a crash finds the same run, and each step's first run is "a1"; a
// resume skips the ID the paused state would have used (a2), which a
// controller racing the pause may have created.
func TestAnalysisRunIDs(t *testing.T) {
	gate := &canary.StepAnalysis{Template: "t"}
	r := canary.NewRollout("ro_ids", "prod", "f", "on", "off",
		[]canary.RolloutStep{{Percent: 10, Analysis: gate}, {Percent: 50, Analysis: gate}, {Percent: 100}}, "", "", time.Time{}, t0, "a", "")
	r.Pending = false
	var ids []string
	start := func() {
		ids = append(ids, r.NextRunID())
		if again := r.NextRunID(); again != ids[len(ids)-1] {
			t.Fatalf("NextRunID changed without a start: %s", again)
		}
		r.AnalysisStarted(t0, r.NextRunID(), "ctl")
	}
	start()
	r.Evaluate(t0, &canary.Run{ID: r.AnalysisID, Phase: canary.PhaseSuccessful}, "ctl")
	r.Pending = false
	start()
	_ = r.Pause(t0, "bob", "")
	_ = r.Resume(t0, "bob", "")
	r.Pending = false
	start()
	if got := strings.Join(ids, " "); got != "ro_ids-s1-a1 ro_ids-s2-a1 ro_ids-s2-a3" {
		t.Errorf("run IDs %s", got)
	}
}

// TestBucketByFallsBackToTargetingKey evaluates a 50 % split bucketed by
// userId with the flags engine: users who share a userId share a variant
// whatever their targeting keys, and users without a userId (or with an
// empty one) are spread by their targeting keys instead of all landing on
// the same side.
func TestBucketByFallsBackToTargetingKey(t *testing.T) {
	doc := fmt.Sprintf(`{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":%s}}}`,
		canary.FractionalTargeting("on", "off", "userId", 50))
	set, err := flags.Load([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	const users = 4000
	for _, tc := range []struct {
		name string
		ctx  func(u int) map[string]any
	}{
		{"no userId", func(u int) map[string]any { return map[string]any{"targetingKey": fmt.Sprintf("user-%d", u)} }},
		{"empty userId", func(u int) map[string]any {
			return map[string]any{"targetingKey": fmt.Sprintf("user-%d", u), "userId": ""}
		}},
		{"userId", func(u int) map[string]any {
			return map[string]any{"targetingKey": "shared-device", "userId": fmt.Sprintf("u%d", u)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			on := 0
			for u := range users {
				res := set.Evaluate("checkout", tc.ctx(u))
				if res.Reason != flags.ReasonTargetingMatch {
					t.Fatalf("user %d resolved %s (%s)", u, res.Reason, res.ErrorMessage)
				}
				if res.Variant == "on" {
					on++
				}
			}
			if share := 100 * float64(on) / users; share < 45 || share > 55 {
				t.Errorf("%.1f%% of users served the new variant at a 50%% split", share)
			}
		})
	}
	// The attribute wins over the targeting key.
	a := set.Evaluate("checkout", map[string]any{"targetingKey": "phone", "userId": "u7"})
	for _, tk := range []string{"laptop", "tablet", "tv"} {
		if b := set.Evaluate("checkout", map[string]any{"targetingKey": tk, "userId": "u7"}); b.Variant != a.Variant {
			t.Errorf("user u7 is served %s on %s but %s on phone", b.Variant, tk, a.Variant)
		}
	}
}

// TestRetryOfAPausedRollout pins the documented contract: retry accepts a
// rollout paused by someone as well as one paused by its gate, and
// restarts the step (as resume does) with a fresh analysis ID.
func TestRetryOfAPausedRollout(t *testing.T) {
	for _, byGate := range []bool{false, true} {
		t.Run(fmt.Sprintf("pausedOnFail=%v", byGate), func(t *testing.T) {
			r := canary.NewRollout("ro_retry", "prod", "f", "on", "off", []canary.RolloutStep{
				{Percent: 10, Analysis: &canary.StepAnalysis{Template: "t"}}, {Percent: 100}}, canary.OnFailPause, "", time.Time{}, t0, "a", "")
			r.Pending = false
			r.AnalysisStarted(t0, r.NextRunID(), "ctl")
			if byGate {
				r.Evaluate(t0, &canary.Run{ID: r.AnalysisID, Phase: canary.PhaseFailed}, "ctl")
			} else if err := r.Pause(t0, "bob", "looking"); err != nil {
				t.Fatal(err)
			}
			if r.State != canary.RolloutPaused || r.PausedOnFail != byGate {
				t.Fatalf("before the retry: %s pausedOnFail=%v", r.State, r.PausedOnFail)
			}
			before := r.NextRunID()
			if err := r.Retry(t0, "bob", "again"); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if r.State != canary.RolloutRunning || r.Evidence != nil || r.NextRunID() == before || r.History[len(r.History)-1].Event != canary.EventRetried {
				t.Errorf("after the retry: %s evidence=%v next run %s (was %s)", r.State, r.Evidence, r.NextRunID(), before)
			}
		})
	}
}
