package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/api/ofrep"
)

// event is one parsed SSE event, or a comment when comment is set.
type event struct {
	id, typ, data string
	comment       string
}

// readEvent reads the next event or comment block from an SSE stream.
func readEvent(br *bufio.Reader) (event, error) {
	var ev event
	var data []string
	seen := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !seen {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		seen = true
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			ev.comment = value
		case "id":
			ev.id = value
		case "event":
			ev.typ = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.typ = "retry:" + value
		}
	}
}

// nextData skips comments and retry hints and returns the next event.
func nextData(t *testing.T, br *bufio.Reader) event {
	t.Helper()
	for {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if ev.comment != "" || strings.HasPrefix(ev.typ, "retry:") {
			continue
		}
		return ev
	}
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

const (
	docV1 = `{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
		"b":{"state":"ENABLED","variants":{"x":"1"},"defaultVariant":"x"}}}`
	docV2 = `{"flags":{"a":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
		"b":{"state":"ENABLED","variants":{"x":"1"},"defaultVariant":"x"}}}`
)

// fakeServer holds the "current" flag set the hub's caller would report.
type fakeServer struct {
	mu      sync.Mutex
	version int64
	etag    string
	doc     string
	exists  bool
}

func (f *fakeServer) set(v int64, etag, doc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version, f.etag, f.doc, f.exists = v, etag, doc, true
}

func (f *fakeServer) current() (int64, string, []byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version, f.etag, []byte(f.doc), f.exists
}

func newTestHub(t *testing.T, o Options) (*Hub, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	h, err := NewHub(o)
	if err != nil {
		t.Fatalf("NewHub: %v", err)
	}
	t.Cleanup(h.Close)
	return h, reg
}

func mount(t *testing.T, h *Hub, fs *fakeServer) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env, ok := strings.CutPrefix(r.URL.Path, "/api/v1/environments/")
		env, ok2 := strings.CutSuffix(env, "/stream")
		if !ok || !ok2 {
			http.NotFound(w, r)
			return
		}
		h.Serve(w, r, env, fs.current)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func connect(t *testing.T, srv *httptest.Server, env, lastID string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+ofrep.StreamPath(env), nil)
	if lastID != "" {
		req.Header.Set(ofrep.HeaderLastEventID, lastID)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func waitSubscribers(t *testing.T, h *Hub, env string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d subscribers of %s", n, env), func() bool { return h.Subscribers(env) == n })
}

// waitFor polls cond for something another goroutine does after the test
// has observed its effect over the network.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSnapshotThenChanges(t *testing.T) {
	h, reg := newTestHub(t, Options{})
	fs := &fakeServer{}
	fs.set(1, `"e1"`, docV1)
	srv := mount(t, h, fs)

	resp, br := connect(t, srv, "prod", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	retry, err := readEvent(br)
	if err != nil || retry.typ != "retry:2000" {
		t.Fatalf("first block = %+v, %v; want the retry hint", retry, err)
	}
	snap := nextData(t, br)
	if snap.id != "1" || snap.typ != ofrep.StreamSnapshot {
		t.Fatalf("first event id %q type %q, want 1 snapshot", snap.id, snap.typ)
	}
	msg := decode[ofrep.StreamMessage](t, snap.data)
	if msg.Environment != "prod" || msg.Version != 1 || msg.ETag != `"e1"` || msg.Changed != nil {
		t.Errorf("snapshot = %+v", msg)
	}
	if got := decode[map[string]any](t, string(msg.Flags)); len(got["flags"].(map[string]any)) != 2 {
		t.Errorf("snapshot flags = %s", msg.Flags)
	}

	fs.set(2, `"e2"`, docV2)
	h.Publish("prod", 2, `"e2"`, []byte(docV2))
	ch := nextData(t, br)
	cm := decode[ofrep.StreamMessage](t, ch.data)
	if ch.id != "2" || ch.typ != ofrep.StreamChange || cm.Version != 2 || cm.ETag != `"e2"` || !reflect.DeepEqual(cm.Changed, []string{"a"}) {
		t.Errorf("change event %q %q = %+v, want version 2 changing [a]", ch.id, ch.typ, cm)
	}
	ref := nextData(t, br)
	if ref.id != "2" || ref.typ != "" {
		t.Errorf("refetch event id %q type %q, want id 2 and the default type", ref.id, ref.typ)
	}
	if rm := decode[ofrep.RefetchMessage](t, ref.data); rm != (ofrep.RefetchMessage{Type: "refetchEvaluation", ETag: `"e2"`}) {
		t.Errorf("refetch = %+v", rm)
	}

	// Old or repeated versions are ignored: the next event is version 3.
	h.Publish("prod", 2, `"e2"`, []byte(docV1))
	h.Publish("prod", 1, `"e1"`, []byte(docV1))
	h.Publish("prod", 3, `"e3"`, []byte(docV1))
	if ev := nextData(t, br); ev.id != "3" || !reflect.DeepEqual(decode[ofrep.StreamMessage](t, ev.data).Changed, []string{"a"}) {
		t.Errorf("after stale publishes got id %q %s, want version 3 changing [a]", ev.id, ev.data)
	}
	nextData(t, br) // its refetch

	// The counter follows the flush that the client has already seen.
	waitFor(t, "2 change events counted", func() bool { return testutil.ToFloat64(h.m.sent.WithLabelValues("change")) == 2 })
	if got := testutil.ToFloat64(h.m.subscribers); got != 1 {
		t.Errorf("subscribers gauge = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gathering the registry: %d series, %v", n, err)
	}
}

func TestOpeningByLastEventID(t *testing.T) {
	tests := []struct {
		name        string
		lastID      string
		wantType    string
		wantFlags   bool
		wantRefetch bool
		wantResyncs float64
	}{
		{name: "new client gets a snapshot", lastID: "", wantType: ofrep.StreamSnapshot, wantFlags: true},
		{name: "current version resumes without a snapshot", lastID: "7", wantType: ofrep.StreamResume},
		{name: "older version resyncs with a snapshot and a refetch", lastID: "5", wantType: ofrep.StreamSnapshot, wantFlags: true, wantRefetch: true, wantResyncs: 1},
		{name: "garbage id resyncs", lastID: "x7", wantType: ofrep.StreamSnapshot, wantFlags: true, wantRefetch: true, wantResyncs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t, Options{Retry: -1})
			fs := &fakeServer{}
			fs.set(7, `"e7"`, docV1)
			srv := mount(t, h, fs)
			_, br := connect(t, srv, "prod", tc.lastID)
			ev := nextData(t, br)
			msg := decode[ofrep.StreamMessage](t, ev.data)
			if ev.typ != tc.wantType || ev.id != "7" || msg.Version != 7 || (msg.Flags != nil) != tc.wantFlags {
				t.Errorf("first event %q id %q flags %v, want %q with flags %v", ev.typ, ev.id, msg.Flags != nil, tc.wantType, tc.wantFlags)
			}
			if tc.wantRefetch {
				if ev := nextData(t, br); !strings.Contains(ev.data, `"refetchEvaluation"`) {
					t.Errorf("second event %+v, want a refetch", ev)
				}
			}
			if got := testutil.ToFloat64(h.m.resyncs); got != tc.wantResyncs {
				t.Errorf("resyncs = %v, want %v", got, tc.wantResyncs)
			}
		})
	}
}

func TestChangeQueuedBeforeSnapshotIsNotRepeated(t *testing.T) {
	h, _ := newTestHub(t, Options{Retry: -1})
	fs := &fakeServer{}
	var srv *httptest.Server
	// The server's current() already reports version 2 while version 2's
	// publish is still queued for the new subscriber: it must not see 2 twice.
	fs.set(2, `"e2"`, docV2)
	current := func() (int64, string, []byte, bool) {
		h.Publish("prod", 2, `"e2"`, []byte(docV2))
		return fs.current()
	}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.Serve(w, r, "prod", current) }))
	t.Cleanup(srv.Close)
	_, br := connect(t, srv, "prod", "")
	if ev := nextData(t, br); ev.id != "2" || ev.typ != ofrep.StreamSnapshot {
		t.Fatalf("first event %+v, want the snapshot of 2", ev)
	}
	h.Publish("prod", 3, `"e3"`, []byte(docV1))
	if ev := nextData(t, br); ev.id != "3" || ev.typ != ofrep.StreamChange {
		t.Errorf("second event id %q type %q, want the change to 3", ev.id, ev.typ)
	}
}

func TestServeErrors(t *testing.T) {
	tests := []struct {
		name     string
		closed   bool
		exists   bool
		doc      string
		wantCode int
		wantErr  string
	}{
		{name: "unknown environment", exists: false, wantCode: 404, wantErr: "not_found"},
		{name: "hub closed", closed: true, exists: true, doc: docV1, wantCode: 503, wantErr: "unavailable"},
		{name: "current set is not JSON", exists: true, doc: "{flags", wantCode: 500, wantErr: "internal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t, Options{})
			fs := &fakeServer{}
			if tc.exists {
				fs.set(1, `"e"`, tc.doc)
			}
			if tc.closed {
				h.Close()
			}
			rec := httptest.NewRecorder()
			h.Serve(rec, httptest.NewRequest(http.MethodGet, "/stream", nil), "prod", fs.current)
			body := decode[map[string]map[string]string](t, rec.Body.String())
			if rec.Code != tc.wantCode || body["error"]["code"] != tc.wantErr || body["error"]["message"] == "" {
				t.Errorf("got %d %s, want %d with code %s", rec.Code, rec.Body, tc.wantCode, tc.wantErr)
			}
			if h.Subscribers("prod") != 0 {
				t.Errorf("subscriber left behind")
			}
		})
	}
}

func TestCloseAndRemoveEndStreams(t *testing.T) {
	h, _ := newTestHub(t, Options{Retry: -1})
	fs := &fakeServer{}
	fs.set(1, `"e1"`, docV1)
	srv := mount(t, h, fs)
	_, a := connect(t, srv, "prod", "")
	_, b := connect(t, srv, "staging", "")
	nextData(t, a)
	nextData(t, b)

	h.Remove("prod")
	if _, err := io.ReadAll(a); err != nil {
		t.Errorf("prod stream after Remove: %v, want a clean end", err)
	}
	h.Close()
	if _, err := io.ReadAll(b); err != nil {
		t.Errorf("staging stream after Close: %v, want a clean end", err)
	}
	if h.Subscribers("staging") != 0 {
		t.Errorf("subscribers after Close = %d", h.Subscribers("staging"))
	}
	h.Publish("prod", 9, `"e9"`, []byte(docV1)) // no effect, no panic
	h.Close()                                   // idempotent
}

func TestInvalidPublishIgnored(t *testing.T) {
	h, _ := newTestHub(t, Options{Retry: -1})
	fs := &fakeServer{}
	fs.set(1, `"e1"`, docV1)
	srv := mount(t, h, fs)
	_, br := connect(t, srv, "prod", "")
	nextData(t, br)
	h.Publish("prod", 2, `"e2"`, []byte("not json"))
	h.Publish("prod", 3, `"e3"`, []byte(docV2))
	if ev := nextData(t, br); ev.id != "3" {
		t.Errorf("after an invalid publish got id %q, want 3", ev.id)
	}
}

func TestDuplicateRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := NewHub(Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var are prometheus.AlreadyRegisteredError
	if _, err := NewHub(Options{Registerer: reg}); !errors.As(err, &are) {
		t.Errorf("second hub on one registry: %v, want AlreadyRegisteredError", err)
	}
}

func TestChangedKeys(t *testing.T) {
	flag := func(state string) string {
		return `{"state":"` + state + `","variants":{"on":true,"off":false},"defaultVariant":"on"}`
	}
	tests := []struct {
		name       string
		prev, next string
		want       []string
	}{
		{name: "first document: every flag", prev: "", next: `{"flags":{"b":` + flag("ENABLED") + `,"a":` + flag("ENABLED") + `}}`, want: []string{"a", "b"}},
		{name: "no change", prev: `{"flags":{"a":` + flag("ENABLED") + `}}`, next: `{"flags":{"a":` + flag("ENABLED") + `}}`, want: nil},
		{name: "one toggled", prev: `{"flags":{"a":` + flag("ENABLED") + `,"b":` + flag("ENABLED") + `}}`, next: `{"flags":{"a":` + flag("ENABLED") + `,"b":` + flag("DISABLED") + `}}`, want: []string{"b"}},
		{name: "added and removed", prev: `{"flags":{"a":` + flag("ENABLED") + `}}`, next: `{"flags":{"c":` + flag("ENABLED") + `}}`, want: []string{"a", "c"}},
		{name: "set metadata changes every flag", prev: `{"flags":{"a":` + flag("ENABLED") + `,"b":` + flag("ENABLED") + `}}`, next: `{"metadata":{"v":2},"flags":{"a":` + flag("ENABLED") + `,"b":` + flag("ENABLED") + `}}`, want: []string{"a", "b"}},
		{name: "array form equals map form", prev: `{"flags":{"a":` + flag("ENABLED") + `}}`, next: `{"flags":[{"key":"a","state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}]}`, want: nil},
		{name: "unparsable next", prev: `{"flags":{}}`, next: `{"flags":7}`, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var prev []byte
			if tc.prev != "" {
				prev = []byte(tc.prev)
			}
			if got := changedKeys(prev, []byte(tc.next)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changedKeys = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestManySubscribersGetEveryChange publishes a burst to several streams
// that keep up: none is dropped and each sees every version in order.
func TestManySubscribersGetEveryChange(t *testing.T) {
	h, _ := newTestHub(t, Options{Retry: -1, Buffer: 64})
	fs := &fakeServer{}
	fs.set(1, `"e1"`, docV1)
	srv := mount(t, h, fs)
	const subs, versions = 20, 30
	readers := make([]*bufio.Reader, subs)
	for i := range readers {
		_, readers[i] = connect(t, srv, "prod", "")
		nextData(t, readers[i])
	}
	waitSubscribers(t, h, "prod", subs)
	for v := int64(2); v <= versions; v++ {
		doc := docV1
		if v%2 == 0 {
			doc = docV2
		}
		h.Publish("prod", v, fmt.Sprintf(`"e%d"`, v), []byte(doc))
	}
	var failed atomic.Int32
	var wg sync.WaitGroup
	for _, br := range readers {
		wg.Go(func() {
			for v := 2; v <= versions; v++ {
				ev, err := readEvent(br)
				for err == nil && (ev.comment != "" || ev.typ == "") {
					ev, err = readEvent(br)
				}
				if err != nil || ev.id != fmt.Sprint(v) {
					failed.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d subscribers missed or reordered versions", failed.Load())
	}
	if got := testutil.ToFloat64(h.m.drops); got != 0 {
		t.Errorf("drops = %v, want 0", got)
	}
}
