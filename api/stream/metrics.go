package stream

import "github.com/prometheus/client_golang/prometheus"

// metrics are the hub's Prometheus series.
type metrics struct {
	subscribers prometheus.Gauge
	sent        *prometheus.CounterVec
	drops       prometheus.Counter
	resyncs     prometheus.Counter
}

func newMetrics() metrics {
	return metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagpole_stream_subscribers",
			Help: "Change-stream subscribers connected now.",
		}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_stream_events_sent_total",
			Help: "Change-stream messages written to subscribers, by type (snapshot, change, resume, heartbeat).",
		}, []string{"type"}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_stream_drops_total",
			Help: "Subscribers dropped because they fell behind (they reconnect and resync).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_stream_resyncs_total",
			Help: "Reconnections whose Last-Event-ID was not current and that were sent a fresh snapshot.",
		}),
	}
}

// register registers every series, stopping at the first error.
func (m metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.subscribers, m.sent, m.drops, m.resyncs} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
