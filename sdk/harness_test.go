package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/api/stream"
	"github.com/flagpole/flagpole/flags"
)

const (
	testKey = "sdk-key-1"
	testEnv = "prod"
)

// flagServer is a stand-in for Flagpole: it mounts the real api/stream hub
// for the change stream, a small OFREP handler evaluating with the flags
// engine as the server does, and an events endpoint that records batches.
// It can be stopped and started again on the same address.
type flagServer struct {
	t         testing.TB
	addr      string
	heartbeat time.Duration

	mu      sync.Mutex
	version int64
	doc     []byte
	set     *flags.Set
	hub     *stream.Hub
	srv     *httptest.Server

	refuse  atomic.Bool // answer 401 to everything
	silent  atomic.Bool // streams send a snapshot, then nothing at all
	streams atomic.Int32
	lastIDs chan string // Last-Event-ID of each stream request
	batches chan ofrep.TrackingBatch
	// ofrepOverride, when set, answers OFREP single evaluations instead.
	ofrepOverride atomic.Pointer[http.HandlerFunc]
	ofrepRequests atomic.Int32
	// eventsStatus, when set before the provider starts, decides the
	// events endpoint's status; only 2xx batches are recorded.
	eventsStatus func() int
}

func newFlagServer(t testing.TB, doc string) *flagServer {
	t.Helper()
	return newFlagServerHeartbeat(t, doc, 50*time.Millisecond)
}

// newFlagServerHeartbeat is newFlagServer with the hub's heartbeat interval.
func newFlagServerHeartbeat(t testing.TB, doc string, heartbeat time.Duration) *flagServer {
	t.Helper()
	s := &flagServer{t: t, heartbeat: heartbeat, lastIDs: make(chan string, 100), batches: make(chan ofrep.TrackingBatch, 100)}
	s.setFlags(doc)
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *flagServer) url() string { return "http://" + s.addr }

// setFlags installs a new version of the flag set and publishes it.
func (s *flagServer) setFlags(doc string) { s.setFlagsThen(doc, nil) }

// setFlagsThen is setFlags calling beforePublish (if set) just before the
// hub publishes, after the test server's own work.
func (s *flagServer) setFlagsThen(doc string, beforePublish func()) {
	s.t.Helper()
	set, err := flags.Load([]byte(doc))
	if err != nil {
		s.t.Fatalf("test flag set: %v", err)
	}
	s.mu.Lock()
	s.version++
	s.doc, s.set = []byte(doc), set
	v, hub := s.version, s.hub
	s.mu.Unlock()
	if beforePublish != nil {
		beforePublish()
	}
	if hub != nil {
		hub.Publish(testEnv, v, etagOf(v), []byte(doc))
	}
}

func etagOf(v int64) string { return fmt.Sprintf(`"v%d"`, v) }

// nextLastID returns the Last-Event-ID of the next stream request.
func (s *flagServer) nextLastID() string {
	s.t.Helper()
	select {
	case id := <-s.lastIDs:
		return id
	case <-time.After(10 * time.Second):
		s.t.Fatal("no stream request within 10s")
		return ""
	}
}

func (s *flagServer) current() (int64, string, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, etagOf(s.version), s.doc, true
}

func (s *flagServer) start() {
	s.t.Helper()
	hub, err := stream.NewHub(stream.Options{Heartbeat: s.heartbeat})
	if err != nil {
		s.t.Fatal(err)
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	for range 100 { // the old socket may take a moment to release the port
		if ln, err = net.Listen("tcp", addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listening on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s.mu.Lock()
	s.addr, s.hub, s.srv = ln.Addr().String(), hub, srv
	s.mu.Unlock()
}

// stop ends every stream and closes the server (connections are refused).
func (s *flagServer) stop() {
	s.mu.Lock()
	hub, srv := s.hub, s.srv
	s.hub, s.srv = nil, nil
	s.mu.Unlock()
	if hub != nil {
		hub.Close()
	}
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

func (s *flagServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == ofrep.StreamPath(testEnv) {
		s.streams.Add(1)
	}
	if s.refuse.Load() || r.Header.Get("Authorization") != "Bearer "+testKey {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && path == ofrep.StreamPath(testEnv):
		select {
		case s.lastIDs <- r.Header.Get(ofrep.HeaderLastEventID):
		default:
		}
		if s.silent.Load() {
			v, etag, doc, _ := s.current()
			w.Header().Set("Content-Type", "text/event-stream")
			msg, _ := json.Marshal(ofrep.StreamMessage{Environment: testEnv, Version: v, ETag: etag, Flags: doc})
			fmt.Fprintf(w, "id: %d\nevent: snapshot\ndata: %s\n\n", v, msg)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		s.mu.Lock()
		hub := s.hub
		s.mu.Unlock()
		if hub == nil {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		hub.Serve(w, r, testEnv, s.current)
	case r.Method == http.MethodPost && path == ofrep.PathEvaluateFlags:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"flags":[]}`)
	case r.Method == http.MethodPost && strings.HasPrefix(path, ofrep.PathEvaluateFlag):
		s.ofrepRequests.Add(1)
		if h := s.ofrepOverride.Load(); h != nil {
			(*h)(w, r)
			return
		}
		s.evaluate(w, r, strings.TrimPrefix(path, ofrep.PathEvaluateFlag))
	case r.Method == http.MethodPost && path == ofrep.EventsPath(testEnv):
		var b ofrep.TrackingBatch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := http.StatusAccepted
		if s.eventsStatus != nil {
			status = s.eventsStatus()
		}
		if status/100 == 2 {
			s.batches <- b
		}
		w.WriteHeader(status)
	default:
		http.NotFound(w, r)
	}
}

// evaluate answers one OFREP evaluation as the Flagpole server does:
// 200 with the resolution, 400 with {key, errorCode, errorDetails,
// metadata} for evaluation errors, 404 for an unknown flag; value and
// variant absent for code defaults and disabled flags; metadata primitives.
func (s *flagServer) evaluate(w http.ResponseWriter, r *http.Request, key string) {
	var req ofrep.EvaluationRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(ofrep.Evaluation{Key: key, ErrorCode: ofrep.ParseError, ErrorDetails: err.Error()})
			return
		}
	}
	s.mu.Lock()
	set := s.set
	s.mu.Unlock()
	res := set.Evaluate(key, req.Context)
	ev := ofrep.Evaluation{Key: key, Value: res.Value, Reason: string(res.Reason), Variant: res.Variant, Metadata: primitives(cloneMap(res.Metadata))}
	status := http.StatusOK
	if res.ErrorCode != "" {
		ev = ofrep.Evaluation{Key: key, ErrorCode: ofrep.ErrorCode(res.ErrorCode), ErrorDetails: res.ErrorMessage, Metadata: ev.Metadata}
		status = http.StatusBadRequest
		if res.ErrorCode == flags.ErrorFlagNotFound {
			status = http.StatusNotFound
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ev)
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// gotEvent is one provider event as an application handler saw it.
type gotEvent struct {
	typ openfeature.EventType
	openfeature.EventDetails
}

// app is an application using the provider through an isolated
// OpenFeature API, recording every provider event.
type app struct {
	t        *testing.T
	api      *openfeature.EvaluationAPI
	client   *openfeature.Client
	provider *Provider
	events   chan gotEvent
}

func newApp(t *testing.T) *app {
	t.Helper()
	a := &app{t: t, api: isolated.NewAPI(), events: make(chan gotEvent, 100)}
	for _, typ := range []openfeature.EventType{openfeature.ProviderReady, openfeature.ProviderConfigChange, openfeature.ProviderStale, openfeature.ProviderError} {
		cb := func(d openfeature.EventDetails) { a.events <- gotEvent{typ: typ, EventDetails: d} }
		a.api.AddHandler(typ, &cb)
	}
	a.client = a.api.NewClient()
	t.Cleanup(func() { _ = a.api.Shutdown(context.Background()) })
	return a
}

// start sets the provider and waits for its Init.
func (a *app) start(opts ...Option) error {
	a.provider = NewProvider(opts...)
	return a.api.SetProviderAndWait(context.Background(), a.provider)
}

// next returns the next event, failing the test after a few seconds.
func (a *app) next() gotEvent {
	a.t.Helper()
	select {
	case ev := <-a.events:
		return ev
	case <-time.After(10 * time.Second):
		a.t.Fatal("no provider event within 10s")
		return gotEvent{}
	}
}

// expect returns the next event, which must be of type typ.
func (a *app) expect(typ openfeature.EventType) gotEvent {
	a.t.Helper()
	ev := a.next()
	if ev.typ != typ {
		a.t.Fatalf("event %s (%q), want %s", ev.typ, ev.Message, typ)
	}
	return ev
}

// expectAll returns the next len(types) events, which must be of those
// types in any order: the SDK runs each handler on its own goroutine, so
// events announced together may reach handlers in either order.
func (a *app) expectAll(types ...openfeature.EventType) map[openfeature.EventType]gotEvent {
	a.t.Helper()
	got := map[openfeature.EventType]gotEvent{}
	for range types {
		ev := a.next()
		got[ev.typ] = ev
	}
	for _, typ := range types {
		if _, ok := got[typ]; !ok || len(got) != len(types) {
			a.t.Fatalf("events %v, want %v", keys(got), types)
		}
	}
	return got
}

func keys[V any](m map[openfeature.EventType]V) []openfeature.EventType {
	var out []openfeature.EventType
	for k := range m {
		out = append(out, k)
	}
	return out
}

// quiet checks that no event arrives for a short while.
func (a *app) quiet() {
	a.t.Helper()
	select {
	case ev := <-a.events:
		a.t.Errorf("unexpected event %s (%q)", ev.typ, ev.Message)
	case <-time.After(100 * time.Millisecond):
	}
}

// fastOptions keep reconnection quick in tests.
func fastOptions(s *flagServer, extra ...Option) []Option {
	return append([]Option{
		WithURL(s.url()), WithSDKKey(testKey), WithEnvironment(testEnv),
		WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond),
		WithInitTimeout(5 * time.Second),
	}, extra...)
}

var bg = context.Background()
