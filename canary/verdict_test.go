package canary

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestRunSummary(t *testing.T) {
	rep := Report{Verdict: VerdictFail, Score: 41.5, Reason: "error rate up", Metrics: []MetricResult{
		{Metric: "error-rate", Verdict: VerdictFail, Critical: true, Reason: "3.1x baseline",
			Evidence: Evidence{Effect: 2.1, Lower: 1.5, Upper: 2.8, Unit: UnitRelative}},
		{Metric: "latency", Verdict: VerdictPass, DryRun: true, Reason: "within margin",
			Evidence: Evidence{Effect: -0.01, Lower: -0.05, Upper: 0.02, Unit: UnitAbsolute}},
	}}
	tests := []struct {
		name    string
		phase   Phase
		steps   int
		verdict RunVerdict
		final   bool
	}{
		{"pending", PhasePending, 0, RunRunning, false},
		{"running before the first measurement", PhaseRunning, 0, RunRunning, false},
		{"running", PhaseRunning, 3, RunRunning, false},
		{"successful", PhaseSuccessful, 5, RunPass, true},
		{"failed", PhaseFailed, 2, RunFail, true},
		{"inconclusive", PhaseInconclusive, 4, RunInconclusive, true},
		{"error is never a pass", PhaseError, 1, RunInconclusive, true},
		{"cancelled is never a pass", PhaseCancelled, 0, RunInconclusive, true},
		{"unknown phase counts as running", Phase("Paused"), 1, RunRunning, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Run{Phase: tc.phase, NextStep: tc.steps + 1}
			for i := range tc.steps {
				r.Steps = append(r.Steps, Step{Number: i + 1, Report: rep})
			}
			s := r.Summary()
			if s.Verdict != tc.verdict || s.Final != tc.final || s.Steps != tc.steps {
				t.Errorf("Summary() = %s final %v steps %d; want %s final %v steps %d", s.Verdict, s.Final, s.Steps, tc.verdict, tc.final, tc.steps)
			}
			if s.Metrics == nil {
				t.Error("Metrics is nil; want an empty list")
			}
			if tc.steps == 0 {
				if !math.IsNaN(float64(s.Score)) || len(s.Metrics) != 0 {
					t.Errorf("before the first measurement: score %v, metrics %v; want NaN and none", s.Score, s.Metrics)
				}
				return
			}
			if s.Score != 41.5 || len(s.Metrics) != 2 {
				t.Fatalf("score %v, metrics %+v; want the latest measurement's", s.Score, s.Metrics)
			}
			got, _ := json.Marshal(s.Metrics)
			want := `[{"name":"error-rate","verdict":"fail","critical":true,"reason":"3.1x baseline","effect":2.1,"lower":1.5,"upper":2.8,"unit":"relative"},` +
				`{"name":"latency","verdict":"pass","dryRun":true,"reason":"within margin","effect":-0.01,"lower":-0.05,"upper":0.02,"unit":"absolute"}]`
			if string(got) != want {
				t.Errorf("metrics JSON\n got %s\nwant %s", got, want)
			}
		})
	}
	// A run whose counter was never set (NextStep 0) has taken no steps.
	if s := (&Run{Phase: PhasePending}).Summary(); s.Steps != 0 {
		t.Errorf("zero run: %d steps", s.Steps)
	}
}

func TestRunSummaryReason(t *testing.T) {
	due := time.Date(2025, 6, 1, 12, 5, 0, 0, time.FixedZone("CEST", 2*3600))
	look := Step{Number: 3, Report: Report{Verdict: VerdictInconclusive, Reason: "too few requests"}}
	tests := []struct {
		name    string
		phase   Phase
		message string
		steps   []Step
		want    string
	}{
		{"pending", PhasePending, "", nil, "warming up; the first measurement is due at 2025-06-01T10:05:00Z"},
		{"running before the first measurement", PhaseRunning, "", nil, "running; the first measurement is due at 2025-06-01T10:05:00Z"},
		{"running", PhaseRunning, "", []Step{look}, "running; look 3 of the analysis is inconclusive: too few requests"},
		{"ended with a message", PhaseFailed, "error-rate failed", []Step{look}, "Failed: error-rate failed"},
		{"ended without a message", PhaseInconclusive, "", []Step{look}, "Inconclusive: too few requests"},
		{"ended with nothing to say", PhaseSuccessful, "", nil, "Successful: the analysis ended"},
		{"error names its phase", PhaseError, "prometheus unreachable", []Step{look}, "Error: prometheus unreachable"},
		{"cancelled names its phase", PhaseCancelled, "", nil, "Cancelled: the analysis ended"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Run{Phase: tc.phase, Message: tc.message, NextAt: due, Steps: tc.steps, NextStep: len(tc.steps) + 1}
			if got := r.Summary().Reason; got != tc.want {
				t.Errorf("Reason = %q; want %q", got, tc.want)
			}
		})
	}
}
