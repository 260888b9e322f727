package sdk

import (
	"encoding/json"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/api/ofrep"
)

// collect reads tracking batches until n events have arrived.
func collect(t *testing.T, s *flagServer, n int) []ofrep.TrackingEvent {
	t.Helper()
	var got []ofrep.TrackingEvent
	for len(got) < n {
		select {
		case b := <-s.batches:
			got = append(got, b.Events...)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d tracking events, want %d: %+v", len(got), n, got)
		}
	}
	return got
}

// experimentFlags has experiment flags (metadata "experiment", from the
// flag or the set) and ordinary ones, whose evaluations are no exposures.
const experimentFlags = `{
  "flags": {
    "targeted": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", null]}, "metadata": {"experiment": "exp-1"}},
    "plain": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", null]}},
    "not-a-key": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"experiment": 7}},
    "empty-key": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"experiment": ""}},
    "code-default": {"state": "ENABLED", "variants": {"on": true, "off": false}, "metadata": {"experiment": "exp-2"},
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}}
  }
}`

func TestTrackingAndExposures(t *testing.T) {
	s := newFlagServer(t, experimentFlags)
	a := newApp(t)
	if err := a.start(fastOptions(s, WithEventFlush(time.Hour, 100))...); err != nil {
		t.Fatal(err)
	}
	u1 := openfeature.NewEvaluationContext("u1", map[string]any{"plan": "pro"})
	a.client.Track(bg, "checkout", u1, openfeature.NewTrackingEventDetails(42).Add("currency", "EUR"))
	a.client.Track(bg, "signup", openfeature.NewEvaluationContext("u2", nil), openfeature.TrackingEventDetails{})
	for range 5 { // one exposure per (flag, variant, subject) within the window
		_, _ = a.client.StringValue(bg, "targeted", "", u1)
	}
	_, _ = a.client.StringValue(bg, "targeted", "", openfeature.NewEvaluationContext("u3", nil))                                          // variant b
	_, _ = a.client.StringValue(bg, "plain", "", u1)                                                                                      // no experiment: no exposure
	_, _ = a.client.BooleanValue(bg, "not-a-key", false, u1)                                                                              // experiment not a string: no exposure
	_, _ = a.client.BooleanValue(bg, "empty-key", false, u1)                                                                              // empty experiment: no exposure
	_, _ = a.client.BooleanValue(bg, "code-default", false, openfeature.NewEvaluationContext("u1", nil))                                  // no variant: no exposure
	_, _ = a.client.StringValue(bg, "targeted", "", openfeature.NewTargetlessEvaluationContext(nil))                                      // no subject: no exposure
	_, _ = a.client.BooleanValue(bg, "missing", false, openfeature.NewEvaluationContext("u1", nil))                                       // error: no exposure
	a.client.Track(bg, "", u1, openfeature.TrackingEventDetails{})                                                                        // no name: dropped
	a.client.Track(bg, "bad", openfeature.NewEvaluationContext("u1", map[string]any{"f": func() {}}), openfeature.TrackingEventDetails{}) // not JSON: dropped

	if len(s.batches) != 0 {
		t.Fatal("events were sent before the flush interval or Shutdown")
	}
	a.api.Shutdown(bg) // flushes
	got := collect(t, s, 4)
	for i := range got {
		if got[i].Time.IsZero() || time.Since(got[i].Time) > time.Minute {
			t.Errorf("event %d time %v", i, got[i].Time)
		}
		got[i].Time = time.Time{}
	}
	v := 42.0
	want := []ofrep.TrackingEvent{
		{Name: "checkout", TargetingKey: "u1", Context: map[string]any{"plan": "pro"}, Value: &v, Details: map[string]any{"currency": "EUR"}},
		{Name: "signup", TargetingKey: "u2"},
		{Name: ofrep.ExposureEvent, TargetingKey: "u1", Details: map[string]any{"flagKey": "targeted", "variant": "a"}},
		{Name: ofrep.ExposureEvent, TargetingKey: "u3", Details: map[string]any{"flagKey": "targeted", "variant": "b"}},
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		t.Errorf("events\n got  %s\n want %s", gj, wj)
	}
	select {
	case b := <-s.batches:
		t.Errorf("extra batch %+v", b)
	case <-time.After(50 * time.Millisecond):
	}
}

// The exposure hook decides on the resolved metadata alone: a set-level
// "experiment" applies to every flag unless a flag overrides it.
func TestExposureHookMetadata(t *testing.T) {
	tests := []struct {
		name     string
		metadata openfeature.FlagMetadata
		variant  string
		key      string
		want     bool
	}{
		{name: "experiment flag", metadata: openfeature.FlagMetadata{"experiment": "exp-1", "team": "web"}, variant: "on", key: "u1", want: true},
		{name: "no metadata", variant: "on", key: "u1"},
		{name: "other metadata", metadata: openfeature.FlagMetadata{"team": "web"}, variant: "on", key: "u1"},
		{name: "experiment not a string", metadata: openfeature.FlagMetadata{"experiment": true}, variant: "on", key: "u1"},
		{name: "empty experiment", metadata: openfeature.FlagMetadata{"experiment": ""}, variant: "on", key: "u1"},
		{name: "no variant", metadata: openfeature.FlagMetadata{"experiment": "exp-1"}, key: "u1"},
		{name: "no targeting key", metadata: openfeature.FlagMetadata{"experiment": "exp-1"}, variant: "on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := newConfig([]Option{WithURL("http://127.0.0.1:1")})
			if err != nil {
				t.Fatal(err)
			}
			tr := newTracker(&cfg)
			h := exposureHook{t: tr}
			hc := openfeature.NewHookContext("f", openfeature.String, "", openfeature.ClientMetadata{}, openfeature.Metadata{},
				openfeature.NewEvaluationContext(tc.key, nil))
			d := openfeature.InterfaceEvaluationDetails{}
			d.Variant, d.FlagMetadata = tc.variant, tc.metadata
			if err := h.After(bg, hc, d, openfeature.HookHints{}); err != nil {
				t.Fatal(err)
			}
			if got := len(tr.queue) == 1; got != tc.want {
				t.Errorf("exposure recorded = %v, want %v (queue %+v)", got, tc.want, tr.queue)
			}
		})
	}
}

// In remote mode the server records the exposures of OFREP evaluations,
// so the provider has no exposure hook.
func TestRemoteModeHasNoExposureHook(t *testing.T) {
	tests := []struct {
		name      string
		opts      []Option
		wantHooks int
	}{
		{name: "in-process", opts: []Option{WithURL("http://127.0.0.1:1")}, wantHooks: 1},
		{name: "remote", opts: []Option{WithURL("http://127.0.0.1:1"), WithRemoteEvaluation()}, wantHooks: 0},
		{name: "exposures off", opts: []Option{WithURL("http://127.0.0.1:1"), WithExposureWindow(0)}, wantHooks: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(NewProvider(tc.opts...).Hooks()); got != tc.wantHooks {
				t.Errorf("%d hooks, want %d", got, tc.wantHooks)
			}
		})
	}
}

func TestExposureWindowAndBounds(t *testing.T) {
	cfg, err := newConfig([]Option{WithURL("http://127.0.0.1:1"), WithMaxPendingEvents(4), WithExposureWindow(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(&cfg)
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	tr.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	queued := func() int { tr.mu.Lock(); defer tr.mu.Unlock(); return len(tr.queue) }

	tr.expose("f", "on", "u1")
	tr.expose("f", "on", "u1")
	advance(59 * time.Second)
	tr.expose("f", "on", "u1")
	if q := queued(); q != 1 {
		t.Errorf("within the window: %d queued, want 1", q)
	}
	advance(time.Second)
	tr.expose("f", "on", "u1")
	tr.expose("f", "off", "u1")
	if q := queued(); q != 3 {
		t.Errorf("after the window and a new variant: %d queued, want 3", q)
	}
	for i := range 10 {
		tr.expose("f", "on", string(rune('a'+i)))
	}
	tr.mu.Lock()
	q, dropped, seen := len(tr.queue), tr.dropped, len(tr.seen)
	tr.mu.Unlock()
	if q != 4 || dropped != 9 {
		t.Errorf("queue %d, dropped %d; want the queue capped at 4 and 9 dropped", q, dropped)
	}
	if seen > 4 {
		t.Errorf("de-duplication remembers %d subjects, more than the bound 4", seen)
	}
}

func TestTrackingDelivery(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		wantKept  bool
		wantFinal int // events the server finally receives
	}{
		{name: "accepted", status: http.StatusAccepted, wantFinal: 1},
		{name: "server error is retried", status: http.StatusServiceUnavailable, wantKept: true, wantFinal: 1},
		{name: "rate limited is retried", status: http.StatusTooManyRequests, wantKept: true, wantFinal: 1},
		{name: "rejected is dropped", status: http.StatusBadRequest, wantFinal: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newFlagServer(t, parityFlags)
			var mu sync.Mutex
			status := tc.status
			s.eventsStatus = func() int { mu.Lock(); defer mu.Unlock(); return status }
			p := NewProvider(fastOptions(s, WithEventFlush(time.Hour, 10))...)
			if err := p.Init(openfeature.EvaluationContext{}); err != nil {
				t.Fatal(err)
			}
			p.Track(bg, "e", openfeature.NewEvaluationContext("u", nil), openfeature.TrackingEventDetails{})
			p.track.flush(bg)
			p.track.mu.Lock()
			kept := len(p.track.queue) == 1
			p.track.mu.Unlock()
			if kept != tc.wantKept {
				t.Errorf("after a %d, event kept = %v, want %v", tc.status, kept, tc.wantKept)
			}
			mu.Lock()
			status = http.StatusAccepted
			mu.Unlock()
			p.Shutdown()
			got := 0
			for len(s.batches) > 0 {
				got += len((<-s.batches).Events)
			}
			if got != tc.wantFinal {
				t.Errorf("server received %d events, want %d", got, tc.wantFinal)
			}
		})
	}
}
