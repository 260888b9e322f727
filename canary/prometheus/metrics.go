package prometheus

import (
	"fmt"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/internal/promreg"
)

// metrics are the Source's own instruments.
type metrics struct {
	latency *prom.HistogramVec
	errors  *prom.CounterVec
	retries *prom.CounterVec
}

// newMetrics builds the instruments and registers them with reg, if any; an
// instrument already registered by another Source is shared.
func newMetrics(reg prom.Registerer) (*metrics, error) {
	m := &metrics{
		latency: prom.NewHistogramVec(prom.HistogramOpts{
			Name:    "flagpole_prometheus_query_duration_seconds",
			Help:    "Time to answer one metric query from Prometheus, retries included, by kind (instant, range).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		errors: prom.NewCounterVec(prom.CounterOpts{
			Name: "flagpole_prometheus_query_errors_total",
			Help: "Metric queries to Prometheus that failed, by kind and reason (unreachable, timeout, bad_query, ...).",
		}, []string{"kind", "reason"}),
		retries: prom.NewCounterVec(prom.CounterOpts{
			Name: "flagpole_prometheus_query_retries_total",
			Help: "Metric query attempts to Prometheus that failed transiently and were retried, by kind and reason.",
		}, []string{"kind", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.latency, err = promreg.Register(reg, m.latency); err != nil {
		return nil, fmt.Errorf("prometheus: Config.Registerer: %w", err)
	}
	if m.errors, err = promreg.Register(reg, m.errors); err != nil {
		return nil, fmt.Errorf("prometheus: Config.Registerer: %w", err)
	}
	if m.retries, err = promreg.Register(reg, m.retries); err != nil {
		return nil, fmt.Errorf("prometheus: Config.Registerer: %w", err)
	}
	return m, nil
}
