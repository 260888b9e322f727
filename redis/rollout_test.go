package redis_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// TestRolloutRetention: creating a rollout deletes those that ended more
// than RolloutRetention before it (hash, lease, listing), and keeps those
// that ended later, are still active, or were retried after they ended.
func TestRolloutRetention(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *redis.Store
	}{
		{"embedded", func(t *testing.T) *redis.Store { return openEmbedded(t) }},
		{"redis-server", func(t *testing.T) *redis.Store { return openReal(t, redistest.Start(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
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
			// A rollout created 30 days and two hours after the start.
			if _, err := s.CreateRollout(ctx, rollouttest.NewRollout("ro_new", "prod", "e", t0.Add(redis.RolloutRetention+2*time.Hour), time.Time{})); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Rollout(ctx, "ro_old"); !errors.Is(err, canary.ErrNotFound) {
				t.Errorf("the expired rollout: %v, want ErrNotFound", err)
			}
			if _, err := s.AcquireRolloutLease(ctx, "ro_old", "replica", t0, time.Hour); !errors.Is(err, canary.ErrNotFound) {
				t.Errorf("the expired rollout's lease: %v, want ErrNotFound", err)
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
		})
	}
}
