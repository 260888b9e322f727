package canary

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource answers queries from a function of the query text and records
// every call.
type fakeSource struct {
	mu      sync.Mutex
	calls   []string
	instant func(q string) ([]Element, error)
	rng     func(q string, start, end time.Time, step time.Duration) ([]Series, error)
}

func (f *fakeSource) Instant(ctx context.Context, q string, at time.Time) ([]Element, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("instant %s @%d", q, at.Unix()))
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSource, err)
	}
	return f.instant(q)
}

func (f *fakeSource) Range(ctx context.Context, q string, start, end time.Time, step time.Duration) ([]Series, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("range %s [%d,%d] %v", q, start.Unix(), end.Unix(), step))
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSource, err)
	}
	return f.rng(q, start, end, step)
}

func scalar(v float64) []Element { return []Element{{Labels: map[string]string{}, Value: v}} }

func histogramElements(bs []Bucket) []Element {
	out := make([]Element, len(bs))
	for i, b := range bs {
		le := fmt.Sprint(b.UpperBound)
		if b.UpperBound == inf {
			le = "+Inf"
		}
		out[i] = Element{Labels: map[string]string{"le": le}, Value: b.Count}
	}
	return out
}

// workload is a fake Prometheus for the http-canary template: the canary's
// error rate is errFactor times the baseline's.
func workload(errFactor float64) *fakeSource {
	return &fakeSource{
		instant: func(q string) ([]Element, error) {
			canary := strings.Contains(q, `track="canary"`)
			f := 1.0
			if canary {
				f = errFactor
			}
			switch {
			case strings.HasPrefix(q, "histogram_quantile"):
				return scalar(0.3), nil
			case strings.Contains(q, "_bucket"):
				return histogramElements(lognormalBuckets(100000, 0.1, 0.6)), nil
			case strings.Contains(q, `code=~"5.."`):
				return scalar(10000 * f), nil
			case strings.Contains(q, "http_requests_total"):
				return scalar(1e6), nil
			}
			return nil, fmt.Errorf("%w: unexpected query %q", ErrSource, q)
		},
		rng: func(q string, start, end time.Time, step time.Duration) ([]Series, error) {
			level := 1.0
			if strings.Contains(q, `track="canary"`) {
				level = 1.01
			}
			return []Series{{Points: pts(int(end.Sub(start)/step), level, 0)}}, nil
		},
	}
}

func TestMeasureRunsEveryQueryForBothArms(t *testing.T) {
	tpl := readTemplate(t)
	src := workload(1)
	w := Window{Start: time.Unix(1700000000, 0), End: time.Unix(1700000000, 0).Add(2 * time.Hour)}
	obs, err := Measure(context.Background(), src, tpl, httpArgs(), w)
	if err != nil {
		t.Fatal(err)
	}
	// Ratio: 2 queries × 2 arms; histogram and series: 1 × 2; threshold:
	// canary only; sample ratio: 2.
	if len(src.calls) != 4+2+2+1+2 {
		t.Errorf("%d calls: %v", len(src.calls), src.calls)
	}
	for _, want := range []string{
		`instant sum(increase(http_requests_total{job="checkout", namespace="prod", track="stable", code=~"5.."}[7200s])) @1700007200`,
		`range avg(rate(process_cpu_seconds_total{job="checkout", track="canary"}[1m])) [1700000000,1700007200] 30s`,
	} {
		found := false
		for _, c := range src.calls {
			found = found || c == want
		}
		if !found {
			t.Errorf("no call %s in %v", want, src.calls)
		}
	}
	for _, c := range src.calls {
		if strings.HasPrefix(c, "instant histogram_quantile") && strings.Contains(c, "stable") {
			t.Errorf("threshold queried for the baseline: %s", c)
		}
	}
	ms := obs.Measurements
	if len(ms) != 4 || ms[0].Metric != "error-rate" || ms[0].Canary.Count != 10000 || ms[0].Canary.Total != 1e6 || ms[0].Err != nil {
		t.Errorf("error-rate measurement %+v", ms[0])
	}
	if len(ms[1].Baseline.Buckets) != 12 || ms[1].Baseline.Buckets[11].UpperBound != inf {
		t.Errorf("latency buckets %+v", ms[1].Baseline.Buckets)
	}
	if len(ms[2].Canary.Points) != 240 || ms[3].Canary.Value != 0.3 {
		t.Errorf("cpu %d points, p99 %v", len(ms[2].Canary.Points), ms[3].Canary.Value)
	}
	if obs.Traffic == nil || obs.Traffic.Canary != 1e6 || obs.Traffic.Source != "sampleRatio.query" || obs.ExpectedSplit != 0.5 {
		t.Errorf("traffic %+v split %v", obs.Traffic, obs.ExpectedSplit)
	}
	rep := Judge(tpl, obs)
	if rep.Verdict != VerdictPass {
		for _, r := range rep.Metrics {
			t.Logf("%s %s %s", r.Metric, r.Verdict, r.Reason)
		}
		t.Errorf("healthy workload: %s %s", rep.Verdict, rep.Reason)
	}
}

// A 3× error canary measured end to end fails, naming the metric.
func TestMeasureThenJudgeRegression(t *testing.T) {
	tpl := readTemplate(t)
	w := Window{Start: time.Unix(1700000000, 0), End: time.Unix(1700003600, 0)}
	obs, err := Measure(context.Background(), workload(3), tpl, httpArgs(), w)
	if err != nil {
		t.Fatal(err)
	}
	rep := Judge(tpl, obs)
	if rep.Verdict != VerdictFail || !strings.Contains(rep.Reason, "error-rate") {
		t.Errorf("3× errors: %s %q", rep.Verdict, rep.Reason)
	}
}

func TestMeasureSourceProblems(t *testing.T) {
	tests := []struct {
		name    string
		instant func(q string) ([]Element, error)
		rng     func(q string) ([]Series, error)
		metric  int
		frag    string
		isSrc   bool
	}{
		{"source unreachable", func(q string) ([]Element, error) {
			return nil, fmt.Errorf("%w: dial tcp: connection refused", ErrSource)
		}, nil, 0, "connection refused", true},
		{"several series for a ratio", func(q string) ([]Element, error) { return append(scalar(1), scalar(2)...), nil }, nil, 0, "returned 2 series; aggregate it", false},
		{"histogram without le", func(q string) ([]Element, error) { return scalar(1), nil }, nil, 1, `without an "le" label`, false},
		{"histogram with a bad le", func(q string) ([]Element, error) {
			return []Element{{Labels: map[string]string{"le": "fast"}, Value: 1}}, nil
		}, nil, 1, `le="fast" is not a number`, false},
		{"several series for a gauge", nil, func(q string) ([]Series, error) { return make([]Series, 3), nil }, 2, "returned 3 series", false},
		{"range query fails", nil, func(q string) ([]Series, error) { return nil, fmt.Errorf("%w: bad_data: parse error", ErrSource) }, 2, "parse error", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := readTemplate(t)
			src := workload(1)
			metricName := tpl.Metrics[tc.metric].Name
			if tc.instant != nil {
				base := src.instant
				src.instant = func(q string) ([]Element, error) {
					if tc.metric == 0 && strings.Contains(q, "http_requests_total") && !strings.Contains(q, "increase(http_requests_total{job=\"checkout\", track") ||
						tc.metric == 1 && strings.Contains(q, "_bucket") && !strings.HasPrefix(q, "histogram_quantile") {
						return tc.instant(q)
					}
					return base(q)
				}
			}
			if tc.rng != nil {
				src.rng = func(q string, _, _ time.Time, _ time.Duration) ([]Series, error) { return tc.rng(q) }
			}
			obs, err := Measure(context.Background(), src, tpl, httpArgs(), Window{Start: time.Unix(0, 0), End: time.Unix(3600, 0)})
			if err != nil {
				t.Fatal(err)
			}
			m := obs.Measurements[tc.metric]
			if m.Err == nil || !strings.Contains(m.Err.Error(), tc.frag) || errors.Is(m.Err, ErrSource) != tc.isSrc {
				t.Fatalf("%s: err %v, want one with %q (source error %v)", metricName, m.Err, tc.frag, tc.isSrc)
			}
			rep := Judge(tpl, obs)
			if r := resultOf(t, rep, metricName); r.Verdict != VerdictError {
				t.Errorf("%s judged %s", metricName, r.Verdict)
			}
			if rep.Verdict == VerdictPass {
				t.Errorf("a measurement error passed: %q", rep.Reason)
			}
		})
	}
}

func TestMeasureEmptyAnswers(t *testing.T) {
	tpl := readTemplate(t)
	src := workload(1)
	src.instant = func(q string) ([]Element, error) {
		switch {
		case strings.Contains(q, `code=~"5.."`):
			return nil, nil // no error series yet: zero errors
		case strings.Contains(q, "http_requests_total") && strings.Contains(q, "canary"):
			return nil, nil // no canary traffic at all
		case strings.Contains(q, "http_requests_total"):
			return scalar(1000), nil
		}
		return nil, nil
	}
	src.rng = func(string, time.Time, time.Time, time.Duration) ([]Series, error) { return []Series{{}}, nil }
	obs, err := Measure(context.Background(), src, tpl, httpArgs(), Window{Start: time.Unix(0, 0), End: time.Unix(600, 0)})
	if err != nil {
		t.Fatal(err)
	}
	ms := obs.Measurements
	if ms[0].Baseline.Count != 0 || ms[0].Baseline.Total != 1000 || ms[0].Baseline.Empty || !ms[0].Canary.Empty {
		t.Errorf("error-rate %+v", ms[0])
	}
	if !ms[1].Canary.Empty || !ms[2].Canary.Empty || !ms[3].Canary.Empty {
		t.Errorf("empty answers not marked empty: %+v", ms[1:])
	}
	rep := Judge(tpl, obs)
	if rep.Verdict == VerdictPass {
		t.Errorf("no data passed: %q", rep.Reason)
	}
	if r := resultOf(t, rep, "error-rate"); r.Verdict != VerdictInconclusive || !strings.Contains(r.Reason, "no canary traffic") {
		t.Errorf("error-rate: %s %q", r.Verdict, r.Reason)
	}
	// cpu has noData: fail.
	if r := resultOf(t, rep, "cpu"); r.Verdict != VerdictFail {
		t.Errorf("cpu: %s %q", r.Verdict, r.Reason)
	}
}

func TestMeasureCancelledContext(t *testing.T) {
	tpl := readTemplate(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	obs, err := Measure(ctx, workload(1), tpl, httpArgs(), Window{Start: time.Unix(0, 0), End: time.Unix(600, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range obs.Measurements {
		if !errors.Is(m.Err, ErrSource) {
			t.Errorf("%s: %v, want a source error", m.Metric, m.Err)
		}
	}
	if obs.Traffic == nil || !errors.Is(obs.Traffic.Err, ErrSource) {
		t.Errorf("traffic %+v", obs.Traffic)
	}
	if rep := Judge(tpl, obs); rep.Verdict != VerdictError {
		t.Errorf("cancelled measurement judged %s", rep.Verdict)
	}
}

func TestMeasureBadArguments(t *testing.T) {
	tpl := readTemplate(t)
	args := httpArgs()
	delete(args.Values, "service")
	_, err := Measure(context.Background(), workload(1), tpl, args, Window{})
	if ps := problemsOf(t, err); !hasProblem(ps, "metrics[0].numerator", `"service"`) {
		t.Errorf("problems %v", ps)
	}
	if _, err := Measure(context.Background(), nil, tpl, httpArgs(), Window{}); err == nil {
		t.Error("nil source accepted")
	}
}
