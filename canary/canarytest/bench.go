package canarytest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// HTTPTemplate is a realistic analysis of an HTTP service, measured every
// interval for a very long time: a critical error-rate ratio, a latency
// histogram, a CPU series, a p99 threshold and a sample-ratio check — 11
// queries per step. Its args are those of HTTPArgs.
func HTTPTemplate(interval time.Duration) *canary.Template {
	p99 := 0.5
	return &canary.Template{
		Name: "http-canary",
		Args: []canary.Arg{{Name: "service"}},
		Metrics: []canary.Metric{
			{Name: "error-rate", Kind: canary.KindRatio, Critical: true, Margin: canary.Margin{Relative: 0.1}, Group: "errors",
				Numerator:   `sum(increase(http_requests_total{job="{{ .service }}", {{ .scope }}, code=~"5.."}[{{ .window }}]))`,
				Denominator: `sum(increase(http_requests_total{job="{{ .service }}", {{ .scope }}}[{{ .window }}]))`},
			{Name: "latency", Kind: canary.KindHistogram, Critical: true, Margin: canary.Margin{Relative: 0.1}, Group: "latency",
				Query: `sum by (le) (increase(http_request_duration_seconds_bucket{job="{{ .service }}", {{ .scope }}}[{{ .window }}]))`},
			{Name: "cpu", Kind: canary.KindSeries, Margin: canary.Margin{Relative: 0.25}, Group: "resources", Step: canary.Duration(30 * time.Second),
				Query: `avg(rate(process_cpu_seconds_total{job="{{ .service }}", {{ .scope }}}[1m]))`},
			{Name: "p99", Kind: canary.KindThreshold, Max: &p99, DryRun: true,
				Query: `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="{{ .service }}", {{ .scope }}}[{{ .interval }}])))`},
		},
		SampleRatio: canary.SampleRatio{Query: `sum(increase(http_requests_total{job="{{ .service }}", {{ .scope }}}[{{ .window }}]))`, Tolerance: 0.2},
		Schedule:    canary.Schedule{Interval: canary.Duration(interval), Count: 1_000_000},
	}
}

// HTTPArgs are the arguments of run i of HTTPTemplate.
func HTTPArgs(i int) canary.Args {
	return canary.Args{
		BaselineScope: fmt.Sprintf(`track="stable",shard="%d"`, i), CanaryScope: fmt.Sprintf(`track="canary",shard="%d"`, i),
		ExpectedSplit: 0.5, Values: map[string]string{"service": "checkout"},
	}
}

// HTTPSource is a fake Prometheus for HTTPTemplate: realistic answers (100
// histogram buckets, series over the window at the metric's step capped at
// 200 points, request and error counts), the same for both arms, so the
// judge does its full work. It counts steps (one canary error query each).
type HTTPSource struct{ steps atomic.Int64 }

// Steps is how many steps have queried the source.
func (h *HTTPSource) Steps() int64 { return h.steps.Load() }

// Instant implements canary.MetricSource.
func (h *HTTPSource) Instant(_ context.Context, q string, at time.Time) ([]canary.Element, error) {
	one := func(v float64) []canary.Element { return []canary.Element{{Labels: map[string]string{}, Value: v}} }
	switch {
	case strings.HasPrefix(q, "histogram_quantile"):
		return one(0.25), nil
	case strings.Contains(q, "_bucket"):
		out := make([]canary.Element, 0, 100)
		cum := 0.0
		for i := range 99 {
			cum += 100 + float64((i*37)%50)
			out = append(out, canary.Element{Labels: map[string]string{"le": fmt.Sprint(0.001 * math.Pow(1.1, float64(i)))}, Value: cum})
		}
		return append(out, canary.Element{Labels: map[string]string{"le": "+Inf"}, Value: cum + 10}), nil
	case strings.Contains(q, `code=~"5.."`):
		if strings.Contains(q, `track="canary"`) {
			h.steps.Add(1)
		}
		return one(120), nil
	case strings.Contains(q, "http_requests_total"):
		return one(100_000), nil
	}
	return nil, fmt.Errorf("%w: unexpected query %q", canary.ErrSource, q)
}

// Range implements canary.MetricSource.
func (h *HTTPSource) Range(_ context.Context, q string, start, end time.Time, step time.Duration) ([]canary.Series, error) {
	n := min(int(end.Sub(start)/step)+1, 200)
	pts := make([]canary.Point, n)
	for i := range pts {
		pts[i] = canary.Point{T: end.Add(-time.Duration(n-1-i) * step), V: 1 + 0.05*math.Sin(float64(i))}
	}
	return []canary.Series{{Points: pts}}, nil
}

// StartRuns stores tpl and n runs of it ("run-000", …) with HTTPArgs, all
// created at now.
func StartRuns(tb testing.TB, store canary.Store, tpl *canary.Template, n int, now time.Time) []string {
	tb.Helper()
	ctx := context.Background()
	if _, err := store.PutTemplate(ctx, tpl, canary.TemplateWrite{At: now}); err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, n)
	for i := range ids {
		r, err := canary.NewRun(fmt.Sprintf("run-%03d", i), tpl, HTTPArgs(i), now)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := store.CreateRun(ctx, r); err != nil {
			tb.Fatal(err)
		}
		ids[i] = r.ID
	}
	return ids
}

// BenchInterval benchmarks one interval of runs concurrent analyses of
// HTTPTemplate through one Runner on store: each op advances the runner's
// clock by the interval and executes every step due (RunOnce). ns/op is
// the wall time one replica needs per interval; a run's scheduling lag is
// at most that plus the poll interval. It reports steps/s and the worst
// interval's milliseconds.
func BenchInterval(b *testing.B, store canary.Store, runs int, interval time.Duration) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	StartRuns(b, store, HTTPTemplate(interval), runs, t0)
	var mu sync.Mutex
	now := t0
	src := &HTTPSource{}
	r, err := canary.NewRunner(canary.RunnerConfig{Store: store, Source: src, Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var worst time.Duration
	for b.Loop() {
		mu.Lock()
		now = now.Add(interval)
		mu.Unlock()
		start := time.Now()
		before := src.Steps()
		if _, err := r.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
		if got := src.Steps() - before; got != int64(runs) {
			b.Fatalf("%d steps in one interval; want %d", got, runs)
		}
		worst = max(worst, time.Since(start))
	}
	b.ReportMetric(float64(runs)*float64(b.N)/b.Elapsed().Seconds(), "steps/s")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms/interval")
}
