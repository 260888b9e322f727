package experiments

import "math"

// MetricKind says how a metric turns a user's tracking events into a number.
type MetricKind string

// Metric kinds. Every kind is analysed per user (the randomisation unit):
// users who were exposed but never sent the event count as zeros.
const (
	// KindConversion: 1 if the user sent the event at least once, else 0.
	KindConversion MetricKind = "conversion"
	// KindCount: how many times the user sent the event.
	KindCount MetricKind = "count"
	// KindSum: the sum of the event's values for the user (revenue, say).
	KindSum MetricKind = "sum"
	// KindMean: the mean event value, Σ values / Σ events over all users,
	// analysed as a ratio with the delta method.
	KindMean MetricKind = "mean"
	// KindRatio: Σ numerator / Σ denominator over all users, each side a
	// count or sum of its own event, analysed with the delta method.
	KindRatio MetricKind = "ratio"
)

// Role is what a metric is for in the decision.
type Role string

// Metric roles.
const (
	// RoleGoal metrics decide whether to ship; they are corrected for multiple testing.
	RoleGoal Role = "goal"
	// RoleSecondary metrics are reported but do not decide.
	RoleSecondary Role = "secondary"
	// RoleGuardrail metrics block shipping when they get worse; they are
	// tested one-sided for harm and never corrected away.
	RoleGuardrail Role = "guardrail"
)

// Direction says which way a metric should move.
type Direction string

// Directions.
const (
	HigherIsBetter Direction = "higher_is_better"
	LowerIsBetter  Direction = "lower_is_better"
)

// Aggregate says how one side of a ratio metric combines a user's events.
type Aggregate string

// Aggregates.
const (
	AggregateCount Aggregate = "count" // number of events
	AggregateSum   Aggregate = "sum"   // sum of event values
)

// Part is one side of a ratio metric.
type Part struct {
	Event     string    `json:"event"`
	Aggregate Aggregate `json:"aggregate"`
}

// Metric defines what is measured on tracking events.
type Metric struct {
	// Key names the metric, unique within its experiment.
	Key  string     `json:"key"`
	Kind MetricKind `json:"kind"`
	// Event is the tracking event for conversion, count, sum and mean metrics.
	Event string `json:"event,omitempty"`
	// Numerator and Denominator define a ratio metric (and only a ratio metric).
	Numerator   *Part     `json:"numerator,omitempty"`
	Denominator *Part     `json:"denominator,omitempty"`
	Role        Role      `json:"role"`
	Direction   Direction `json:"direction,omitempty"` // default HigherIsBetter
	// Cap, when > 0, caps each user's value (the numerator for mean and ratio
	// metrics) to [-Cap, Cap] so that a few outliers cannot dominate.
	Cap float64 `json:"cap,omitempty"`
}

// Tally is what one user did with one event: how many times it was tracked
// and the sum of the tracked values (an event without a value adds 0).
type Tally struct {
	Count int64   `json:"count"`
	Sum   float64 `json:"sum"`
}

// IsRatio reports whether the metric is analysed as a ratio of two per-user
// sums (KindMean and KindRatio) and so needs the denominator statistics.
func (m *Metric) IsRatio() bool { return m.Kind == KindMean || m.Kind == KindRatio }

// NumeratorEvent is the event whose [Tally] is passed as num to [Metric.UserValue].
func (m *Metric) NumeratorEvent() string {
	if m.Kind == KindRatio && m.Numerator != nil {
		return m.Numerator.Event
	}
	return m.Event
}

// DenominatorEvent is the event whose [Tally] is passed as den to
// [Metric.UserValue], or "" when the metric has no denominator.
func (m *Metric) DenominatorEvent() string {
	switch {
	case m.Kind == KindMean:
		return m.Event
	case m.Kind == KindRatio && m.Denominator != nil:
		return m.Denominator.Event
	}
	return ""
}

// UserValue turns one user's tallies into the metric's per-user values:
// x for every kind, and the denominator y for mean and ratio metrics (0
// otherwise). num is the tally of [Metric.NumeratorEvent] and den that of
// [Metric.DenominatorEvent]. The cap applies to x. A non-finite sum counts
// as 0, so bad input cannot poison the statistics.
func (m *Metric) UserValue(num, den Tally) (x, y float64) {
	switch m.Kind {
	case KindConversion:
		if num.Count > 0 {
			x = 1
		}
		return x, 0
	case KindCount:
		x = float64(num.Count)
	case KindSum:
		x = finite(num.Sum)
	case KindMean:
		x, y = finite(num.Sum), float64(den.Count)
	case KindRatio:
		x, y = m.Numerator.of(num), m.Denominator.of(den)
	}
	if m.Cap > 0 {
		x = max(-m.Cap, min(x, m.Cap))
	}
	return x, y
}

func (p *Part) of(t Tally) float64 {
	if p == nil {
		return 0
	}
	if p.Aggregate == AggregateSum {
		return finite(t.Sum)
	}
	return float64(t.Count)
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func (m *Metric) validate(ps *problems, path string) {
	checkKey(ps, path+".key", m.Key)
	switch m.Kind {
	case KindConversion, KindCount, KindSum, KindMean:
		checkName(ps, path+".event", m.Event)
		if m.Numerator != nil {
			ps.add(path+".numerator", "only a ratio metric has a numerator; use event")
		}
		if m.Denominator != nil {
			ps.add(path+".denominator", "only a ratio metric has a denominator")
		}
	case KindRatio:
		if m.Event != "" {
			ps.add(path+".event", "a ratio metric takes numerator and denominator instead")
		}
		m.Numerator.validate(ps, path+".numerator")
		m.Denominator.validate(ps, path+".denominator")
	case "":
		ps.add(path+".kind", "is required: conversion, count, sum, mean or ratio")
	default:
		ps.add(path+".kind", "unknown kind %q; want conversion, count, sum, mean or ratio", m.Kind)
	}
	switch m.Role {
	case RoleGoal, RoleSecondary, RoleGuardrail:
	case "":
		ps.add(path+".role", "is required: goal, secondary or guardrail")
	default:
		ps.add(path+".role", "unknown role %q; want goal, secondary or guardrail", m.Role)
	}
	switch m.Direction {
	case "", HigherIsBetter, LowerIsBetter:
	default:
		ps.add(path+".direction", "unknown direction %q; want higher_is_better or lower_is_better", m.Direction)
	}
	switch {
	case math.IsNaN(m.Cap) || math.IsInf(m.Cap, 0) || m.Cap < 0:
		ps.add(path+".cap", "must be a finite number ≥ 0 (0 means no cap)")
	case m.Cap > 0 && m.Kind == KindConversion:
		ps.add(path+".cap", "a conversion is 0 or 1 and cannot be capped")
	}
}

func (p *Part) validate(ps *problems, path string) {
	if p == nil {
		ps.add(path, "is required for a ratio metric")
		return
	}
	checkName(ps, path+".event", p.Event)
	switch p.Aggregate {
	case AggregateCount, AggregateSum:
	default:
		ps.add(path+".aggregate", "unknown aggregate %q; want count or sum", p.Aggregate)
	}
}
