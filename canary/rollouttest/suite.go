package rollouttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// T0 is the suite's reference time.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Steps are three valid steps: 1 % for 5 minutes, 50 % for 10 minutes, 100 %.
func Steps() []canary.RolloutStep {
	return []canary.RolloutStep{{Percent: 1, MinDuration: "5m"}, {Percent: 50, MinDuration: "10m"}, {Percent: 100}}
}

// NewRollout returns a rollout of flag in env from "off" to "on" over
// Steps, created at now and started then (startAt zero) or scheduled.
func NewRollout(id, env, flag string, now, startAt time.Time) *canary.Rollout {
	return canary.NewRollout(id, env, flag, "on", "off", Steps(), canary.OnFailRollback, "", startAt, now, "test", "suite")
}

// Run runs the suite. newStore must return an empty store of its own each
// time it is called; the suite calls it once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) canary.RolloutStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s canary.RolloutStore)
	}{
		{"CreateAndRead", testCreateAndRead},
		{"OneActivePerFlag", testOneActive},
		{"Versions", testVersions},
		{"Listing", testListing},
		{"Due", testDue},
		{"LeasesAndFencing", testLeases},
		{"BadInput", testBadInput},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func mustCreate(t *testing.T, s canary.RolloutStore, r *canary.Rollout) canary.StoredRollout {
	t.Helper()
	sr, err := s.CreateRollout(t.Context(), r)
	if err != nil {
		t.Fatalf("CreateRollout(%s): %v", r.ID, err)
	}
	return sr
}

func mustUpdate(t *testing.T, s canary.RolloutStore, sr canary.StoredRollout, token int64) canary.StoredRollout {
	t.Helper()
	out, err := s.UpdateRollout(t.Context(), canary.RolloutUpdate{Rollout: &sr.Rollout, IfVersion: sr.Version, Token: token})
	if err != nil {
		t.Fatalf("UpdateRollout(%s @%d): %v", sr.ID, sr.Version, err)
	}
	return out
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testCreateAndRead(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	r := NewRollout("ro_a1", "prod", "checkout", T0, time.Time{})
	r.Steps[0].Analysis = &canary.StepAnalysis{Template: "http", Values: map[string]string{"service": "web"}}
	sr := mustCreate(t, s, r)
	if sr.Version != 1 {
		t.Errorf("version = %d, want 1", sr.Version)
	}
	got, err := s.Rollout(ctx, "ro_a1")
	if err != nil {
		t.Fatalf("Rollout: %v", err)
	}
	if a, b := jsonOf(t, got), jsonOf(t, canary.StoredRollout{Rollout: *r, Version: 1}); a != b {
		t.Errorf("read back\n%s\nwant\n%s", a, b)
	}
	if _, err := s.CreateRollout(ctx, NewRollout("ro_a1", "stage", "other", T0, time.Time{})); !errors.Is(err, canary.ErrExists) {
		t.Errorf("CreateRollout of a taken ID: %v, want ErrExists", err)
	}
	for _, id := range []string{"ro_missing", "not-an-id", ""} {
		if _, err := s.Rollout(ctx, id); !errors.Is(err, canary.ErrNotFound) {
			t.Errorf("Rollout(%q) = %v, want ErrNotFound", id, err)
		}
	}
	// The caller's value is not shared with what the store returns.
	got.Steps[0].Percent = 99
	again, _ := s.Rollout(ctx, "ro_a1")
	if again.Steps[0].Percent != 1 {
		t.Errorf("a returned rollout shares its steps with the store")
	}
}

func testOneActive(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	first := mustCreate(t, s, NewRollout("ro_first", "prod", "checkout", T0, time.Time{}))
	_, err := s.CreateRollout(ctx, NewRollout("ro_second", "prod", "checkout", T0, T0.Add(time.Hour)))
	if !errors.Is(err, canary.ErrRolloutActive) {
		t.Fatalf("second active rollout of a flag: %v, want ErrRolloutActive", err)
	}
	mustCreate(t, s, NewRollout("ro_other_env", "stage", "checkout", T0, time.Time{}))
	mustCreate(t, s, NewRollout("ro_other_flag", "prod", "search", T0, time.Time{}))
	act, err := s.ActiveRollout(ctx, "prod", "checkout")
	if err != nil || act.ID != "ro_first" {
		t.Fatalf("ActiveRollout = %s, %v; want ro_first", act.ID, err)
	}
	if _, err := s.ActiveRollout(ctx, "prod", "nothing"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("ActiveRollout of a flag without one: %v, want ErrNotFound", err)
	}
	// Pausing keeps it active; aborting frees the flag.
	if err := first.Pause(T0.Add(time.Minute), "test", "hold"); err != nil {
		t.Fatal(err)
	}
	first = mustUpdate(t, s, first, 0)
	if _, err := s.CreateRollout(ctx, NewRollout("ro_second", "prod", "checkout", T0, time.Time{})); !errors.Is(err, canary.ErrRolloutActive) {
		t.Fatalf("rollout of a flag with a paused one: %v, want ErrRolloutActive", err)
	}
	if err := first.Abort(T0.Add(2*time.Minute), "test", "stop"); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, first, 0)
	if _, err := s.ActiveRollout(ctx, "prod", "checkout"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("ActiveRollout after abort: %v, want ErrNotFound", err)
	}
	mustCreate(t, s, NewRollout("ro_second", "prod", "checkout", T0.Add(3*time.Minute), time.Time{}))
	act, err = s.ActiveRollout(ctx, "prod", "checkout")
	if err != nil || act.ID != "ro_second" {
		t.Errorf("ActiveRollout = %s, %v; want ro_second", act.ID, err)
	}
	// A retried (re-activated) rollout may not take a flag another holds.
	old, _ := s.Rollout(ctx, "ro_first")
	if err := old.Retry(T0.Add(4*time.Minute), "test", ""); err == nil {
		t.Fatalf("Retry of an aborted rollout succeeded")
	}
	old.State = canary.RolloutRunning // forced, as a buggy caller could
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &old.Rollout, IfVersion: old.Version}); !errors.Is(err, canary.ErrRolloutActive) {
		t.Errorf("reactivating over another active rollout: %v, want ErrRolloutActive", err)
	}
}

func testVersions(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	sr := mustCreate(t, s, NewRollout("ro_v", "prod", "checkout", T0, time.Time{}))
	stale := sr
	sr.Pending = false
	sr = mustUpdate(t, s, sr, 0)
	if sr.Version != 2 {
		t.Errorf("version after one update = %d, want 2", sr.Version)
	}
	stale.Reason = "late"
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &stale.Rollout, IfVersion: stale.Version}); !errors.Is(err, canary.ErrConflict) {
		t.Errorf("write at a stale version: %v, want ErrConflict", err)
	}
	got, _ := s.Rollout(ctx, "ro_v")
	if got.Reason == "late" || got.Version != 2 {
		t.Errorf("a refused write changed the rollout: %+v", got)
	}
	moved := got
	moved.Flag = "elsewhere"
	var ve *canary.ValidationError
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &moved.Rollout, IfVersion: moved.Version}); !errors.As(err, &ve) {
		t.Errorf("changing the flag: %v, want a *ValidationError", err)
	}
	missing := NewRollout("ro_nobody", "prod", "x", T0, time.Time{})
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: missing, IfVersion: 1}); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("update of an unknown rollout: %v, want ErrNotFound", err)
	}
}

func testListing(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	for i, c := range []struct{ id, env, flag string }{
		{"ro_l1", "prod", "a"}, {"ro_l2", "prod", "b"}, {"ro_l3", "stage", "a"}, {"ro_l4", "prod", "c"},
	} {
		mustCreate(t, s, NewRollout(c.id, c.env, c.flag, T0.Add(time.Duration(i)*time.Second), time.Time{}))
	}
	sr, _ := s.Rollout(ctx, "ro_l2")
	_ = sr.Abort(T0.Add(time.Hour), "t", "")
	mustUpdate(t, s, sr, 0)
	ids := func(q canary.RolloutQuery) string {
		t.Helper()
		list, err := s.Rollouts(ctx, q)
		if err != nil {
			t.Fatalf("Rollouts(%+v): %v", q, err)
		}
		out := ""
		for _, r := range list {
			out += r.ID + " "
		}
		return out
	}
	for _, c := range []struct {
		name string
		q    canary.RolloutQuery
		want string
	}{
		{"all, newest first", canary.RolloutQuery{}, "ro_l4 ro_l3 ro_l2 ro_l1 "},
		{"one env", canary.RolloutQuery{Env: "prod"}, "ro_l4 ro_l2 ro_l1 "},
		{"one flag", canary.RolloutQuery{Flag: "a"}, "ro_l3 ro_l1 "},
		{"env and flag", canary.RolloutQuery{Env: "prod", Flag: "a"}, "ro_l1 "},
		{"states", canary.RolloutQuery{States: []canary.RolloutState{canary.RolloutAborted}}, "ro_l2 "},
		{"limit", canary.RolloutQuery{Limit: 2}, "ro_l4 ro_l3 "},
		{"nothing", canary.RolloutQuery{Env: "none"}, ""},
	} {
		if got := ids(c.q); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func testDue(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	due := func(now time.Time) string {
		t.Helper()
		ids, err := s.DueRollouts(ctx, now, 10)
		if err != nil {
			t.Fatalf("DueRollouts: %v", err)
		}
		return fmt.Sprint(ids)
	}
	// Pending (its first flag write is due) at T0.
	a := mustCreate(t, s, NewRollout("ro_da", "prod", "a", T0, time.Time{}))
	// Scheduled for T0+1h.
	mustCreate(t, s, NewRollout("ro_db", "prod", "b", T0, T0.Add(time.Hour)))
	if got := due(T0.Add(-time.Second)); got != "[]" {
		t.Errorf("due before anything: %s", got)
	}
	if got := due(T0); got != "[ro_da]" {
		t.Errorf("due at T0: %s, want [ro_da]", got)
	}
	if got := due(T0.Add(time.Hour)); got != "[ro_da ro_db]" {
		t.Errorf("due at T0+1h: %s, want [ro_da ro_db] (earliest first)", got)
	}
	// Effects done: due when the step's 5 minutes are over.
	a.Pending = false
	a = mustUpdate(t, s, a, 0)
	if got := due(T0.Add(5*time.Minute - time.Millisecond)); got != "[]" {
		t.Errorf("due before the step ends: %s", got)
	}
	if got := due(T0.Add(5 * time.Minute)); got != "[ro_da]" {
		t.Errorf("due when the step ends: %s, want [ro_da]", got)
	}
	if ids, _ := s.DueRollouts(ctx, T0.Add(2*time.Hour), 1); len(ids) != 1 || ids[0] != "ro_da" {
		t.Errorf("limit 1: %v, want [ro_da]", ids)
	}
	// Paused: nothing happens by itself.
	_ = a.Pause(T0.Add(time.Minute), "t", "")
	a.Pending = false
	a = mustUpdate(t, s, a, 0)
	if got := due(T0.Add(2 * time.Hour)); got != "[ro_db]" {
		t.Errorf("due with ro_da paused: %s, want [ro_db]", got)
	}
	// Ended with effects pending, then done.
	_ = a.Abort(T0.Add(3*time.Hour), "t", "")
	a = mustUpdate(t, s, a, 0)
	if got := due(T0.Add(3 * time.Hour)); got != "[ro_db ro_da]" {
		t.Errorf("due with ro_da's abort pending: %s", got)
	}
	a.Pending = false
	mustUpdate(t, s, a, 0)
	if got := due(T0.Add(4 * time.Hour)); got != "[ro_db]" {
		t.Errorf("due after ro_da ended: %s, want [ro_db]", got)
	}
	if ids, err := s.DueRollouts(ctx, T0.Add(4*time.Hour), 0); err != nil || len(ids) != 0 {
		t.Errorf("limit 0: %v, %v", ids, err)
	}
}

func testLeases(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	sr := mustCreate(t, s, NewRollout("ro_lease", "prod", "a", T0, time.Time{}))
	if _, err := s.AcquireRolloutLease(ctx, "ro_nobody", "a", T0, time.Minute); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("lease of an unknown rollout: %v, want ErrNotFound", err)
	}
	la, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-a", T0, time.Minute)
	if err != nil || la.Token < 1 || la.Owner != "replica-a" || la.RunID != "ro_lease" || !la.ExpiresAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("AcquireRolloutLease = %+v, %v", la, err)
	}
	if _, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-b", T0.Add(30*time.Second), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("lease held by another: %v, want ErrLeaseHeld", err)
	}
	again, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-a", T0.Add(30*time.Second), time.Minute)
	if err != nil || again.Token != la.Token || !again.ExpiresAt.Equal(T0.Add(90*time.Second)) {
		t.Errorf("re-acquire by the holder = %+v, %v; want the same token, extended", again, err)
	}
	sr.Pending = false
	sr = mustUpdate(t, s, sr, la.Token)
	// a's lease lapses; b takes over with a higher token and a's writes are fenced.
	lb, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-b", T0.Add(2*time.Minute), time.Minute)
	if err != nil || lb.Token <= la.Token {
		t.Fatalf("takeover after expiry = %+v, %v; want a higher token than %d", lb, err, la.Token)
	}
	sr.Reason = "from a"
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &sr.Rollout, IfVersion: sr.Version, Token: la.Token}); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("write with a stale token: %v, want ErrLeaseLost", err)
	}
	sr.Reason = "from b"
	sr = mustUpdate(t, s, sr, lb.Token)
	// Releasing a stale lease does nothing; releasing the current one frees it.
	if err := s.ReleaseRolloutLease(ctx, la); err != nil {
		t.Errorf("release of a stale lease: %v", err)
	}
	if _, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-c", T0.Add(2*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("after a stale release the lease must still be b's: %v", err)
	}
	if err := s.ReleaseRolloutLease(ctx, lb); err != nil {
		t.Fatalf("release: %v", err)
	}
	sr.Reason = "after release"
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &sr.Rollout, IfVersion: sr.Version, Token: lb.Token}); !errors.Is(err, canary.ErrLeaseLost) {
		t.Errorf("write with a released token: %v, want ErrLeaseLost", err)
	}
	// A write without a token (an API action) is guarded by the version only.
	sr = mustUpdate(t, s, sr, 0)
	lc, err := s.AcquireRolloutLease(ctx, "ro_lease", "replica-c", T0.Add(2*time.Minute), time.Minute)
	if err != nil || lc.Token <= lb.Token {
		t.Errorf("acquire after release = %+v, %v; want a higher token than %d", lc, err, lb.Token)
	}
	if err := s.ReleaseRolloutLease(ctx, canary.Lease{RunID: "ro_nobody", Owner: "x", Token: 1}); err != nil {
		t.Errorf("release of an unknown rollout's lease: %v", err)
	}
}

func testBadInput(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	var ve *canary.ValidationError
	for name, r := range map[string]*canary.Rollout{
		"nil":        nil,
		"bad id":     NewRollout("bad id", "prod", "a", T0, time.Time{}),
		"no env":     NewRollout("ro_x", "", "a", T0, time.Time{}),
		"no flag":    NewRollout("ro_x", "prod", "", T0, time.Time{}),
		"no ro_ tag": NewRollout("x1", "prod", "a", T0, time.Time{}),
	} {
		if _, err := s.CreateRollout(ctx, r); !errors.As(err, &ve) {
			t.Errorf("CreateRollout(%s): %v, want a *ValidationError", name, err)
		}
	}
	good := NewRollout("ro_good", "prod", "a", T0, time.Time{})
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: good, IfVersion: 0}); !errors.As(err, &ve) {
		t.Errorf("UpdateRollout at version 0: %v, want a *ValidationError", err)
	}
	if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: good, IfVersion: 1, Token: -1}); !errors.As(err, &ve) {
		t.Errorf("UpdateRollout with a negative token: %v, want a *ValidationError", err)
	}
	mustCreate(t, s, good)
	if _, err := s.AcquireRolloutLease(ctx, "ro_good", "", T0, time.Minute); !errors.As(err, &ve) {
		t.Errorf("lease without owner: %v, want a *ValidationError", err)
	}
	if _, err := s.AcquireRolloutLease(ctx, "ro_good", "a", T0, 0); !errors.As(err, &ve) {
		t.Errorf("lease without ttl: %v, want a *ValidationError", err)
	}
	for _, n := range []int{-1, canary.MaxRolloutPage + 1} {
		if _, err := s.Rollouts(ctx, canary.RolloutQuery{Limit: n}); !errors.As(err, &ve) {
			t.Errorf("Rollouts limit %d: %v, want a *ValidationError", n, err)
		}
	}
}

// testConcurrentWriters races writers from one version: exactly one wins.
func testConcurrentWriters(t *testing.T, s canary.RolloutStore) {
	ctx := t.Context()
	sr := mustCreate(t, s, NewRollout("ro_race", "prod", "a", T0, time.Time{}))
	const n = 8
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := sr.Rollout
			r.History = append([]canary.RolloutEvent(nil), r.History...)
			r.Reason = fmt.Sprintf("writer %d", i)
			_, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &r, IfVersion: sr.Version})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, canary.ErrConflict):
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d writers won from one version, want exactly 1", wins.Load())
	}
	got, _ := s.Rollout(ctx, "ro_race")
	if got.Version != 2 {
		t.Errorf("version after the race = %d, want 2", got.Version)
	}
}
