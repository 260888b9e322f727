package canary_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
)

func (w *world) controller(owner string, ttl time.Duration) *canary.RolloutController {
	w.t.Helper()
	c, err := canary.NewRolloutController(canary.RolloutControllerConfig{Service: w.svc, Owner: owner, LeaseTTL: ttl})
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// runController runs c until the test's bubble ends.
func runController(t *testing.T, c *canary.RolloutController) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestSplitCheckNeedsATolerance: a gate's analysis is told the step's
// split (for its sample-ratio check) only when its template tolerates a
// deviation; users, not requests, are what the flag splits.
func TestSplitCheckNeedsATolerance(t *testing.T) {
	cases := []struct {
		name      string
		template  string
		values    map[string]string
		wantSplit float64
	}{
		{name: "template with a tolerance", template: "http-errors", values: map[string]string{"service": "web"}, wantSplit: 0.01},
		{name: "template without one", template: "exact-split", wantSplit: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t, "prod")
				sr := w.start(canary.RolloutRequest{Steps: []canary.RolloutStep{
					{Percent: 1, Analysis: &canary.StepAnalysis{Template: tc.template, Values: tc.values}},
					{Percent: 100},
				}})
				runController(t, w.controller("a", 0))
				time.Sleep(time.Second)
				run, err := w.analyses.Run(t.Context(), w.get(sr.ID).AnalysisID)
				if err != nil {
					t.Fatal(err)
				}
				if run.Args.ExpectedSplit != tc.wantSplit {
					t.Errorf("expected split %v, want %v", run.Args.ExpectedSplit, tc.wantSplit)
				}
			})
		})
	}
}

func TestControllerRampsToSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "prod")
		sr := w.start(canary.RolloutRequest{})
		if got := w.flagsMem.serves(t, "prod", "checkout"); got != `off {"fractional":[["on",100],["off",9900]]}` {
			t.Fatalf("after start the flag serves %s", got)
		}
		runController(t, w.controller("a", 0))
		time.Sleep(time.Second)
		cur := w.get(sr.ID)
		if cur.AnalysisID != sr.ID+"-s1-a1" {
			t.Fatalf("analysis %q not started as %s-s1-a1", cur.AnalysisID, sr.ID)
		}
		run, err := w.analyses.Run(t.Context(), cur.AnalysisID)
		if err != nil {
			t.Fatal(err)
		}
		wantCanary := `feature_flag_key="checkout",feature_flag_variant="on"`
		if run.Args.CanaryScope != wantCanary || run.Args.BaselineScope != strings.Replace(wantCanary, `"on"`, `"off"`, 1) ||
			run.Args.ExpectedSplit != 0.01 || run.Args.Values["flag"] != "checkout" || run.Args.Values["service"] != "web" {
			t.Errorf("analysis args %+v", run.Args)
		}
		w.endRun(cur.AnalysisID, canary.PhaseSuccessful, "all metrics pass")
		time.Sleep(time.Minute)
		if cur = w.get(sr.ID); cur.Step != 0 || cur.Verdict != canary.VerdictPass {
			t.Fatalf("before minDuration: step %d verdict %q", cur.Step, cur.Verdict)
		}
		time.Sleep(4 * time.Minute)
		if got := w.flagsMem.serves(t, "prod", "checkout"); got != `off {"fractional":[["on",500],["off",9500]]}` {
			t.Fatalf("after step 1 the flag serves %s", got)
		}
		time.Sleep(10 * time.Minute)
		cur = w.get(sr.ID)
		if cur.State != canary.RolloutSucceeded || cur.Pending {
			t.Fatalf("after the last step: %s pending=%v", cur.State, cur.Pending)
		}
		if got := w.flagsMem.serves(t, "prod", "checkout"); got != "on -" {
			t.Errorf("after success the flag serves %s", got)
		}
		want := []string{
			fmt.Sprintf("rollout %s step 1/3: 1%%", sr.ID),
			fmt.Sprintf("rollout %s step 2/3: 5%%", sr.ID),
			fmt.Sprintf("rollout %s succeeded: \"on\" for everyone", sr.ID),
		}
		if got := w.rolloutAudit("prod", sr.ID); !slices.Equal(got, want) {
			t.Errorf("audit\n%q\nwant\n%q", got, want)
		}
		if got := strings.Join(w.notes.events(), " "); got != "rollout.step rollout.step rollout.step rollout.succeeded" {
			t.Errorf("notifications %s", got)
		}
	})
}

// TestControllerRollsBackWithinASecond fails the step's analysis and
// measures, on the fake clock, how long the flag takes to serve the old
// variant to everyone.
func TestControllerRollsBackWithinASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "prod")
		sr := w.start(canary.RolloutRequest{})
		runController(t, w.controller("a", 0))
		time.Sleep(time.Second)
		id := w.get(sr.ID).AnalysisID
		time.Sleep(2*time.Minute + 37*time.Millisecond) // anywhere within a poll
		w.endRun(id, canary.PhaseFailed, "errors: canary 5.1% vs baseline 0.2%")
		verdict := time.Now()
		for w.flagsMem.serves(t, "prod", "checkout") != "off -" {
			if time.Since(verdict) > time.Second {
				t.Fatalf("the flag still serves %s a second after the verdict", w.flagsMem.serves(t, "prod", "checkout"))
			}
			time.Sleep(time.Millisecond)
		}
		if took := time.Since(verdict); took > canary.DefaultRolloutPoll {
			t.Errorf("rolled back %v after the verdict, want within a poll (%v)", took, canary.DefaultRolloutPoll)
		}
		time.Sleep(time.Second)
		cur := w.get(sr.ID)
		if cur.State != canary.RolloutFailed || cur.Percent != 0 || cur.Evidence == nil || cur.Evidence.AnalysisID != id ||
			!strings.Contains(cur.Reason, "canary 5.1%") || cur.Verdict != canary.VerdictFail {
			t.Errorf("failed rollout: %s", jsonString(cur))
		}
		evs := w.notes.events()
		if len(evs) == 0 || evs[len(evs)-1] != string(canary.EventRolloutFailed) {
			t.Fatalf("notifications %v, want rollout.failed last", evs)
		}
		var p struct {
			Phase    string                  `json:"phase"`
			Evidence *canary.RolloutEvidence `json:"evidence"`
		}
		w.notes.mu.Lock()
		last := w.notes.ns[len(w.notes.ns)-1]
		w.notes.mu.Unlock()
		if err := json.Unmarshal(last.Payload, &p); err != nil || p.Phase != "failed" || p.Evidence == nil || p.Evidence.AnalysisID != id {
			t.Errorf("rollout.failed payload %s (%v)", last.Payload, err)
		}
		if r, _ := w.analyses.Run(t.Context(), id); r.Phase != canary.PhaseFailed {
			t.Errorf("the analysis is %s", r.Phase)
		}
	})
}

// TestLeaseTakeoverResumesAtSameStep: replica a moves a rollout to its
// second step and dies before confirming it (its notification fails);
// replica b may not touch the rollout while a's lease lasts, then takes it
// over at the same step: the step's flag write is not repeated, its
// notification is sent once, and the rollout goes on.
func TestLeaseTakeoverResumesAtSameStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "prod")
		sr := w.start(canary.RolloutRequest{Steps: []canary.RolloutStep{{Percent: 1, MinDuration: "1m"}, {Percent: 5, MinDuration: "1m"}, {Percent: 100}}})
		a, b := w.controller("replica-a", 3*time.Second), w.controller("replica-b", 3*time.Second)
		ctx := t.Context()
		time.Sleep(time.Minute)
		w.notes.fail(fmt.Errorf("outbox down: %w", canary.ErrUnavailable))
		if _, err := a.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		cur := w.get(sr.ID)
		if cur.Step != 1 || !cur.Pending {
			t.Fatalf("a left the rollout at step %d pending=%v, want step 1 pending", cur.Step, cur.Pending)
		}
		w.notes.fail(nil)
		// a is dead from here on. b waits for a's lease.
		time.Sleep(time.Second)
		if _, err := b.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if w.get(sr.ID).Version != cur.Version {
			t.Fatalf("b moved the rollout while a's lease lasted")
		}
		time.Sleep(3 * time.Second)
		if _, err := b.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		cur = w.get(sr.ID)
		if cur.Step != 1 || cur.Pending || cur.Percent != 5 {
			t.Fatalf("after b took over: step %d pending=%v percent %v", cur.Step, cur.Pending, cur.Percent)
		}
		// a comes back from the dead: b's lease keeps it out.
		if _, err := a.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if w.get(sr.ID).Version != cur.Version {
			t.Errorf("a wrote while b held the lease")
		}
		time.Sleep(time.Minute)
		if _, err := b.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if cur = w.get(sr.ID); cur.State != canary.RolloutSucceeded {
			t.Fatalf("rollout %s, want succeeded", cur.State)
		}
		want := []string{
			fmt.Sprintf("rollout %s step 1/3: 1%%", sr.ID),
			fmt.Sprintf("rollout %s step 2/3: 5%%", sr.ID),
			fmt.Sprintf("rollout %s succeeded: \"on\" for everyone", sr.ID),
		}
		if got := w.rolloutAudit("prod", sr.ID); !slices.Equal(got, want) {
			t.Errorf("audit (each step exactly once)\n%q\nwant\n%q", got, want)
		}
		if got := strings.Join(w.notes.events(), " "); got != "rollout.step rollout.step rollout.step rollout.succeeded" {
			t.Errorf("notifications %s", got)
		}
	})
}

func TestRolloutActions(t *testing.T) {
	w := newWorld(t, "prod", "stage")
	ctx := t.Context()
	sr := w.start(canary.RolloutRequest{})
	act := func(action string) (canary.StoredRollout, error) {
		return w.svc.Act(ctx, "prod", sr.ID, action, "bob", "because")
	}
	steps := []struct {
		action string
		state  canary.RolloutState
		serves string
		err    error
	}{
		{"pause", canary.RolloutPaused, `off {"fractional":[["on",100],["off",9900]]}`, nil},
		{"pause", "", "", canary.ErrRolloutState},
		{"resume", canary.RolloutRunning, `off {"fractional":[["on",100],["off",9900]]}`, nil},
		{"promote", canary.RolloutSucceeded, "on -", nil},
		{"abort", "", "", canary.ErrRolloutState},
		{"retry", "", "", canary.ErrRolloutState},
	}
	for i, s := range steps {
		out, err := act(s.action)
		if !errors.Is(err, s.err) || (s.err == nil) != (err == nil) {
			t.Fatalf("%d %s: %v, want %v", i, s.action, err, s.err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "succeeded") && !strings.Contains(err.Error(), "paused") {
				t.Errorf("%d %s: the error does not name the state: %v", i, s.action, err)
			}
			continue
		}
		if out.State != s.state || out.Pending {
			t.Errorf("%d %s: %s pending=%v", i, s.action, out.State, out.Pending)
		}
		if got := w.flagsMem.serves(t, "prod", "checkout"); got != s.serves {
			t.Errorf("%d %s: flag serves %s, want %s", i, s.action, got, s.serves)
		}
	}
	var ve *canary.ValidationError
	if _, err := act("explode"); !errors.As(err, &ve) {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := w.svc.Act(ctx, "stage", sr.ID, "pause", "bob", ""); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("action through another environment: %v, want ErrNotFound", err)
	}
	// A failed rollout is retried at its step; abort rolls back.
	r2 := w.start(canary.RolloutRequest{Env: "stage", OnFail: canary.OnFailPause})
	if out, err := w.svc.Act(ctx, "stage", r2.ID, "retry", "bob", ""); err == nil {
		t.Errorf("retry of a running rollout: %s", out.State)
	}
	if out, err := w.svc.Act(ctx, "stage", r2.ID, "abort", "bob", "no"); err != nil || out.State != canary.RolloutAborted {
		t.Fatalf("abort: %v %v", out.State, err)
	}
	if got := w.flagsMem.serves(t, "stage", "checkout"); got != "off -" {
		t.Errorf("after abort the flag serves %s", got)
	}
}

func TestCreateRolloutRefusals(t *testing.T) {
	w := newWorld(t, "prod")
	ctx := t.Context()
	first := w.start(canary.RolloutRequest{})
	tests := []struct {
		name  string
		req   canary.RolloutRequest
		err   error
		field string
	}{
		{"unknown environment", canary.RolloutRequest{Env: "nope"}, canary.ErrUnknownEnvironment, ""},
		{"unknown flag", canary.RolloutRequest{Flag: "nope", Variant: "on", From: "off"}, canary.ErrUnknownFlag, ""},
		{"unknown variant", canary.RolloutRequest{Flag: "checkout", Variant: "blue", From: "off"}, nil, "variant"},
		{"unknown from", canary.RolloutRequest{Flag: "checkout", Variant: "on", From: "red"}, nil, "from"},
		{"same variants", canary.RolloutRequest{Flag: "checkout", Variant: "on", From: "on"}, nil, "from"},
		{"bad step", canary.RolloutRequest{Steps: []canary.RolloutStep{{Percent: 150}}}, nil, "steps[0].percent"},
		{"unknown template", canary.RolloutRequest{
			Steps: []canary.RolloutStep{{Percent: 5, Analysis: &canary.StepAnalysis{Template: "nope"}}}}, nil, "steps[0].analysis.template"},
		{"undeclared value", canary.RolloutRequest{Steps: []canary.RolloutStep{{Percent: 5, Analysis: &canary.StepAnalysis{Template: "http-errors", Values: map[string]string{"service": "x", "k": "v"}}}}}, nil, "steps[0].analysis.values.k"},
		{"missing value", canary.RolloutRequest{Steps: []canary.RolloutStep{{Percent: 5, Analysis: &canary.StepAnalysis{Template: "http-errors"}}}}, nil, "steps[0].analysis.values.service"},
		{"own targeting", canary.RolloutRequest{Flag: "styled", Variant: "on", From: "off"}, canary.ErrFlagTargeted, ""},
		{"already active", canary.RolloutRequest{}, canary.ErrRolloutActive, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if req.Env == "" {
				req.Env = "prod"
			}
			if req.Flag == "" {
				req.Flag, req.Variant, req.From = "checkout", "on", "off"
			}
			if req.Steps == nil {
				req.Steps = gatedSteps()
			}
			_, err := w.svc.Create(ctx, req, "alice", "")
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				return
			}
			var ve *canary.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a *ValidationError naming %s", err, tc.field)
			}
			var fields []string
			for _, p := range ve.Problems {
				fields = append(fields, p.Field)
			}
			if !slices.Contains(fields, tc.field) {
				t.Errorf("fields %v, want %s", fields, tc.field)
			}
		})
	}
	if got := w.get(first.ID); got.State != canary.RolloutRunning {
		t.Errorf("the refusals changed the first rollout: %s", got.State)
	}
}

func TestKillSwitch(t *testing.T) {
	w := newWorld(t, "prod", "stage", "dev")
	ctx := t.Context()
	sr := w.start(canary.RolloutRequest{})
	all := func(string) bool { return true }
	if _, err := w.svc.Kill(ctx, "nope", "", "admin", "", all); !errors.Is(err, canary.ErrUnknownFlag) {
		t.Errorf("kill of an unknown flag: %v", err)
	}
	if _, err := w.svc.Kill(ctx, "styled", "", "admin", "", all); !errors.Is(err, canary.ErrNoSafeVariant) {
		t.Errorf("kill without a safe variant anywhere: %v", err)
	}
	res, err := w.svc.Kill(ctx, "checkout", "", "admin", "incident 42", func(env string) bool { return env != "dev" })
	if err != nil {
		t.Fatal(err)
	}
	got := jsonString(res)
	if !strings.Contains(got, `{"name":"prod","variant":"off","version":3,"abortedRollouts":["`+sr.ID+`"]}`) ||
		!strings.Contains(got, `{"name":"stage","abortedRollouts":[],"error":"no safe variant`) || strings.Contains(got, `"dev"`) {
		t.Errorf("kill result %s", got)
	}
	if cur := w.get(sr.ID); cur.State != canary.RolloutAborted || cur.FinalVariant != "off" || cur.Pending || cur.History[len(cur.History)-1].Event != canary.EventKilled {
		t.Errorf("killed rollout %s", jsonString(cur))
	}
	if s := w.flagsMem.serves(t, "prod", "checkout"); s != "off -" {
		t.Errorf("prod serves %s", s)
	}
	res, err = w.svc.Kill(ctx, "checkout", "on", "admin", "", all)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Environments {
		if e.Error != "" || e.Variant != "on" {
			t.Errorf("kill to on in %s: %+v", e.Name, e)
		}
		if s := w.flagsMem.serves(t, e.Name, "checkout"); s != "on -" {
			t.Errorf("%s serves %s", e.Name, s)
		}
	}
	res, err = w.svc.Kill(ctx, "checkout", "purple", "admin", "", all)
	if err != nil || len(res.Environments) != 3 || !strings.Contains(res.Environments[0].Error, `no variant "purple"`) {
		t.Errorf("kill to a missing variant: %s %v", jsonString(res), err)
	}
}

// TestControllerDropsALostLease: replica a holds a rollout's lease when
// another replica takes it over (and lets it go again). a's next write is
// refused as fenced; a must then forget its stale lease and acquire the
// rollout afresh, not repeat writes its old token can never make.
func TestControllerDropsALostLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { testControllerDropsALostLease(t) })
}

func testControllerDropsALostLease(t *testing.T) {
	w := newWorld(t, "prod")
	ctx := t.Context()
	sr := w.start(canary.RolloutRequest{})
	a := w.controller("replica-a", time.Hour)
	time.Sleep(time.Second) // the fake clock: the rollout is due
	if _, err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	runID := w.get(sr.ID).AnalysisID
	if runID == "" {
		t.Fatal("a did not start the step's analysis")
	}
	// a's lease is released behind its back and replica b holds the
	// rollout for a moment: the lease token moves on.
	now := time.Now()
	la, err := w.rollouts.AcquireRolloutLease(ctx, sr.ID, "replica-a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rollouts.ReleaseRolloutLease(ctx, la); err != nil {
		t.Fatal(err)
	}
	lb, err := w.rollouts.AcquireRolloutLease(ctx, sr.ID, "replica-b", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rollouts.ReleaseRolloutLease(ctx, lb); err != nil {
		t.Fatal(err)
	}
	w.endRun(runID, canary.PhaseSuccessful, "all metrics pass")
	time.Sleep(time.Second)
	if _, err := a.Tick(ctx); err != nil { // fenced: a's token is stale
		t.Fatal(err)
	}
	if got := w.get(sr.ID).Verdict; got != "" {
		t.Fatalf("a wrote verdict %q with a stale lease", got)
	}
	time.Sleep(time.Second)
	if _, err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.get(sr.ID).Verdict; got != canary.VerdictPass {
		t.Errorf("after the fenced write a still does not move the rollout on (verdict %q): it kept its stale lease", got)
	}
}

// TestPauseRacingAnalysisStart: someone pauses a rollout while the
// controller starts its step's analysis, before or after the run is
// created; the controller's write then conflicts. The run is cancelled
// (nobody waits for it), and the resumed step starts a run of its own
// instead of adopting one that measured from before the pause.
func TestPauseRacingAnalysisStart(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run("pause "+when+" the run is created", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t, "prod")
				h := w.hookAnalyses()
				sr := w.start(canary.RolloutRequest{})
				ctx := t.Context()
				pause := func(string) {
					if _, err := w.svc.Act(ctx, "prod", sr.ID, canary.ActionPause, "bob", "looking"); err != nil {
						t.Errorf("pause: %v", err)
					}
				}
				if when == "before" {
					h.before = pause
				} else {
					h.after = pause
				}
				c := w.controller("a", 0)
				time.Sleep(time.Second)
				if _, err := c.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				first := sr.ID + "-s1-a1"
				cur := w.get(sr.ID)
				if cur.State != canary.RolloutPaused || cur.AnalysisID != "" {
					t.Fatalf("after the race: %s analysis %q, want paused without one", cur.State, cur.AnalysisID)
				}
				if run, err := w.analyses.Run(ctx, first); err != nil || run.Phase != canary.PhaseCancelled {
					t.Errorf("the orphaned run %s is %s (%v), want cancelled", first, run.Phase, err)
				}
				if _, err := w.svc.Act(ctx, "prod", sr.ID, canary.ActionResume, "bob", ""); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second)
				if _, err := c.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				cur = w.get(sr.ID)
				if cur.AnalysisID == "" || cur.AnalysisID == first {
					t.Fatalf("the resumed step waits for run %q, want a new one (not %s)", cur.AnalysisID, first)
				}
				if run, err := w.analyses.Run(ctx, cur.AnalysisID); err != nil || run.Phase.Terminal() {
					t.Errorf("the resumed step's run %s is %s (%v)", cur.AnalysisID, run.Phase, err)
				}
			})
		})
	}
}

// TestNotificationsAfterHistoryIsTrimmed: a rollout keeps its latest 1000
// history events; the events after that are still notified, each under
// an ID of its own (the outbox drops a repeated ID as a duplicate).
func TestNotificationsAfterHistoryIsTrimmed(t *testing.T) {
	w := newWorld(t, "prod")
	ctx := t.Context()
	sr := w.start(canary.RolloutRequest{})
	before := len(w.notes.events())
	// 999 events, all notified: the next one is the 1000th.
	for len(sr.History) < 999 {
		sr.History = append(sr.History, canary.RolloutEvent{Time: sr.UpdatedAt, Event: canary.EventVerdict, Reason: "filler"})
	}
	sr.Notified = len(sr.History)
	if _, err := w.rollouts.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &sr.Rollout, IfVersion: sr.Version}); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{canary.ActionPause, canary.ActionResume, canary.ActionPause, canary.ActionResume, canary.ActionPause} {
		if _, err := w.svc.Act(ctx, "prod", sr.ID, action, "bob", action); err != nil {
			t.Fatalf("%s: %v", action, err)
		}
	}
	cur := w.get(sr.ID)
	if len(cur.History) != 1000 || cur.HistoryOffset != 4 || cur.Notified != 1000 {
		t.Errorf("history %d events after %d dropped, %d notified; want 1000 after 4, all notified", len(cur.History), cur.HistoryOffset, cur.Notified)
	}
	w.notes.mu.Lock()
	var ids []string
	for _, n := range w.notes.ns[before:] {
		ids = append(ids, string(n.Event)+" "+n.ID)
	}
	w.notes.mu.Unlock()
	p := "rollout.paused rollout-" + sr.ID + "-"
	if want := []string{p + "999", p + "1001", p + "1003"}; !slices.Equal(ids, want) {
		t.Errorf("notifications\n%q\nwant\n%q", ids, want)
	}
}

// TestStaleFlagWriteIsPutRight: a retry's flag write passes its rollout
// version check, then, before it is saved, someone aborts the rollout;
// the abort's own flag write finds the flag already rolled back and
// changes nothing. The retry's stale split is saved after it; the retry
// must notice and put the aborted state's flag back.
func TestStaleFlagWriteIsPutRight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "prod")
		h := w.hookFlagSaves()
		ctx := t.Context()
		sr := w.start(canary.RolloutRequest{})
		c := w.controller("a", 0)
		time.Sleep(time.Second)
		if _, err := c.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		w.endRun(w.get(sr.ID).AnalysisID, canary.PhaseFailed, "errors")
		time.Sleep(time.Second)
		if _, err := c.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if cur := w.get(sr.ID); cur.State != canary.RolloutFailed || w.flagsMem.serves(t, "prod", "checkout") != "off -" {
			t.Fatalf("before the race: %s, flag %s", cur.State, w.flagsMem.serves(t, "prod", "checkout"))
		}
		h.mu.Lock()
		h.beforeSave = func() {
			if out, err := w.svc.Act(ctx, "prod", sr.ID, canary.ActionAbort, "carol", "not again"); err != nil || out.State != canary.RolloutAborted || out.Pending {
				t.Errorf("abort during the retry's write: %s pending=%v %v", out.State, out.Pending, err)
			}
		}
		h.mu.Unlock()
		if _, err := w.svc.Act(ctx, "prod", sr.ID, canary.ActionRetry, "bob", "once more"); err != nil {
			t.Fatal(err)
		}
		if cur := w.get(sr.ID); cur.State != canary.RolloutAborted || cur.Pending {
			t.Errorf("after the race the rollout is %s pending=%v, want aborted", cur.State, cur.Pending)
		}
		if got := w.flagsMem.serves(t, "prod", "checkout"); got != "off -" {
			t.Errorf("the aborted rollout's flag serves %s, want off for everyone", got)
		}
	})
}

// TestKillSwitchWarnsOfARunningExperiment: the kill switch turns a flag
// that serves an experiment like any other, and reports the experiment in
// that environment's entry (it goes on recording exposures, now of the
// safe variant), but not in an environment without one.
func TestKillSwitchWarnsOfARunningExperiment(t *testing.T) {
	w := newWorld(t, "prod")
	ctx := t.Context()
	d, err := flags.Parse([]byte(`{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
	 "targeting":{"fractional":[["on",50],["off",50]]},"metadata":{"experiment":"checkout-ab"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.flags.CreateEnvironment(ctx, "stage", d, flags.WriteOptions{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	res, err := w.svc.Kill(ctx, "checkout", "off", "admin", "incident", func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]canary.KillEnv{}
	for _, e := range res.Environments {
		got[e.Name] = e
	}
	if e := got["stage"]; e.Error != "" || e.Experiment != "checkout-ab" || !strings.Contains(e.Warning, `experiment "checkout-ab" still runs`) {
		t.Errorf("stage: %s, want the experiment and a warning", jsonString(e))
	}
	if e := got["prod"]; e.Error != "" || e.Experiment != "" || e.Warning != "" {
		t.Errorf("prod (no experiment): %s", jsonString(e))
	}
	if s := w.flagsMem.serves(t, "stage", "checkout"); s != "off -" {
		t.Errorf("stage serves %s after the kill", s)
	}
}
