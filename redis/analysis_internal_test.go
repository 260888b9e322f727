package redis

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
)

// hashTag is the part of a key Redis Cluster hashes: between the first '{'
// and the next '}' when not empty, else the whole key.
func hashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

// TestAnalysisKeysShareASlot: every script's keys hash to one Cluster slot
// (one run's keys share {run:ID}; the templates share {templates}).
func TestAnalysisKeysShareASlot(t *testing.T) {
	k := keyspace{prefix: "p:"}
	tests := []struct {
		name string
		keys []string
		tag  string
	}{
		{"templates", k.templateKeys(), "templates"},
		{"update run", []string{k.run("a-1"), k.runSteps("a-1"), k.runLease("a-1")}, "run:a-1"},
		{"lease", []string{k.runLease("a-1"), k.run("a-1")}, "run:a-1"},
	}
	for _, tc := range tests {
		for _, key := range tc.keys {
			if got := hashTag(key); got != tc.tag {
				t.Errorf("%s: key %q hashes on %q; want %q", tc.name, key, got, tc.tag)
			}
		}
	}
	if hashTag(k.run("a-1")) == hashTag(k.run("a-2")) {
		t.Error("two runs share a slot: the hash tag must be per run")
	}
}

// TestDueIndexRepair: entries left behind by a crash between a run write and
// its index update are repaired by DueRuns: a run that ended leaves the
// index, one that moved is re-scored (and returned only if due), and an old
// entry without a run is dropped.
func TestDueIndexRepair(t *testing.T) {
	s, err := OpenEmbedded(t.Context(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	t0 := canarytest.T0
	for _, id := range []string{"ended", "moved", "fine"} {
		r := canarytest.NewRun(t, id, "x", t0)
		r.Advance(t0) // running; first step at t0+1m
		if _, err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Simulate lost index updates: "ended" is cancelled and "moved" pushed
	// back an hour, both behind the index's back.
	for id, change := range map[string]func(*canary.Run){
		"ended": func(r *canary.Run) { _ = r.Cancel(t0, "x") },
		"moved": func(r *canary.Run) { r.NextAt = t0.Add(time.Hour) },
	} {
		sr, err := s.Run(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		change(&sr.Run)
		if err := s.rdb.HSet(ctx, s.keys.run(id), "phase", string(sr.Phase), "wake", wakeScore(&sr.Run)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// An index entry for a run whose creation never happened, long ago.
	s.rdb.ZAdd(ctx, s.keys.runsDue(), goredisZ(t0.Add(-time.Hour), "never"))

	due, err := s.DueRuns(ctx, t0.Add(time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(due, []string{"fine"}) {
		t.Errorf("DueRuns = %v; want [fine]", due)
	}
	members := s.rdb.ZRangeWithScores(ctx, s.keys.runsDue(), 0, -1).Val()
	got := map[string]int64{}
	for _, z := range members {
		got[z.Member.(string)] = int64(z.Score)
	}
	want := map[string]int64{"fine": t0.Add(time.Minute).UnixMilli(), "moved": t0.Add(time.Hour).UnixMilli()}
	if len(got) != len(want) || got["fine"] != want["fine"] || got["moved"] != want["moved"] {
		t.Errorf("due index after repair = %v; want %v", got, want)
	}
	// Listing skips an index entry without a run.
	s.rdb.ZAdd(ctx, s.keys.runsAll(), goredisZ(t0, "never"))
	page, err := s.Runs(ctx, canary.RunQuery{})
	if err != nil || len(page.Runs) != 3 {
		t.Errorf("Runs = %d runs, %v; want the 3 real ones", len(page.Runs), err)
	}
}

func TestWakeScoreRoundsUp(t *testing.T) {
	r := canarytest.NewRun(t, "w", "x", canarytest.T0)
	r.Advance(canarytest.T0)
	r.NextAt = canarytest.T0.Add(1500 * time.Microsecond)
	if got, want := wakeScore(r), canarytest.T0.Add(2*time.Millisecond).UnixMilli(); got != strconvI(want) {
		t.Errorf("wakeScore = %s; want %d (rounded up, so an entry at or before now is due)", got, want)
	}
	_ = r.Cancel(canarytest.T0, "x")
	if got := wakeScore(r); got != "" {
		t.Errorf("wakeScore of an ended run = %q; want empty", got)
	}
}

func goredisZ(at time.Time, member string) goredis.Z {
	return goredis.Z{Score: float64(at.UnixMilli()), Member: member}
}

func strconvI(v int64) string { return strconv.FormatInt(v, 10) }
