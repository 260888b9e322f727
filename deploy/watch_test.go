package deploy_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/canary/outboxtest"
	"github.com/flagpole/flagpole/deploy"
)

// watchFixture is a store of runs, an outbox behind a sender, and a clock.
type watchFixture struct {
	t     *testing.T
	store *canarytest.Memory
	ob    *outboxtest.Memory
	s     *deploy.Sender
	now   time.Time
}

func newWatchFixture(t *testing.T) *watchFixture {
	f := &watchFixture{t: t, store: canarytest.NewMemory(), ob: outboxtest.NewMemory(), now: clock}
	f.s = newSender(t, deploy.SenderConfig{Outbox: f.ob, Subscriptions: []deploy.Subscription{{Name: "ops", URL: "http://127.0.0.1:1", Secret: testSecret, Events: []string{"analysis.completed"}}}, Now: func() time.Time { return f.now }})
	return f
}

func (f *watchFixture) watch() *deploy.AnalysisWatch {
	w, err := deploy.NewAnalysisWatch(deploy.AnalysisWatchConfig{Store: f.store, Notifier: f.s, Now: func() time.Time { return f.now }})
	if err != nil {
		f.t.Fatal(err)
	}
	return w
}

func (f *watchFixture) create(id string, at time.Time) {
	f.t.Helper()
	if _, err := f.store.CreateRun(f.t.Context(), canarytest.NewRun(f.t, id, "checkout", at)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *watchFixture) end(id string, phase canary.Phase, at time.Time) {
	f.t.Helper()
	sr, err := f.store.Run(f.t.Context(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	sr.Phase, sr.EndedAt, sr.Message = phase, at, "ended "+string(phase)
	if _, err := f.store.UpdateRun(f.t.Context(), canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *watchFixture) poll(w *deploy.AnalysisWatch) {
	f.t.Helper()
	if err := w.Poll(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
}

// completed returns the analysis.completed notifications by run.
func (f *watchFixture) completed() map[string]map[string]any {
	f.t.Helper()
	page, err := f.ob.Notifications(f.t.Context(), canary.NotificationQuery{Limit: 500})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, n := range page.Notifications {
		var p map[string]any
		if err := json.Unmarshal(n.Notification.Payload, &p); err != nil {
			f.t.Fatal(err)
		}
		out[p["analysisId"].(string)] = p
	}
	return out
}

func TestAnalysisWatch(t *testing.T) {
	f := newWatchFixture(t)
	// Before the watcher starts: one run ended recently, one long ago, one
	// still running.
	f.create("recent", clock.Add(-3*time.Hour))
	f.end("recent", canary.PhaseFailed, clock.Add(-10*time.Minute))
	f.create("old", clock.Add(-5*time.Hour))
	f.end("old", canary.PhaseSuccessful, clock.Add(-4*time.Hour))
	f.create("long", clock.Add(-2*time.Hour))
	w := f.watch()
	f.poll(w)
	got := f.completed()
	if len(got) != 1 || got["recent"] == nil {
		t.Fatalf("after the first poll, notified %v; want only the run that ended within the horizon", keys(got))
	}
	if p := got["recent"]; p["verdict"] != "fail" || p["final"] != true || p["template"] != "checkout" || p["reason"] != "Failed: ended Failed" {
		t.Errorf("payload = %v", p)
	}
	// The running one ends; another is created and ended between polls.
	f.now = clock.Add(5 * time.Second)
	f.end("long", canary.PhaseInconclusive, f.now)
	f.create("quick", f.now)
	f.end("quick", canary.PhaseCancelled, f.now)
	f.poll(w)
	got = f.completed()
	if len(got) != 3 || got["long"]["verdict"] != "inconclusive" || got["quick"]["verdict"] != "inconclusive" || got["quick"]["phase"] != "Cancelled" {
		t.Fatalf("after the second poll, notified %v", got)
	}
	// Polling again, or another replica's watcher, adds nothing.
	f.now = f.now.Add(5 * time.Second)
	f.poll(w)
	f.poll(f.watch())
	if got := f.completed(); len(got) != 3 {
		t.Errorf("repeated polls notified %v", keys(got))
	}
	page, _ := f.ob.Notifications(t.Context(), canary.NotificationQuery{})
	if len(page.Notifications) != 3 {
		t.Errorf("%d notifications in the outbox, want 3", len(page.Notifications))
	}
	if page.Notifications[0].Notification.ID != deploy.CompletedNotificationID(page.Notifications[0].Notification.Subject[len("analysis/"):]) {
		t.Errorf("notification %s is not named after its run", page.Notifications[0].Notification.ID)
	}
}

func TestAnalysisWatchStoreDown(t *testing.T) {
	f := newWatchFixture(t)
	f.create("a", clock)
	w := f.watch()
	f.poll(w)
	f.store.Fail(true)
	if err := w.Poll(t.Context()); err == nil {
		t.Fatal("Poll with the store down reported no error")
	}
	f.store.Fail(false)
	f.end("a", canary.PhaseSuccessful, clock.Add(time.Second))
	f.now = clock.Add(10 * time.Second)
	f.poll(w)
	if got := f.completed(); got["a"]["verdict"] != "pass" {
		t.Errorf("after the store came back, notified %v", keys(got))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
