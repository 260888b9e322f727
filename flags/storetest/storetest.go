// Package storetest is the conformance suite every flags.Store backend runs:
// the same tests against the embedded store, a real Redis, or anything else
// that claims to be a flags.Store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/flags"
)

// Run runs the suite. newStore must return an empty store of its own (for
// example a fresh key prefix) each time it is called; the suite calls it once
// per subtest and may run subtests in parallel.
func Run(t *testing.T, newStore func(t *testing.T) flags.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s flags.Store)
	}{
		{"Environments", testEnvironments},
		{"DeleteEnvironment", testDelete},
		{"DeleteEnvironmentIfVersion", testDeleteIfVersion},
		{"SaveVersionChecks", testSaveVersions},
		{"Snapshots", testSnapshots},
		{"AuditPaging", testAuditPaging},
		{"AuditPerFlag", testAuditPerFlag},
		{"AuditBadQuery", testAuditBadQuery},
		{"AuditEntryRoundTrip", testAuditRoundTrip},
		{"Subscribe", testSubscribe},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Ping", func(t *testing.T, s flags.Store) {
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// doc returns a flag-set document holding the given flag keys.
func doc(keys ...string) []byte {
	m := map[string]any{}
	for _, k := range keys {
		m[k] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "on"}
	}
	b, _ := json.Marshal(map[string]any{"flags": m})
	return b
}

func docKeys(t *testing.T, d []byte) []string {
	t.Helper()
	keys, err := parseKeys(d)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func parseKeys(d []byte) ([]string, error) {
	var v struct {
		Flags map[string]json.RawMessage `json:"flags"`
	}
	if err := json.Unmarshal(d, &v); err != nil {
		return nil, fmt.Errorf("stored document is not the JSON saved: %v (%q)", err, d)
	}
	keys := make([]string, 0, len(v.Flags))
	for k := range v.Flags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

func entry(action string, at time.Time, flagKeys ...string) flags.AuditEntry {
	e := flags.AuditEntry{Time: at, Actor: "tester", Action: action}
	for _, k := range flagKeys {
		e.Changes = append(e.Changes, flags.FlagChange{Key: k, Before: json.RawMessage("null"), After: json.RawMessage(`{"state":"ENABLED"}`),
			Diff: []flags.DiffOp{{Op: "add", Path: "", Value: json.RawMessage(`{"state":"ENABLED"}`)}}})
	}
	return e
}

func mustCreate(t *testing.T, s flags.Store, env string, keys ...string) flags.Snapshot {
	t.Helper()
	snap, err := s.CreateEnvironment(t.Context(), env, doc(keys...), entry("environment.create", t0, keys...))
	if err != nil {
		t.Fatalf("CreateEnvironment(%q): %v", env, err)
	}
	return snap
}

func mustSave(t *testing.T, s flags.Store, env string, expected int64, e flags.AuditEntry, keys ...string) flags.Snapshot {
	t.Helper()
	snap, err := s.Save(t.Context(), env, expected, doc(keys...), e)
	if err != nil {
		t.Fatalf("Save(%q, %d): %v", env, expected, err)
	}
	return snap
}

func testEnvironments(t *testing.T, s flags.Store) {
	ctx := t.Context()
	envs, err := s.Environments(ctx)
	if err != nil || len(envs) != 0 {
		t.Fatalf("Environments on an empty store = %v, %v; want none", envs, err)
	}
	for _, name := range []string{"staging", "dev", "production"} {
		snap := mustCreate(t, s, name, "a")
		if snap.Env != name || snap.Version != 1 || !bytes.Equal(snap.Document, doc("a")) || snap.UpdatedAt.IsZero() {
			t.Errorf("CreateEnvironment(%q) = %+v; want env %q at version 1 holding the document, with a time", name, snap, name)
		}
	}
	if _, err := s.CreateEnvironment(ctx, "dev", doc("b"), entry("environment.create", t0)); !errors.Is(err, flags.ErrExists) {
		t.Errorf("creating dev twice: err = %v; want ErrExists", err)
	}
	if snap, err := s.Snapshot(ctx, "dev"); err != nil || snap.Version != 1 || !bytes.Equal(snap.Document, doc("a")) {
		t.Errorf("after a refused create, dev = %+v, %v; want version 1 with the first document", snap, err)
	}
	envs, err = s.Environments(ctx)
	if err != nil {
		t.Fatalf("Environments: %v", err)
	}
	var names []string
	for _, e := range envs {
		names = append(names, e.Name)
		if e.Version != 1 || e.UpdatedAt.IsZero() {
			t.Errorf("environment %+v: want version 1 and an update time", e)
		}
	}
	if want := []string{"dev", "production", "staging"}; !slices.Equal(names, want) {
		t.Errorf("Environments names = %v; want %v (sorted)", names, want)
	}
	if _, err := s.Snapshot(ctx, "nope"); !errors.Is(err, flags.ErrNotFound) {
		t.Errorf("Snapshot of a missing environment: err = %v; want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, s flags.Store) {
	ctx := t.Context()
	mustCreate(t, s, "dev", "a")
	mustCreate(t, s, "prod", "a")
	mustSave(t, s, "dev", 1, entry("flag.update", t0.Add(time.Minute), "a"), "a")
	if err := s.DeleteEnvironment(ctx, "dev", 0); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	tests := []struct {
		name string
		err  error
	}{
		{"Snapshot", func() error { _, err := s.Snapshot(ctx, "dev"); return err }()},
		{"Save", func() error { _, err := s.Save(ctx, "dev", 2, doc(), entry("flag.delete", t0)); return err }()},
		{"Audit", func() error { _, err := s.Audit(ctx, "dev", flags.AuditQuery{}); return err }()},
		{"DeleteAgain", s.DeleteEnvironment(ctx, "dev", 0)},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, flags.ErrNotFound) {
			t.Errorf("%s after delete: err = %v; want ErrNotFound", tc.name, tc.err)
		}
	}
	envs, err := s.Environments(ctx)
	if err != nil || len(envs) != 1 || envs[0].Name != "prod" {
		t.Errorf("Environments after deleting dev = %+v, %v; want only prod", envs, err)
	}
	// A new environment of the same name starts afresh: version 1, one audit entry.
	snap := mustCreate(t, s, "dev", "b")
	if snap.Version != 1 {
		t.Errorf("re-created dev is at version %d; want 1", snap.Version)
	}
	page, err := s.Audit(ctx, "dev", flags.AuditQuery{})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Version != 1 {
		t.Errorf("audit of the re-created dev = %+v, %v; want only its creation", page, err)
	}
	page, err = s.Audit(ctx, "dev", flags.AuditQuery{Flag: "a"})
	if err != nil || len(page.Entries) != 0 {
		t.Errorf("per-flag audit of the re-created dev for a deleted flag = %+v, %v; want nothing", page, err)
	}
}

// testDeleteIfVersion: a conditional delete removes the environment only at
// its current version; at any other version it is ErrConflict and leaves the
// flag set, the audit log, the per-flag index and the listing as they were.
func testDeleteIfVersion(t *testing.T, s flags.Store) {
	ctx := t.Context()
	tests := []struct {
		name      string
		env       string // created and saved once (version 2) unless "ghost"
		ifVersion int64
		want      error
	}{
		{"current version deletes", "at-current", 2, nil},
		{"unconditional deletes", "unconditional", 0, nil},
		{"stale version conflicts", "stale", 1, flags.ErrConflict},
		{"future version conflicts", "future", 3, flags.ErrConflict},
		{"negative version conflicts", "negative", -2, flags.ErrConflict},
		{"missing environment", "ghost", 1, flags.ErrNotFound},
		{"missing environment unconditional", "ghost", 0, flags.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "ghost" {
				mustCreate(t, s, tc.env, "a")
				mustSave(t, s, tc.env, 1, entry("flag.update", t0.Add(time.Minute), "a"), "a", "b")
			}
			err := s.DeleteEnvironment(ctx, tc.env, tc.ifVersion)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("DeleteEnvironment(%q, %d): err = %v; want %v", tc.env, tc.ifVersion, err, tc.want)
			}
			envs, lerr := s.Environments(ctx)
			if lerr != nil {
				t.Fatalf("Environments: %v", lerr)
			}
			listed := slices.ContainsFunc(envs, func(e flags.Environment) bool { return e.Name == tc.env })
			snap, serr := s.Snapshot(ctx, tc.env)
			if tc.want != flags.ErrConflict {
				if !errors.Is(serr, flags.ErrNotFound) || listed {
					t.Errorf("after DeleteEnvironment: Snapshot err = %v, listed = %v; want ErrNotFound and not listed", serr, listed)
				}
				return
			}
			// A refused delete deleted nothing.
			if serr != nil || snap.Version != 2 || !bytes.Equal(snap.Document, doc("a", "b")) || !listed {
				t.Errorf("after a refused delete: %+v, %v, listed = %v; want version 2 with flags a, b, listed", snap, serr, listed)
			}
			page, aerr := s.Audit(ctx, tc.env, flags.AuditQuery{})
			if aerr != nil || len(page.Entries) != 2 {
				t.Errorf("after a refused delete, audit = %d entries, %v; want 2", len(page.Entries), aerr)
			}
			per, perr := s.Audit(ctx, tc.env, flags.AuditQuery{Flag: "a"})
			if perr != nil || len(per.Entries) != 2 {
				t.Errorf("after a refused delete, per-flag audit of a = %d entries, %v; want 2", len(per.Entries), perr)
			}
			// The environment still works at its version, and deletes there.
			mustSave(t, s, tc.env, 2, entry("flag.delete", t0.Add(2*time.Minute), "b"), "a")
			if err := s.DeleteEnvironment(ctx, tc.env, 3); err != nil {
				t.Errorf("DeleteEnvironment at the current version 3 after a refused delete: %v", err)
			}
			if _, err := s.Snapshot(ctx, tc.env); !errors.Is(err, flags.ErrNotFound) {
				t.Errorf("Snapshot after the delete at version 3: err = %v; want ErrNotFound", err)
			}
		})
	}
}

func testSaveVersions(t *testing.T, s flags.Store) {
	ctx := t.Context()
	mustCreate(t, s, "dev")
	first := mustSave(t, s, "dev", 1, entry("flag.create", t0.Add(time.Second), "a"), "a")
	if first.Version != 2 || first.Env != "dev" || !bytes.Equal(first.Document, doc("a")) {
		t.Fatalf("Save at the current version = %+v; want version 2 holding the document", first)
	}
	tests := []struct {
		name     string
		env      string
		expected int64
		want     error
	}{
		{"stale version", "dev", 1, flags.ErrConflict},
		{"future version", "dev", 3, flags.ErrConflict},
		{"zero version", "dev", 0, flags.ErrConflict},
		{"missing environment", "ghost", 1, flags.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Save(ctx, tc.env, tc.expected, doc("x"), entry("flag.create", t0.Add(2*time.Second), "x"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Save(%q, %d): err = %v; want %v", tc.env, tc.expected, err, tc.want)
			}
			snap, err := s.Snapshot(ctx, "dev")
			if err != nil || snap.Version != 2 || !bytes.Equal(snap.Document, doc("a")) {
				t.Errorf("after a refused Save, dev = %+v, %v; want version 2 unchanged", snap, err)
			}
			page, err := s.Audit(ctx, "dev", flags.AuditQuery{})
			if err != nil || len(page.Entries) != 2 {
				t.Errorf("after a refused Save, audit has %d entries (%v); want 2", len(page.Entries), err)
			}
		})
	}
	snap, err := s.Snapshot(ctx, "dev")
	if err != nil || snap.Version != first.Version || !snap.UpdatedAt.Equal(first.UpdatedAt) {
		t.Errorf("Snapshot = %+v, %v; want what Save returned (%+v)", snap, err, first)
	}
	second := mustSave(t, s, "dev", 2, entry("flag.create", t0.Add(3*time.Second), "b"), "a", "b")
	if second.Version != 3 || second.UpdatedAt.Before(first.UpdatedAt) {
		t.Errorf("second Save = %+v; want version 3, updated no earlier than %v", second, first.UpdatedAt)
	}
}

func testSnapshots(t *testing.T, s flags.Store) {
	snaps, err := s.Snapshots(t.Context())
	if err != nil || len(snaps) != 0 {
		t.Fatalf("Snapshots on an empty store = %v, %v; want none", snaps, err)
	}
	mustCreate(t, s, "b", "x")
	mustCreate(t, s, "a", "y")
	mustSave(t, s, "b", 1, entry("flag.create", t0, "z"), "x", "z")
	snaps, err = s.Snapshots(t.Context())
	if err != nil {
		t.Fatalf("Snapshots: %v", err)
	}
	want := []struct {
		env     string
		version int64
		doc     []byte
	}{{"a", 1, doc("y")}, {"b", 2, doc("x", "z")}}
	if len(snaps) != len(want) {
		t.Fatalf("Snapshots returned %d; want %d", len(snaps), len(want))
	}
	for i, w := range want {
		if snaps[i].Env != w.env || snaps[i].Version != w.version || !bytes.Equal(snaps[i].Document, w.doc) {
			t.Errorf("Snapshots[%d] = {%s v%d %s}; want {%s v%d %s}", i, snaps[i].Env, snaps[i].Version, snaps[i].Document, w.env, w.version, w.doc)
		}
	}
}

// history makes env with n saves after its creation; save i changes flag
// "even" or "odd" by i's parity, and every third one also "third".
func history(t *testing.T, s flags.Store, env string, n int) {
	t.Helper()
	mustCreate(t, s, env)
	for i := 1; i <= n; i++ {
		keys := []string{"odd"}
		if i%2 == 0 {
			keys[0] = "even"
		}
		if i%3 == 0 {
			keys = append(keys, "third")
		}
		e := entry("flag.update", t0.Add(time.Duration(i)*time.Second), keys...)
		e.Reason = fmt.Sprintf("change %d", i)
		mustSave(t, s, env, int64(i), e, keys...)
	}
}

// collect pages through the audit log and returns the versions seen, page sizes and entries.
func collect(t *testing.T, s flags.Store, env string, q flags.AuditQuery) (versions []int64, sizes []int, all []flags.AuditEntry) {
	t.Helper()
	for range 1000 {
		page, err := s.Audit(t.Context(), env, q)
		if err != nil {
			t.Fatalf("Audit(%q, %+v): %v", env, q, err)
		}
		sizes = append(sizes, len(page.Entries))
		for _, e := range page.Entries {
			versions = append(versions, e.Version)
			all = append(all, e)
		}
		if page.Next == "" {
			return versions, sizes, all
		}
		if len(page.Entries) == 0 {
			t.Fatalf("Audit returned an empty page with Next %q", page.Next)
		}
		q.Cursor = page.Next
	}
	t.Fatal("Audit paging never ended")
	return nil, nil, nil
}

func testAuditPaging(t *testing.T, s flags.Store) {
	history(t, s, "dev", 12) // versions 1..13
	tests := []struct {
		name  string
		limit int
		sizes []int
	}{
		{"pages of 5", 5, []int{5, 5, 3}},
		{"exact fit", 13, []int{13}},
		{"pages of 1", 1, slices.Repeat([]int{1}, 13)},
		{"default limit", 0, []int{13}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			versions, sizes, all := collect(t, s, "dev", flags.AuditQuery{Limit: tc.limit})
			if !slices.Equal(sizes, tc.sizes) {
				t.Errorf("page sizes = %v; want %v", sizes, tc.sizes)
			}
			want := []int64{13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}
			if !slices.Equal(versions, want) {
				t.Errorf("versions = %v; want %v (newest first, no gaps or repeats)", versions, want)
			}
			for i := 1; i < len(all); i++ {
				if all[i].ID >= all[i-1].ID {
					t.Errorf("entry IDs do not sort by time: %q (v%d) is listed after %q (v%d)", all[i].ID, all[i].Version, all[i-1].ID, all[i-1].Version)
				}
			}
		})
	}
}

func testAuditPerFlag(t *testing.T, s flags.Store) {
	history(t, s, "dev", 12)
	tests := []struct {
		flag  string
		limit int
		want  []int64 // versions: save i is version i+1
	}{
		{"even", 2, []int64{13, 11, 9, 7, 5, 3}},
		{"odd", 4, []int64{12, 10, 8, 6, 4, 2}},
		{"third", 3, []int64{13, 10, 7, 4}},
		{"never-changed", 5, nil},
	}
	for _, tc := range tests {
		t.Run(tc.flag, func(t *testing.T) {
			versions, _, all := collect(t, s, "dev", flags.AuditQuery{Flag: tc.flag, Limit: tc.limit})
			if !slices.Equal(versions, tc.want) {
				t.Errorf("versions changing %q = %v; want %v", tc.flag, versions, tc.want)
			}
			for _, e := range all {
				if !slices.ContainsFunc(e.Changes, func(c flags.FlagChange) bool { return c.Key == tc.flag }) {
					t.Errorf("entry v%d does not change %q: %+v", e.Version, tc.flag, e.Changes)
				}
			}
		})
	}
	if _, err := s.Audit(t.Context(), "ghost", flags.AuditQuery{Flag: "even"}); !errors.Is(err, flags.ErrNotFound) {
		t.Errorf("per-flag audit of a missing environment: err = %v; want ErrNotFound", err)
	}
}

func testAuditBadQuery(t *testing.T, s flags.Store) {
	history(t, s, "dev", 2)
	tests := []struct {
		name string
		q    flags.AuditQuery
	}{
		{"negative limit", flags.AuditQuery{Limit: -1}},
		{"limit over 500", flags.AuditQuery{Limit: 501}},
		{"garbage cursor", flags.AuditQuery{Cursor: "not-a-cursor"}},
		{"empty-ish cursor", flags.AuditQuery{Cursor: "-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Audit(t.Context(), "dev", tc.q)
			if err == nil {
				t.Fatal("Audit accepted a bad query")
			}
			if errors.Is(err, flags.ErrUnavailable) || errors.Is(err, flags.ErrNotFound) {
				t.Errorf("err = %v; want an input error, not a store failure", err)
			}
		})
	}
}

func testAuditRoundTrip(t *testing.T, s flags.Store) {
	mustCreate(t, s, "dev")
	e := flags.AuditEntry{
		Env: "ignored-by-store", ID: "ignored", Version: 99,
		Time: t0.Add(90 * time.Minute), Actor: "alice's key", Action: "flag.update", Reason: "ramp to 50% — ticket #42",
		Changes: []flags.FlagChange{{
			Key: "new-checkout", Before: json.RawMessage(`{"state":"DISABLED"}`), After: json.RawMessage(`{"state":"ENABLED"}`),
			Diff: []flags.DiffOp{{Op: "replace", Path: "/state", From: json.RawMessage(`"DISABLED"`), Value: json.RawMessage(`"ENABLED"`)}},
		}},
	}
	mustSave(t, s, "dev", 1, e, "new-checkout")
	page, err := s.Audit(t.Context(), "dev", flags.AuditQuery{Limit: 1})
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("Audit = %+v, %v; want one entry", page, err)
	}
	got := page.Entries[0]
	if got.ID == "" || got.ID == "ignored" || got.Env != "dev" || got.Version != 2 {
		t.Errorf("store-assigned fields: ID %q, Env %q, Version %d; want a fresh ID, dev, 2", got.ID, got.Env, got.Version)
	}
	if !got.Time.Equal(e.Time) || got.Actor != e.Actor || got.Action != e.Action || got.Reason != e.Reason {
		t.Errorf("entry = %+v; want time, actor, action and reason of %+v", got, e)
	}
	gotJSON, _ := json.Marshal(got.Changes)
	wantJSON, _ := json.Marshal(e.Changes)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("changes = %s; want %s", gotJSON, wantJSON)
	}
	if page.Next == "" {
		t.Error("a page of 1 out of 2 entries has no Next")
	}
}

func testSubscribe(t *testing.T, s flags.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	changes := make(chan flags.Change, 64)
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, func(c flags.Change) { changes <- c }) }()
	next := func(what string) flags.Change {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case err := <-done:
			t.Fatalf("Subscribe returned %v while waiting for %s", err, what)
		case <-time.After(10 * time.Second):
			t.Fatalf("no change delivered within 10s while waiting for %s", what)
		}
		return flags.Change{}
	}
	if c := next("the first resync"); !c.Resync {
		t.Fatalf("first change = %+v; want Resync once subscribed", c)
	}
	mustCreate(t, s, "dev")
	mustSave(t, s, "dev", 1, entry("flag.create", t0, "a"), "a")
	mustCreate(t, s, "prod")
	for _, want := range []flags.Change{{Env: "dev", Version: 1}, {Env: "dev", Version: 2}, {Env: "prod", Version: 1}} {
		if got := next(fmt.Sprintf("%+v", want)); got != want {
			t.Errorf("change = %+v; want %+v", got, want)
		}
	}
	// A refused write publishes nothing.
	if _, err := s.Save(t.Context(), "dev", 1, doc(), entry("flag.delete", t0)); !errors.Is(err, flags.ErrConflict) {
		t.Fatalf("stale Save: err = %v; want ErrConflict", err)
	}
	mustSave(t, s, "prod", 1, entry("flag.create", t0, "b"), "b")
	if got, want := next("prod v2"), (flags.Change{Env: "prod", Version: 2}); got != want {
		t.Errorf("change after a refused write = %+v; want %+v", got, want)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe returned %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return within 10s of its context ending")
	}
}

// testConcurrentWriters races 50 writers, each adding its own flag with
// read-modify-write and a retry on ErrConflict. Every acknowledged write must
// survive: 50 flags, version 51, 51 audit entries.
func testConcurrentWriters(t *testing.T, s flags.Store) {
	const writers = 50
	mustCreate(t, s, "race")
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("flag-%02d", w)
			for attempt := 0; attempt < 10_000; attempt++ {
				snap, err := s.Snapshot(ctx, "race")
				if err != nil {
					errs <- err
					return
				}
				keys, err := parseKeys(snap.Document)
				if err != nil {
					errs <- err
					return
				}
				keys = append(keys, key)
				_, err = s.Save(ctx, "race", snap.Version, doc(keys...), entry("flag.create", time.Now(), key))
				if errors.Is(err, flags.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
				}
				return
			}
			errs <- fmt.Errorf("writer %d never won a race", w)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	snap, err := s.Snapshot(ctx, "race")
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.Version != writers+1 {
		t.Errorf("version = %d; want %d (one per acknowledged write plus the creation)", snap.Version, writers+1)
	}
	if keys := docKeys(t, snap.Document); len(keys) != writers {
		t.Errorf("the final document has %d flags; want %d: %s", len(keys), writers, strings.Join(keys, ","))
	}
	versions, _, _ := collect(t, s, "race", flags.AuditQuery{Limit: 500})
	if len(versions) != writers+1 {
		t.Errorf("audit has %d entries; want %d", len(versions), writers+1)
	}
}
