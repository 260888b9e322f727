// Package stream fans an environment's flag-set changes out to
// Server-Sent Events subscribers: SDKs that evaluate in-process and browser
// OFREP providers that re-fetch on OFREP's refetchEvaluation messages.
//
// A [Hub] keeps one topic per environment. The server calls [Hub.Publish]
// whenever an environment's compiled flag set changes; [Hub.Serve] runs one
// subscriber's stream. Every change is encoded once and shared by all
// subscribers. Each subscriber has a small bounded queue: when a queue is
// full the subscriber is dropped (its stream ends, it reconnects and gets a
// fresh snapshot), so a slow client never slows the others and never grows
// memory. The wire protocol is described in docs/streams.md; its types are
// in package api/ofrep.
//
// The package uses plain net/http so that any router can mount it;
// authentication is the caller's job.
package stream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/flags"
)

// Defaults of [Options].
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultBuffer       = 8
	DefaultWriteTimeout = 10 * time.Second
	DefaultRetry        = 2 * time.Second
)

// Options configure a [Hub]. The zero value is usable.
type Options struct {
	// Logger receives drops and protocol problems; nil discards.
	Logger *slog.Logger
	// Registerer receives the hub's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Heartbeat is the interval of the ": heartbeat" comments that let
	// both ends find dead connections; 0 means [DefaultHeartbeat].
	Heartbeat time.Duration
	// Buffer is how many messages may wait for one subscriber before it
	// is dropped; 0 means [DefaultBuffer].
	Buffer int
	// WriteTimeout bounds every write to a subscriber; a write that takes
	// longer ends the stream. 0 means [DefaultWriteTimeout]. Serve sets a
	// write deadline per write, so the server's own WriteTimeout does not
	// cut long-lived streams.
	WriteTimeout time.Duration
	// Retry is the reconnection delay advertised to EventSource clients
	// with the SSE "retry:" field; 0 means [DefaultRetry], negative omits it.
	Retry time.Duration
}

// Hub fans flag-set changes out to stream subscribers. It is safe for
// concurrent use. Close it to end every stream.
type Hub struct {
	log          *slog.Logger
	m            metrics
	writeTimeout time.Duration
	buffer       int
	preamble     []byte // "retry: N\n\n" or nil

	pub sync.Mutex // serialises Publish, so diffs follow versions

	mu     sync.Mutex
	topics map[string]*topic
	closed bool
	// Drops are logged at most once a second (a burst can drop thousands).
	lastDropLog     time.Time
	droppedSinceLog int

	done   chan struct{}
	active sync.WaitGroup // Serve calls and the heartbeat loop
}

// topic is one environment's subscribers and its latest flag set.
type topic struct {
	subs map[*subscriber]struct{}
	// published is the last version given to Publish; older ones are ignored.
	published int64
	// base is the newest document seen (published, or read by Serve
	// before any publish), the reference for the next change's diff.
	baseVersion int64
	baseDoc     []byte
	// snap caches the snapshot frame of snapVersion.
	snapVersion int64
	snap        *frame
}

// frame is one encoded message, shared by every subscriber it is sent to.
type frame struct {
	version int64 // 0 for heartbeats
	kind    string
	b       []byte
}

// subscriber is one stream's queue.
type subscriber struct {
	ch      chan *frame
	gone    chan struct{} // closed when the hub drops or removes it
	dropped bool          // under Hub.mu
}

var heartbeat = &frame{kind: "heartbeat", b: []byte(": heartbeat\n\n")}

// NewHub returns a running hub. The only error is a failure to register
// its metrics with o.Registerer (for example a duplicate registration).
func NewHub(o Options) (*Hub, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Retry == 0 {
		o.Retry = DefaultRetry
	}
	h := &Hub{
		log:          o.Logger,
		m:            newMetrics(),
		writeTimeout: o.WriteTimeout,
		buffer:       o.Buffer,
		topics:       map[string]*topic{},
		done:         make(chan struct{}),
	}
	if o.Retry > 0 {
		h.preamble = fmt.Appendf(nil, "retry: %d\n\n", o.Retry.Milliseconds())
	}
	if o.Registerer != nil {
		if err := h.m.register(o.Registerer); err != nil {
			return nil, fmt.Errorf("stream: registering metrics: %w", err)
		}
	}
	h.active.Add(1)
	go h.heartbeats(o.Heartbeat)
	return h, nil
}

// Publish announces that env's compiled flag set is now doc (a flagd
// document, JSON) at version, with etag as the OFREP bulk validator. A
// version not newer than the last one published for env is ignored, as is
// a document that is not valid JSON (logged). Publish never blocks on a
// subscriber: a subscriber whose queue is full is dropped.
func (h *Hub) Publish(env string, version int64, etag string, doc []byte) {
	h.pub.Lock()
	defer h.pub.Unlock()
	compact, err := compactJSON(doc)
	if err != nil {
		h.log.Error("stream: ignoring a published flag set that is not JSON", "environment", env, "version", version, "err", err)
		return
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	t := h.topicLocked(env)
	if version <= t.published {
		h.mu.Unlock()
		return
	}
	var prev []byte
	if t.baseVersion < version {
		prev = t.baseDoc
	}
	h.mu.Unlock()

	// Diffing parses both documents; it runs outside the lock (Publish is
	// serialised by h.pub) so that new subscribers are not held up.
	changed := changedKeys(prev, compact)
	msg := ofrep.StreamMessage{Environment: env, Version: version, ETag: etag, Changed: changed, Flags: compact}
	f := &frame{version: version, kind: ofrep.StreamChange}
	if f.b = appendEvent(nil, version, ofrep.StreamChange, msg); f.b != nil {
		f.b = appendEvent(f.b, version, "", ofrep.RefetchMessage{Type: ofrep.StreamRefetch, ETag: etag})
	}
	if f.b == nil {
		h.log.Error("stream: could not encode a change", "environment", env, "version", version)
		return
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	t = h.topicLocked(env)
	t.published = version
	if t.baseVersion < version {
		t.baseVersion, t.baseDoc = version, compact
	}
	for s := range t.subs {
		select {
		case s.ch <- f:
		default:
			h.dropLocked(t, s, env)
		}
	}
}

// Remove ends every stream of env (for example when the environment is
// deleted) and forgets its state. Reconnecting clients get whatever the
// caller's current function then reports.
func (h *Hub) Remove(env string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[env]
	if t == nil {
		return
	}
	for s := range t.subs {
		if !s.dropped {
			s.dropped = true
			close(s.gone)
		}
	}
	delete(h.topics, env)
}

// Subscribers is the number of open streams of env.
func (h *Hub) Subscribers(env string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.topics[env]; t != nil {
		return len(t.subs)
	}
	return 0
}

// Close ends every stream and stops the hub, then waits for the streams'
// Serve calls to return (each within the write timeout). Later Serve calls
// answer 503 and later Publish calls do nothing. Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	h.active.Wait()
}

// Serve runs one subscriber's stream of env until the client goes away,
// the subscriber is dropped, or the hub closes. The caller has
// authenticated the request. current reports env's flag set as the server
// holds it now (ok false: no such environment, answered 404).
//
// The stream starts with a snapshot, or with a resume event when the
// request's Last-Event-ID is the current version; then a change event for
// every published version, followed by an OFREP refetchEvaluation message,
// and heartbeat comments in between. Failures before the stream starts are
// answered with the API's JSON error shape: 404 for an unknown
// environment, 503 when the hub is closed, 500 when the response cannot be
// streamed (a ResponseWriter without flushing).
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request, env string, current func() (version int64, etag string, doc []byte, ok bool)) {
	rc := http.NewResponseController(w)
	s := &subscriber{ch: make(chan *frame, h.buffer), gone: make(chan struct{})}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the server is shutting down; reconnect")
		return
	}
	// Subscribe before reading the current set: a change published in
	// between is then queued, and skipped below if the snapshot has it.
	t := h.topicLocked(env)
	t.subs[s] = struct{}{}
	h.active.Add(1)
	h.mu.Unlock()
	h.m.subscribers.Inc()
	defer func() {
		h.unsubscribe(env, s)
		h.m.subscribers.Dec()
		h.active.Done()
	}()

	version, etag, doc, ok := current()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("environment %q not found", env))
		return
	}
	first, err := h.opening(env, r.Header.Get(ofrep.HeaderLastEventID), version, etag, doc)
	if err != nil {
		h.log.Error("stream: current flag set is not JSON", "environment", env, "version", version, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the flag set could not be encoded")
		return
	}

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()

	if h.preamble != nil {
		if _, err := w.Write(h.preamble); err != nil {
			return
		}
	}
	if err := h.send(w, rc, first); err != nil {
		if errors.Is(err, http.ErrNotSupported) {
			h.log.Error("stream: the response writer cannot flush; streams cannot work", "environment", env)
		}
		return
	}
	sent := version
	for {
		select {
		case f := <-s.ch:
			if f.version != 0 && f.version <= sent {
				continue // the snapshot already had it
			}
			if err := h.send(w, rc, f); err != nil {
				h.log.Debug("stream: write failed", "environment", env, "err", err)
				return
			}
			sent = max(sent, f.version)
		case <-s.gone:
			return
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		}
	}
}

// opening builds the first frame of a stream: a resume event when the
// client already holds version, a snapshot otherwise (counted as a resync
// when the client named another version).
func (h *Hub) opening(env, lastID string, version int64, etag string, doc []byte) (*frame, error) {
	if lastID != "" && lastID == strconv.FormatInt(version, 10) {
		msg := ofrep.StreamMessage{Environment: env, Version: version, ETag: etag}
		if b := appendEvent(nil, version, ofrep.StreamResume, msg); b != nil {
			return &frame{version: version, kind: ofrep.StreamResume, b: b}, nil
		}
		return nil, errors.New("encoding the resume event failed")
	}
	if lastID != "" {
		h.m.resyncs.Inc()
	}
	h.mu.Lock()
	if t := h.topics[env]; t != nil && t.snap != nil && t.snapVersion == version {
		f := t.snap
		h.mu.Unlock()
		return f, nil
	}
	h.mu.Unlock()

	compact, err := compactJSON(doc)
	if err != nil {
		return nil, err
	}
	msg := ofrep.StreamMessage{Environment: env, Version: version, ETag: etag, Flags: compact}
	f := &frame{version: version, kind: ofrep.StreamSnapshot, b: appendEvent(nil, version, ofrep.StreamSnapshot, msg)}
	if lastID != "" && f.b != nil {
		// The client missed changes: tell browser providers to re-fetch too.
		f.b = appendEvent(f.b, version, "", ofrep.RefetchMessage{Type: ofrep.StreamRefetch, ETag: etag})
	}
	if f.b == nil {
		return nil, errors.New("encoding the snapshot failed")
	}
	if lastID != "" {
		return f, nil
	}
	h.mu.Lock()
	if t := h.topics[env]; t != nil {
		if version >= t.snapVersion {
			t.snapVersion, t.snap = version, f
		}
		if t.baseDoc == nil || version > t.baseVersion {
			t.baseVersion, t.baseDoc = version, compact
		}
	}
	h.mu.Unlock()
	return f, nil
}

// send writes one frame and flushes it, within the write timeout.
func (h *Hub) send(w http.ResponseWriter, rc *http.ResponseController, f *frame) error {
	if err := rc.SetWriteDeadline(time.Now().Add(h.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := w.Write(f.b); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil {
		return err
	}
	h.m.sent.WithLabelValues(f.kind).Inc()
	return nil
}

// heartbeats queues a heartbeat for every subscriber at each tick, until
// the hub closes. A subscriber that cannot take it is dropped.
func (h *Hub) heartbeats(every time.Duration) {
	defer h.active.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
		}
		h.mu.Lock()
		for env, t := range h.topics {
			for s := range t.subs {
				select {
				case s.ch <- heartbeat:
				default:
					h.dropLocked(t, s, env)
				}
			}
		}
		h.mu.Unlock()
	}
}

// topicLocked returns env's topic, creating it. h.mu is held.
func (h *Hub) topicLocked(env string) *topic {
	t := h.topics[env]
	if t == nil {
		t = &topic{subs: map[*subscriber]struct{}{}}
		h.topics[env] = t
	}
	return t
}

// dropLocked ends a subscriber that fell behind. h.mu is held.
func (h *Hub) dropLocked(t *topic, s *subscriber, env string) {
	delete(t.subs, s)
	if s.dropped {
		return
	}
	s.dropped = true
	close(s.gone)
	h.m.drops.Inc()
	h.droppedSinceLog++
	if now := time.Now(); now.Sub(h.lastDropLog) >= time.Second {
		h.log.Warn("stream: dropped subscribers that fell behind; they will resync", "environment", env, "count", h.droppedSinceLog)
		h.lastDropLog, h.droppedSinceLog = now, 0
	}
}

// unsubscribe removes s from env's topic, and the topic when it holds
// nothing worth keeping.
func (h *Hub) unsubscribe(env string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[env]
	if t == nil {
		return
	}
	delete(t.subs, s)
	if len(t.subs) == 0 && t.published == 0 {
		delete(h.topics, env)
	}
}

// appendEvent appends one SSE event: id, optional event type, and data as
// one line of JSON (encoding/json never emits a raw newline). The messages
// hold strings, numbers and already validated JSON, so encoding cannot
// fail; if it ever did, appendEvent returns nil.
func appendEvent(b []byte, version int64, event string, data any) []byte {
	body, err := json.Marshal(data)
	if err != nil {
		return nil
	}
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, '\n')
	if event != "" {
		b = append(b, "event: "...)
		b = append(b, event...)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	b = append(b, body...)
	return append(b, '\n', '\n')
}

// compactJSON returns doc without insignificant whitespace, or an error if
// it is not JSON.
func compactJSON(doc []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(doc))
	if err := json.Compact(&buf, doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// changedKeys lists, sorted, the flags added, removed or redefined between
// two flag documents. When the flag set's metadata or evaluators differ,
// every flag counts as changed (flag metadata inherits the set's, and
// targeting may use the evaluators). With no previous document every flag
// of the new one is new. It returns nil when a document cannot be parsed.
//
// Documents in the map form (as the server stores them, canonical) are
// compared flag by flag on their JSON; other forms go through flags.Parse.
func changedKeys(prev, next []byte) []string {
	if keys, ok := changedRaw(prev, next); ok {
		return keys
	}
	nd, err := flags.Parse(next)
	if err != nil {
		return nil
	}
	if prev == nil {
		return slices.Sorted(maps.Keys(nd.Flags))
	}
	pd, err := flags.Parse(prev)
	if err != nil {
		return nil
	}
	all := !jsonEqual(pd.Metadata, nd.Metadata) || !jsonEqual(pd.Evaluators, nd.Evaluators)
	var out []string
	for k, f := range nd.Flags {
		if all || !flagEqual(pd.Flags[k], f) {
			out = append(out, k)
		}
	}
	for k := range pd.Flags {
		if _, ok := nd.Flags[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// rawDoc is a flag document read only as far as diffing needs.
type rawDoc struct {
	Flags      map[string]json.RawMessage `json:"flags"`
	Evaluators json.RawMessage            `json:"$evaluators"`
	Metadata   json.RawMessage            `json:"metadata"`
}

// changedRaw diffs two compact documents in the map form by raw JSON; ok
// is false when either is in another form.
func changedRaw(prev, next []byte) (keys []string, ok bool) {
	var nd, pd rawDoc
	if json.Unmarshal(next, &nd) != nil || nd.Flags == nil {
		return nil, false
	}
	if prev == nil {
		return slices.Sorted(maps.Keys(nd.Flags)), true
	}
	if json.Unmarshal(prev, &pd) != nil || pd.Flags == nil {
		return nil, false
	}
	all := !bytes.Equal(pd.Evaluators, nd.Evaluators) || !bytes.Equal(pd.Metadata, nd.Metadata)
	for k, f := range nd.Flags {
		if all || !bytes.Equal(pd.Flags[k], f) {
			keys = append(keys, k)
		}
	}
	for k := range pd.Flags {
		if _, ok := nd.Flags[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, true
}

// flagEqual compares two definitions, ignoring the key that the array form
// of "flags" carries.
func flagEqual(a, b *flags.Flag) bool {
	if a == nil || b == nil {
		return a == b
	}
	ac, bc := *a, *b
	ac.Key, bc.Key = "", ""
	return jsonEqual(&ac, &bc)
}

// jsonEqual compares two values by their JSON encoding (maps sort keys).
func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// writeError answers with the API's JSON error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.Copy(w, bytes.NewReader(append(body, '\n')))
}
