package canary_test

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
)

// TestRunnerKeepsUp500: one runner executes 500 concurrent analyses at a
// 10 s interval, all due at the same instant (the worst case), for a
// minute of (fake) time: every run takes every step, in its own slot, and
// no step starts more than a poll late. Judging is real; the clock is
// synctest's, so this shows the scheduling never falls behind; the
// benchmark below measures the CPU time the same work takes.
func TestRunnerKeepsUp500(t *testing.T) {
	if testing.Short() {
		t.Skip("judges 3,000 measurements")
	}
	synctest.Test(t, func(t *testing.T) {
		store := canarytest.NewMemory()
		t0 := time.Now()
		ids := canarytest.StartRuns(t, store, canarytest.HTTPTemplate(10*time.Second), 500, t0)
		met := &recorder{}
		r, err := canary.NewRunner(canary.RunnerConfig{Store: store, Source: &canarytest.HTTPSource{}, Metrics: met, Poll: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = r.Run(ctx); close(done) }()
		time.Sleep(65 * time.Second)
		cancel()
		<-done
		for _, id := range ids {
			ms, err := store.Measurements(context.Background(), id, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 6 {
				t.Fatalf("run %s took %d steps in 65s; want 6 (at 10s, 20s, … 60s)", id, len(ms))
			}
			for i, m := range ms {
				due := t0.Add(time.Duration(i+1) * 10 * time.Second)
				if lag := m.At.Sub(due); m.Number != i+1 || lag < 0 || lag > time.Second {
					t.Fatalf("run %s step %d (#%d) %v late; want each step in its slot, at most a poll late", id, i+1, m.Number, lag)
				}
				if v := m.Report.Verdict; v == canary.VerdictError || len(m.Report.Metrics) != 4 {
					t.Fatalf("run %s step %d: %s (%s) on %d metrics; want all 4 judged", id, i+1, v, m.Report.Reason, len(m.Report.Metrics))
				}
			}
		}
		met.mu.Lock()
		defer met.mu.Unlock()
		if len(met.lags) != 3000 || slices.Max(met.lags) > time.Second {
			t.Errorf("%d lags reported, max %v; want 3000 within a poll", len(met.lags), slices.Max(met.lags))
		}
	})
}

// BenchmarkRunnerInterval500 is one 10 s interval of 500 concurrent
// analyses through one runner on the in-memory store (see
// canarytest.BenchInterval).
func BenchmarkRunnerInterval500(b *testing.B) {
	canarytest.BenchInterval(b, canarytest.NewMemory(), 500, 10*time.Second)
}
