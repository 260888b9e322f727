package workload

import (
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{name: "empty arm", opts: Options{Arms: []string{"a", ""}}, want: "Options.Arms[1] is empty"},
		{name: "duplicate arm", opts: Options{Arms: []string{"a", "a"}}, want: `Options.Arms[1] "a" is a duplicate`},
		{name: "negative tick", opts: Options{Tick: -time.Second}, want: "Options.Tick"},
		{name: "unsorted buckets", opts: Options{Buckets: []float64{1, 0.5}}, want: "Options.Buckets[1]"},
		{name: "infinite bucket", opts: Options{Buckets: []float64{math.Inf(1)}}, want: "Options.Buckets[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New(tc.opts)
			if err == nil {
				w.Close()
				t.Fatalf("New(%+v) = nil error, want one containing %q", tc.opts, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBehaviorValidation(t *testing.T) {
	w := Start(t, Options{})
	good := Behavior{RPS: 10, ErrorRate: 0.1, Latency: Latency{Median: 50 * time.Millisecond, Spread: 0.3}, Gauge: 2}
	if err := w.Set(Canary, good); err != nil {
		t.Fatalf("Set(valid) = %v", err)
	}
	tests := []struct {
		name   string
		change func(*Behavior)
		want   string
	}{
		{name: "negative rps", change: func(b *Behavior) { b.RPS = -1 }, want: "Behavior.RPS"},
		{name: "rps too high", change: func(b *Behavior) { b.RPS = MaxRPS + 1 }, want: "Behavior.RPS"},
		{name: "nan rps", change: func(b *Behavior) { b.RPS = math.NaN() }, want: "Behavior.RPS"},
		{name: "error rate above one", change: func(b *Behavior) { b.ErrorRate = 1.5 }, want: "Behavior.ErrorRate"},
		{name: "nan error rate", change: func(b *Behavior) { b.ErrorRate = math.NaN() }, want: "Behavior.ErrorRate"},
		{name: "negative median", change: func(b *Behavior) { b.Latency.Median = -time.Millisecond }, want: "Behavior.Latency.Median"},
		{name: "huge spread", change: func(b *Behavior) { b.Latency.Spread = 50 }, want: "Behavior.Latency.Spread"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := w.Update(Canary, tc.change)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `arm "canary"`) {
				t.Fatalf("Update = %v, want an error naming %q and the arm", err, tc.want)
			}
			if got, _ := w.Behavior(Canary); got != good {
				t.Errorf("behaviour after a rejected update = %+v, want unchanged %+v", got, good)
			}
		})
	}
	t.Run("unknown arm", func(t *testing.T) {
		for name, err := range map[string]error{
			"Set":      w.Set("nope", good),
			"Generate": w.Generate("nope", 1),
			"Snapshot": func() error { _, err := w.Snapshot("nope"); return err }(),
			"Behavior": func() error { _, err := w.Behavior("nope"); return err }(),
		} {
			if !errors.Is(err, ErrUnknownArm) {
				t.Errorf("%s(unknown arm) = %v, want ErrUnknownArm", name, err)
			}
		}
	})
	t.Run("generate bounds", func(t *testing.T) {
		if err := w.Generate(Canary, -1); err == nil {
			t.Error("Generate(-1) = nil, want an error")
		}
		if err := w.Generate(Canary, MaxGenerate+1); err == nil {
			t.Error("Generate(MaxGenerate+1) = nil, want an error")
		}
	})
	t.Run("non-finite gauge is allowed", func(t *testing.T) {
		if err := w.Update(Baseline, func(b *Behavior) { b.Gauge = math.Inf(-1) }); err != nil {
			t.Fatalf("Update(gauge -Inf) = %v", err)
		}
	})
}

// scrape fetches and parses the workload's /metrics over HTTP.
func scrape(t *testing.T, w *Workload) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(w.URL())
	if err != nil {
		t.Fatalf("GET %s: %v", w.URL(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: HTTP %d: %s", w.URL(), resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

func metricFor(t *testing.T, fams map[string]*dto.MetricFamily, name, arm string) *dto.Metric {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing from /metrics", name)
	}
	for _, m := range fam.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == ArmLabel && l.GetValue() == arm {
				return m
			}
		}
	}
	t.Fatalf("metric %s has no series for arm %q", name, arm)
	return nil
}

func TestGenerateIsServedExactly(t *testing.T) {
	w := Start(t, Options{Seed: 7})
	mustSet(t, w, Baseline, Behavior{ErrorRate: 0, Latency: Latency{Median: 100 * time.Millisecond}, Gauge: 3})
	mustSet(t, w, Canary, Behavior{ErrorRate: 1, Latency: Latency{Median: 300 * time.Millisecond}, Gauge: math.NaN()})
	if err := w.Generate(Baseline, 120); err != nil {
		t.Fatal(err)
	}
	if err := w.Generate(Canary, 30); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, w)

	tests := []struct {
		arm                       string
		requests, errs            float64
		gauge                     float64
		belowMedian, atMedianOrUp uint64
		medianLE                  float64
	}{
		{arm: Baseline, requests: 120, errs: 0, gauge: 3, medianLE: 0.1, atMedianOrUp: 120},
		{arm: Canary, requests: 30, errs: 30, gauge: math.NaN(), medianLE: 0.3, atMedianOrUp: 30},
	}
	for _, tc := range tests {
		t.Run(tc.arm, func(t *testing.T) {
			if got := metricFor(t, fams, RequestsMetric, tc.arm).GetCounter().GetValue(); got != tc.requests {
				t.Errorf("%s = %v, want %v", RequestsMetric, got, tc.requests)
			}
			if got := metricFor(t, fams, ErrorsMetric, tc.arm).GetCounter().GetValue(); got != tc.errs {
				t.Errorf("%s = %v, want %v", ErrorsMetric, got, tc.errs)
			}
			g := metricFor(t, fams, GaugeMetric, tc.arm).GetGauge().GetValue()
			if !(g == tc.gauge || math.IsNaN(g) && math.IsNaN(tc.gauge)) {
				t.Errorf("%s = %v, want %v", GaugeMetric, g, tc.gauge)
			}
			h := metricFor(t, fams, LatencyMetric, tc.arm).GetHistogram()
			if h.GetSampleCount() != uint64(tc.requests) {
				t.Errorf("histogram count = %d, want %v", h.GetSampleCount(), tc.requests)
			}
			snap, err := w.Snapshot(tc.arm)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range h.GetBucket() {
				want := tc.belowMedian
				if b.GetUpperBound() >= tc.medianLE {
					want = tc.atMedianOrUp
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
				if snap.Buckets[b.GetUpperBound()] != b.GetCumulativeCount() {
					t.Errorf("Snapshot bucket le=%v = %d, served %d", b.GetUpperBound(), snap.Buckets[b.GetUpperBound()], b.GetCumulativeCount())
				}
			}
			if snap.Buckets[math.Inf(1)] != uint64(tc.requests) {
				t.Errorf("Snapshot +Inf bucket = %d, want %v", snap.Buckets[math.Inf(1)], tc.requests)
			}
			if snap.Requests != uint64(tc.requests) || snap.Errors != uint64(tc.errs) {
				t.Errorf("Snapshot = %d requests %d errors, want %v and %v", snap.Requests, snap.Errors, tc.requests, tc.errs)
			}
		})
	}
}

func TestErrorRateAndSpreadAreDrawn(t *testing.T) {
	w := Start(t, Options{Seed: 42})
	mustSet(t, w, Canary, Behavior{ErrorRate: 0.2, Latency: Latency{Median: 100 * time.Millisecond, Spread: 0.5}})
	const n = 20000
	if err := w.Generate(Canary, n); err != nil {
		t.Fatal(err)
	}
	snap, _ := w.Snapshot(Canary)
	// Binomial(20000, 0.2): sd ≈ 57; 5 sd either side.
	if snap.Errors < 4000-285 || snap.Errors > 4000+285 {
		t.Errorf("errors = %d of %d, want about 4000", snap.Errors, n)
	}
	// The median of a log-normal is its Median: about half at or below 0.1s.
	if got := float64(snap.Buckets[0.1]) / n; math.Abs(got-0.5) > 0.02 {
		t.Errorf("share at or below the median = %.3f, want about 0.5", got)
	}
	// P(latency <= 0.2s) = Φ(ln(0.2/0.1) / 0.5) = Φ(1.386) ≈ 0.917.
	if got := float64(snap.Buckets[0.2]) / n; got < 0.9 || got > 0.935 {
		t.Errorf("share at or below 0.2s = %.3f, want about 0.917", got)
	}
}

func TestTickerTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, err := build(Options{Tick: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		w.startTraffic()
		defer w.Close()
		mustSet(t, w, Baseline, Behavior{RPS: 50})
		mustSet(t, w, Canary, Behavior{RPS: 2.5})

		time.Sleep(10*time.Second + 50*time.Millisecond)
		assertRequests(t, w, "after 10s", 500, 25)

		w.Pause()
		time.Sleep(5 * time.Second)
		assertRequests(t, w, "paused", 500, 25)
		if err := w.Generate(Baseline, 3); err != nil {
			t.Fatal(err)
		}
		assertRequests(t, w, "generated while paused", 503, 25)

		// Resumed at 15.05s: the ticks at 15.1s..17.0s owe 1.95s of traffic,
		// 97.5 baseline requests and 4.875 canary ones; fractions carry over.
		w.Resume()
		time.Sleep(2 * time.Second)
		assertRequests(t, w, "resumed 2s", 600, 29)

		// Canary: 0.875 carried + 2.5 owed in 1s.
		mustSet(t, w, Baseline, Behavior{RPS: 0})
		time.Sleep(time.Second)
		assertRequests(t, w, "rps 0", 600, 32)

		if err := w.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		time.Sleep(5 * time.Second)
		assertRequests(t, w, "closed", 600, 32)
		if err := w.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})
}

func TestLateTickCatchesUpBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, err := build(Options{Tick: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		mustSet(t, w, Baseline, Behavior{RPS: 1000})
		w.last = time.Now()
		w.step(time.Now().Add(time.Hour)) // a tick an hour late
		snap, _ := w.Snapshot(Baseline)
		if snap.Requests != 400 {
			t.Errorf("requests after a late tick = %d, want 400 (four ticks' worth)", snap.Requests)
		}
	})
}

func assertRequests(t *testing.T, w *Workload, when string, baseline, canary uint64) {
	t.Helper()
	for arm, want := range map[string]uint64{Baseline: baseline, Canary: canary} {
		snap, err := w.Snapshot(arm)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Requests != want {
			t.Errorf("%s: %s requests = %d, want %d", when, arm, snap.Requests, want)
		}
	}
}

func mustSet(t *testing.T, w *Workload, arm string, b Behavior) {
	t.Helper()
	if err := w.Set(arm, b); err != nil {
		t.Fatalf("Set(%s) = %v", arm, err)
	}
}
