package api

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus collectors. Label values are bounded:
// routes are templates, flags and variants are those of loaded flag sets
// (series of removed flags are deleted), and no label carries user data.
type metrics struct {
	evaluations   *prometheus.CounterVec   // environment, flag, variant, reason
	evalLatency   *prometheus.HistogramVec // kind: single, bulk
	httpRequests  *prometheus.CounterVec   // route, method, code
	httpLatency   *prometheus.HistogramVec // route, method
	setVersion    *prometheus.GaugeVec     // environment
	setFlags      *prometheus.GaugeVec     // environment
	reloads       *prometheus.CounterVec   // result: ok, invalid, error
	rateLimited   prometheus.Counter
	evalSingle    prometheus.Observer
	evalBulk      prometheus.Observer
	storeDegraded prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_flag_evaluations_total",
			Help: "Flag evaluations served over OFREP, by environment, flag, variant and reason (variant is empty when the code default applies or on error).",
		}, []string{"environment", "flag", "variant", "reason"}),
		evalLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagpole_ofrep_evaluation_duration_seconds",
			Help:    "Time to evaluate an OFREP request in memory (parse, evaluate, encode), by kind (single, bulk).",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025},
		}, []string{"kind"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_http_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagpole_http_request_duration_seconds",
			Help:    "HTTP request latency by route template and method.",
			Buckets: []float64{5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		setVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_flagset_version",
			Help: "Version of the flag set this replica serves, by environment.",
		}, []string{"environment"}),
		setFlags: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_flagset_flags",
			Help: "Number of flags in the flag set this replica serves, by environment.",
		}, []string{"environment"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_flagset_reloads_total",
			Help: "Flag set loads from the store by result: ok (compiled and now served), invalid (a stored set failed to compile; the last good one is kept), error (the store could not be read).",
		}, []string{"result"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_ofrep_rate_limited_total",
			Help: "OFREP requests refused with 429 because the key exceeded its rate.",
		}),
		storeDegraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagpole_api_store_degraded",
			Help: "1 while this replica cannot reach the flag store and serves the last flag sets it loaded, else 0.",
		}),
	}
	m.evalSingle = m.evalLatency.WithLabelValues("single")
	m.evalBulk = m.evalLatency.WithLabelValues("bulk")
	for _, r := range []string{"ok", "invalid", "error"} {
		m.reloads.WithLabelValues(r)
	}
	cs := []prometheus.Collector{m.evaluations, m.evalLatency, m.httpRequests, m.httpLatency, m.setVersion, m.setFlags, m.reloads, m.rateLimited, m.storeDegraded}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// The standard collectors may already be registered by the caller.
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
