package redis

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/internal/promreg"
)

// metrics are the store's Prometheus collectors; a nil *metrics records nothing.
type metrics struct {
	latency *prometheus.HistogramVec
	errs    *prometheus.CounterVec
	up      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagpole_store_operation_duration_seconds",
			Help:    "Latency of flag and key store operations against Redis, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"operation"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_store_errors_total",
			Help: "Store operations that failed, by operation and kind (unavailable or internal); " +
				"expected outcomes such as not found or version conflicts are not counted.",
		}, []string{"operation", "kind"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagpole_redis_connected",
			Help: "1 while the last periodic ping of Redis succeeded, 0 while it fails.",
		}),
	}
	var err error
	m.latency, err = promreg.Register(reg, m.latency)
	if err != nil {
		return nil, err
	}
	m.errs, err = promreg.Register(reg, m.errs)
	if err != nil {
		return nil, err
	}
	m.up, err = promreg.Register(reg, m.up)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// start begins timing op; the returned func records its latency and, for
// failures other than the expected outcomes, an error.
func (m *metrics) start(op string) func(error) {
	if m == nil {
		return func(error) {}
	}
	t0 := time.Now()
	return func(err error) {
		m.latency.WithLabelValues(op).Observe(time.Since(t0).Seconds())
		if err == nil || expected(err) {
			return
		}
		kind := "internal"
		if errors.Is(err, flags.ErrUnavailable) {
			kind = "unavailable"
		}
		m.errs.WithLabelValues(op, kind).Inc()
	}
}

func expected(err error) bool {
	var in *flags.InputError
	return errors.Is(err, flags.ErrNotFound) || errors.Is(err, flags.ErrExists) || errors.Is(err, flags.ErrConflict) ||
		errors.Is(err, auth.ErrNotFound) || errors.Is(err, auth.ErrExists) || errors.As(err, &in)
}

func (m *metrics) setUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}
