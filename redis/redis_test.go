package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

func docOf(keys ...string) []byte {
	m := map[string]any{}
	for _, k := range keys {
		m[k] = map[string]any{"state": "ENABLED", "variants": map[string]bool{"on": true}, "defaultVariant": "on"}
	}
	b, _ := json.Marshal(map[string]any{"flags": m})
	return b
}

func keysOf(t *testing.T, d []byte) []string {
	t.Helper()
	var v struct{ Flags map[string]json.RawMessage }
	if err := json.Unmarshal(d, &v); err != nil {
		t.Fatalf("document %q: %v", d, err)
	}
	var out []string
	for k := range v.Flags {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func change(action string, keys ...string) flags.AuditEntry {
	e := flags.AuditEntry{Time: time.Now(), Actor: "test", Action: action}
	for _, k := range keys {
		e.Changes = append(e.Changes, flags.FlagChange{Key: k, Before: json.RawMessage("null"), After: json.RawMessage("{}")})
	}
	return e
}

func TestOpenRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name  string
		o     redis.Options
		field string
	}{
		{"empty URL", redis.Options{}, "url"},
		{"no scheme", redis.Options{URL: "localhost:6379"}, "url"},
		{"unknown scheme", redis.Options{URL: "http://localhost:6379"}, "url"},
		{"no host", redis.Options{URL: "redis://"}, "url"},
		{"bad port", redis.Options{URL: "redis://localhost:notaport"}, "url"},
		{"bad database", redis.Options{URL: "redis://localhost:6379/x"}, "url"},
		{"sentinel without master", redis.Options{URL: "redis+sentinel://h1:26379,h2:26379"}, "url"},
		{"sentinel bad db", redis.Options{URL: "redis+sentinel://h1:26379/mymaster/x"}, "url"},
		{"sentinel empty host", redis.Options{URL: "redis+sentinel://h1:26379,,h2/mymaster"}, "url"},
		{"cluster with a database", redis.Options{URL: "redis+cluster://h1:7000,h2:7001/3"}, "url"},
		{"cluster port out of range", redis.Options{URL: "redis+cluster://h1:70000"}, "url"},
		{"cluster no hosts", redis.Options{URL: "redis+cluster://"}, "url"},
		{"prefix with a brace", redis.Options{URL: "redis://localhost:6379", Prefix: "a{b}:"}, "prefix"},
		{"negative audit limit", redis.Options{URL: "redis://localhost:6379", AuditLimit: -1}, "auditLimit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redis.Open(t.Context(), tc.o)
			if err == nil {
				s.Close()
				t.Fatal("Open accepted bad options")
			}
			var in *flags.InputError
			if !errors.As(err, &in) || in.Field != tc.field {
				t.Errorf("err = %v; want a *flags.InputError for field %q", err, tc.field)
			}
		})
	}
	t.Run("password stays out of the message", func(t *testing.T) {
		_, err := redis.Open(t.Context(), redis.Options{URL: "redis+sentinel://:hunter2@h1:26379"})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("err = %v; want an error that does not repeat the password", err)
		}
	})
}

func TestOpenAcceptsURLForms(t *testing.T) {
	// Nothing listens on these ports: Open still succeeds, and the store
	// reports ErrUnavailable until a server is there.
	tests := []string{
		"redis://127.0.0.1:1",
		"redis://user:pass@127.0.0.1:1/2",
		"rediss://127.0.0.1:1",
		"redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/1",
		"redis+cluster://127.0.0.1:1,127.0.0.1:2",
	}
	for _, u := range tests {
		t.Run(u, func(t *testing.T) {
			s, err := redis.Open(t.Context(), redis.Options{URL: u})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if _, err := s.Snapshot(ctx, "dev"); !errors.Is(err, flags.ErrUnavailable) {
				t.Errorf("Snapshot with no server: err = %v; want ErrUnavailable", err)
			}
			if err := s.Ping(ctx); !errors.Is(err, flags.ErrUnavailable) {
				t.Errorf("Ping with no server: err = %v; want ErrUnavailable", err)
			}
		})
	}
}

// TestServerErrors shows that server replies are translated once: a loading
// or read-only server is unavailable, other replies are plain errors.
func TestServerErrors(t *testing.T) {
	m := miniredis.RunT(t)
	s, err := redis.Open(t.Context(), redis.Options{URL: "redis://" + m.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateEnvironment(t.Context(), "dev", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		reply       string
		unavailable bool
	}{
		{"LOADING Redis is loading the dataset in memory", true},
		{"READONLY You can't write against a read only replica.", true},
		{"MASTERDOWN Link with MASTER is down", true},
		{"CLUSTERDOWN The cluster is down", true},
		{"ERR something odd", false},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", false},
	}
	for _, tc := range tests {
		t.Run(tc.reply, func(t *testing.T) {
			m.SetError(tc.reply)
			defer m.SetError("")
			_, err := s.Snapshot(t.Context(), "dev")
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, flags.ErrUnavailable); got != tc.unavailable {
				t.Errorf("err = %v; unavailable = %v, want %v", err, got, tc.unavailable)
			}
			if errors.Is(err, flags.ErrNotFound) || errors.Is(err, flags.ErrConflict) {
				t.Errorf("err = %v; a server failure must not look like a domain outcome", err)
			}
		})
	}
}

func TestAuditIDsAndCap(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		s, err := redis.OpenEmbedded(t.Context(), t.TempDir(), redis.Options{AuditLimit: 5})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		testAuditIDsAndCap(t, s)
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		s, err := redis.Open(t.Context(), redis.Options{URL: srv.URL(), AuditLimit: 5})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		testAuditIDsAndCap(t, s)
	})
}

func testAuditIDsAndCap(t *testing.T, s *redis.Store) {
	ctx := t.Context()
	if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 12; v++ {
		key := "a"
		if v%2 == 0 {
			key = "b"
		}
		if _, err := s.Save(ctx, "dev", v, docOf(key), change("flag.update", key)); err != nil {
			t.Fatal(err)
		}
	}
	page, err := s.Audit(ctx, "dev", flags.AuditQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	idForm := regexp.MustCompile(`^\d{13}-\d{10}$`)
	for _, e := range page.Entries {
		versions = append(versions, e.Version)
		if !idForm.MatchString(e.ID) || !strings.HasSuffix(e.ID, fmt.Sprintf("%010d", e.Version)) {
			t.Errorf("entry ID %q: want MILLIS-VERSION, zero-padded", e.ID)
		}
	}
	if want := []int64{13, 12, 11, 10, 9}; !slices.Equal(versions, want) {
		t.Errorf("capped log holds versions %v; want the newest 5, %v", versions, want)
	}
	tests := []struct {
		flag string
		want []int64
	}{{"a", []int64{12, 10}}, {"b", []int64{13, 11, 9}}}
	for _, tc := range tests {
		page, err := s.Audit(ctx, "dev", flags.AuditQuery{Flag: tc.flag, Limit: 1})
		var got []int64
		for err == nil {
			for _, e := range page.Entries {
				got = append(got, e.Version)
			}
			if page.Next == "" {
				break
			}
			page, err = s.Audit(ctx, "dev", flags.AuditQuery{Flag: tc.flag, Limit: 1, Cursor: page.Next})
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("audit of flag %q = %v, %v; want %v (only entries still in the log)", tc.flag, got, err, tc.want)
		}
	}
}

func TestPrefixesIsolateStores(t *testing.T) {
	srv := redistest.Start(t)
	a, b := openReal(t, srv), openReal(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	seen := make(chan flags.Change, 16)
	go func() { _ = b.Subscribe(ctx, func(c flags.Change) { seen <- c }) }()
	if c := recv(t, seen); !c.Resync {
		t.Fatalf("first change %+v; want Resync", c)
	}
	if _, err := a.CreateEnvironment(ctx, "dev", docOf("x"), change("environment.create", "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Snapshot(ctx, "dev"); !errors.Is(err, flags.ErrNotFound) {
		t.Errorf("b sees a's environment: err = %v; want ErrNotFound", err)
	}
	if envs, err := b.Environments(ctx); err != nil || len(envs) != 0 {
		t.Errorf("b lists %v, %v; want nothing", envs, err)
	}
	if _, err := b.CreateEnvironment(ctx, "prod", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	// b's subscriber hears b's write and never a's.
	if c := recv(t, seen); c != (flags.Change{Env: "prod", Version: 1}) {
		t.Errorf("b's subscriber got %+v; want only b's prod v1", c)
	}
}

func TestDeletePublishesVersionZero(t *testing.T) {
	s := openEmbedded(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	seen := make(chan flags.Change, 16)
	go func() { _ = s.Subscribe(ctx, func(c flags.Change) { seen <- c }) }()
	if c := recv(t, seen); !c.Resync {
		t.Fatalf("first change %+v; want Resync", c)
	}
	if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEnvironment(ctx, "dev", 0); err != nil {
		t.Fatal(err)
	}
	for _, want := range []flags.Change{{Env: "dev", Version: 1}, {Env: "dev", Version: 0}} {
		if got := recv(t, seen); got != want {
			t.Errorf("change %+v; want %+v", got, want)
		}
	}
}

func TestClosedStore(t *testing.T) {
	s := openEmbedded(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := t.Context()
	tests := []struct {
		name string
		err  error
	}{
		{"Snapshot", func() error { _, err := s.Snapshot(ctx, "dev"); return err }()},
		{"Save", func() error { _, err := s.Save(ctx, "dev", 1, docOf(), change("x")); return err }()},
		{"Environments", func() error { _, err := s.Environments(ctx); return err }()},
		{"Ping", s.Ping(ctx)},
		{"Subscribe", s.Subscribe(ctx, func(flags.Change) {})},
		{"KeyByHash", func() error { _, err := s.KeyByHash(ctx, "h"); return err }()},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, flags.ErrUnavailable) {
			t.Errorf("%s on a closed store: err = %v; want ErrUnavailable", tc.name, tc.err)
		}
	}
}

// TestEmbeddedPersistence writes everything the store holds, closes it, and
// reopens the data directory.
func TestEmbeddedPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEnvironment(ctx, "dev", docOf("a"), change("environment.create", "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, "dev", 1, docOf("a", "b"), change("flag.create", "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEnvironment(ctx, "prod", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEnvironment(ctx, "gone", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	// Both kinds of delete are journaled: a conditional one that applied
	// replays (its version check passes again), a refused one leaves nothing.
	if err := s.DeleteEnvironment(ctx, "gone", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEnvironment(ctx, "prod", 2); !errors.Is(err, flags.ErrConflict) {
		t.Fatalf("deleting prod (version 1) if at version 2: err = %v; want ErrConflict", err)
	}
	secret, hash := auth.NewSecret(auth.RoleAdmin)
	key := auth.Key{ID: auth.NewID(), Name: "ops", Role: auth.RoleAdmin, Hash: hash, Prefix: secret[:8], CreatedAt: time.Now().UTC()}
	if err := s.CreateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	revoked := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := s.RevokeKey(ctx, key.ID, revoked); err != nil {
		t.Fatal(err)
	}
	beforeAudit, err := s.Audit(ctx, "dev", flags.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	// Acknowledged means on disk: a copy of the file taken now, before Close,
	// already holds the last write.
	copyDir := t.TempDir()
	for _, name := range []string{redis.DataFile, redis.JournalFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s is not on disk after acknowledged writes: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, d := range []struct{ name, dir string }{{"reopened", dir}, {"copy taken before Close", copyDir}} {
		t.Run(d.name, func(t *testing.T) {
			r, err := redis.OpenEmbedded(ctx, d.dir, redis.Options{})
			if err != nil {
				t.Fatalf("reopening: %v", err)
			}
			defer r.Close()
			snap, err := r.Snapshot(ctx, "dev")
			if err != nil || snap.Version != 2 || !slices.Equal(keysOf(t, snap.Document), []string{"a", "b"}) {
				t.Errorf("dev after restart = %+v, %v; want version 2 with flags a, b", snap, err)
			}
			envs, err := r.Environments(ctx)
			if err != nil || len(envs) != 2 || envs[0].Name != "dev" || envs[1].Name != "prod" {
				t.Errorf("environments after restart = %+v, %v; want dev, prod", envs, err)
			}
			audit, err := r.Audit(ctx, "dev", flags.AuditQuery{})
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(audit)
			b, _ := json.Marshal(beforeAudit)
			if string(a) != string(b) {
				t.Errorf("audit after restart = %s; want %s", a, b)
			}
			per, err := r.Audit(ctx, "dev", flags.AuditQuery{Flag: "b"})
			if err != nil || len(per.Entries) != 1 || per.Entries[0].Version != 2 {
				t.Errorf("per-flag audit after restart = %+v, %v; want the v2 entry", per, err)
			}
			got, err := r.KeyByHash(ctx, hash)
			if err != nil || got.ID != key.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(revoked) {
				t.Errorf("key after restart = %+v, %v; want %s revoked at %v", got, err, key.ID, revoked)
			}
			// Versions continue where they were.
			if _, err := r.Save(ctx, "dev", 2, docOf("a"), change("flag.delete", "b")); err != nil {
				t.Errorf("Save at version 2 after restart: %v", err)
			}
		})
	}
}

func TestEmbeddedRejectsDamagedFile(t *testing.T) {
	tests := []struct{ name, content string }{
		{"not JSON", "{{{"},
		{"wrong format", `{"format":"something-else","keys":[]}`},
		{"unknown type", `{"format":"flagpole-embedded-redis/1","keys":[{"key":"k","type":"vectorset"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, redis.DataFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := redis.OpenEmbedded(t.Context(), dir, redis.Options{})
			if err == nil {
				s.Close()
				t.Fatal("OpenEmbedded accepted a damaged file")
			}
			if b, _ := os.ReadFile(filepath.Join(dir, redis.DataFile)); string(b) != tc.content {
				t.Error("the damaged file was overwritten; it must be left for the operator")
			}
		})
	}
	if _, err := redis.OpenEmbedded(t.Context(), "", redis.Options{}); err == nil {
		t.Error("OpenEmbedded accepted an empty data directory")
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestOutage stops Redis under writers and a subscriber: writes fail with
// ErrUnavailable while it is down, every acknowledged write survives the
// restart, the subscriber resyncs, and the metrics follow.
func TestOutage(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s, err := redis.Open(t.Context(), redis.Options{URL: srv.URL(), Prefix: uniquePrefix(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
		t.Fatal(err)
	}
	var resyncs atomic.Int32
	subDone := make(chan error, 1)
	go func() {
		subDone <- s.Subscribe(ctx, func(c flags.Change) {
			if c.Resync {
				resyncs.Add(1)
			}
		})
	}()
	waitFor(t, "the first resync", func() bool { return resyncs.Load() == 1 })

	// Writers add their own flags with read-modify-write until told to stop.
	var (
		mu          sync.Mutex
		acked       []string
		unavailable atomic.Int32
		stop        atomic.Bool
		wg          sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for n := 0; !stop.Load(); {
				key := fmt.Sprintf("w%d-%d", w, n)
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				snap, err := s.Snapshot(wctx, "dev")
				if err == nil {
					var d struct{ Flags map[string]any }
					_ = json.Unmarshal(snap.Document, &d)
					keys := []string{key}
					for k := range d.Flags {
						keys = append(keys, k)
					}
					_, err = s.Save(wctx, "dev", snap.Version, docOf(keys...), change("flag.create", key))
				}
				wcancel()
				switch {
				case err == nil:
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
					n++
				case errors.Is(err, flags.ErrUnavailable):
					unavailable.Add(1)
					time.Sleep(20 * time.Millisecond)
				case errors.Is(err, flags.ErrConflict):
				default:
					t.Errorf("writer %d: unexpected error %v", w, err)
					return
				}
			}
		})
	}
	ackCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor(t, "writes before the outage", func() bool { return ackCount() >= 20 })

	srv.Stop()
	waitFor(t, "writers to see ErrUnavailable", func() bool { return unavailable.Load() >= 4 })
	if err := s.Ping(ctx); !errors.Is(err, flags.ErrUnavailable) {
		t.Errorf("Ping while Redis is down: err = %v; want ErrUnavailable", err)
	}
	if _, err := s.Save(ctx, "dev", 1, docOf(), change("x")); !errors.Is(err, flags.ErrUnavailable) {
		t.Errorf("Save while Redis is down: err = %v; want ErrUnavailable", err)
	}
	if g := gauge(t, reg, "flagpole_redis_connected"); g != 0 {
		t.Errorf("flagpole_redis_connected while down = %v; want 0", g)
	}
	if n := testutil.ToFloat64(counterVec(t, reg, "flagpole_store_errors_total", "unavailable", "save")); n == 0 {
		t.Error("no unavailable save errors counted")
	}
	during := ackCount()

	srv.Restart()
	waitFor(t, "the subscriber to resync after the restart", func() bool { return resyncs.Load() >= 2 })
	waitFor(t, "writes after the restart", func() bool { return ackCount() >= during+20 })
	stop.Store(true)
	wg.Wait()
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the restart: %v", err)
	}
	if g := gauge(t, reg, "flagpole_redis_connected"); g != 1 {
		t.Errorf("flagpole_redis_connected after the restart = %v; want 1", g)
	}
	snap, err := s.Snapshot(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	have := keysOf(t, snap.Document)
	mu.Lock()
	defer mu.Unlock()
	for _, k := range acked {
		if _, ok := slices.BinarySearch(have, k); !ok {
			t.Errorf("acknowledged write %s was lost", k)
		}
	}
	t.Logf("%d writes acknowledged, %d refused as unavailable; final version %d", len(acked), unavailable.Load(), snap.Version)
	cancel()
	if err := <-subDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe returned %v; want context.Canceled", err)
	}
}

// counterVec copies one child of a gathered counter (label values in label
// name order) into a collector usable with testutil.ToFloat64.
func counterVec(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, lp := range m.GetLabel() {
				vals = append(vals, lp.GetValue())
			}
			if slices.Equal(vals, labels) {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "copy"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "missing"})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEmbeddedJournal(t *testing.T) {
	ctx := t.Context()
	// fill writes n saves of a ~9 KB document to env dev, starting at version from.
	fill := func(t *testing.T, s *redis.Store, from int64, n int) {
		t.Helper()
		var names []string
		for i := range 100 {
			names = append(names, fmt.Sprintf("flag-with-a-longish-name-%03d", i))
		}
		big := docOf(names...)
		for v := from; v < from+int64(n); v++ {
			if _, err := s.Save(ctx, "dev", v, big, change("flag.update", fmt.Sprint("f", v))); err != nil {
				t.Fatal(err)
			}
		}
	}
	open := func(t *testing.T, dir string) *redis.Store {
		t.Helper()
		s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
		if err != nil {
			t.Fatalf("OpenEmbedded: %v", err)
		}
		return s
	}
	size := func(t *testing.T, path string) int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	t.Run("compacts and replays", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 1, 150) // well over 1 MiB of journal: at least one compaction
		if j := size(t, filepath.Join(dir, redis.JournalFile)); j >= 1<<20 {
			t.Errorf("journal is %d bytes after 150 large writes; want it compacted below 1 MiB", j)
		}
		if d := size(t, filepath.Join(dir, redis.DataFile)); d < 9000 {
			t.Errorf("snapshot is %d bytes; want it rewritten by compaction, holding the 9 KB document", d)
		}
		// Simulate a crash: copy the files while the store is open.
		crash := t.TempDir()
		for _, name := range []string{redis.DataFile, redis.JournalFile} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(crash, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		r := open(t, crash)
		defer r.Close()
		snap, err := r.Snapshot(ctx, "dev")
		if err != nil || snap.Version != 151 {
			t.Fatalf("after a crash: dev = v%d, %v; want v151", snap.Version, err)
		}
		page, err := r.Audit(ctx, "dev", flags.AuditQuery{Limit: 500})
		if err != nil || len(page.Entries) != 151 {
			t.Errorf("after a crash: %d audit entries, %v; want 151", len(page.Entries), err)
		}
		fill(t, r, 151, 3)
	})

	t.Run("drops a torn last record", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 1, 2)
		crash := t.TempDir()
		for _, name := range []string{redis.DataFile, redis.JournalFile} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			if name == redis.JournalFile {
				b = append(b, []byte(`{"seq":99,"script":"wri`)...) // a write cut short
			}
			if err := os.WriteFile(filepath.Join(crash, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		r := open(t, crash)
		defer r.Close()
		if snap, err := r.Snapshot(ctx, "dev"); err != nil || snap.Version != 3 {
			t.Errorf("dev = v%d, %v; want v3 (the torn record dropped)", snap.Version, err)
		}
	})

	t.Run("refuses a damaged record", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if _, err := s.CreateEnvironment(ctx, "dev", docOf(), change("environment.create")); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 1, 2)
		crash := t.TempDir()
		for _, name := range []string{redis.DataFile, redis.JournalFile} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			if name == redis.JournalFile {
				b = append([]byte("garbage\n"), b...)
			}
			if err := os.WriteFile(filepath.Join(crash, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		if r, err := redis.OpenEmbedded(ctx, crash, redis.Options{}); err == nil {
			r.Close()
			t.Error("OpenEmbedded replayed a damaged journal")
		}
	})

	t.Run("one process per directory", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if r, err := redis.OpenEmbedded(ctx, dir, redis.Options{}); err == nil {
			r.Close()
			t.Fatal("a second store opened a data directory in use")
		}
		s.Close()
		open(t, dir).Close() // free again after Close
	})
}

func recv(t *testing.T, ch <-chan flags.Change) flags.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change delivered within 10s")
		return flags.Change{}
	}
}
