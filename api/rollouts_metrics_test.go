package api

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/redis"
)

// TestRolloutMetricsExposed: a rollout started through the API and ramped
// by a controller to 100 % shows on /metrics as steps applied, an ended
// rollout and the active gauge going from running to none; a rollback's
// delay lands in the histogram.
func TestRolloutMetricsExposed(t *testing.T) {
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	var (
		mu  sync.Mutex
		now = time.Now().UTC()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var rm *RolloutMetrics
	var rs *canary.RolloutService
	h := newHarnessOn(t, raw, func(c *Config) {
		var err error
		if rm, err = NewRolloutMetrics(c.Registry); err != nil {
			t.Fatal(err)
		}
		rs, err = canary.NewRolloutService(canary.RolloutServiceConfig{Rollouts: raw, Analyses: raw, Flags: c.Flags, FlagReader: c.Store, Now: clock, Metrics: rm})
		if err != nil {
			t.Fatal(err)
		}
		c.Analyses, c.Rollouts = raw, rs
	})
	h.createEnv("prod", rolloutFlags)
	ctl, err := canary.NewRolloutController(canary.RolloutControllerConfig{Service: rs, Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	metrics := func() string {
		t.Helper()
		r := h.do(req{method: "GET", path: "/metrics"})
		if r.status != http.StatusOK {
			t.Fatalf("/metrics: %d", r.status)
		}
		return string(r.body)
	}
	expect := func(when string, want ...string) {
		t.Helper()
		got := metrics()
		for _, w := range want {
			if !strings.Contains(got, w+"\n") {
				t.Errorf("%s: /metrics lacks %s", when, w)
			}
		}
	}

	body := `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10,"minDuration":"1m"},{"percent":100}]}`
	if r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin, body: body}); r.status != http.StatusCreated {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	if _, err := ctl.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	expect("after the start",
		`flagpole_rollout_steps_applied_total{env="prod"} 1`,
		`flagpole_rollout_active{state="running"} 1`,
		`flagpole_rollout_active{state="paused"} 0`,
		`flagpole_rollout_active{state="scheduled"} 0`,
	)
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := ctl.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	rm.RolledBack(300 * time.Millisecond)
	expect("after the ramp",
		`flagpole_rollout_steps_applied_total{env="prod"} 2`,
		`flagpole_rollout_ended_total{state="succeeded"} 1`,
		`flagpole_rollout_active{state="running"} 0`,
		`flagpole_rollout_rollback_seconds_bucket{le="0.2"} 0`,
		`flagpole_rollout_rollback_seconds_bucket{le="0.3"} 1`,
		`flagpole_rollout_rollback_seconds_count 1`,
	)
	if got := metrics(); strings.Contains(got, `"ro_`) || strings.Contains(got, `"checkout"`) {
		t.Errorf("rollout IDs or flag keys in labels:\n%s", got)
	}
}

// TestRolloutMetricsRegistry: a second NewRolloutMetrics on one registry
// shares the first's series; a clashing metric of the same name is an
// error.
func TestRolloutMetricsRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewRolloutMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRolloutMetrics(reg)
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	a.RolloutEnded(canary.RolloutFailed)
	b.RolloutEnded(canary.RolloutFailed)
	var nilMetrics *RolloutMetrics
	nilMetrics.StepApplied("prod") // a nil recorder does nothing
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "flagpole_rollout_ended_total" {
			found = true
			if got := mf.GetMetric()[0].GetCounter().GetValue(); got != 2 {
				t.Errorf("ended_total %v, want 2 (shared)", got)
			}
		}
	}
	if !found {
		t.Error("flagpole_rollout_ended_total not gathered")
	}
	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "flagpole_rollout_ended_total", Help: "not ours"}))
	if _, err := NewRolloutMetrics(clash); err == nil {
		t.Error("a clashing metric registered without an error")
	}
}
