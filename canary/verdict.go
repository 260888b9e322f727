package canary

import (
	"fmt"
	"time"
)

// RunVerdict is what a run amounts to for the clients that act on it
// (orchestrators, CD gates, the API's verdict read): one of RunPass,
// RunFail, RunInconclusive and RunRunning.
type RunVerdict string

// The run verdicts.
const (
	// RunPass: the run ended Successful.
	RunPass RunVerdict = "pass"
	// RunFail: the run ended Failed.
	RunFail RunVerdict = "fail"
	// RunInconclusive: the run ended without a decision: Inconclusive, Error
	// (the metrics could not be measured) or Cancelled. Never a pass.
	RunInconclusive RunVerdict = "inconclusive"
	// RunRunning: the run is Pending or Running; the verdict may change.
	RunRunning RunVerdict = "running"
)

// verdictOfPhase maps a run's phase onto its verdict and reports whether it
// is final (the phase is terminal, so the verdict will not change). An
// unknown phase counts as running.
func verdictOfPhase(p Phase) (v RunVerdict, final bool) {
	switch p {
	case PhaseSuccessful:
		return RunPass, true
	case PhaseFailed:
		return RunFail, true
	case PhaseInconclusive, PhaseError, PhaseCancelled:
		return RunInconclusive, true
	}
	return RunRunning, false
}

// Summary is a run's verdict with the figures of its latest measurement:
// the verdict read that the API and the orchestrator integrations share.
type Summary struct {
	Verdict RunVerdict
	// Reason says in a sentence why: how the run ended, or how far a
	// running one has got.
	Reason string
	// Final reports that the run has ended and Verdict will not change.
	Final bool
	// Score is the latest measurement's score, NaN before the first.
	Score Float
	// Steps counts the measurements taken.
	Steps int
	// Metrics are the latest measurement's metric verdicts, in the
	// template's order; empty (never nil) before the first.
	Metrics []MetricSummary
}

// MetricSummary is one metric's latest verdict with its effect estimate, as
// verdict reads show it.
type MetricSummary struct {
	Metric   string     `json:"name"`
	Verdict  Verdict    `json:"verdict"`
	Critical bool       `json:"critical,omitempty"`
	DryRun   bool       `json:"dryRun,omitempty"`
	Reason   string     `json:"reason"`
	Effect   Float      `json:"effect"`
	Lower    Float      `json:"lower"`
	Upper    Float      `json:"upper"`
	Unit     EffectUnit `json:"unit,omitempty"`
}

// Summary summarises the run for the clients that act on its verdict. It
// never fails.
func (r *Run) Summary() Summary {
	s := Summary{Score: nan, Steps: max(r.NextStep-1, 0), Metrics: []MetricSummary{}}
	s.Verdict, s.Final = verdictOfPhase(r.Phase)
	last := r.Last()
	s.Reason = r.summaryReason(s.Final, last)
	if last != nil {
		s.Score = last.Score
		for _, m := range last.Metrics {
			s.Metrics = append(s.Metrics, MetricSummary{
				Metric: m.Metric, Verdict: m.Verdict, Critical: m.Critical, DryRun: m.DryRun, Reason: m.Reason,
				Effect: m.Evidence.Effect, Lower: m.Evidence.Lower, Upper: m.Evidence.Upper, Unit: m.Evidence.Unit,
			})
		}
	}
	return s
}

// summaryReason words Summary.Reason. An ended run gives its phase and its
// message, else its last measurement's reason; a running one gives its
// latest look or when its first is due.
func (r *Run) summaryReason(final bool, last *Report) string {
	switch {
	case final:
		why := r.Message
		if why == "" && last != nil {
			why = last.Reason
		}
		if why == "" {
			why = "the analysis ended"
		}
		return string(r.Phase) + ": " + why
	case r.Phase == PhasePending:
		return "warming up; the first measurement is due at " + r.NextAt.UTC().Format(time.RFC3339)
	case last != nil:
		return fmt.Sprintf("running; look %d of the analysis is %s: %s", r.Steps[len(r.Steps)-1].Number, last.Verdict, last.Reason)
	}
	return "running; the first measurement is due at " + r.NextAt.UTC().Format(time.RFC3339)
}
