package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// outboxNotifier enqueues notifications on the store's outbox for one
// target, as the webhook sender does.
type outboxNotifier struct{ o canary.Outbox }

func (n outboxNotifier) Notify(ctx context.Context, x canary.Notification) (canary.Notification, []string, error) {
	err := n.o.Enqueue(ctx, x, []string{"hook"})
	if errors.Is(err, canary.ErrExists) {
		err = nil
	}
	return x, []string{"hook"}, err
}

// rolloutRig is a rollout service and its stores on one redis.Store.
type rolloutRig struct {
	t     *testing.T
	store *redis.Store
	fs    *flags.Service
	svc   *canary.RolloutService
}

func newRolloutRig(t *testing.T, s *redis.Store) *rolloutRig {
	t.Helper()
	ctx := t.Context()
	fs := flags.NewService(s, nil)
	doc, err := flags.Parse([]byte(`{"flags":{"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.CreateEnvironment(ctx, "prod", doc, flags.WriteOptions{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutTemplate(ctx, canarytest.Template("http-errors", time.Minute, 3), canary.TemplateWrite{At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{Rollouts: s, Analyses: s, Flags: fs, FlagReader: s, Notifier: outboxNotifier{s}})
	if err != nil {
		t.Fatal(err)
	}
	return &rolloutRig{t: t, store: s, fs: fs, svc: svc}
}

func (r *rolloutRig) controller(owner string, ttl time.Duration) *canary.RolloutController {
	c, err := canary.NewRolloutController(canary.RolloutControllerConfig{Service: r.svc, Owner: owner, LeaseTTL: ttl})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *rolloutRig) run(c *canary.RolloutController) {
	ctx, cancel := context.WithCancel(r.t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	r.t.Cleanup(func() { cancel(); wg.Wait() })
}

// serves is the flag's default variant and targeting ("-" for none).
func (r *rolloutRig) serves() string {
	snap, err := r.store.Snapshot(context.Background(), "prod")
	if err != nil {
		r.t.Fatal(err)
	}
	d, err := flags.Parse(snap.Document)
	if err != nil {
		r.t.Fatal(err)
	}
	f := d.Flags["checkout"]
	tg := "-"
	if len(f.Targeting) > 0 {
		tg = string(f.Targeting)
	}
	return *f.DefaultVariant + " " + tg
}

func (r *rolloutRig) rolloutAudit(id string) []string {
	page, err := r.store.Audit(context.Background(), "prod", flags.AuditQuery{Limit: 500})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range slices.Backward(page.Entries) {
		if e.Actor == "rollout:"+id {
			out = append(out, e.Reason)
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRolloutControllerOnStores(t *testing.T) {
	stores := map[string]func(t *testing.T) *redis.Store{"embedded": openEmbedded}
	srv := redistest.Start(t)
	stores["redis-server"] = func(t *testing.T) *redis.Store { return openReal(t, srv) }
	for name, open := range stores {
		t.Run(name+"/ramp", func(t *testing.T) {
			r := newRolloutRig(t, open(t))
			r.run(r.controller("a", 0))
			sr, err := r.svc.Create(t.Context(), canary.RolloutRequest{Env: "prod", Flag: "checkout", Variant: "on", From: "off",
				Steps: []canary.RolloutStep{{Percent: 10, MinDuration: "200ms"}, {Percent: 50, MinDuration: "200ms"}, {Percent: 100}}}, "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "success", 10*time.Second, func() bool {
				cur, _ := r.store.Rollout(t.Context(), sr.ID)
				return cur.State == canary.RolloutSucceeded && !cur.Pending
			})
			want := []string{
				fmt.Sprintf("rollout %s step 1/3: 10%%", sr.ID), fmt.Sprintf("rollout %s step 2/3: 50%%", sr.ID),
				fmt.Sprintf("rollout %s succeeded: \"on\" for everyone", sr.ID),
			}
			if got := r.rolloutAudit(sr.ID); !slices.Equal(got, want) {
				t.Errorf("audit\n%q\nwant\n%q", got, want)
			}
			if got := r.serves(); got != "on -" {
				t.Errorf("flag serves %s", got)
			}
		})
		t.Run(name+"/rollback within a second", func(t *testing.T) {
			r := newRolloutRig(t, open(t))
			r.run(r.controller("a", 0))
			ctx := t.Context()
			sr, err := r.svc.Create(ctx, canary.RolloutRequest{Env: "prod", Flag: "checkout", Variant: "on", From: "off",
				Steps: []canary.RolloutStep{{Percent: 5, MinDuration: "1h", Analysis: &canary.StepAnalysis{Template: "http-errors"}}, {Percent: 100}}}, "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			var runID string
			waitUntil(t, "the analysis to start", 5*time.Second, func() bool {
				cur, _ := r.store.Rollout(ctx, sr.ID)
				runID = cur.AnalysisID
				return runID != ""
			})
			run, err := r.store.Run(ctx, runID)
			if err != nil {
				t.Fatal(err)
			}
			run.Phase, run.Message, run.EndedAt, run.NextAt = canary.PhaseFailed, "errors: canary 4% vs baseline 0.1%", time.Now().UTC(), time.Time{}
			if _, err := r.store.UpdateRun(ctx, canary.RunUpdate{Run: &run.Run, IfVersion: run.Version}); err != nil {
				t.Fatal(err)
			}
			verdict := time.Now()
			waitUntil(t, "the rollback", 2*time.Second, func() bool { return r.serves() == "off -" })
			if took := time.Since(verdict); took > time.Second {
				t.Errorf("rolled back %v after the verdict, want within a second", took)
			}
			waitUntil(t, "the failed rollout settled", 2*time.Second, func() bool {
				cur, _ := r.store.Rollout(ctx, sr.ID)
				return cur.State == canary.RolloutFailed && !cur.Pending
			})
			page, err := r.store.Notifications(ctx, canary.NotificationQuery{})
			if err != nil {
				t.Fatal(err)
			}
			var events []string
			for _, n := range page.Notifications {
				events = append(events, string(n.Notification.Event))
				if n.Notification.Event == canary.EventRolloutFailed && !strings.Contains(string(n.Notification.Payload), runID) {
					t.Errorf("rollout.failed payload lacks the evidence: %s", n.Notification.Payload)
				}
			}
			if !slices.Contains(events, string(canary.EventRolloutFailed)) {
				t.Errorf("outbox holds %v, want rollout.failed", events)
			}
		})
		t.Run(name+"/lease takeover", func(t *testing.T) {
			r := newRolloutRig(t, open(t))
			ctx := t.Context()
			a, b := r.controller("a", time.Second), r.controller("b", time.Second)
			sr, err := r.svc.Create(ctx, canary.RolloutRequest{Env: "prod", Flag: "checkout", Variant: "on", From: "off",
				Steps: []canary.RolloutStep{{Percent: 10, MinDuration: "1ms"}, {Percent: 20, MinDuration: "200ms"}, {Percent: 100}}}, "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
			if _, err := a.Tick(ctx); err != nil { // a moves to step 2, keeps the lease, and dies
				t.Fatal(err)
			}
			cur, _ := r.store.Rollout(ctx, sr.ID)
			if cur.Step != 1 || cur.Pending {
				t.Fatalf("a left the rollout at step %d pending=%v", cur.Step, cur.Pending)
			}
			time.Sleep(300 * time.Millisecond) // step 2 is over, a's lease is not
			if _, err := b.Tick(ctx); err != nil {
				t.Fatal(err)
			}
			if again, _ := r.store.Rollout(ctx, sr.ID); again.Version != cur.Version {
				t.Fatalf("b drove the rollout under a's lease")
			}
			time.Sleep(800 * time.Millisecond)
			if _, err := b.Tick(ctx); err != nil {
				t.Fatal(err)
			}
			if cur, _ = r.store.Rollout(ctx, sr.ID); cur.State != canary.RolloutSucceeded {
				t.Fatalf("after b took over: %s at step %d", cur.State, cur.Step)
			}
			want := []string{
				fmt.Sprintf("rollout %s step 1/3: 10%%", sr.ID), fmt.Sprintf("rollout %s step 2/3: 20%%", sr.ID),
				fmt.Sprintf("rollout %s succeeded: \"on\" for everyone", sr.ID),
			}
			if got := r.rolloutAudit(sr.ID); !slices.Equal(got, want) {
				t.Errorf("audit (each step once)\n%q\nwant\n%q", got, want)
			}
		})
	}
}
