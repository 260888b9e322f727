package redis_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

func TestAnalysisStoreConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		canarytest.Run(t, func(t *testing.T) canary.Store { return openEmbedded(t) })
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		canarytest.Run(t, func(t *testing.T) canary.Store { return openReal(t, srv) })
	})
}

// TestAnalysisEmbeddedPersistence writes templates, a run with steps and a
// lease, closes the embedded store and reopens it: everything is back, the
// journal replays the scripts, and tokens and versions continue.
func TestAnalysisEmbeddedPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := canarytest.T0
	if _, err := s.PutTemplate(ctx, canarytest.Template("alpha", time.Minute, 5), canary.TemplateWrite{At: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutTemplate(ctx, canarytest.Template("gone", time.Minute, 5), canary.TemplateWrite{At: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTemplate(ctx, "gone", 0); err != nil {
		t.Fatal(err)
	}
	sr, err := s.CreateRun(ctx, canarytest.NewRun(t, "persist", "alpha", t0))
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(ctx, "persist", "replica-a", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		now := t0.Add(time.Duration(i) * time.Minute)
		sr.Run.Advance(now)
		plan, ok := sr.Run.Due(now)
		if !ok {
			t.Fatalf("step %d not due", i)
		}
		if err := sr.Run.Record(plan.Step, now, plan.Window, canary.Report{Verdict: canary.VerdictInconclusive, Reason: "r"}); err != nil {
			t.Fatal(err)
		}
		step := sr.Run.Steps[len(sr.Run.Steps)-1]
		if sr, err = s.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version, Token: l.Token, Step: &step}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := json.Marshal(sr)
	// A copy taken before Close holds the writes in the journal, as after a
	// crash: reopening it replays every script.
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
	if st, err := os.Stat(filepath.Join(copyDir, redis.JournalFile)); err != nil || st.Size() == 0 {
		t.Fatalf("the journal is empty (%v): the replay would not be tested", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct{ name, dir string }{{"reopened", dir}, {"journal replayed", copyDir}} {
		t.Run(d.name, func(t *testing.T) { checkReopened(t, d.dir, before) })
	}
}

func checkReopened(t *testing.T, dir string, before []byte) {
	ctx := t.Context()
	t0 := canarytest.T0
	r, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer r.Close()
	got, err := r.Run(ctx, "persist")
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(got); string(after) != string(before) {
		t.Errorf("run after restart:\n got %s\nwant %s", after, before)
	}
	if ms, err := r.Measurements(ctx, "persist", 0, 0); err != nil || len(ms) != 2 {
		t.Errorf("measurements after restart = %d, %v; want 2", len(ms), err)
	}
	if due, err := r.DueRuns(ctx, t0.Add(3*time.Minute), 10); err != nil || len(due) != 1 || due[0] != "persist" {
		t.Errorf("DueRuns after restart = %v, %v; want [persist]", due, err)
	}
	if _, err := r.AcquireLease(ctx, "persist", "replica-b", t0.Add(3*time.Minute), time.Minute); !errors.Is(err, canary.ErrLeaseHeld) {
		t.Errorf("the lease did not survive the restart: err = %v; want ErrLeaseHeld", err)
	}
	if err := r.ReleaseLease(ctx, canary.Lease{RunID: "persist", Owner: "replica-a", Token: 1}); err != nil {
		t.Fatal(err)
	}
	l2, err := r.AcquireLease(ctx, "persist", "replica-b", t0.Add(3*time.Minute), time.Minute)
	if err != nil || l2.Token != 2 {
		t.Errorf("lease after restart and release = %+v, %v; want token 2", l2, err)
	}
	st, err := r.PutTemplate(ctx, canarytest.Template("gone", time.Minute, 5), canary.TemplateWrite{Create: true, At: t0})
	if err != nil || st.Version != 2 {
		t.Errorf("re-creating a deleted template after restart = v%d, %v; want v2", st.Version, err)
	}
}

// TestAnalysisOutage: with Redis stopped every analysis operation reports
// canary.ErrUnavailable (and flags.ErrUnavailable), and nothing is lost.
func TestAnalysisOutage(t *testing.T) {
	srv := redistest.Start(t)
	s := openReal(t, srv)
	ctx := t.Context()
	t0 := canarytest.T0
	if _, err := s.CreateRun(ctx, canarytest.NewRun(t, "o", "alpha", t0)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	run := canarytest.NewRun(t, "o2", "alpha", t0)
	tests := []struct {
		name string
		call func() error
	}{
		{"PutTemplate", func() error {
			_, err := s.PutTemplate(ctx, canarytest.Template("x", time.Minute, 1), canary.TemplateWrite{})
			return err
		}},
		{"Templates", func() error { _, err := s.Templates(ctx); return err }},
		{"CreateRun", func() error { _, err := s.CreateRun(ctx, run); return err }},
		{"Run", func() error { _, err := s.Run(ctx, "o"); return err }},
		{"Runs", func() error { _, err := s.Runs(ctx, canary.RunQuery{}); return err }},
		{"DueRuns", func() error { _, err := s.DueRuns(ctx, t0, 10); return err }},
		{"AcquireLease", func() error { _, err := s.AcquireLease(ctx, "o", "a", t0, time.Minute); return err }},
		{"Measurements", func() error { _, err := s.Measurements(ctx, "o", 0, 0); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, canary.ErrUnavailable) || !errors.Is(err, flags.ErrUnavailable) {
				t.Errorf("err = %v; want canary.ErrUnavailable and flags.ErrUnavailable", err)
			}
		})
	}
	srv.Restart()
	if got, err := s.Run(ctx, "o"); err != nil || got.Version != 1 {
		t.Errorf("run after the outage = v%d, %v; want v1", got.Version, err)
	}
}

func TestAnalysisClosedStore(t *testing.T) {
	s := openEmbedded(t)
	_ = s.Close()
	ctx := t.Context()
	if _, err := s.Template(ctx, "a"); !errors.Is(err, canary.ErrUnavailable) {
		t.Errorf("Template on a closed store: err = %v; want ErrUnavailable", err)
	}
	if _, err := s.AcquireLease(ctx, "a", "o", time.Now(), time.Second); !errors.Is(err, canary.ErrUnavailable) {
		t.Errorf("AcquireLease on a closed store: err = %v; want ErrUnavailable", err)
	}
}
