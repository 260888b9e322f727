package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// flakyStore wraps a real store (tests may wire adapters) and fails every
// call with flags.ErrUnavailable while down is set, as a store whose
// backend went away does. Subscribe passes through.
type flakyStore struct {
	flags.Store
	keys auth.Store
	down atomic.Bool
}

func (f *flakyStore) err() error {
	if f.down.Load() {
		return fmt.Errorf("test: backend down: %w", flags.ErrUnavailable)
	}
	return nil
}

func (f *flakyStore) CreateEnvironment(ctx context.Context, name string, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	if err := f.err(); err != nil {
		return flags.Snapshot{}, err
	}
	return f.Store.CreateEnvironment(ctx, name, doc, e)
}
func (f *flakyStore) DeleteEnvironment(ctx context.Context, name string, ifVersion int64) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.DeleteEnvironment(ctx, name, ifVersion)
}
func (f *flakyStore) Environments(ctx context.Context) ([]flags.Environment, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Environments(ctx)
}
func (f *flakyStore) Snapshot(ctx context.Context, env string) (flags.Snapshot, error) {
	if err := f.err(); err != nil {
		return flags.Snapshot{}, err
	}
	return f.Store.Snapshot(ctx, env)
}
func (f *flakyStore) Snapshots(ctx context.Context) ([]flags.Snapshot, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Snapshots(ctx)
}
func (f *flakyStore) Save(ctx context.Context, env string, expected int64, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	if err := f.err(); err != nil {
		return flags.Snapshot{}, err
	}
	return f.Store.Save(ctx, env, expected, doc, e)
}
func (f *flakyStore) Audit(ctx context.Context, env string, q flags.AuditQuery) (flags.AuditPage, error) {
	if err := f.err(); err != nil {
		return flags.AuditPage{}, err
	}
	return f.Store.Audit(ctx, env, q)
}
func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}
func (f *flakyStore) CreateKey(ctx context.Context, k auth.Key) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.keys.CreateKey(ctx, k)
}
func (f *flakyStore) KeyByHash(ctx context.Context, hash string) (auth.Key, error) {
	if err := f.err(); err != nil {
		return auth.Key{}, err
	}
	return f.keys.KeyByHash(ctx, hash)
}
func (f *flakyStore) Keys(ctx context.Context) ([]auth.Key, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.keys.Keys(ctx)
}
func (f *flakyStore) RevokeKey(ctx context.Context, id string, at time.Time) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.keys.RevokeKey(ctx, id, at)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// harness is a running server on an embedded store behind httptest.
type harness struct {
	t     testing.TB
	raw   *redis.Store
	store *flakyStore
	svc   *flags.Service
	srv   *Server
	ts    *httptest.Server
	reg   *prometheus.Registry
	logs  *syncBuffer
	clock *testClock
	admin string // an admin key's secret
}

// testClock is the real clock until a test sets it; safe for concurrent use.
type testClock struct{ t atomic.Pointer[time.Time] }

func (c *testClock) Now() time.Time {
	if p := c.t.Load(); p != nil {
		return *p
	}
	return time.Now()
}

func (c *testClock) Set(t time.Time) { c.t.Store(&t) }

type harnessOption func(*Config)

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return newHarnessOn(t, raw, opts...)
}

// newHarnessOn starts a server (a replica) on an existing store.
func newHarnessOn(t testing.TB, raw *redis.Store, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, raw: raw, store: &flakyStore{Store: raw, keys: raw}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h.svc = flags.NewService(h.store, nil)
	cfg := Config{
		Store: h.store, Keys: h.store, Flags: h.svc, Registry: h.reg,
		Logger:       slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SyncInterval: 50 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.clock = &testClock{}
	srv.now = h.clock.Now
	h.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	h.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(h.ts.Close)
	h.admin = h.newKey(auth.RoleAdmin, "admin")
	waitFor(t, "server ready", srv.Ready)
	return h
}

// waitFor polls cond (the server syncs in the background) for up to 15 s
// (generous: the machine is shared).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newKey stores a key directly and returns its secret.
func (h *harness) newKey(role auth.Role, name string, envs ...string) string {
	h.t.Helper()
	secret, hash := auth.NewSecret(role)
	k := auth.Key{ID: auth.NewID(), Name: name, Role: role, Envs: envs, Hash: hash, Prefix: secret[:10], CreatedAt: time.Now().UTC()}
	if err := h.raw.CreateKey(context.Background(), k); err != nil {
		h.t.Fatalf("CreateKey: %v", err)
	}
	return secret
}

// createEnv creates env holding the flagd document doc (JSON) through the service.
func (h *harness) createEnv(env, doc string) flags.Snapshot {
	h.t.Helper()
	var d *flags.Document
	if doc != "" {
		var err error
		if d, err = flags.Parse([]byte(doc)); err != nil {
			h.t.Fatalf("Parse: %v", err)
		}
	}
	snap, err := h.svc.CreateEnvironment(context.Background(), env, d, flags.WriteOptions{Actor: "test"})
	if err != nil {
		h.t.Fatalf("CreateEnvironment(%s): %v", env, err)
	}
	h.waitVersion(env, snap.Version)
	return snap
}

// waitVersion waits until the server serves env at version v or later.
func (h *harness) waitVersion(env string, v int64) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%s at version %d", env, v), func() bool {
		st := h.srv.env(env)
		return st != nil && st.version >= v
	})
}

type req struct {
	method, path, key, body string
	header                  map[string]string
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (h *harness) do(r req) resp {
	h.t.Helper()
	res, err := h.try(r)
	if err != nil {
		h.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return res
}

// try sends a request; unlike do it may be called from any goroutine.
func (h *harness) try(r req) (resp, error) {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, h.ts.URL+r.path, body)
	if err != nil {
		return resp{}, err
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	res, err := h.ts.Client().Do(hr)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}, nil
}

// errorOf decodes the admin API error shape, failing the test if the body
// is not in it.
func errorOf(t testing.TB, r resp) apiError {
	t.Helper()
	var body struct {
		Error *struct {
			Code    string   `json:"code"`
			Message string   `json:"message"`
			Details []Detail `json:"details"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == nil || body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("status %d: body is not the error shape (%v): %s", r.status, err, r.body)
	}
	return apiError{Status: r.status, Code: body.Error.Code, Message: body.Error.Message, Details: body.Error.Details}
}

// testFlags is a flag set covering every OFREP outcome.
const testFlags = `{
  "metadata": {"team": "checkout", "tier": 1},
  "flags": {
    "static-on": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
      "metadata": {"owner": "pay", "weight": 2.5, "live": true}},
    "banner-color": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red",
      "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "blue"]}},
    "code-default": {"state": "ENABLED", "variants": {"a": 1, "b": 2},
      "targeting": {"if": [{"==": [{"var": "email"}, "vip@example.com"]}, "b"]}},
    "switched-off": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "broken-rule": {"state": "ENABLED", "variants": {"x": "X"}, "defaultVariant": "x",
      "targeting": {"if": [true, "not-a-variant"]}},
    "config": {"state": "ENABLED", "variants": {"small": {"size": 1, "name": "s"}, "big": {"size": 10}}, "defaultVariant": "small"},
    "rollout": {"state": "ENABLED", "variants": {"new": true, "old": false}, "defaultVariant": "old",
      "targeting": {"fractional": [{"var": "targetingKey"}, ["new", 50], ["old", 50]]}}
  }
}`
