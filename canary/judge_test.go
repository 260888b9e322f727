package canary

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/internal/stat"
)

// defaultBounds are Prometheus's default histogram buckets.
var defaultBounds = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// lognormalBuckets returns the expected cumulative bucket counts of n
// observations from a log-normal distribution with the given median.
func lognormalBuckets(n, median, sigma float64) []Bucket {
	out := make([]Bucket, 0, len(defaultBounds)+1)
	for _, ub := range defaultBounds {
		out = append(out, Bucket{UpperBound: ub, Count: math.Round(n * stat.NormalCDF(math.Log(ub/median)/sigma))})
	}
	return append(out, Bucket{UpperBound: inf, Count: n})
}

// judgeTemplate has one metric of each kind; all but the threshold decide.
func judgeTemplate() *Template {
	return &Template{
		Name: "judge",
		Metrics: []Metric{
			{Name: "error-rate", Kind: KindRatio, Numerator: "e{ {{.scope}} }", Denominator: "r{ {{.scope}} }", Margin: Margin{Relative: 0.1}, Critical: true, Group: "errors", Weight: 2},
			{Name: "latency", Kind: KindHistogram, Query: "h{ {{.scope}} }", Margin: Margin{Relative: 0.1}, Critical: true, Group: "latency"},
			{Name: "cpu", Kind: KindSeries, Query: "c{ {{.scope}} }", Margin: Margin{Relative: 0.2}, Group: "resources"},
			{Name: "p99", Kind: KindThreshold, Query: "q{ {{.scope}} }", Max: ptr(0.5), Group: "latency"},
		},
		Schedule: Schedule{Interval: Duration(time.Minute), Count: 10},
	}
}

// healthy returns measurements of a healthy canary with plenty of data; the
// canary's error rate and latency are scaled by the factors given.
func healthy(errFactor, latFactor float64) Observation {
	return Observation{Measurements: []Measurement{
		{Metric: "error-rate", Baseline: ArmData{Count: 5000, Total: 500000}, Canary: ArmData{Count: 5000 * errFactor, Total: 500000}},
		{Metric: "latency", Baseline: ArmData{Buckets: lognormalBuckets(200000, 0.1, 0.6)}, Canary: ArmData{Buckets: lognormalBuckets(200000, 0.1*latFactor, 0.6)}},
		{Metric: "cpu", Baseline: ArmData{Points: pts(240, 1, 0)}, Canary: ArmData{Points: pts(240, 1.02, 1)}},
		{Metric: "p99", Canary: ArmData{Value: 0.3}},
	}}
}

func resultOf(t *testing.T, rep Report, name string) MetricResult {
	t.Helper()
	for _, r := range rep.Metrics {
		if r.Metric == name {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", name, rep.Metrics)
	return MetricResult{}
}

func TestJudgeHealthyCanaryPasses(t *testing.T) {
	rep := Judge(judgeTemplate(), healthy(1, 1.03))
	if rep.Verdict != VerdictPass {
		for _, r := range rep.Metrics {
			t.Logf("%s: %s %s", r.Metric, r.Verdict, r.Reason)
		}
		t.Fatalf("verdict %s (%s), want pass", rep.Verdict, rep.Reason)
	}
	if rep.Score != 100 || rep.ScoreClass != "pass" {
		t.Errorf("score %v %q, want 100 pass", rep.Score, rep.ScoreClass)
	}
	lat := resultOf(t, rep, "latency")
	if !strings.Contains(lat.Reason, "within the +10.0% margin") || len(lat.Evidence.Quantiles) != 3 {
		t.Errorf("latency: %s %+v", lat.Reason, lat.Evidence)
	}
	if q := lat.Evidence.Quantiles[0]; !(q.Relative > 0 && q.Relative < 0.1) {
		t.Errorf("p50 shift %v, want a few per cent", q.Relative)
	}
}

// A 3× error rate fails the analysis and the reason names the metric.
func TestJudgeErrorRegressionFailsNamingMetric(t *testing.T) {
	rep := Judge(judgeTemplate(), healthy(3, 1))
	if rep.Verdict != VerdictFail || !strings.Contains(rep.Reason, "error-rate") {
		t.Fatalf("verdict %s, reason %q; want fail naming error-rate", rep.Verdict, rep.Reason)
	}
	r := resultOf(t, rep, "error-rate")
	ev := r.Evidence
	if r.Verdict != VerdictFail || ev.Unit != UnitRelative {
		t.Fatalf("error-rate: %s %+v", r.Verdict, ev)
	}
	if ev.Baseline.Value != 0.01 || ev.Canary.Value != 0.03 || ev.Baseline.N != 500000 || ev.Canary.N != 500000 {
		t.Errorf("estimates %+v %+v", *ev.Baseline, *ev.Canary)
	}
	if !near(float64(ev.Effect), 2, 1e-12) || !(ev.Lower < 2 && ev.Upper > 2 && ev.Lower > 0.1) {
		t.Errorf("effect %v [%v, %v], want 2 inside an interval above the margin", ev.Effect, ev.Lower, ev.Upper)
	}
	if !(ev.PValue < 1e-10 && ev.PAdjusted >= ev.PValue && ev.EValue > 1e10 && ev.Boundary == 0.1 && ev.Margin.Relative == 0.1) {
		t.Errorf("evidence %+v", ev)
	}
	for _, frag := range []string{"canary 3.00% (15000/500000) vs baseline 1.00% (5000/500000)", "+200.0%", "harm beyond the +10.0% margin"} {
		if !strings.Contains(r.Reason, frag) {
			t.Errorf("reason %q lacks %q", r.Reason, frag)
		}
	}
}

func TestJudgeLatency(t *testing.T) {
	tests := []struct {
		name   string
		factor float64
		want   Verdict
	}{
		{"slightly slower, inside the margin", 1.03, VerdictPass},
		{"far slower", 1.5, VerdictFail},
		{"slower beyond the margin", 1.2, VerdictFail},
		{"faster", 0.8, VerdictPass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := resultOf(t, Judge(judgeTemplate(), healthy(1, tc.factor)), "latency")
			if r.Verdict != tc.want {
				t.Errorf("verdict %s, want %s: %s", r.Verdict, tc.want, r.Reason)
			}
		})
	}
}

// No data is inconclusive, never a pass — or a fail under noData: fail.
func TestJudgeNoData(t *testing.T) {
	tests := []struct {
		name   string
		metric string
		edit   func(*Measurement)
		frag   string
	}{
		{"no canary traffic", "error-rate", func(m *Measurement) { m.Canary = ArmData{Empty: true} }, "no canary traffic"},
		{"zero canary requests", "error-rate", func(m *Measurement) { m.Canary = ArmData{Count: 0, Total: 0} }, "no canary traffic"},
		{"no baseline traffic", "error-rate", func(m *Measurement) { m.Baseline = ArmData{Empty: true} }, "no baseline traffic"},
		{"NaN count", "error-rate", func(m *Measurement) { m.Canary.Count = math.NaN() }, "not finite"},
		{"infinite total", "error-rate", func(m *Measurement) { m.Baseline.Total = math.Inf(1) }, "not finite"},
		{"negative count", "error-rate", func(m *Measurement) { m.Canary.Count = -1 }, "negative"},
		{"empty canary histogram", "latency", func(m *Measurement) { m.Canary = ArmData{Empty: true} }, "canary histogram query returned no data"},
		{"empty baseline histogram", "latency", func(m *Measurement) { m.Baseline = ArmData{Empty: true} }, "baseline histogram query returned no data"},
		{"histogram of zero counts", "latency", func(m *Measurement) { m.Canary.Buckets = []Bucket{{0.1, 0}, {inf, 0}} }, "no canary observations"},
		{"histogram of NaN counts", "latency", func(m *Measurement) { m.Baseline.Buckets = []Bucket{{0.1, math.NaN()}, {inf, math.NaN()}} }, "no baseline observations"},
		{"empty series", "cpu", func(m *Measurement) { m.Baseline = ArmData{Empty: true} }, "baseline series query returned no data"},
		{"series all NaN", "cpu", func(m *Measurement) {
			for i := range m.Canary.Points {
				m.Canary.Points[i].V = math.NaN()
			}
		}, "0 time-aligned points"},
		{"series not aligned", "cpu", func(m *Measurement) {
			for i := range m.Canary.Points {
				m.Canary.Points[i].T = m.Canary.Points[i].T.Add(time.Second)
			}
		}, "0 time-aligned points"},
		{"threshold empty", "p99", func(m *Measurement) { m.Canary = ArmData{Empty: true} }, "no data"},
		{"threshold NaN", "p99", func(m *Measurement) { m.Canary.Value = math.NaN() }, "NaN"},
	}
	for _, tc := range tests {
		for _, policy := range []NoDataPolicy{"", NoDataFail} {
			t.Run(fmt.Sprintf("%s/%s", tc.name, policy), func(t *testing.T) {
				tpl := judgeTemplate()
				for i := range tpl.Metrics {
					if tpl.Metrics[i].Name == tc.metric {
						tpl.Metrics[i].NoData = policy
						tpl.Metrics[i].Critical = true
						tpl.Metrics[i].DryRun = false
					}
				}
				obs := healthy(1, 1)
				for i := range obs.Measurements {
					if obs.Measurements[i].Metric == tc.metric {
						tc.edit(&obs.Measurements[i])
					}
				}
				rep := Judge(tpl, obs)
				r := resultOf(t, rep, tc.metric)
				want, overall := VerdictInconclusive, VerdictInconclusive
				if policy == NoDataFail {
					want, overall = VerdictFail, VerdictFail
				}
				if r.Verdict != want || !r.NoData || !strings.Contains(r.Reason, tc.frag) {
					t.Errorf("%s: %s %q, want %s mentioning %q", tc.metric, r.Verdict, r.Reason, want, tc.frag)
				}
				if rep.Verdict != overall {
					t.Errorf("overall %s (%s), want %s", rep.Verdict, rep.Reason, overall)
				}
			})
		}
	}
}

// Bad data the metric cannot be judged on is inconclusive whatever the
// no-data policy says.
func TestJudgeUnusableData(t *testing.T) {
	tpl := judgeTemplate()
	tpl.Metrics[0].NoData = NoDataFail
	obs := healthy(1, 1)
	obs.Measurements[0].Canary = ArmData{Count: 200, Total: 100}
	r := resultOf(t, Judge(tpl, obs), "error-rate")
	if r.Verdict != VerdictInconclusive || !strings.Contains(r.Reason, "numerator exceeds the denominator") {
		t.Errorf("got %s %q", r.Verdict, r.Reason)
	}
	// Thousands of distinct buckets mean an unaggregated query.
	obs = healthy(1, 1)
	for i := range 2001 {
		obs.Measurements[1].Canary.Buckets = append(obs.Measurements[1].Canary.Buckets, Bucket{UpperBound: 20 + float64(i), Count: 200001 + float64(i)})
	}
	if r := resultOf(t, Judge(judgeTemplate(), obs), "latency"); r.Verdict != VerdictInconclusive || !strings.Contains(r.Reason, "aggregate the query by le") {
		t.Errorf("got %s %q", r.Verdict, r.Reason)
	}
	// A relative margin on a gauge around zero cannot be judged.
	obs = healthy(1, 1)
	obs.Measurements[2].Canary.Points = pts(240, -1, 0)
	r = resultOf(t, Judge(judgeTemplate(), obs), "cpu")
	if r.Verdict != VerdictInconclusive || !strings.Contains(r.Reason, "use an absolute margin") {
		t.Errorf("got %s %q", r.Verdict, r.Reason)
	}
}

func TestJudgeSourceErrorIsNeverAPass(t *testing.T) {
	obs := healthy(1, 1)
	obs.Measurements[2].Err = fmt.Errorf("canary arm: query: %w: connection refused", ErrSource)
	rep := Judge(judgeTemplate(), obs)
	r := resultOf(t, rep, "cpu")
	if r.Verdict != VerdictError || !strings.Contains(r.Reason, "connection refused") {
		t.Errorf("cpu: %s %q", r.Verdict, r.Reason)
	}
	if rep.Verdict != VerdictError || !strings.Contains(rep.Reason, "cpu") {
		t.Errorf("overall %s %q, want error naming cpu", rep.Verdict, rep.Reason)
	}
	// A missing measurement is an error too.
	obs = healthy(1, 1)
	obs.Measurements = obs.Measurements[1:]
	rep = Judge(judgeTemplate(), obs)
	if r := resultOf(t, rep, "error-rate"); r.Verdict != VerdictError || !strings.Contains(r.Reason, "not measured") {
		t.Errorf("error-rate: %s %q", r.Verdict, r.Reason)
	}
	// But a critical failure still fails.
	obs = healthy(3, 1)
	obs.Measurements[2].Err = errors.New("boom")
	if rep := Judge(judgeTemplate(), obs); rep.Verdict != VerdictFail {
		t.Errorf("critical fail with an error elsewhere: %s", rep.Verdict)
	}
}

func TestJudgeNonFiniteSamples(t *testing.T) {
	obs := healthy(1, 1.03)
	// NaN and Inf points are dropped; the rest still decide.
	obs.Measurements[2].Canary.Points[3].V = math.NaN()
	obs.Measurements[2].Baseline.Points[7].V = math.Inf(1)
	obs.Measurements[1].Canary.Buckets = append(obs.Measurements[1].Canary.Buckets, Bucket{UpperBound: math.NaN(), Count: 5})
	rep := Judge(judgeTemplate(), obs)
	if cpu := resultOf(t, rep, "cpu"); cpu.Verdict != VerdictPass || cpu.Evidence.Dropped != 2 || cpu.Evidence.Canary.N != 238 {
		t.Errorf("cpu: %s dropped %d n %v (%s)", cpu.Verdict, cpu.Evidence.Dropped, cpu.Evidence.Canary.N, cpu.Reason)
	}
	if lat := resultOf(t, rep, "latency"); lat.Evidence.Dropped != 1 {
		t.Errorf("latency dropped %d, want 1", lat.Evidence.Dropped)
	}
	// An infinite threshold value is beyond any maximum.
	obs.Measurements[3].Canary.Value = math.Inf(1)
	if r := resultOf(t, Judge(judgeTemplate(), obs), "p99"); r.Verdict != VerdictFail {
		t.Errorf("p99 = +Inf: %s", r.Verdict)
	}
	// The report still marshals.
	if _, err := json.Marshal(Judge(judgeTemplate(), obs)); err != nil {
		t.Errorf("report does not marshal: %v", err)
	}
}

func TestJudgeThreshold(t *testing.T) {
	tests := []struct {
		name     string
		min, max *float64
		value    float64
		want     Verdict
		frag     string
	}{
		{"within max", nil, ptr(0.5), 0.3, VerdictPass, "within [max 0.5]"},
		{"above max", nil, ptr(0.5), 0.51, VerdictFail, "above the maximum 0.5"},
		{"at max", nil, ptr(0.5), 0.5, VerdictPass, "within"},
		{"below min", ptr(10.0), nil, 9, VerdictFail, "below the minimum 10"},
		{"within both", ptr(1.0), ptr(2.0), 1.5, VerdictPass, "within [min 1 max 2]"},
		{"-Inf below min", ptr(1.0), nil, math.Inf(-1), VerdictFail, "below"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := &Template{Name: "t", Metrics: []Metric{{Name: "v", Kind: KindThreshold, Query: "q", Min: tc.min, Max: tc.max, Critical: true}}}
			rep := Judge(tpl, Observation{Measurements: []Measurement{{Metric: "v", Canary: ArmData{Value: tc.value}}}})
			r := rep.Metrics[0]
			if r.Verdict != tc.want || rep.Verdict != tc.want || !strings.Contains(r.Reason, tc.frag) {
				t.Errorf("got %s/%s %q, want %s with %q", r.Verdict, rep.Verdict, r.Reason, tc.want, tc.frag)
			}
			if r.Evidence.Unit != UnitValue || float64(r.Evidence.Effect) != tc.value && !math.IsInf(tc.value, 0) {
				t.Errorf("evidence %+v", r.Evidence)
			}
		})
	}
}

// Too little data is never a pass: the minimum-sample floor and the power
// gate hold decisions back, and say how much more is needed.
func TestJudgeGates(t *testing.T) {
	tpl := &Template{Name: "g", Metrics: []Metric{
		{Name: "err", Kind: KindRatio, Numerator: "e", Denominator: "r", Margin: Margin{Relative: 0.5}, Critical: true},
	}}
	tests := []struct {
		name   string
		b, c   ArmData
		want   Verdict
		frag   string
		needed bool
	}{
		{"below the sample floor, even with lopsided errors", ArmData{Count: 0, Total: 50}, ArmData{Count: 30, Total: 50}, VerdictInconclusive, "50 of 100 requests per arm needed", false},
		{"no events yet", ArmData{Count: 0, Total: 5000}, ArmData{Count: 0, Total: 5000}, VerdictInconclusive, "no events in either arm yet", true},
		{"underpowered", ArmData{Count: 20, Total: 2000}, ArmData{Count: 20, Total: 2000}, VerdictInconclusive, "exceeds the margin (≈", true},
		{"enough data", ArmData{Count: 2000, Total: 200000}, ArmData{Count: 2000, Total: 200000}, VerdictPass, "within the +50.0% margin", false},
		{"clear harm with little data", ArmData{Count: 2, Total: 1000}, ArmData{Count: 60, Total: 1000}, VerdictFail, "harm beyond", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Judge(tpl, Observation{Measurements: []Measurement{{Metric: "err", Baseline: tc.b, Canary: tc.c}}})
			r := rep.Metrics[0]
			if r.Verdict != tc.want || !strings.Contains(r.Reason, tc.frag) {
				t.Errorf("got %s %q, want %s with %q", r.Verdict, r.Reason, tc.want, tc.frag)
			}
			if tc.needed && !(float64(r.Evidence.Needed) > float64(r.Evidence.Canary.N)) {
				t.Errorf("needed %v is not beyond the current %v", r.Evidence.Needed, r.Evidence.Canary.N)
			}
			if math.IsNaN(float64(r.Evidence.MDE)) {
				t.Errorf("no minimum detectable effect reported")
			}
		})
	}
}

func TestJudgeAbsoluteMarginOnRates(t *testing.T) {
	tpl := &Template{Name: "a", Metrics: []Metric{
		{Name: "err", Kind: KindRatio, Numerator: "e", Denominator: "r", Margin: Margin{Absolute: 0.001}, Critical: true},
	}}
	tests := []struct {
		name string
		b, c ArmData
		want Verdict
	}{
		{"no errors anywhere, plenty of traffic", ArmData{Count: 0, Total: 200000}, ArmData{Count: 0, Total: 200000}, VerdictPass},
		{"no errors, little traffic", ArmData{Count: 0, Total: 500}, ArmData{Count: 0, Total: 500}, VerdictInconclusive},
		{"half a per cent more errors", ArmData{Count: 100, Total: 100000}, ArmData{Count: 600, Total: 100000}, VerdictFail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Judge(tpl, Observation{Measurements: []Measurement{{Metric: "err", Baseline: tc.b, Canary: tc.c}}}).Metrics[0]
			if r.Verdict != tc.want || r.Evidence.Unit != UnitAbsolute {
				t.Errorf("got %s %s (%s), want %s", r.Verdict, r.Evidence.Unit, r.Reason, tc.want)
			}
		})
	}
}

func TestJudgeDirections(t *testing.T) {
	series := func(dir Direction, margin Margin, canary float64) Verdict {
		tpl := &Template{Name: "d", Metrics: []Metric{{Name: "g", Kind: KindSeries, Query: "q", Direction: dir, Margin: margin, Critical: true}}}
		return Judge(tpl, Observation{Measurements: []Measurement{{Metric: "g", Baseline: ArmData{Points: pts(200, 100, 0)}, Canary: ArmData{Points: pts(200, canary, 3)}}}}).Metrics[0].Verdict
	}
	ratio := func(dir Direction, canaryErrors float64) Verdict {
		tpl := &Template{Name: "d", Metrics: []Metric{{Name: "r", Kind: KindRatio, Numerator: "e", Denominator: "r", Direction: dir, Margin: Margin{Relative: 0.2}, Critical: true}}}
		return Judge(tpl, Observation{Measurements: []Measurement{{Metric: "r", Baseline: ArmData{Count: 10000, Total: 1e6}, Canary: ArmData{Count: canaryErrors, Total: 1e6}}}}).Metrics[0].Verdict
	}
	hist := func(dir Direction, factor float64) Verdict {
		tpl := &Template{Name: "d", Metrics: []Metric{{Name: "h", Kind: KindHistogram, Query: "q", Direction: dir, Margin: Margin{Relative: 0.1}, Critical: true}}}
		return Judge(tpl, Observation{Measurements: []Measurement{{Metric: "h", Baseline: ArmData{Buckets: lognormalBuckets(2e5, 0.1, 0.6)}, Canary: ArmData{Buckets: lognormalBuckets(2e5, 0.1*factor, 0.6)}}}}).Metrics[0].Verdict
	}
	tests := []struct {
		name string
		got  Verdict
		want Verdict
	}{
		{"series increase: higher fails", series(DirectionIncrease, Margin{Relative: 0.1}, 150), VerdictFail},
		{"series increase: lower passes", series(DirectionIncrease, Margin{Relative: 0.1}, 60), VerdictPass},
		{"series decrease: lower fails", series(DirectionDecrease, Margin{Relative: 0.1}, 60), VerdictFail},
		{"series decrease: higher passes", series(DirectionDecrease, Margin{Relative: 0.1}, 150), VerdictPass},
		{"series either: lower fails", series(DirectionEither, Margin{Relative: 0.1}, 60), VerdictFail},
		{"series either: higher fails", series(DirectionEither, Margin{Relative: 0.1}, 150), VerdictFail},
		{"series either: equal passes", series(DirectionEither, Margin{Relative: 0.1}, 100), VerdictPass},
		{"series absolute: +5 within 10", series(DirectionIncrease, Margin{Absolute: 10}, 105), VerdictPass},
		{"series absolute: +30 beyond 10", series(DirectionIncrease, Margin{Absolute: 10}, 130), VerdictFail},
		{"ratio decrease: fewer successes fail", ratio(DirectionDecrease, 5000), VerdictFail},
		{"ratio decrease: more successes pass", ratio(DirectionDecrease, 15000), VerdictPass},
		{"ratio either: more fails", ratio(DirectionEither, 15000), VerdictFail},
		{"ratio either: equal passes", ratio(DirectionEither, 10000), VerdictPass},
		{"histogram decrease: faster fails", hist(DirectionDecrease, 0.5), VerdictFail},
		{"histogram decrease: slower passes", hist(DirectionDecrease, 1.5), VerdictPass},
		{"histogram either: equal passes", hist(DirectionEither, 1), VerdictPass},
		{"histogram either: slower fails", hist(DirectionEither, 1.5), VerdictFail},
		{"histogram either: faster fails", hist(DirectionEither, 0.5), VerdictFail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %s, want %s", tc.got, tc.want)
			}
		})
	}
}

func TestJudgeHistogramAbsoluteMargin(t *testing.T) {
	tpl := &Template{Name: "h", Metrics: []Metric{{Name: "h", Kind: KindHistogram, Query: "q", Margin: Margin{Absolute: 0.05}, Critical: true}}}
	judge := func(median float64) Verdict {
		return Judge(tpl, Observation{Measurements: []Measurement{{Metric: "h", Baseline: ArmData{Buckets: lognormalBuckets(2e5, 0.1, 0.6)}, Canary: ArmData{Buckets: lognormalBuckets(2e5, median, 0.6)}}}}).Metrics[0].Verdict
	}
	if v := judge(0.1); v != VerdictPass {
		t.Errorf("same latency: %s", v)
	}
	if v := judge(0.3); v != VerdictFail {
		t.Errorf("+200ms median: %s", v)
	}
}

// Dry-run metrics are judged and reported but never decide; a non-critical
// failure keeps the analysis from passing without failing it.
func TestJudgeDryRunAndCritical(t *testing.T) {
	tpl := judgeTemplate()
	tpl.Metrics[0].Critical = false
	rep := Judge(tpl, healthy(3, 1.03))
	if rep.Verdict != VerdictInconclusive || !strings.Contains(rep.Reason, "error-rate (failed, not critical)") {
		t.Errorf("non-critical failure: %s %q", rep.Verdict, rep.Reason)
	}
	tpl.Metrics[0].DryRun = true
	rep = Judge(tpl, healthy(3, 1.03))
	r := resultOf(t, rep, "error-rate")
	if rep.Verdict != VerdictPass || r.Verdict != VerdictFail || !strings.Contains(r.Reason, "dry run") {
		t.Errorf("dry run: overall %s (%s), metric %s %q", rep.Verdict, rep.Reason, r.Verdict, r.Reason)
	}
	// Dry-run metrics are left out of Holm's family and of the score.
	if r.Evidence.PAdjusted != r.Evidence.PValue {
		t.Errorf("dry run p adjusted %v != raw %v", r.Evidence.PAdjusted, r.Evidence.PValue)
	}
	for _, g := range rep.Groups {
		if g.Group == "errors" {
			t.Errorf("dry-run metric scored: %+v", rep.Groups)
		}
	}
}

// Holm's correction is applied across exactly the statistical decision
// metrics.
func TestJudgeHolmAcrossDecisionMetrics(t *testing.T) {
	tpl := &Template{Name: "h"}
	var obs Observation
	for i, ec := range []float64{1180, 1170, 1150, 1100, 1300} {
		name := fmt.Sprintf("m%d", i)
		tpl.Metrics = append(tpl.Metrics, Metric{Name: name, Kind: KindRatio, Numerator: "e", Denominator: "r", Margin: Margin{Relative: 0.01}, Critical: true, DryRun: i == 4})
		obs.Measurements = append(obs.Measurements, Measurement{Metric: name, Baseline: ArmData{Count: 1000, Total: 1e5}, Canary: ArmData{Count: ec, Total: 1e5}})
	}
	tpl.Metrics = append(tpl.Metrics, Metric{Name: "th", Kind: KindThreshold, Query: "q", Max: ptr(1.0)})
	obs.Measurements = append(obs.Measurements, Measurement{Metric: "th", Canary: ArmData{Value: 0.5}})
	rep := Judge(tpl, obs)
	var raw []float64
	for _, r := range rep.Metrics[:4] {
		raw = append(raw, float64(r.Evidence.PValue))
	}
	want := stat.Holm(raw)
	for i, r := range rep.Metrics[:4] {
		if !near(float64(r.Evidence.PAdjusted), want[i], 1e-12) {
			t.Errorf("%s: adjusted %v, want %v (raw %v)", r.Metric, r.Evidence.PAdjusted, want[i], raw)
		}
	}
	// The family matters: m0 (raw p ≈ 0.011, ×4) still fails, m1 (raw p ≈
	// 0.022, ×3) is significant alone but not after correction.
	if rep.Metrics[0].Verdict != VerdictFail {
		t.Errorf("m0: %s %q", rep.Metrics[0].Verdict, rep.Metrics[0].Reason)
	}
	corrected := false
	for _, r := range rep.Metrics[:4] {
		if r.Evidence.PValue <= 0.05 && r.Evidence.PAdjusted > 0.05 {
			corrected = true
			if r.Verdict == VerdictFail {
				t.Errorf("%s failed on an uncorrected p-value", r.Metric)
			}
		}
	}
	if !corrected {
		t.Errorf("no metric moved across alpha by the correction: raw %v adjusted %v", raw, want)
	}
	if !math.IsNaN(float64(rep.Metrics[5].Evidence.PAdjusted)) {
		t.Errorf("threshold metric has an adjusted p-value")
	}
}

func TestJudgeSampleRatio(t *testing.T) {
	tests := []struct {
		name      string
		split     float64
		tolerance float64
		traffic   *Traffic
		baseTotal float64
		want      Verdict
		mismatch  bool
		checked   bool
		frag      string
	}{
		{"matching split from ratio denominators", 0.5, 0, nil, 500000, VerdictPass, false, true, "sample ratio ok"},
		{"no split given", 0, 0, nil, 500000, VerdictPass, false, false, ""},
		{"canary starved", 0.5, 0, &Traffic{Baseline: 10000, Canary: 5000, Source: "q"}, 0, VerdictInconclusive, true, true, "sample ratio mismatch: canary got 33.33% of traffic"},
		{"slight skew within tolerance", 0.5, 0.1, &Traffic{Baseline: 520000, Canary: 480000}, 0, VerdictPass, false, true, "sample ratio ok"},
		{"slight skew, no tolerance", 0.5, 0, &Traffic{Baseline: 520000, Canary: 480000}, 0, VerdictInconclusive, true, true, "mismatch"},
		{"expected 10% canary", 0.1, 0, &Traffic{Baseline: 900000, Canary: 100000}, 0, VerdictPass, false, true, "ok"},
		{"no traffic yet", 0.5, 0, &Traffic{}, 0, VerdictPass, false, false, "no traffic yet"},
		{"traffic query failed", 0.5, 0, &Traffic{Err: errors.New("timeout")}, 0, VerdictError, false, false, "traffic query failed: timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := judgeTemplate()
			tpl.SampleRatio.Tolerance = tc.tolerance
			obs := healthy(1, 1.03)
			obs.ExpectedSplit = tc.split
			obs.Traffic = tc.traffic
			rep := Judge(tpl, obs)
			if rep.Verdict != tc.want {
				t.Errorf("verdict %s (%s), want %s", rep.Verdict, rep.Reason, tc.want)
			}
			s := rep.SampleRatio
			if tc.split == 0 {
				if s != nil {
					t.Errorf("checked without a split: %+v", s)
				}
				return
			}
			if s.Mismatch != tc.mismatch || s.Checked != tc.checked || !strings.Contains(s.Reason, tc.frag) {
				t.Errorf("sample ratio %+v, want mismatch %v checked %v with %q", s, tc.mismatch, tc.checked, tc.frag)
			}
			if tc.mismatch && !strings.Contains(rep.Reason, "sample ratio mismatch") {
				t.Errorf("reason %q does not give the mismatch", rep.Reason)
			}
		})
	}
	// Pearson's statistic for 10000 vs 5000 against 50/50: 2·2500²/7500.
	obs := healthy(1, 1)
	obs.ExpectedSplit = 0.5
	obs.Traffic = &Traffic{Baseline: 10000, Canary: 5000}
	s := Judge(judgeTemplate(), obs).SampleRatio
	if !near(float64(s.ChiSquare), 2*2500.0*2500/7500, 1e-12) || s.ChiSquareP > 1e-300 {
		t.Errorf("chi-square %v p %v", s.ChiSquare, s.ChiSquareP)
	}
}

func TestJudgeScore(t *testing.T) {
	tpl := judgeTemplate()
	// cpu fails (not critical): groups errors 100, latency 100, resources 0.
	obs := healthy(1, 1.03)
	obs.Measurements[2].Canary.Points = pts(240, 2, 1)
	rep := Judge(tpl, obs)
	// Default group weights are the sums of metric weights: errors 2,
	// latency 2 (latency + p99), resources 1 → (2·100 + 2·100 + 1·0)/5 = 80.
	if rep.Score != 80 || rep.ScoreClass != "marginal" {
		t.Errorf("score %v %s, want 80 marginal; groups %+v", rep.Score, rep.ScoreClass, rep.Groups)
	}
	tpl.Score.Groups = map[string]float64{"errors": 1, "latency": 1, "resources": 8}
	rep = Judge(tpl, obs)
	if !near(float64(rep.Score), 20, 1e-12) || rep.ScoreClass != "fail" {
		t.Errorf("weighted score %v %s, want 20 fail", rep.Score, rep.ScoreClass)
	}
	// No data anywhere: no score at all, rather than a misleading number.
	empty := Observation{}
	for _, m := range tpl.Metrics {
		empty.Measurements = append(empty.Measurements, Measurement{Metric: m.Name, Baseline: ArmData{Empty: true}, Canary: ArmData{Empty: true}})
	}
	rep = Judge(tpl, empty)
	if !math.IsNaN(float64(rep.Score)) || rep.ScoreClass != "" || rep.Verdict != VerdictInconclusive {
		t.Errorf("no data: score %v %q verdict %s", rep.Score, rep.ScoreClass, rep.Verdict)
	}
	b, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(b), `"score":null`) {
		t.Errorf("marshal: %v %s", err, b)
	}
}

func TestJudgeDefensive(t *testing.T) {
	if rep := Judge(nil, Observation{}); rep.Verdict != VerdictError {
		t.Errorf("nil template: %s", rep.Verdict)
	}
	tpl := &Template{Name: "x", Metrics: []Metric{{Name: "m", Kind: "gauge"}}}
	rep := Judge(tpl, Observation{Measurements: []Measurement{{Metric: "m"}}})
	if rep.Verdict != VerdictError || !strings.Contains(rep.Metrics[0].Reason, "unknown kind") {
		t.Errorf("unknown kind: %s %q", rep.Verdict, rep.Metrics[0].Reason)
	}
	tpl = &Template{Name: "x", Metrics: []Metric{{Name: "m", Kind: KindSeries, Query: "q", Margin: Margin{Absolute: 1}, DryRun: true}}}
	if rep := Judge(tpl, Observation{}); rep.Verdict != VerdictInconclusive || rep.Reason != "no decision metrics" {
		t.Errorf("only dry run: %s %q", rep.Verdict, rep.Reason)
	}
}

// The same input always gives the same report.
func TestJudgeIsDeterministic(t *testing.T) {
	a, _ := json.Marshal(Judge(judgeTemplate(), healthy(1.2, 1.05)))
	b, _ := json.Marshal(Judge(judgeTemplate(), healthy(1.2, 1.05)))
	if string(a) != string(b) {
		t.Error("two judgements of the same input differ")
	}
}

func TestFloatJSON(t *testing.T) {
	tests := []struct {
		in   Float
		json string
	}{
		{1.5, "1.5"}, {0, "0"}, {Float(math.NaN()), "null"}, {Float(math.Inf(1)), `"+Inf"`}, {Float(math.Inf(-1)), `"-Inf"`}, {1e-300, "1e-300"},
	}
	for _, tc := range tests {
		b, err := json.Marshal(tc.in)
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tc.in, b, err, tc.json)
		}
		var back Float
		if err := json.Unmarshal(b, &back); err != nil || !(back == tc.in || math.IsNaN(float64(back)) && math.IsNaN(float64(tc.in))) {
			t.Errorf("Unmarshal(%s) = %v, %v", b, back, err)
		}
	}
	var f Float
	if err := json.Unmarshal([]byte(`"lots"`), &f); err == nil {
		t.Error(`"lots" accepted as a number`)
	}
}
