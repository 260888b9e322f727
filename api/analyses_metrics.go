package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/internal/promreg"
)

// AnalysisMetrics exposes canary analysis on /metrics. It implements
// canary.RunnerMetrics for a runner in the same process; the API adds the
// runs it starts and cancels. Labels are template and metric names (bounded
// by the templates stored; a deleted template's series are removed) and
// fixed sets (phases, verdicts, statistics), never run IDs. Gauges hold the
// latest measurement this replica recorded.
type AnalysisMetrics struct {
	runs     *prometheus.CounterVec // template, phase
	steps    *prometheus.CounterVec // template, verdict
	verdicts *prometheus.CounterVec // template, metric, verdict
	score    *prometheus.GaugeVec   // template
	evidence *prometheus.GaugeVec   // template, metric, stat
	errs     *prometheus.CounterVec // template, metric
	judge    prometheus.Histogram
	lag      prometheus.Histogram
}

var _ canary.RunnerMetrics = (*AnalysisMetrics)(nil)

// NewAnalysisMetrics registers the analysis metrics on reg, reusing any
// already registered there (one runner and one server share them). Errors:
// a registration conflict with a different metric of the same name.
func NewAnalysisMetrics(reg prometheus.Registerer) (*AnalysisMetrics, error) {
	m := &AnalysisMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_canary_runs_total",
			Help: "Analysis runs entering each phase (Pending when started; Running, then Successful, Failed, Inconclusive, Error or Cancelled), by template.",
		}, []string{"template", "phase"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_canary_measurements_total",
			Help: "Analysis measurements recorded by this replica, by template and overall verdict (pass, fail, inconclusive, error).",
		}, []string{"template", "verdict"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_canary_metric_verdicts_total",
			Help: "Per-metric verdicts of recorded measurements, by template, metric and verdict.",
		}, []string{"template", "metric", "verdict"}),
		score: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_canary_score",
			Help: "Score (0-100, for humans; never the decision) of the latest measurement this replica recorded, by template.",
		}, []string{"template"}),
		evidence: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_canary_metric_evidence",
			Help: "Evidence behind the latest verdict of each metric recorded by this replica: stat is effect, lower, upper (the anytime-valid interval), pvalue, evalue, mde, baseline or canary (arm estimates).",
		}, []string{"template", "metric", "stat"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_canary_measurement_errors_total",
			Help: "Metrics of recorded measurements that could not be measured (the source failed or answered nonsense), by template and metric.",
		}, []string{"template", "metric"}),
		judge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flagpole_canary_judge_duration_seconds",
			Help:    "Time to judge one measurement.",
			Buckets: []float64{1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1},
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flagpole_canary_schedule_lag_seconds",
			Help:    "How late measurements started after they were due.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
		}),
	}
	var err error
	if m.runs, err = promreg.Register(reg, m.runs); err != nil {
		return nil, err
	}
	if m.steps, err = promreg.Register(reg, m.steps); err != nil {
		return nil, err
	}
	if m.verdicts, err = promreg.Register(reg, m.verdicts); err != nil {
		return nil, err
	}
	if m.score, err = promreg.Register(reg, m.score); err != nil {
		return nil, err
	}
	if m.evidence, err = promreg.Register(reg, m.evidence); err != nil {
		return nil, err
	}
	if m.errs, err = promreg.Register(reg, m.errs); err != nil {
		return nil, err
	}
	if m.judge, err = promreg.Register(reg, m.judge); err != nil {
		return nil, err
	}
	if m.lag, err = promreg.Register(reg, m.lag); err != nil {
		return nil, err
	}
	return m, nil
}

// PhaseChanged implements canary.RunnerMetrics.
func (m *AnalysisMetrics) PhaseChanged(template string, from, to canary.Phase) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(template, string(to)).Inc()
}

// StepRecorded implements canary.RunnerMetrics.
func (m *AnalysisMetrics) StepRecorded(template string, s *canary.Step) {
	if m == nil || s == nil {
		return
	}
	rep := &s.Report
	m.steps.WithLabelValues(template, string(rep.Verdict)).Inc()
	m.score.WithLabelValues(template).Set(float64(rep.Score))
	for i := range rep.Metrics {
		r := &rep.Metrics[i]
		m.verdicts.WithLabelValues(template, r.Metric, string(r.Verdict)).Inc()
		ev := &r.Evidence
		set := func(stat string, v canary.Float) {
			m.evidence.WithLabelValues(template, r.Metric, stat).Set(float64(v))
		}
		set("effect", ev.Effect)
		set("lower", ev.Lower)
		set("upper", ev.Upper)
		set("pvalue", ev.PValue)
		set("evalue", ev.EValue)
		set("mde", ev.MDE)
		if ev.Baseline != nil {
			set("baseline", ev.Baseline.Value)
		}
		if ev.Canary != nil {
			set("canary", ev.Canary.Value)
		}
	}
}

// MeasurementError implements canary.RunnerMetrics.
func (m *AnalysisMetrics) MeasurementError(template, metric string) {
	if m != nil {
		m.errs.WithLabelValues(template, metric).Inc()
	}
}

// JudgeDuration implements canary.RunnerMetrics.
func (m *AnalysisMetrics) JudgeDuration(d time.Duration) {
	if m != nil {
		m.judge.Observe(d.Seconds())
	}
}

// ScheduleLag implements canary.RunnerMetrics.
func (m *AnalysisMetrics) ScheduleLag(d time.Duration) {
	if m != nil {
		m.lag.Observe(d.Seconds())
	}
}

// forgetTemplate removes a deleted template's series.
func (m *AnalysisMetrics) forgetTemplate(template string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"template": template}
	m.runs.DeletePartialMatch(l)
	m.steps.DeletePartialMatch(l)
	m.verdicts.DeletePartialMatch(l)
	m.score.DeletePartialMatch(l)
	m.evidence.DeletePartialMatch(l)
	m.errs.DeletePartialMatch(l)
}
