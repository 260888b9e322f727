package deploy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/internal/promreg"
)

// senderMetrics are the webhook sender's collectors; a nil one records
// nothing.
type senderMetrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	depth      *prometheus.GaugeVec
	enqueued   *prometheus.CounterVec
	errs       *prometheus.CounterVec
}

// Delivery results as counted by flagpole_webhook_deliveries_total.
const (
	resultDelivered = "delivered"
	resultRetry     = "retry"
	resultDead      = "dead"
	resultLost      = "lost" // the claim had been taken over; the attempt was not recorded
)

func newSenderMetrics(reg prometheus.Registerer) (*senderMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &senderMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_webhook_deliveries_total",
			Help: "Webhook delivery attempts by subscription and result: delivered, retry (will be tried again), dead (given up) or lost (another worker had taken the delivery over).",
		}, []string{"subscription", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flagpole_webhook_delivery_duration_seconds",
			Help:    "How long webhook delivery attempts took, from sending the request to the end of the response or the failure, by subscription.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"subscription"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_webhook_queue_depth",
			Help: "Webhook deliveries in the outbox by state: due (should be sent now), pending (due or scheduled for a retry) and dead (given up, awaiting a redrive).",
		}, []string{"state"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_webhook_notifications_total",
			Help: "Notifications enqueued for webhook delivery, by event.",
		}, []string{"event"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_webhook_outbox_errors_total",
			Help: "Outbox operations of the webhook sender that failed (the store unavailable or an internal error), by operation.",
		}, []string{"operation"}),
	}
	var err error
	if m.deliveries, err = promreg.Register(reg, m.deliveries); err != nil {
		return nil, err
	}
	if m.latency, err = promreg.Register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.depth, err = promreg.Register(reg, m.depth); err != nil {
		return nil, err
	}
	if m.enqueued, err = promreg.Register(reg, m.enqueued); err != nil {
		return nil, err
	}
	if m.errs, err = promreg.Register(reg, m.errs); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *senderMetrics) attempt(sub, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(sub, result).Inc()
	if d > 0 {
		m.latency.WithLabelValues(sub).Observe(d.Seconds())
	}
}

func (m *senderMetrics) stats(st canary.OutboxStats) {
	if m == nil {
		return
	}
	m.depth.WithLabelValues("due").Set(float64(st.Due))
	m.depth.WithLabelValues("pending").Set(float64(st.Pending))
	m.depth.WithLabelValues("dead").Set(float64(st.Dead))
}

func (m *senderMetrics) notified(e canary.EventType) {
	if m != nil {
		m.enqueued.WithLabelValues(string(e)).Inc()
	}
}

func (m *senderMetrics) outboxError(op string) {
	if m != nil {
		m.errs.WithLabelValues(op).Inc()
	}
}
