package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// sseEvent is one event of a change stream.
type sseEvent struct {
	id, typ, data string
}

// sseConn is an open change stream.
type sseConn struct {
	t      testing.TB
	resp   *http.Response
	br     *bufio.Reader
	cancel context.CancelFunc
	events chan sseEvent
	done   chan error // the read error that ended the stream
}

// openStream opens env's stream with key; header adds request headers. It
// returns the response for statuses other than 200.
func openStream(t testing.TB, base, env, key string, header map[string]string) (*sseConn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+ofrep.StreamPath(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, resp
	}
	c := &sseConn{t: t, resp: resp, br: bufio.NewReader(resp.Body), cancel: cancel, events: make(chan sseEvent, 64), done: make(chan error, 1)}
	go c.read()
	t.Cleanup(c.close)
	return c, resp
}

func (c *sseConn) read() {
	var ev sseEvent
	var data []string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			close(c.events)
			c.done <- err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev.typ != "" || len(data) > 0 {
				if ev.typ == "" {
					ev.typ = "message"
				}
				ev.data = strings.Join(data, "\n")
				c.events <- ev
			}
			ev, data = sseEvent{}, nil
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			ev.id = value
		case "event":
			ev.typ = value
		case "data":
			data = append(data, value)
		}
	}
}

func (c *sseConn) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event, failing after a few seconds.
func (c *sseConn) next() sseEvent {
	c.t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			c.t.Fatalf("the stream ended: %v", <-c.done)
		}
		return ev
	case <-time.After(10 * time.Second):
		c.t.Fatal("no stream event within 10s")
	}
	return sseEvent{}
}

// message decodes a snapshot, change or resume event.
func (e sseEvent) message(t testing.TB) ofrep.StreamMessage {
	t.Helper()
	var m ofrep.StreamMessage
	dec := json.NewDecoder(strings.NewReader(e.data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s event data is not a StreamMessage: %v: %s", e.typ, err, e.data)
	}
	return m
}

// ended waits until the stream ends.
func (c *sseConn) ended(within time.Duration) bool {
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func TestStreamAuthorization(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	h.createEnv("dev", testFlags)
	cases := []struct {
		name   string
		key    string
		env    string
		status int
		code   string
	}{
		{"no key", "", "prod", 401, "unauthorized"},
		{"unknown key", "fp_nope", "prod", 401, "unauthorized"},
		{"sdk key of another environment", h.newKey(auth.RoleSDK, "dev-sdk", "dev"), "prod", 403, "forbidden"},
		{"editor of another environment", h.newKey(auth.RoleEditor, "dev-ed", "dev"), "prod", 403, "forbidden"},
		{"sdk key of the environment", h.newKey(auth.RoleSDK, "prod-sdk", "prod"), "prod", 200, ""},
		{"editor of the environment", h.newKey(auth.RoleEditor, "prod-ed", "prod"), "prod", 200, ""},
		{"admin", h.admin, "prod", 200, ""},
		{"admin, unknown environment", h.admin, "nope", 404, "not_found"},
		{"malformed environment", h.admin, "%zz", 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, resp := openStream(t, h.ts.URL, c.env, c.key, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if conn == nil {
				body, _ := io.ReadAll(resp.Body)
				if e := errorOf(t, resp2(resp, body)); e.Code != c.code {
					t.Errorf("code %q, want %q", e.Code, c.code)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			if ev := conn.next(); ev.typ != ofrep.StreamSnapshot {
				t.Errorf("first event %q, want a snapshot", ev.typ)
			}
		})
	}
}

func resp2(r *http.Response, body []byte) resp {
	return resp{status: r.StatusCode, header: r.Header, body: body}
}

// TestStreamFollowsChanges: a snapshot first, then a change event naming
// the changed flag (followed by OFREP's refetchEvaluation) for each write,
// made through the API on this replica.
func TestStreamFollowsChanges(t *testing.T) {
	h := newHarness(t)
	snap := h.createEnv("prod", testFlags)
	sdk := h.newKey(auth.RoleSDK, "web", "prod")
	conn, _ := openStream(t, h.ts.URL, "prod", sdk, nil)

	ev := conn.next()
	m := ev.message(t)
	if ev.typ != ofrep.StreamSnapshot || ev.id != "1" || m.Version != snap.Version || !strings.HasPrefix(m.ETag, `"1-`) || m.Environment != "prod" || m.Changed != nil {
		t.Fatalf("snapshot: %s %s %+v", ev.typ, ev.id, m)
	}
	set, err := flags.Load(m.Flags)
	if err != nil {
		t.Fatalf("the snapshot's flags do not load: %v", err)
	}
	if !slices.Equal(set.Keys(), []string{"banner-color", "broken-rule", "code-default", "config", "rollout", "static-on", "switched-off"}) {
		t.Errorf("snapshot flags: %v", set.Keys())
	}

	for i, w := range []struct {
		method, path, body, changed string
	}{
		{"PATCH", "/api/v1/environments/prod/flags/static-on", `{"defaultVariant":"off"}`, "static-on"},
		{"POST", "/api/v1/environments/prod/flags", `{"key":"fresh","state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`, "fresh"},
		{"DELETE", "/api/v1/environments/prod/flags/config", "", "config"},
	} {
		if r := h.do(req{method: w.method, path: w.path, key: h.admin, body: w.body}); r.status >= 300 {
			t.Fatalf("%s %s: %d %s", w.method, w.path, r.status, r.body)
		}
		version := int64(i + 2)
		ev := conn.next()
		m := ev.message(t)
		if ev.typ != ofrep.StreamChange || m.Version != version || !slices.Equal(m.Changed, []string{w.changed}) {
			t.Fatalf("after %s %s: %s %+v", w.method, w.path, ev.typ, m)
		}
		set, err := flags.Load(m.Flags)
		if err != nil {
			t.Fatal(err)
		}
		if w.changed == "static-on" {
			if res := set.Evaluate("static-on", nil); res.Value != false {
				t.Errorf("static-on in the change = %v, want false", res.Value)
			}
		}
		ref := conn.next()
		var rm ofrep.RefetchMessage
		if err := json.Unmarshal([]byte(ref.data), &rm); err != nil || ref.typ != "message" || rm.Type != ofrep.StreamRefetch || rm.ETag != m.ETag {
			t.Errorf("after the change: %+v (%v), want refetchEvaluation with etag %s", ref, err, m.ETag)
		}
	}
}

// TestStreamResumeAndResync: a client at the current version is told it is
// up to date; one behind gets a fresh snapshot.
func TestStreamResumeAndResync(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/static-on", key: h.admin, body: `{"defaultVariant":"off"}`})
	if r.status != 200 {
		t.Fatalf("PATCH: %d", r.status)
	}
	h.waitVersion("prod", 2)
	cases := []struct {
		lastID  string
		typ     string
		version int64
		flags   bool
	}{
		{"2", ofrep.StreamResume, 2, false},
		{"1", ofrep.StreamSnapshot, 2, true},
		{"", ofrep.StreamSnapshot, 2, true},
	}
	for _, c := range cases {
		t.Run("Last-Event-ID "+c.lastID, func(t *testing.T) {
			hdr := map[string]string{}
			if c.lastID != "" {
				hdr[ofrep.HeaderLastEventID] = c.lastID
			}
			conn, _ := openStream(t, h.ts.URL, "prod", h.admin, hdr)
			ev := conn.next()
			m := ev.message(t)
			if ev.typ != c.typ || m.Version != c.version || (len(m.Flags) > 0) != c.flags {
				t.Errorf("got %s %+v, want %s at %d", ev.typ, m, c.typ, c.version)
			}
		})
	}
}

// TestStreamAcrossReplicas: a change written on replica A reaches a
// subscriber of replica B.
func TestStreamAcrossReplicas(t *testing.T) {
	a := newHarness(t)
	b := newHarnessOn(t, a.raw)
	a.createEnv("prod", testFlags)
	b.waitVersion("prod", 1)
	conn, _ := openStream(t, b.ts.URL, "prod", b.admin, nil)
	if ev := conn.next(); ev.typ != ofrep.StreamSnapshot {
		t.Fatalf("first event %q", ev.typ)
	}
	start := time.Now()
	if r := a.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/static-on", key: a.admin, body: `{"state":"DISABLED"}`}); r.status != 200 {
		t.Fatalf("PATCH on A: %d %s", r.status, r.body)
	}
	ev := conn.next()
	if m := ev.message(t); ev.typ != ofrep.StreamChange || m.Version != 2 || !slices.Equal(m.Changed, []string{"static-on"}) {
		t.Fatalf("on B: %s %+v", ev.typ, m)
	}
	t.Logf("a write on A reached B's subscriber in %s", time.Since(start))
}

// TestStreamEnvironmentDeletedAndRecreated: deleting an environment ends
// its streams; once it is created again, streams start over at version 1.
func TestStreamEnvironmentDeletedAndRecreated(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	for range 2 {
		if r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/static-on", key: h.admin, body: `{"state":"DISABLED"}`}); r.status != 200 {
			t.Fatalf("PATCH: %d", r.status)
		}
		if r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/static-on", key: h.admin, body: `{"state":"ENABLED"}`}); r.status != 200 {
			t.Fatalf("PATCH: %d", r.status)
		}
	}
	h.waitVersion("prod", 5)
	conn, _ := openStream(t, h.ts.URL, "prod", h.admin, nil)
	old := conn.next().message(t)
	if old.Version != 5 {
		t.Fatalf("snapshot at %d, want 5", old.Version)
	}
	if r := h.do(req{method: "DELETE", path: "/api/v1/environments/prod", key: h.admin}); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if !conn.ended(5 * time.Second) {
		t.Fatal("the stream of a deleted environment did not end")
	}
	if _, resp := openStream(t, h.ts.URL, "prod", h.admin, nil); resp.StatusCode != 404 {
		t.Errorf("stream of a deleted environment: %d, want 404", resp.StatusCode)
	}
	h.createEnv("prod", `{"flags":{"only":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`)
	conn, _ = openStream(t, h.ts.URL, "prod", h.admin, nil)
	m := conn.next().message(t)
	if m.Version != 1 || !strings.Contains(string(m.Flags), `"only"`) {
		t.Fatalf("after re-creation: %+v", m)
	}
	// Its changes are published although their versions are below the old ones.
	if r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/only", key: h.admin, body: `{"state":"DISABLED"}`}); r.status != 200 {
		t.Fatalf("PATCH: %d", r.status)
	}
	if ev := conn.next(); ev.typ != ofrep.StreamChange || ev.message(t).Version != 2 {
		t.Fatalf("change after re-creation: %+v", ev)
	}
	// Recreate it once more and bring it back to version 5 with other
	// flags: a client reconnecting with Last-Event-ID 5 is resumed, but the
	// resume's etag differs from the one it holds, so it can tell (the SDK
	// then asks for a snapshot).
	if r := h.do(req{method: "DELETE", path: "/api/v1/environments/prod", key: h.admin}); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	h.createEnv("prod", `{"flags":{"only":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`)
	for i := range 4 {
		state := []string{"DISABLED", "ENABLED"}[i%2]
		if r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/only", key: h.admin, body: `{"state":"` + state + `"}`}); r.status != 200 {
			t.Fatalf("PATCH: %d", r.status)
		}
	}
	h.waitVersion("prod", 5)
	conn, _ = openStream(t, h.ts.URL, "prod", h.admin, map[string]string{ofrep.HeaderLastEventID: "5"})
	ev := conn.next()
	if m := ev.message(t); ev.typ != ofrep.StreamResume || m.Version != 5 || m.ETag == old.ETag || !strings.HasPrefix(m.ETag, `"5-`) {
		t.Fatalf("resume at the same version with other flags: %s %+v, held etag %s", ev.typ, m, old.ETag)
	}
}

// TestStreamsEndOnShutdown: CloseStreams ends open streams at once and
// refuses new ones with 503 while other routes keep working, so that
// http.Server.Shutdown is not held up; the end of Run does the same.
func TestStreamsEndOnShutdown(t *testing.T) {
	t.Run("CloseStreams", func(t *testing.T) {
		h := newHarness(t)
		h.createEnv("prod", testFlags)
		conn, _ := openStream(t, h.ts.URL, "prod", h.admin, nil)
		conn.next()
		hs := &http.Server{Handler: h.srv.Handler()}
		hs.RegisterOnShutdown(h.srv.CloseStreams)
		ln := httptest.NewUnstartedServer(nil).Listener
		go func() { _ = hs.Serve(ln) }()
		base := "http://" + ln.Addr().String()
		other, _ := openStream(t, base, "prod", h.admin, nil)
		other.next()

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown with an open stream: %v", err)
		}
		if !other.ended(time.Second) || !conn.ended(time.Second) {
			t.Fatal("streams did not end")
		}
		t.Logf("graceful shutdown with an open stream took %s", time.Since(start))
		_, resp := openStream(t, h.ts.URL, "prod", h.admin, nil)
		if resp.StatusCode != 503 {
			t.Errorf("a stream after CloseStreams: %d, want 503", resp.StatusCode)
		}
		if st, _ := h.eval("prod", "static-on", h.admin); st != 200 {
			t.Errorf("evaluation after CloseStreams: %d", st)
		}
		h.srv.CloseStreams() // idempotent
	})
	t.Run("Run ends", func(t *testing.T) {
		raw := newHarness(t).raw
		srv, err := New(Config{Store: raw, Keys: raw, Flags: flags.NewService(raw, nil), SyncInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		defer ts.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		waitFor(t, "ready", srv.Ready)
		if _, err := flags.NewService(raw, nil).CreateEnvironment(ctx, "prod", nil, flags.WriteOptions{Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "prod", func() bool { return srv.env("prod") != nil })
		secret, hash := auth.NewSecret(auth.RoleAdmin)
		if err := raw.CreateKey(ctx, auth.Key{ID: auth.NewID(), Name: "a", Role: auth.RoleAdmin, Hash: hash, Prefix: secret[:10], CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		conn, _ := openStream(t, ts.URL, "prod", secret, nil)
		conn.next()
		cancel()
		if !conn.ended(2 * time.Second) {
			t.Fatal("the stream outlived Run")
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestStreamNotReady: before the first load streams answer 503.
func TestStreamNotReady(t *testing.T) {
	raw := newHarness(t).raw
	srv, err := New(Config{Store: raw, Keys: raw, Flags: flags.NewService(raw, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.CloseStreams()
	secret, hash := auth.NewSecret(auth.RoleAdmin)
	if err := raw.CreateKey(context.Background(), auth.Key{ID: auth.NewID(), Name: "a", Role: auth.RoleAdmin, Hash: hash, Prefix: secret[:10], CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	_, resp := openStream(t, ts.URL, "default", secret, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("stream before the first load: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestStreamMetrics(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	conn, _ := openStream(t, h.ts.URL, "prod", h.admin, nil)
	conn.next()
	if n, err := testutil.GatherAndCount(h.reg, "flagpole_stream_subscribers"); err != nil || n != 1 {
		t.Fatalf("flagpole_stream_subscribers: %d series (%v)", n, err)
	}
	r := h.do(req{method: "GET", path: "/metrics"})
	for _, want := range []string{"flagpole_stream_subscribers 1", `flagpole_stream_events_sent_total{type="snapshot"} 1`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestBulkAdvertisesTheStream: OFREP bulk answers carry eventStreams with
// the environment's stream (OFREP ADR 0008), and the path is escaped.
func TestBulkAdvertisesTheStream(t *testing.T) {
	h := newHarness(t)
	for _, env := range []string{"prod", "eu_west-1"} {
		h.createEnv(env, testFlags)
		r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags?env=" + env, key: h.admin, body: `{"context":{"targetingKey":"u1"}}`})
		var bulk ofrep.BulkResponse
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&bulk); err != nil || r.status != 200 {
			t.Fatalf("bulk: %d %v %s", r.status, err, r.body)
		}
		want := []ofrep.EventStream{{Type: "sse", Endpoint: &ofrep.EventStreamEndpoint{RequestURI: "/api/v1/environments/" + env + "/stream"}}}
		if len(bulk.EventStreams) != 1 || bulk.EventStreams[0].Type != want[0].Type || bulk.EventStreams[0].URL != "" ||
			bulk.EventStreams[0].Endpoint == nil || *bulk.EventStreams[0].Endpoint != *want[0].Endpoint {
			t.Errorf("%s: eventStreams = %+v", env, bulk.EventStreams)
		}
		if len(bulk.Flags) != 7 || bulk.Metadata["team"] != "checkout" {
			t.Errorf("%s: the rest of the bulk answer changed: %d flags, metadata %v", env, len(bulk.Flags), bulk.Metadata)
		}
		// The advertised stream works with the same key.
		conn, resp := openStream(t, h.ts.URL, env, h.admin, nil)
		if conn == nil {
			t.Fatalf("advertised stream: %d", resp.StatusCode)
		}
		conn.close()
	}
}

// TestFlagsetConditionalGet: GET .../flagset answers 304 to a matching
// If-None-Match, for polling clients.
func TestFlagsetConditionalGet(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	sdk := h.newKey(auth.RoleSDK, "web", "prod")
	path := "/api/v1/environments/prod/flagset"
	first := h.do(req{method: "GET", path: path, key: sdk})
	if first.status != 200 || first.header.Get("ETag") != `"1"` || first.header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET flagset: %d ETag %q Cache-Control %q", first.status, first.header.Get("ETag"), first.header.Get("Cache-Control"))
	}
	cases := []struct {
		name    string
		inm     string
		accept  string
		status  int
		hasBody bool
	}{
		{"matching", `"1"`, "", 304, false},
		{"weak matches", `W/"1"`, "", 304, false},
		{"in a list", `"7", "1"`, "", 304, false},
		{"any", `*`, "", 304, false},
		{"yaml, matching", `"1"`, "application/yaml", 304, false},
		{"stale", `"0"`, "", 200, true},
		{"garbage", `nonsense`, "", 200, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(req{method: "GET", path: path, key: sdk, header: map[string]string{"If-None-Match": c.inm, "Accept": c.accept}})
			if r.status != c.status || (len(r.body) > 0) != c.hasBody || r.header.Get("ETag") != `"1"` {
				t.Errorf("status %d, body %d bytes, ETag %q; want %d", r.status, len(r.body), r.header.Get("ETag"), c.status)
			}
		})
	}
	if r := h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/static-on", key: h.admin, body: `{"state":"DISABLED"}`}); r.status != 200 {
		t.Fatalf("PATCH: %d", r.status)
	}
	h.waitVersion("prod", 2)
	r := h.do(req{method: "GET", path: path, key: sdk, header: map[string]string{"If-None-Match": `"1"`}})
	if r.status != 200 || r.header.Get("ETag") != `"2"` || !strings.Contains(string(r.body), `"DISABLED"`) {
		t.Errorf("after a change: %d ETag %q", r.status, r.header.Get("ETag"))
	}
	other := h.newKey(auth.RoleSDK, "other", "dev")
	if r := h.do(req{method: "GET", path: path, key: other, header: map[string]string{"If-None-Match": `"2"`}}); r.status != 403 {
		t.Errorf("another environment's sdk key: %d, want 403 (even with a matching ETag)", r.status)
	}
}
