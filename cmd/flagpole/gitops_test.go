package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/flags"
)

// memImporter is an in-memory flag service: env → canonical JSON of the set.
type memImporter struct {
	mu      sync.Mutex
	sets    map[string][]byte
	writes  int
	down    bool
	lastOpt flags.WriteOptions
}

func (m *memImporter) CreateEnvironment(_ context.Context, env string, doc *flags.Document, o flags.WriteOptions) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return flags.Snapshot{}, flags.ErrUnavailable
	}
	if _, ok := m.sets[env]; ok {
		return flags.Snapshot{}, flags.ErrExists
	}
	return m.save(env, doc, o)
}

func (m *memImporter) Import(_ context.Context, env string, doc *flags.Document, o flags.WriteOptions) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return flags.Snapshot{}, flags.ErrUnavailable
	}
	if _, ok := m.sets[env]; !ok {
		return flags.Snapshot{}, flags.ErrNotFound
	}
	return m.save(env, doc, o)
}

func (m *memImporter) save(env string, doc *flags.Document, o flags.WriteOptions) (flags.Snapshot, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return flags.Snapshot{}, err
	}
	m.sets[env] = b
	m.writes++
	m.lastOpt = o
	return flags.Snapshot{Env: env, Version: int64(m.writes), Document: b}, nil
}

// defaultOf returns the defaultVariant of flag key in env, or "".
func (m *memImporter) defaultOf(env, key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d flags.Document
	if json.Unmarshal(m.sets[env], &d) != nil || d.Flags[key] == nil || d.Flags[key].DefaultVariant == nil {
		return ""
	}
	return *d.Flags[key].DefaultVariant
}

func (m *memImporter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

func (m *memImporter) setDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

// flagFile is a one-flag set whose default variant is def.
func flagFile(def string) string {
	return "flags:\n  banner:\n    state: ENABLED\n    variants: {red: \"#f00\", blue: \"#00f\"}\n    defaultVariant: " + def + "\n"
}

func TestSeederWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "flags.yaml")
		var logs syncBuffer
		svc := &memImporter{sets: map[string][]byte{}}
		s := newSeeder(path, "prod", svc, slog.New(slog.NewTextHandler(&logs, nil)), nil)

		// Each write gets its own modification time, as a later save would.
		mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		write := func(content string) {
			t.Helper()
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			mtime = mtime.Add(time.Second)
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		tick := func() {
			time.Sleep(time.Second)
			synctest.Wait()
		}

		write(flagFile("red"))
		if res, err := s.sync(context.Background()); res != syncApplied || err != nil {
			t.Fatalf("first sync: %v %v, want applied", res, err)
		}
		if got := svc.defaultOf("prod", "banner"); got != "red" {
			t.Fatalf("default %q after the first load, want red", got)
		}
		if svc.lastOpt.Actor != gitopsActor || !strings.Contains(svc.lastOpt.Reason, path) {
			t.Errorf("write options %+v: want actor %q and a reason naming the file", svc.lastOpt, gitopsActor)
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.watch(ctx, time.Second)

		steps := []struct {
			name        string
			change      func()
			wantDefault string
			wantWrites  int
			wantLog     string // new log output must contain this
			quietLog    bool   // no new log output at all
		}{
			{name: "unchanged file", change: func() {}, wantDefault: "red", wantWrites: 1, quietLog: true},
			{name: "touched, same content", change: func() { write(flagFile("red")) }, wantDefault: "red", wantWrites: 1, quietLog: true},
			{name: "new content", change: func() { write(flagFile("blue")) }, wantDefault: "blue", wantWrites: 2, wantLog: "flag file applied"},
			{name: "invalid default variant", change: func() { write(flagFile("green")) }, wantDefault: "blue", wantWrites: 2, wantLog: "field=flags.banner.defaultVariant"},
			{name: "invalid file is reported once", change: func() {}, wantDefault: "blue", wantWrites: 2, quietLog: true},
			{name: "not YAML at all", change: func() { write("flags: [unclosed\n") }, wantDefault: "blue", wantWrites: 2, wantLog: "flag file refused; keeping the last good flags"},
			{name: "back to a good file", change: func() { write(flagFile("red")) }, wantDefault: "red", wantWrites: 3, wantLog: "flag file applied"},
			{name: "store down", change: func() { svc.setDown(true); write(flagFile("blue")) }, wantDefault: "red", wantWrites: 3, wantLog: "will retry"},
			{name: "store back: retried without a file change", change: func() { svc.setDown(false) }, wantDefault: "blue", wantWrites: 4, wantLog: "flag file applied"},
			{name: "file removed", change: func() { os.Remove(path) }, wantDefault: "blue", wantWrites: 4, wantLog: "cannot read the flag file"},
			{name: "removal is reported once", change: func() {}, wantDefault: "blue", wantWrites: 4, quietLog: true},
			{name: "file restored", change: func() { write(flagFile("red")) }, wantDefault: "red", wantWrites: 5, wantLog: "flag file applied"},
		}
		for _, st := range steps {
			before := len(logs.String())
			st.change()
			tick()
			newLog := logs.String()[before:]
			if got := svc.defaultOf("prod", "banner"); got != st.wantDefault {
				t.Errorf("%s: default variant %q, want %q", st.name, got, st.wantDefault)
			}
			if got := svc.count(); got != st.wantWrites {
				t.Errorf("%s: %d writes, want %d", st.name, got, st.wantWrites)
			}
			if st.quietLog && newLog != "" {
				t.Errorf("%s: unexpected log:\n%s", st.name, newLog)
			}
			if st.wantLog != "" && !strings.Contains(newLog, st.wantLog) {
				t.Errorf("%s: log lacks %q:\n%s", st.name, st.wantLog, newLog)
			}
		}
		cancel()
		synctest.Wait()
	})
}

func TestSeederCreatesOrImports(t *testing.T) {
	tests := []struct {
		name     string
		existing bool
		down     bool
		want     syncResult
	}{
		{name: "missing environment is created", want: syncApplied},
		{name: "existing environment is imported into", existing: true, want: syncApplied},
		{name: "store down", down: true, want: syncRetry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, t.TempDir(), "flags.yaml", flagFile("red"))
			svc := &memImporter{sets: map[string][]byte{}, down: tc.down}
			if tc.existing {
				svc.sets["default"] = []byte(`{"flags":{}}`)
			}
			var logs syncBuffer
			s := newSeeder(path, "default", svc, slog.New(slog.NewTextHandler(&logs, nil)), nil)
			res, err := s.sync(context.Background())
			if res != tc.want {
				t.Fatalf("result %v (%v), want %v; log:\n%s", res, err, tc.want, logs.String())
			}
			if tc.down {
				if !errors.Is(err, flags.ErrUnavailable) {
					t.Errorf("error %v, want ErrUnavailable", err)
				}
				return
			}
			if got := svc.defaultOf("default", "banner"); got != "red" {
				t.Errorf("default variant %q, want red", got)
			}
		})
	}
}
