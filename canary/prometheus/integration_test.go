package prometheus_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/prometheus"
	"github.com/flagpole/flagpole/canary/prometheus/promtest"
	"github.com/flagpole/flagpole/canary/prometheus/workload"
)

// TestAgainstRealPrometheus runs the Source against a real prometheus
// scraping the synthetic workload every second. The subtests share one
// server and run in order; the last one stops and restarts Prometheus.
func TestAgainstRealPrometheus(t *testing.T) {
	w := workload.Start(t, workload.Options{Seed: 3})
	p := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: w.Addr()}}})
	src, err := prometheus.New(prometheus.Config{
		URL: p.URL(), Timeout: 2 * time.Second, MaxAttempts: 2,
		Backoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	waitScrapes := func(t *testing.T, n int) {
		t.Helper()
		// Generous: on a loaded machine (the race detector, other tests)
		// Prometheus may skip or delay a scrape or two.
		wctx, cancel := context.WithTimeout(ctx, time.Duration(n+15)*p.ScrapeInterval())
		defer cancel()
		if err := p.WaitScrapes(wctx, n); err != nil {
			t.Fatal(err)
		}
	}
	set := func(t *testing.T, arm string, b workload.Behavior) {
		t.Helper()
		if err := w.Set(arm, b); err != nil {
			t.Fatal(err)
		}
	}
	byArm := func(t *testing.T, els []canary.Element) map[string]float64 {
		t.Helper()
		out := map[string]float64{}
		for _, e := range els {
			out[e.Labels[workload.ArmLabel]] = e.Value
		}
		return out
	}

	t.Run("counters per arm", func(t *testing.T) {
		set(t, workload.Baseline, workload.Behavior{ErrorRate: 0.25, Latency: workload.Latency{Median: 100 * time.Millisecond}})
		set(t, workload.Canary, workload.Behavior{ErrorRate: 1, Latency: workload.Latency{Median: 300 * time.Millisecond}})
		if err := w.Generate(workload.Baseline, 120); err != nil {
			t.Fatal(err)
		}
		if err := w.Generate(workload.Canary, 30); err != nil {
			t.Fatal(err)
		}
		waitScrapes(t, 1)
		base, _ := w.Snapshot(workload.Baseline)
		tests := []struct {
			query          string
			baseline, cana float64
		}{
			{query: workload.RequestsMetric, baseline: 120, cana: 30},
			{query: workload.ErrorsMetric, baseline: float64(base.Errors), cana: 30},
			{query: workload.LatencyMetric + "_count", baseline: 120, cana: 30},
		}
		for _, tc := range tests {
			els, err := src.Instant(ctx, tc.query, time.Time{})
			if err != nil {
				t.Fatalf("Instant(%s) = %v", tc.query, err)
			}
			got := byArm(t, els)
			if len(els) != 2 || got[workload.Baseline] != tc.baseline || got[workload.Canary] != tc.cana {
				t.Errorf("Instant(%s) = %v, want baseline %v and canary %v", tc.query, els, tc.baseline, tc.cana)
			}
			for _, e := range els {
				if e.Labels["__name__"] != tc.query || e.Labels["job"] != promtest.DefaultJob || e.Labels["instance"] != w.Addr() {
					t.Errorf("labels = %v, want __name__, job and instance of the target", e.Labels)
				}
			}
		}
		if base.Errors == 0 || base.Errors == 120 {
			t.Errorf("baseline errors = %d, want a draw strictly between 0 and 120", base.Errors)
		}
	})

	t.Run("histogram buckets per le", func(t *testing.T) {
		for _, arm := range []string{workload.Baseline, workload.Canary} {
			q := `sum by (le) (` + workload.LatencyMetric + `_bucket{arm="` + arm + `"})`
			els, err := src.Instant(ctx, q, time.Time{})
			if err != nil {
				t.Fatalf("Instant(%s) = %v", q, err)
			}
			snap, _ := w.Snapshot(arm)
			if len(els) != len(workload.DefaultBuckets)+1 {
				t.Fatalf("%s: %d buckets, want %d", arm, len(els), len(workload.DefaultBuckets)+1)
			}
			for _, e := range els {
				le, err := strconv.ParseFloat(e.Labels["le"], 64)
				if err != nil {
					t.Fatalf("le %q: %v", e.Labels["le"], err)
				}
				if want := float64(snap.Buckets[le]); e.Value != want {
					t.Errorf("%s le=%s = %v, want %v", arm, e.Labels["le"], e.Value, want)
				}
			}
		}
		// Spot checks: every baseline request took exactly 100ms.
		els, err := src.Instant(ctx, workload.LatencyMetric+`_bucket{arm="baseline",le=~"0.075|0.1"}`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, e := range els {
			got[e.Labels["le"]] = e.Value
		}
		if got["0.075"] != 0 || got["0.1"] != 120 {
			t.Errorf("baseline buckets le=0.075,0.1 = %v, want 0 and 120", got)
		}
	})

	t.Run("rate and increase from ticker traffic", func(t *testing.T) {
		set(t, workload.Baseline, workload.Behavior{RPS: 50, ErrorRate: 0})
		set(t, workload.Canary, workload.Behavior{RPS: 20, ErrorRate: 1})
		waitScrapes(t, 5)
		rates, err := src.Instant(ctx, `rate(`+workload.RequestsMetric+`[4s])`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got := byArm(t, rates)
		for arm, want := range map[string]float64{workload.Baseline: 50, workload.Canary: 20} {
			if math.Abs(got[arm]-want) > 0.25*want {
				t.Errorf("rate for %s = %.2f, want %v ± 25%%", arm, got[arm], want)
			}
		}
		q := `sum by (arm) (increase(` + workload.ErrorsMetric + `[4s])) / sum by (arm) (increase(` + workload.RequestsMetric + `[4s]))`
		ratios, err := src.Instant(ctx, q, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got = byArm(t, ratios)
		if got[workload.Baseline] != 0 || got[workload.Canary] != 1 {
			t.Errorf("error ratios = %v, want baseline 0 and canary 1", got)
		}
		set(t, workload.Baseline, workload.Behavior{})
		set(t, workload.Canary, workload.Behavior{})
	})

	t.Run("range query of a gauge", func(t *testing.T) {
		set(t, workload.Baseline, workload.Behavior{Gauge: 3})
		set(t, workload.Canary, workload.Behavior{Gauge: 7})
		waitScrapes(t, 2)
		set(t, workload.Baseline, workload.Behavior{Gauge: 5})
		waitScrapes(t, 2)
		// Prometheus keeps timestamps in whole milliseconds and rounds what it is sent,
		// so bound the points with millisecond times.
		end := time.Now().Truncate(time.Millisecond)
		start := end.Add(-3 * time.Second)
		series, err := src.Range(ctx, workload.GaugeMetric, start, end, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(series) != 2 {
			t.Fatalf("Range = %d series, want 2: %v", len(series), series)
		}
		for _, s := range series {
			if n := len(s.Points); n < 3 || n > 4 {
				t.Errorf("%v: %d points, want 3 or 4 over 3s at 1s", s.Labels, n)
			}
			for i, pt := range s.Points {
				if pt.T.Before(start.Add(-time.Second)) || pt.T.After(end) || pt.T.Location() != time.UTC {
					t.Errorf("point %v outside [%v, %v] or not UTC", pt.T, start, end)
				}
				if i > 0 && pt.T.Sub(s.Points[i-1].T) != time.Second {
					t.Errorf("points %v and %v are not 1s apart", s.Points[i-1].T, pt.T)
				}
			}
			last := s.Points[len(s.Points)-1].V
			switch s.Labels[workload.ArmLabel] {
			case workload.Baseline:
				if last != 5 {
					t.Errorf("baseline gauge ends at %v, want 5", last)
				}
				for _, pt := range s.Points {
					if pt.V != 3 && pt.V != 5 {
						t.Errorf("baseline gauge point %v, want 3 or 5", pt.V)
					}
				}
			case workload.Canary:
				for _, pt := range s.Points {
					if pt.V != 7 {
						t.Errorf("canary gauge point %v, want 7", pt.V)
					}
				}
			default:
				t.Errorf("unexpected series %v", s.Labels)
			}
		}
	})

	t.Run("NaN and Inf are passed through", func(t *testing.T) {
		set(t, workload.Baseline, workload.Behavior{Gauge: math.Inf(1)})
		set(t, workload.Canary, workload.Behavior{Gauge: math.NaN()})
		waitScrapes(t, 1)
		els, err := src.Instant(ctx, workload.GaugeMetric, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got := byArm(t, els)
		if !math.IsInf(got[workload.Baseline], 1) || !math.IsNaN(got[workload.Canary]) {
			t.Errorf("gauges = %v, want baseline +Inf and canary NaN", got)
		}
	})

	t.Run("bad queries are not retried", func(t *testing.T) {
		tests := []struct {
			name, query string
			status      int
			want        string
		}{
			{name: "parse error", query: `sum(` + workload.RequestsMetric, status: 400, want: "parse error"},
			{name: "execution error", query: workload.RequestsMetric + ` * on() ` + workload.RequestsMetric, status: 422, want: "many-to-many"},
			{name: "range vector in an instant query", query: workload.RequestsMetric + `[5s]`, status: 200, want: "range vector"},
			{name: "string result", query: `"hello"`, status: 200, want: "string"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := src.Instant(ctx, tc.query, time.Time{})
				qe := asQueryError(t, err)
				if qe.Reason != prometheus.ReasonBadQuery || qe.Attempts != 1 || qe.Status != tc.status {
					t.Errorf("error = %+v, want bad_query after 1 attempt with HTTP %d", qe, tc.status)
				}
				if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad Prometheus query") {
					t.Errorf("message %q, want it to say bad Prometheus query and %q", err, tc.want)
				}
			})
		}
		_, err := src.Range(ctx, `rate(`, time.Now().Add(-time.Minute), time.Now(), time.Second)
		if qe := asQueryError(t, err); qe.Reason != prometheus.ReasonBadQuery || qe.Attempts != 1 {
			t.Errorf("Range(bad) = %+v, want bad_query after 1 attempt", qe)
		}
	})

	t.Run("timeouts", func(t *testing.T) {
		expired, cancel := context.WithTimeout(ctx, time.Nanosecond)
		defer cancel()
		<-expired.Done()
		_, err := src.Instant(expired, workload.RequestsMetric, time.Time{})
		qe := asQueryError(t, err)
		if qe.Reason != prometheus.ReasonTimeout || qe.Attempts != 1 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("caller deadline: %+v, want timeout after 1 attempt wrapping DeadlineExceeded", qe)
		}

		tiny, err := prometheus.New(prometheus.Config{URL: p.URL(), Timeout: time.Microsecond, MaxAttempts: 2, Backoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tiny.Instant(ctx, workload.RequestsMetric, time.Time{})
		qe = asQueryError(t, err)
		if qe.Reason != prometheus.ReasonTimeout || qe.Attempts != 2 || !strings.Contains(err.Error(), "no answer within 1µs") {
			t.Errorf("attempt timeout: %+v (%v), want timeout retried to 2 attempts", qe, err)
		}
	})

	t.Run("stopped then restarted", func(t *testing.T) {
		before := time.Now()
		want, err := src.Instant(ctx, workload.RequestsMetric, before)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if p.Running() {
			t.Fatal("Running() = true after Stop")
		}
		_, err = src.Instant(ctx, workload.RequestsMetric, time.Time{})
		qe := asQueryError(t, err)
		if qe.Reason != prometheus.ReasonUnreachable || qe.Attempts != 2 || !strings.Contains(err.Error(), "Prometheus unreachable") {
			t.Errorf("Instant while stopped: %+v (%v), want unreachable after 2 attempts", qe, err)
		}
		_, err = src.Range(ctx, workload.RequestsMetric, before.Add(-time.Minute), before, time.Second)
		if qe := asQueryError(t, err); qe.Reason != prometheus.ReasonUnreachable {
			t.Errorf("Range while stopped: %+v, want unreachable", qe)
		}

		if err := p.Restart(); err != nil {
			t.Fatal(err)
		}
		got, err := src.Instant(ctx, workload.RequestsMetric, before)
		if err != nil {
			t.Fatalf("Instant after restart = %v", err)
		}
		if len(got) != len(want) || byArm(t, got)[workload.Baseline] != byArm(t, want)[workload.Baseline] {
			t.Errorf("after restart the old sample reads %v, want %v (same data)", got, want)
		}
	})
}

func asQueryError(t *testing.T, err error) *prometheus.QueryError {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	if !errors.Is(err, canary.ErrSource) {
		t.Errorf("error %v does not wrap canary.ErrSource", err)
	}
	var qe *prometheus.QueryError
	if !errors.As(err, &qe) {
		t.Fatalf("error %T %v is not a *QueryError", err, err)
	}
	return qe
}
