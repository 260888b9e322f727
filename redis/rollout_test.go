package redis_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/rollouttest"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

func TestRolloutStoreConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		rollouttest.Run(t, func(t *testing.T) canary.RolloutStore { return openEmbedded(t) })
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		rollouttest.Run(t, func(t *testing.T) canary.RolloutStore { return openReal(t, srv) })
	})
}

// TestRolloutEmbeddedPersistence writes rollouts and a lease, copies the
// embedded store's files as a crash would leave them (the writes only in
// the journal) and reopens the copy: every rollout, version, index and
// lease token is back.
func TestRolloutEmbeddedPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := rollouttest.T0
	a, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_p1", "prod", "checkout", t0, time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_p2", "prod", "search", t0, t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireRolloutLease(ctx, "ro_p1", "replica-a", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.Pending = false
	if a, err = s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &a.Rollout, IfVersion: a.Version, Token: l.Token}); err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(a)
	copyDir := t.TempDir()
	for _, name := range []string{redis.DataFile, redis.JournalFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	re, err := redis.OpenEmbedded(ctx, copyDir, redis.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer re.Close()
	got, err := re.Rollout(ctx, "ro_p1")
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(got); string(after) != string(before) {
		t.Errorf("after replay\n%s\nwant\n%s", after, before)
	}
	if act, err := re.ActiveRollout(ctx, "prod", "checkout"); err != nil || act.ID != "ro_p1" {
		t.Errorf("active index after replay: %s, %v", act.ID, err)
	}
	due, err := re.DueRollouts(ctx, t0.Add(2*time.Hour), 10)
	if err != nil || len(due) != 2 {
		t.Errorf("due index after replay: %v, %v; want both", due, err)
	}
	// The lease is still replica-a's; a new owner after expiry gets a higher token.
	if _, err := re.AcquireRolloutLease(ctx, "ro_p1", "replica-b", t0.Add(time.Minute), time.Hour); err == nil {
		t.Errorf("the lease was lost in the replay")
	}
	lb, err := re.AcquireRolloutLease(ctx, "ro_p1", "replica-b", t0.Add(2*time.Hour), time.Hour)
	if err != nil || lb.Token <= l.Token {
		t.Errorf("token after replay = %d, %v; want above %d", lb.Token, err, l.Token)
	}
}

// crashCopy copies an embedded store's files as a crash would leave them
// (the latest writes only in the journal) into a new directory.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	copyDir := t.TempDir()
	for _, name := range []string{redis.DataFile, redis.JournalFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return copyDir
}

// TestRolloutRetention: creating a rollout deletes those that ended more
// than RolloutRetention before it (hash, lease, listing), and keeps those
// that ended later, are still active, or were retried after they ended; a
// refused creation deletes nothing. On redis-server every key a script
// touches must be one it declared (MONITOR shows them); the embedded store
// replays the deletion from its journal after a crash.
func TestRolloutRetention(t *testing.T) {
	const prefix = "retention:"
	for _, tc := range []struct {
		name string
		// open returns the store, a check of the keys only the backend can
		// see (nil: none), and a crash-and-reopen (nil: none).
		open func(t *testing.T) (s *redis.Store, leaseGone func() error, reopen func() *redis.Store)
	}{
		{"embedded", func(t *testing.T) (*redis.Store, func() error, func() *redis.Store) {
			dir := t.TempDir()
			s, err := redis.OpenEmbedded(t.Context(), dir, redis.Options{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, nil, func() *redis.Store {
				copyDir := crashCopy(t, dir)
				re, err := redis.OpenEmbedded(t.Context(), copyDir, redis.Options{Prefix: prefix})
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				t.Cleanup(func() { _ = re.Close() })
				return re
			}
		}},
		{"redis-server", func(t *testing.T) (*redis.Store, func() error, func() *redis.Store) {
			srv := redistest.Start(t)
			audit := auditScriptKeys(t, srv)
			t.Cleanup(func() {
				for _, v := range audit() {
					t.Errorf("undeclared key: %s", v)
				}
			})
			s, err := redis.Open(t.Context(), redis.Options{URL: srv.URL(), Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			leaseGone := func() error {
				n, err := respInt(srv.Addr(), "EXISTS", prefix+"{rollouts}:lease:ro_old")
				if err != nil {
					return err
				}
				if n != 0 {
					return errors.New("the expired rollout's lease key is still there")
				}
				return nil
			}
			return s, leaseGone, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, leaseGone, reopen := tc.open(t)
			ctx := t.Context()
			t0 := rollouttest.T0
			end := func(id, flag string, at time.Time) canary.StoredRollout {
				t.Helper()
				sr, err := s.CreateRollout(ctx, rollouttest.NewRollout(id, "prod", flag, t0, time.Time{}))
				if err != nil {
					t.Fatal(err)
				}
				if err := sr.Abort(at, "test", "done"); err != nil {
					t.Fatal(err)
				}
				if sr, err = s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &sr.Rollout, IfVersion: sr.Version}); err != nil {
					t.Fatal(err)
				}
				return sr
			}
			end("ro_old", "a", t0.Add(time.Hour))
			if _, err := s.AcquireRolloutLease(ctx, "ro_old", "replica", t0, time.Hour); err != nil {
				t.Fatal(err)
			}
			end("ro_recent", "b", t0.Add(20*24*time.Hour))
			retried := end("ro_retried", "c", t0.Add(time.Hour))
			retried.State = canary.RolloutFailed // as a failed gate leaves it
			if err := retried.Retry(t0.Add(2*time.Hour), "test", "again"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &retried.Rollout, IfVersion: retried.Version}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_active", "prod", "d", t0, time.Time{})); err != nil {
				t.Fatal(err)
			}
			later := t0.Add(redis.RolloutRetention + 2*time.Hour)

			// Refused: flag d has ro_active. Nothing is deleted.
			if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_refused", "prod", "d", later, time.Time{})); !errors.Is(err, canary.ErrRolloutActive) {
				t.Fatalf("create on a flag with an active rollout: %v, want ErrRolloutActive", err)
			}
			if _, err := s.Rollout(ctx, "ro_old"); err != nil {
				t.Errorf("after a refused creation the expired rollout: %v, want it kept", err)
			}

			// Created 30 days and two hours after the start: ro_old goes.
			if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_new", "prod", "e", later, time.Time{})); err != nil {
				t.Fatal(err)
			}
			check := func(t *testing.T, s *redis.Store) {
				t.Helper()
				if _, err := s.Rollout(ctx, "ro_old"); !errors.Is(err, canary.ErrNotFound) {
					t.Errorf("the expired rollout: %v, want ErrNotFound", err)
				}
				list, err := s.Rollouts(ctx, canary.RolloutQuery{})
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, sr := range list {
					ids = append(ids, sr.ID)
				}
				slices.Sort(ids)
				if want := []string{"ro_active", "ro_new", "ro_recent", "ro_retried"}; !slices.Equal(ids, want) {
					t.Errorf("rollouts kept %v, want %v", ids, want)
				}
			}
			// leaseProbe recreates ro_old: had its lease (replica's until
			// t0+1h) survived, another owner could not take it at t0.
			leaseProbe := func(t *testing.T, s *redis.Store) {
				t.Helper()
				if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_old", "prod", "a", t0, time.Time{})); err != nil {
					t.Fatal(err)
				}
				if _, err := s.AcquireRolloutLease(ctx, "ro_old", "other", t0, time.Hour); err != nil {
					t.Errorf("the recreated rollout's lease: %v, want the expired lease gone", err)
				}
			}
			check(t, s)
			if leaseGone != nil {
				if err := leaseGone(); err != nil {
					t.Error(err)
				}
			}
			var re *redis.Store
			if reopen != nil {
				re = reopen() // before the probe writes to s
			}
			leaseProbe(t, s)
			if re != nil {
				t.Run("after a crash", func(t *testing.T) {
					check(t, re)
					leaseProbe(t, re)
				})
			}
		})
	}
}

// TestRolloutJournalOldRecords replays rollout records in the formats
// earlier versions journaled: before the ended index (create: four KEYS,
// nine ARGV; update: four KEYS, eleven ARGV) and while the creation
// carried the retention trim (create: five KEYS, twelve ARGV). Every
// record applies and the rollouts come back as written.
func TestRolloutJournalOldRecords(t *testing.T) {
	type rewrite struct{ keys, args int } // -1: as written
	for _, tc := range []struct {
		name           string
		create, update rewrite
		extraCreate    bool // add the trim's fifth key and ARGV 10-12
	}{
		{"current", rewrite{-1, -1}, rewrite{-1, -1}, false},
		{"before the ended index", rewrite{4, 9}, rewrite{4, 11}, false},
		{"creation with the trim", rewrite{-1, -1}, rewrite{-1, -1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			t0 := rollouttest.T0
			a, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_j1", "prod", "checkout", t0, time.Time{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Abort(t0.Add(time.Hour), "test", "done"); err != nil {
				t.Fatal(err)
			}
			if a, err = s.UpdateRollout(ctx, canary.RolloutUpdate{Rollout: &a.Rollout, IfVersion: a.Version}); err != nil {
				t.Fatal(err)
			}
			b, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_j2", "prod", "search", t0, time.Time{}))
			if err != nil {
				t.Fatal(err)
			}
			copyDir := crashCopy(t, dir)
			path := filepath.Join(copyDir, redis.JournalFile)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			seen := map[string]int{}
			for line := range strings.Lines(string(data)) {
				var rec map[string]json.RawMessage
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("journal line %q: %v", line, err)
				}
				var script string
				_ = json.Unmarshal(rec["script"], &script)
				var keys, args []json.RawMessage
				_ = json.Unmarshal(rec["keys"], &keys)
				_ = json.Unmarshal(rec["args"], &args)
				rw := rewrite{-1, -1}
				switch script {
				case "createRollout":
					rw = tc.create
					if tc.extraCreate {
						keys = append(keys, json.RawMessage(`"flagpole:{rollouts}:ended"`))
						args = append(args, json.RawMessage(`"0"`), json.RawMessage(`"flagpole:{rollouts}:"`), json.RawMessage(`"100"`))
					}
				case "updateRollout":
					rw = tc.update
				}
				seen[script]++
				if rw.keys >= 0 {
					keys, args = keys[:rw.keys], args[:rw.args]
				}
				rec["keys"], _ = json.Marshal(keys)
				rec["args"], _ = json.Marshal(args)
				l, err := json.Marshal(rec)
				if err != nil {
					t.Fatal(err)
				}
				out = append(append(out, l...), '\n')
			}
			if seen["createRollout"] != 2 || seen["updateRollout"] != 1 {
				t.Fatalf("journal records by script %v; want two createRollout and one updateRollout", seen)
			}
			if err := os.WriteFile(path, out, 0o600); err != nil {
				t.Fatal(err)
			}
			re, err := redis.OpenEmbedded(ctx, copyDir, redis.Options{})
			if err != nil {
				t.Fatalf("replaying the records: %v", err)
			}
			defer re.Close()
			for _, want := range []canary.StoredRollout{a, b} {
				got, err := re.Rollout(ctx, want.ID)
				if err != nil {
					t.Fatalf("%s after replay: %v", want.ID, err)
				}
				if got.Version != want.Version || got.State != want.State {
					t.Errorf("%s after replay: version %d, state %s; want %d, %s", want.ID, got.Version, got.State, want.Version, want.State)
				}
			}
			if act, err := re.ActiveRollout(ctx, "prod", "search"); err != nil || act.ID != "ro_j2" {
				t.Errorf("active index after replay: %q, %v; want ro_j2", act.ID, err)
			}
		})
	}
}

// respInt sends one command on a new connection and reads an integer reply.
func respInt(addr string, args ...string) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(respCommand(args...)); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, ":") {
		return 0, fmt.Errorf("%s: reply %q", args[0], line)
	}
	return strconv.ParseInt(strings.TrimSpace(line[1:]), 10, 64)
}

func respCommand(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

var monitorToken = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// auditScriptKeys watches srv with MONITOR. The returned function lists
// each key a script touched without declaring it in KEYS (Redis Cluster
// and ACLs need every key declared), as "COMMAND key".
func auditScriptKeys(t *testing.T, srv *redistest.Server) func() []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := bufio.NewReader(c)
	if _, err := c.Write(respCommand("MONITOR")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	lines := make(chan string, 1<<14)
	go func() {
		defer close(lines)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimRight(line, "\r\n")
		}
	}()
	return func() []string {
		const sentinel = "audit-done"
		if _, err := respInt(srv.Addr(), "EXISTS", sentinel); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
		var bad []string
		var declared map[string]bool
		timeout := time.After(10 * time.Second)
		for {
			var line string
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("MONITOR connection closed before the sentinel")
				}
				line = l
			case <-timeout:
				t.Fatal("MONITOR did not show the sentinel")
			}
			lb, rb := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
			if lb < 0 || rb < lb {
				continue
			}
			var toks []string
			for _, m := range monitorToken.FindAllStringSubmatch(line[rb:], -1) {
				tok, err := strconv.Unquote(`"` + m[1] + `"`)
				if err != nil {
					tok = m[1]
				}
				toks = append(toks, tok)
			}
			if len(toks) == 0 {
				continue
			}
			cmd := strings.ToUpper(toks[0])
			if !strings.HasSuffix(line[lb:rb], " lua") {
				if cmd == "EXISTS" && len(toks) == 2 && toks[1] == sentinel {
					return bad
				}
				declared = nil
				if (cmd == "EVALSHA" || cmd == "EVAL") && len(toks) >= 3 {
					n, _ := strconv.Atoi(toks[2])
					declared = map[string]bool{}
					for i := 3; i < 3+n && i < len(toks); i++ {
						declared[toks[i]] = true
					}
				}
				continue
			}
			var keys []string
			switch cmd {
			case "DEL", "UNLINK", "EXISTS", "MGET", "TOUCH":
				keys = toks[1:]
			default:
				if len(toks) > 1 {
					keys = toks[1:2]
				}
			}
			for _, k := range keys {
				if !declared[k] {
					bad = append(bad, cmd+" "+k)
				}
			}
		}
	}
}
