package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// fakeEvents records appended batches; err, when set, is returned instead.
type fakeEvents struct {
	mu      sync.Mutex
	batches map[string][][]experiments.Event
	err     error
}

func (f *fakeEvents) Append(_ context.Context, env string, evs []experiments.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.batches == nil {
		f.batches = map[string][][]experiments.Event{}
	}
	f.batches[env] = append(f.batches[env], evs)
	return nil
}

func (f *fakeEvents) all(env string) []experiments.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []experiments.Event
	for _, b := range f.batches[env] {
		out = append(out, b...)
	}
	return out
}

func withEvents(a EventAppender) harnessOption { return func(c *Config) { c.Events = a } }

func eventsPath(env string) string { return "/api/v1/environments/" + env + "/events" }

func TestPostEventsStoresABatch(t *testing.T) {
	fe := &fakeEvents{}
	h := newHarness(t, withEvents(fe))
	h.createEnv("prod", testFlags)
	now := time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)
	h.clock.Set(now)
	sdk := h.newKey(auth.RoleSDK, "web", "prod")
	body := `{"events":[
		{"name":"checkout","targetingKey":"u1","value":19.99,"context":{"plan":"pro"},"details":{"items":2},"time":"2025-05-31T23:59:00.5+02:00"},
		{"name":"$exposure","targetingKey":"u1","details":{"flagKey":"banner-color","variant":"blue"},"time":"2025-05-31T22:00:00Z"},
		{"name":"signup","targetingKey":"u2"},
		{"name":"$exposure","targetingKey":"u2","details":{"flagKey":"rollout","variant":"new","extra":true},"time":null}
	]}`
	r := h.do(req{method: "POST", path: eventsPath("prod"), key: sdk, body: body})
	if r.status != 202 || strings.TrimSpace(string(r.body)) != `{"accepted":4}` {
		t.Fatalf("POST events: %d %s", r.status, r.body)
	}
	got := fe.all("prod")
	if len(got) != 4 {
		t.Fatalf("stored %d events, want 4", len(got))
	}
	v := 19.99
	want := []experiments.Event{
		{Name: "checkout", TargetingKey: "u1", Value: &v, Context: map[string]any{"plan": "pro"}, Details: map[string]any{"items": json.Number("2")},
			Time: time.Date(2025, 5, 31, 21, 59, 0, 500_000_000, time.UTC)},
		{Name: "$exposure", TargetingKey: "u1", FlagKey: "banner-color", Variant: "blue", Time: time.Date(2025, 5, 31, 22, 0, 0, 0, time.UTC)},
		{Name: "signup", TargetingKey: "u2", Time: now},
		{Name: "$exposure", TargetingKey: "u2", FlagKey: "rollout", Variant: "new", Details: map[string]any{"extra": true}, Time: now},
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.TargetingKey != w.TargetingKey || !g.Time.Equal(w.Time) || g.FlagKey != w.FlagKey || g.Variant != w.Variant ||
			fmt.Sprint(g.Details) != fmt.Sprint(w.Details) || fmt.Sprint(g.Context) != fmt.Sprint(w.Context) ||
			(g.Value == nil) != (w.Value == nil) || (g.Value != nil && *g.Value != *w.Value) {
			t.Errorf("event %d = %+v, want %+v", i, g, w)
		}
	}
	for _, c := range []struct{ typ, result string }{{"track", "stored"}, {"exposure", "stored"}} {
		if n := testutil.ToFloat64(h.srv.ev.events.WithLabelValues(c.typ, c.result)); n != 2 {
			t.Errorf("flagpole_tracking_events_total{%s,%s} = %v, want 2", c.typ, c.result, n)
		}
	}
}

func TestPostEventsRefusesBadBatches(t *testing.T) {
	fe := &fakeEvents{}
	h := newHarness(t, withEvents(fe), func(c *Config) { c.BodyLimit = 200_000 })
	h.createEnv("prod", testFlags)
	ok := `{"name":"ok","targetingKey":"u"}`
	many := func(n int) string {
		return `{"events":[` + strings.TrimSuffix(strings.Repeat(ok+",", n), ",") + `]}`
	}
	cases := []struct {
		name   string
		body   string
		ctype  string
		status int
		fields []string // every detail's field, in order
	}{
		{"no name at 3", `{"events":[` + ok + `,` + ok + `,` + ok + `,{"targetingKey":"u"}]}`, "", 400, []string{"events[3].name"}},
		{"every problem named", `{"events":[{"name":""},{"name":"$pageview"},{"name":"x","value":"12"}]}`, "", 400,
			[]string{"events[0].name", "events[1].name", "events[2].value"}},
		{"exposure without variant", `{"events":[{"name":"$exposure","targetingKey":"u","details":{"flagKey":"f"}}]}`, "", 400, []string{"events[0].details.variant"}},
		{"exposure without subject", `{"events":[{"name":"$exposure","details":{"flagKey":"f","variant":"v"}}]}`, "", 400, []string{"events[0].targetingKey"}},
		{"flagKey not a string", `{"events":[{"name":"$exposure","targetingKey":"u","details":{"flagKey":3,"variant":"v"}}]}`, "", 400, []string{"events[0].details.flagKey"}},
		{"flagKey on a track", `{"events":[{"name":"buy","details":{"flagKey":"f"}}]}`, "", 202, nil},
		{"bad time", `{"events":[` + ok + `,{"name":"x","time":"yesterday"}]}`, "", 400, []string{"events[1].time"}},
		{"time not a string", `{"events":[{"name":"x","time":5}]}`, "", 400, []string{"events[0].time"}},
		{"unknown field", `{"events":[{"name":"x","attributes":{}}]}`, "", 400, []string{"events[0].attributes"}},
		{"not an object", `{"events":[` + ok + `,` + ok + `,"checkout"]}`, "", 400, []string{"events[2]"}},
		{"null item", `{"events":[null]}`, "", 400, []string{"events[0]"}},
		{"name not a string", `{"events":[{"name":7}]}`, "", 400, []string{"events[0].name"}},
		{"no events", `{}`, "", 400, []string{"events"}},
		{"empty", `{"events":[]}`, "", 400, []string{"events"}},
		{"events not an array", `{"events":{}}`, "", 400, []string{"events"}},
		{"too many", many(1001), "", 400, []string{"events"}},
		{"the most", many(1000), "", 202, nil},
		{"unknown top-level field", `{"events":[` + ok + `],"batch":1}`, "", 400, []string{"batch"}},
		{"malformed", `{"events":[`, "", 400, []string{"body"}},
		{"not JSON", `name=x`, "text/plain", 415, []string{"Content-Type"}},
		{"too large", `{"events":[{"name":"x","details":{"pad":"` + strings.Repeat("x", 200_000) + `"}}]}`, "", 413, []string{"body"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(fe.all("prod"))
			hdr := map[string]string{}
			if c.ctype != "" {
				hdr["Content-Type"] = c.ctype
			}
			r := h.do(req{method: "POST", path: eventsPath("prod"), key: h.admin, body: c.body, header: hdr})
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			stored := len(fe.all("prod")) - before
			if c.status != 202 {
				e := errorOf(t, r)
				var fields []string
				for _, d := range e.Details {
					fields = append(fields, d.Field)
				}
				if strings.Join(fields, " ") != strings.Join(c.fields, " ") {
					t.Errorf("fields %v, want %v (%s)", fields, c.fields, e.Message)
				}
				if stored != 0 {
					t.Errorf("a refused batch stored %d events", stored)
				}
			} else if stored == 0 {
				t.Error("nothing stored")
			}
		})
	}
}

func TestPostEventsAuthorization(t *testing.T) {
	fe := &fakeEvents{}
	h := newHarness(t, withEvents(fe))
	h.createEnv("prod", testFlags)
	h.createEnv("dev", testFlags)
	revoked := h.newKey(auth.RoleSDK, "old", "prod")
	list := h.do(req{method: "GET", path: "/api/v1/keys", key: h.admin})
	var keys struct {
		Keys []struct{ ID, Name string } `json:"keys"`
	}
	_ = json.Unmarshal(list.body, &keys)
	for _, k := range keys.Keys {
		if k.Name == "old" {
			h.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: h.admin})
		}
	}
	body := `{"events":[{"name":"checkout","targetingKey":"u"}]}`
	cases := []struct {
		name, key, env string
		status         int
	}{
		{"no key", "", "prod", 401},
		{"revoked key", revoked, "prod", 401},
		{"sdk key of another environment", h.newKey(auth.RoleSDK, "d", "dev"), "prod", 403},
		{"editor of another environment", h.newKey(auth.RoleEditor, "e", "dev"), "prod", 403},
		{"sdk key", h.newKey(auth.RoleSDK, "p", "prod"), "prod", 202},
		{"editor", h.newKey(auth.RoleEditor, "pe", "prod"), "prod", 202},
		{"admin", h.admin, "prod", 202},
		{"admin, unknown environment", h.admin, "nope", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(req{method: "POST", path: eventsPath(c.env), key: c.key, body: body})
			if r.status != c.status {
				t.Errorf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if c.status != 202 {
				errorOf(t, r)
			}
		})
	}
}

func TestPostEventsLogFailures(t *testing.T) {
	body := `{"events":[{"name":"a","targetingKey":"u"},{"name":"$exposure","targetingKey":"u","details":{"flagKey":"f","variant":"v"}}]}`
	cases := []struct {
		name   string
		log    EventAppender
		status int
		code   string
		field  string
	}{
		{"no event log", nil, 503, "unavailable", ""},
		{"log unavailable", &fakeEvents{err: fmt.Errorf("redis append: dial: %w", experiments.ErrUnavailable)}, 503, "unavailable", ""},
		{"log refuses an event", &fakeEvents{err: &experiments.InvalidEventError{Index: 1, Problems: []experiments.Problem{{Path: "variant", Message: "is required"}}}},
			400, "invalid_request", "events[1].details.variant"},
		{"unexpected", &fakeEvents{err: fmt.Errorf("boom")}, 500, "internal", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []harnessOption
			if c.log != nil {
				opts = append(opts, withEvents(c.log))
			}
			h := newHarness(t, opts...)
			h.createEnv("prod", testFlags)
			r := h.do(req{method: "POST", path: eventsPath("prod"), key: h.admin, body: body})
			e := errorOf(t, r)
			if r.status != c.status || e.Code != c.code {
				t.Fatalf("%d %s, want %d %s: %s", r.status, e.Code, c.status, c.code, e.Message)
			}
			if c.field != "" && (len(e.Details) == 0 || e.Details[0].Field != c.field) {
				t.Errorf("details %+v, want %s", e.Details, c.field)
			}
			if strings.Contains(e.Message, "boom") || strings.Contains(e.Message, "dial") {
				t.Errorf("the cause leaked into the message: %s", e.Message)
			}
		})
	}
}

// TestTrackingItemMatchesTheWireType keeps the handler's decoding in step
// with ofrep.TrackingEvent, the type SDKs encode.
func TestTrackingItemMatchesTheWireType(t *testing.T) {
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
		slices.Sort(out)
		return out
	}
	if a, b := tags(trackingItem{}), tags(ofrep.TrackingEvent{}); !slices.Equal(a, b) {
		t.Errorf("trackingItem fields %v, ofrep.TrackingEvent fields %v", a, b)
	}
}

// TestPostEventsIntoRedis sends events through the handler into the real
// event log (embedded store) and reads them back.
func TestPostEventsIntoRedis(t *testing.T) {
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	log := raw.EventLog(0)
	h := newHarnessOn(t, raw, withEvents(log))
	h.createEnv("prod", testFlags)
	sdk := h.newKey(auth.RoleSDK, "web", "prod")
	r := h.do(req{method: "POST", path: eventsPath("prod"), key: sdk,
		body: `{"events":[{"name":"checkout","targetingKey":"u1","value":5,"time":"2025-01-01T00:00:00Z"},{"name":"$exposure","targetingKey":"u1","details":{"flagKey":"rollout","variant":"new"},"time":"2025-01-01T00:00:01Z"}]}`})
	if r.status != 202 {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	got, err := log.Read(context.Background(), "prod", "", 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read: %d events, %v", len(got), err)
	}
	if got[0].Name != "checkout" || *got[0].Value != 5 || got[1].FlagKey != "rollout" || got[1].Variant != "new" || got[1].Details != nil {
		t.Errorf("stored %+v, %+v", got[0].Event, got[1].Event)
	}
}

// BenchmarkEventIngestion sends batches of events through the handler
// (in-process, the whole middleware chain) into a real redis-server
// (appendonly, fsync always). Parallel: GOMAXPROCS goroutines × 4.
func BenchmarkEventIngestion(b *testing.B) {
	for _, size := range []int{100, 500, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			rs := redistest.Start(b)
			st, err := redis.Open(context.Background(), redis.Options{URL: rs.URL()})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			h := newHarnessOn(b, st, withEvents(st.EventLog(0)), func(c *Config) {
				c.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
			})
			h.createEnv("prod", `{"flags":{}}`)
			sdk := h.newKey(auth.RoleSDK, "web", "prod")
			var sb strings.Builder
			sb.WriteString(`{"events":[`)
			for i := range size {
				if i > 0 {
					sb.WriteByte(',')
				}
				if i%2 == 0 {
					fmt.Fprintf(&sb, `{"name":"checkout","targetingKey":"user-%d","value":%d.5,"context":{"plan":"pro","country":"DE"},"time":"2025-01-01T00:00:00Z"}`, i, i)
				} else {
					fmt.Fprintf(&sb, `{"name":"$exposure","targetingKey":"user-%d","details":{"flagKey":"new-checkout","variant":"on"},"time":"2025-01-01T00:00:00Z"}`, i)
				}
			}
			sb.WriteString(`]}`)
			body := []byte(sb.String())
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := newBenchClient(h.srv.Handler(), eventsPath("prod"), sdk)
				for pb.Next() {
					c.do(body)
					if c.w.status != 202 {
						b.Errorf("status %d", c.w.status)
						return
					}
				}
			})
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
