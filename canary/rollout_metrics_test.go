package canary_test

import (
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// rolloutRecorder is a RolloutMetrics that remembers every call.
type rolloutRecorder struct {
	mu        sync.Mutex
	steps     map[string]int
	ended     map[canary.RolloutState]int
	rollbacks []time.Duration
	active    map[canary.RolloutState]int // the latest report
	reports   int
}

func (m *rolloutRecorder) StepApplied(env string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.steps[env]++
}

func (m *rolloutRecorder) RolloutEnded(s canary.RolloutState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended[s]++
}

func (m *rolloutRecorder) RolledBack(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollbacks = append(m.rollbacks, d)
}

func (m *rolloutRecorder) ActiveRollouts(c map[canary.RolloutState]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active = maps.Clone(c)
	m.reports++
}

// snapshot copies what was recorded.
func (m *rolloutRecorder) snapshot() (steps map[string]int, ended map[canary.RolloutState]int, rollbacks []time.Duration, active map[canary.RolloutState]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.steps), maps.Clone(m.ended), append([]time.Duration(nil), m.rollbacks...), maps.Clone(m.active)
}

// meteredWorld is newWorld with a rollout service reporting to a recorder.
func meteredWorld(t *testing.T) (*world, *rolloutRecorder) {
	t.Helper()
	w := newWorld(t, "prod")
	rec := &rolloutRecorder{steps: map[string]int{}, ended: map[canary.RolloutState]int{}}
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{
		Rollouts: w.rollouts, Analyses: w.analyses, Flags: w.flags, FlagReader: w.flagsMem, Notifier: w.notes, Metrics: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.svc = svc
	return w, rec
}

func activeCounts(scheduled, running, paused int) map[canary.RolloutState]int {
	return map[canary.RolloutState]int{canary.RolloutScheduled: scheduled, canary.RolloutRunning: running, canary.RolloutPaused: paused}
}

func TestRolloutMetrics(t *testing.T) {
	for _, tc := range []struct {
		name string
		// act drives the rollout sr after the controller has run a second.
		act       func(t *testing.T, w *world, rec *rolloutRecorder, sr canary.StoredRollout)
		steps     int
		ended     map[canary.RolloutState]int
		rollbacks int
		active    map[canary.RolloutState]int
	}{{
		name: "ramp to success",
		act: func(t *testing.T, w *world, rec *rolloutRecorder, sr canary.StoredRollout) {
			w.endRun(w.get(sr.ID).AnalysisID, canary.PhaseSuccessful, "all metrics pass")
			time.Sleep(20 * time.Minute)
		},
		steps: 3, ended: map[canary.RolloutState]int{canary.RolloutSucceeded: 1}, active: activeCounts(0, 0, 0),
	}, {
		name: "rollback on a failed analysis",
		act: func(t *testing.T, w *world, rec *rolloutRecorder, sr canary.StoredRollout) {
			time.Sleep(2*time.Minute + 37*time.Millisecond)
			w.endRun(w.get(sr.ID).AnalysisID, canary.PhaseFailed, "errors: canary 5.1% vs baseline 0.2%")
			time.Sleep(time.Second)
		},
		steps: 1, ended: map[canary.RolloutState]int{canary.RolloutFailed: 1}, rollbacks: 1, active: activeCounts(0, 0, 0),
	}, {
		name: "failed, then retried long after",
		act: func(t *testing.T, w *world, rec *rolloutRecorder, sr canary.StoredRollout) {
			time.Sleep(37 * time.Millisecond) // between two polls
			w.endRun(w.get(sr.ID).AnalysisID, canary.PhaseFailed, "errors: canary 5.1% vs baseline 0.2%")
			time.Sleep(time.Second)
			if _, _, _, active := rec.snapshot(); !maps.Equal(active, activeCounts(0, 0, 0)) {
				t.Errorf("after the failure: active %v", active)
			}
			time.Sleep(30 * time.Minute) // past the gauge's memory of ended rollouts
			if _, err := w.svc.Act(t.Context(), "prod", sr.ID, canary.ActionRetry, "bob", "fixed"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		},
		steps: 2, ended: map[canary.RolloutState]int{canary.RolloutFailed: 1}, rollbacks: 1, active: activeCounts(0, 1, 0),
	}, {
		name: "paused through the API, then retried and aborted",
		act: func(t *testing.T, w *world, rec *rolloutRecorder, sr canary.StoredRollout) {
			if _, err := w.svc.Act(t.Context(), "prod", sr.ID, canary.ActionPause, "bob", "looking"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if _, _, _, active := rec.snapshot(); !maps.Equal(active, activeCounts(0, 0, 1)) {
				t.Errorf("after the API paused it: active %v", active)
			}
			if _, err := w.svc.Act(t.Context(), "prod", sr.ID, canary.ActionRetry, "bob", "again"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if _, err := w.svc.Act(t.Context(), "prod", sr.ID, canary.ActionAbort, "bob", "enough"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		},
		steps: 2, ended: map[canary.RolloutState]int{canary.RolloutAborted: 1}, active: activeCounts(0, 0, 0),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w, rec := meteredWorld(t)
				sr := w.start(canary.RolloutRequest{})
				runController(t, w.controller("a", 0))
				time.Sleep(time.Second)
				if _, _, _, active := rec.snapshot(); !maps.Equal(active, activeCounts(0, 1, 0)) {
					t.Errorf("while the first step runs: active %v", active)
				}
				tc.act(t, w, rec, sr)
				steps, ended, rollbacks, active := rec.snapshot()
				if want := map[string]int{"prod": tc.steps}; !maps.Equal(steps, want) {
					t.Errorf("steps applied %v, want %v", steps, want)
				}
				if !maps.Equal(ended, tc.ended) {
					t.Errorf("ended %v, want %v", ended, tc.ended)
				}
				if len(rollbacks) != tc.rollbacks {
					t.Fatalf("rollbacks %v, want %d", rollbacks, tc.rollbacks)
				}
				for _, d := range rollbacks {
					if d <= 0 || d > canary.DefaultRolloutPoll {
						t.Errorf("rollback %v after the verdict, want within a poll (%v)", d, canary.DefaultRolloutPoll)
					}
				}
				if !maps.Equal(active, tc.active) {
					t.Errorf("active at the end %v, want %v", active, tc.active)
				}
			})
		})
	}
}
