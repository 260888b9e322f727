package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/internal/promreg"
)

// RolloutMetrics exposes progressive flag rollouts on /metrics. It
// implements canary.RolloutMetrics for the rollout service and controller
// of one process (give it to canary.RolloutServiceConfig.Metrics). Labels
// are environments and rollout states, both bounded; never rollout IDs or
// flag keys.
type RolloutMetrics struct {
	steps    *prometheus.CounterVec // env
	ended    *prometheus.CounterVec // state
	rollback prometheus.Histogram
	active   *prometheus.GaugeVec // state
}

var _ canary.RolloutMetrics = (*RolloutMetrics)(nil)

// NewRolloutMetrics registers the rollout metrics on reg, reusing any
// already registered there (a second service on the same registry shares
// them). Errors: a registration conflict with a different metric of the
// same name.
func NewRolloutMetrics(reg prometheus.Registerer) (*RolloutMetrics, error) {
	m := &RolloutMetrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_rollout_steps_applied_total",
			Help: "Rollout steps whose split was written to the flag (a start, a next step, a retried step), by environment.",
		}, []string{"env"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_rollout_ended_total",
			Help: "Rollouts that ended, by state: succeeded, failed (rolled back or left by a failed analysis), aborted (by a person or the kill switch).",
		}, []string{"state"}),
		rollback: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flagpole_rollout_rollback_seconds",
			Help:    "Time from a failed analysis verdict to the flag serving the old variant to everyone again.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10},
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_rollout_active",
			Help: "Active rollouts by state (scheduled, running, paused) as this replica last saw them; sum over replicas.",
		}, []string{"state"}),
	}
	var err error
	if m.steps, err = promreg.Register(reg, m.steps); err != nil {
		return nil, err
	}
	if m.ended, err = promreg.Register(reg, m.ended); err != nil {
		return nil, err
	}
	if m.rollback, err = promreg.Register(reg, m.rollback); err != nil {
		return nil, err
	}
	if m.active, err = promreg.Register(reg, m.active); err != nil {
		return nil, err
	}
	return m, nil
}

// StepApplied implements canary.RolloutMetrics.
func (m *RolloutMetrics) StepApplied(env string) {
	if m != nil {
		m.steps.WithLabelValues(env).Inc()
	}
}

// RolloutEnded implements canary.RolloutMetrics.
func (m *RolloutMetrics) RolloutEnded(state canary.RolloutState) {
	if m != nil {
		m.ended.WithLabelValues(string(state)).Inc()
	}
}

// RolledBack implements canary.RolloutMetrics.
func (m *RolloutMetrics) RolledBack(d time.Duration) {
	if m != nil {
		m.rollback.Observe(d.Seconds())
	}
}

// ActiveRollouts implements canary.RolloutMetrics.
func (m *RolloutMetrics) ActiveRollouts(counts map[canary.RolloutState]int) {
	if m == nil {
		return
	}
	for st, n := range counts {
		m.active.WithLabelValues(string(st)).Set(float64(n))
	}
}
