package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "things_total", Help: "Things."}
	first, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatalf("first registration: %v", err)
	}
	second, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	if first != second {
		t.Error("the second registration did not return the collector registered first")
	}
	second.Inc()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Errorf("gathered %v (%v), want one counter at 1", mfs, err)
	}

	cases := []struct {
		name     string
		register func() error
	}{
		{name: "same name, other labels", register: func() error {
			_, err := Register(reg, prometheus.NewCounterVec(opts, []string{"kind"}))
			return err
		}},
		{name: "same description, other type", register: func() error {
			_, err := Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "things_total", Help: "Things."}))
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.register(); err == nil {
				t.Error("a clashing collector was accepted")
			}
		})
	}
}
