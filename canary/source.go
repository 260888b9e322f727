// Package canary is Flagpole's canary analysis: analysis templates, the judge
// that turns canary and baseline measurements into pass / fail / inconclusive
// verdicts with evidence, analysis runs and progressive flag rollouts.
//
// The judge is pure (no I/O). Metrics come from a [MetricSource], implemented by
// adapters such as canary/prometheus.
package canary

import (
	"context"
	"errors"
	"time"
)

// ErrSource wraps every error a MetricSource returns when the source could not
// answer (unreachable, timed out, bad query). A measurement that hits it is an
// Error measurement, never a pass.
var ErrSource = errors.New("metric source error")

// Element is one labelled value of an instant query.
type Element struct {
	Labels map[string]string
	Value  float64
}

// Point is one sample of a range query.
type Point struct {
	T time.Time
	V float64
}

// Series is one labelled series of a range query.
type Series struct {
	Labels map[string]string
	Points []Point
}

// MetricSource answers PromQL-style queries. Implementations return errors
// wrapping ErrSource, with a message that names the query's problem.
type MetricSource interface {
	// Instant evaluates query at one instant.
	Instant(ctx context.Context, query string, at time.Time) ([]Element, error)
	// Range evaluates query over [start, end] at the given step.
	Range(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]Series, error)
}
