package redis

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url        string
		kind       clientKind
		addrs      []string
		db         int
		master     string
		user, pass string
		tls        bool
	}{
		{url: "redis://localhost:6379", kind: kindSimple, addrs: []string{"localhost:6379"}},
		{url: "redis://u:p%40ss@10.0.0.1:7000/3", kind: kindSimple, addrs: []string{"10.0.0.1:7000"}, db: 3, user: "u", pass: "p@ss"},
		{url: "redis://cache", kind: kindSimple, addrs: []string{"cache:6379"}},
		{url: "rediss://cache:6380", kind: kindSimple, addrs: []string{"cache:6380"}, tls: true},
		{url: "redis+sentinel://:secret@s1:26379,s2:26380/mymaster", kind: kindSentinel, addrs: []string{"s1:26379", "s2:26380"}, master: "mymaster", pass: "secret"},
		{url: "redis+sentinel://s1,s2/mymaster/2", kind: kindSentinel, addrs: []string{"s1:26379", "s2:26379"}, master: "mymaster", db: 2},
		{url: "redis+cluster://n1:7000,n2:7001,[::1]:7002", kind: kindCluster, addrs: []string{"n1:7000", "n2:7001", "[::1]:7002"}},
		{url: "rediss+cluster://user:pw@n1", kind: kindCluster, addrs: []string{"n1:6379"}, user: "user", pass: "pw", tls: true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			kind, o, err := parseURL(tc.url)
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if kind != tc.kind || !slices.Equal(o.Addrs, tc.addrs) || o.DB != tc.db || o.MasterName != tc.master ||
				o.Username != tc.user || o.Password != tc.pass || (o.TLSConfig != nil) != tc.tls {
				t.Errorf("got kind %d addrs %v db %d master %q user %q pass %q tls %v", kind, o.Addrs, o.DB, o.MasterName, o.Username, o.Password, o.TLSConfig != nil)
			}
			if tc.kind == kindCluster && !o.IsClusterMode {
				t.Error("a cluster URL with one node must still use the cluster client")
			}
		})
	}
}

type fakeServerError string

func (e fakeServerError) Error() string { return string(e) }
func (fakeServerError) RedisError()     {}

func TestTranslate(t *testing.T) {
	tests := []struct {
		name        string
		in          error
		unavailable bool
		is          error
	}{
		{"dial refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true, nil},
		{"connection dropped", io.EOF, true, nil},
		{"client closed", goredis.ErrClosed, true, nil},
		{"pool timeout", goredis.ErrPoolTimeout, true, nil},
		{"deadline", context.DeadlineExceeded, true, context.DeadlineExceeded},
		{"caller cancelled", context.Canceled, false, context.Canceled},
		{"loading", fakeServerError("LOADING Redis is loading the dataset in memory"), true, nil},
		{"busy script", fakeServerError("BUSY Redis is busy running a script"), true, nil},
		{"wrong password", fakeServerError("WRONGPASS invalid username-password pair"), true, nil},
		{"script error", fakeServerError("ERR user_script:1: oops"), false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := translate("op", tc.in)
			if errors.Is(got, flags.ErrUnavailable) != tc.unavailable {
				t.Errorf("translate(%v) = %v; unavailable want %v", tc.in, got, tc.unavailable)
			}
			if tc.is != nil && !errors.Is(got, tc.is) {
				t.Errorf("translate(%v) = %v; want it to wrap %v", tc.in, got, tc.is)
			}
			var leaked goredis.Error
			var opErr *net.OpError
			if errors.As(got, &leaked) || errors.As(got, &opErr) {
				t.Errorf("translate(%v) leaks the driver's error type %T", tc.in, tc.in)
			}
			if !strings.Contains(got.Error(), "op") {
				t.Errorf("translate(%v) = %q; want the operation named", tc.in, got)
			}
		})
	}
	if translate("op", nil) != nil {
		t.Error("translate(nil) != nil")
	}
}

// TestWriteIsIdempotent replays a write script call, as go-redis does when a
// reply is lost: the replay succeeds with the same version and writes nothing.
func TestWriteIsIdempotent(t *testing.T) {
	s, err := OpenEmbedded(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if _, err := s.CreateEnvironment(ctx, "dev", []byte(`{}`), flags.AuditEntry{Action: "environment.create"}); err != nil {
		t.Fatal(err)
	}
	keys := []string{s.keys.meta("dev"), s.keys.log("dev"), s.keys.flagSet("dev")}
	args := []any{"save", "1", `{"flags":{}}`, time.Now().UTC().Format(time.RFC3339Nano), `{}`, "token-1", 100, s.keys.changes(), "dev", ""}
	first, err := writeScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	replay, err := writeScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, replay) || first[0] != "ok" || first[1] != "2" {
		t.Errorf("first %q, replay %q; want the same ok at version 2", first, replay)
	}
	args[5] = "token-2" // a different write at the same expected version conflicts
	other, err := writeScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil || other[0] != "conflict" {
		t.Errorf("a different write at version 1 = %q, %v; want conflict", other, err)
	}
	if n := s.rdb.ZCard(ctx, s.keys.log("dev")).Val(); n != 2 {
		t.Errorf("audit log holds %d entries; want 2 (create and one save)", n)
	}
}

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

// TestProbeTracksConnection checks the periodic ping: the gauge falls to 0
// and a warning is logged when the server goes, and both recover with it.
func TestProbeTracksConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	s, err := OpenEmbedded(t.Context(), t.TempDir(), Options{
		Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil)), pingEvery: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait := func(what string, want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for testutil.ToFloat64(s.met.up) != want {
			if time.Now().After(deadline) {
				t.Fatalf("gauge never reached %v (%s)", want, what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("server up", 1)
	s.emb.m.Close()
	wait("server down", 0)
	if !strings.Contains(logs.String(), "redis connection lost") {
		t.Errorf("no warning logged when the connection was lost; logs: %s", logs.String())
	}
	if err := s.emb.m.Restart(); err != nil {
		t.Fatal(err)
	}
	wait("server back", 1)
	if !strings.Contains(logs.String(), "redis connection restored") {
		t.Errorf("no message logged when the connection came back; logs: %s", logs.String())
	}
	if _, err := s.Snapshot(t.Context(), "x"); !errors.Is(err, flags.ErrNotFound) {
		t.Errorf("Snapshot after recovery: %v; want ErrNotFound", err)
	}
	if n := testutil.CollectAndCount(reg, "flagpole_store_operation_duration_seconds"); n == 0 {
		t.Error("no latency recorded")
	}
}

// TestDeleteJournalRecords replays delete records through applyRecord, as a
// restart of the embedded store does: a record from before deletes took a
// version (three ARGV) deletes unconditionally; a versioned record applies at
// that version and reports a journal mismatch at any other.
func TestDeleteJournalRecords(t *testing.T) {
	s, err := OpenEmbedded(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	rdb, ok := s.rdb.(*goredis.Client)
	if !ok {
		t.Fatalf("the embedded store's client is %T; want *goredis.Client", s.rdb)
	}
	tests := []struct {
		name    string
		version []string // ARGV[4], absent when empty
		wantErr bool
	}{
		{"record without a version", nil, false},
		{"record at the current version", []string{"1"}, false},
		{"record at unconditional version 0", []string{"0"}, false},
		{"record at another version", []string{"4"}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := "env" + strings.Repeat("x", i)
			if _, err := s.CreateEnvironment(ctx, env, []byte(`{}`), flags.AuditEntry{Action: "environment.create"}); err != nil {
				t.Fatal(err)
			}
			rec := record{Script: "delete", Keys: []blob{blob(s.keys.meta(env)), blob(s.keys.log(env)), blob(s.keys.flagSet(env))},
				Args: []blob{blob(s.keys.flagIndexPrefix(env)), blob(s.keys.changes()), blob(env)}}
			for _, v := range tc.version {
				rec.Args = append(rec.Args, blob(v))
			}
			err := applyRecord(ctx, rdb, rec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("applyRecord: err = %v; want error %v", err, tc.wantErr)
			}
			_, serr := s.Snapshot(ctx, env)
			if gone := errors.Is(serr, flags.ErrNotFound); gone == tc.wantErr {
				t.Errorf("after the replay Snapshot err = %v; want deleted %v", serr, !tc.wantErr)
			}
		})
	}
}
