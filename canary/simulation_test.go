package canary

import (
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/internal/stat"
)

// binomial draws Binomial(n, p) by skipping geometric gaps between
// successes: O(n·p) work, exact.
func binomial(r *rand.Rand, n int, p float64) int {
	if p <= 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	lq := math.Log1p(-p)
	k, pos := 0, 0
	for {
		pos += int(math.Log(1-r.Float64())/lq) + 1
		if pos > n {
			return k
		}
		k++
	}
}

// simArm accumulates one arm's data over a run's growing window.
type simArm struct {
	errors, requests float64
	buckets          []float64 // per-bucket counts over defaultBounds and +Inf
	points           []Point
	ar               float64 // the arm's own AR(1) noise
}

// world is one simulated canary: how much worse the canary is per metric.
type world struct {
	errFactor, latFactor, cpuFactor float64
}

const (
	simRequests = 2000 // per arm per look
	simErrRate  = 0.01
	simLatency  = 300 // observations per arm per look
	simPoints   = 6   // gauge points per arm per look
)

func (w world) look(r *rand.Rand, b, c *simArm, shared *float64, look int, t0 time.Time) {
	for k, arm := range []*simArm{b, c} {
		errF, latF := 1.0, 1.0
		if k == 1 {
			errF, latF = w.errFactor, w.latFactor
		}
		arm.requests += simRequests
		arm.errors += float64(binomial(r, simRequests, simErrRate*errF))
		if arm.buckets == nil {
			arm.buckets = make([]float64, len(defaultBounds)+1)
		}
		for range simLatency {
			v := 0.1 * latF * math.Exp(0.6*r.NormFloat64())
			arm.buckets[sort.SearchFloat64s(defaultBounds, v)]++
		}
	}
	// Gauges share a load component (so the arms are correlated, as real
	// replicas are) plus their own autocorrelated noise.
	for i := range simPoints {
		*shared = 0.7**shared + r.NormFloat64()
		ts := t0.Add(time.Duration(look*simPoints+i) * 10 * time.Second)
		for k, arm := range []*simArm{b, c} {
			arm.ar = 0.7*arm.ar + r.NormFloat64()
			level := 1.0
			if k == 1 {
				level = w.cpuFactor
			}
			arm.points = append(arm.points, Point{T: ts, V: level * (1 + 0.02**shared + 0.02*arm.ar)})
		}
	}
}

func (a *simArm) data(kind Kind) ArmData {
	switch kind {
	case KindRatio:
		return ArmData{Count: a.errors, Total: a.requests}
	case KindHistogram:
		bs := make([]Bucket, len(a.buckets))
		cum := 0.0
		for i, n := range a.buckets {
			cum += n
			ub := inf
			if i < len(defaultBounds) {
				ub = defaultBounds[i]
			}
			bs[i] = Bucket{UpperBound: ub, Count: cum}
		}
		return ArmData{Buckets: bs}
	}
	return ArmData{Points: a.points}
}

func simTemplate() *Template {
	return &Template{
		Name:  "sim",
		Alpha: 0.05,
		Metrics: []Metric{
			{Name: "error-rate", Kind: KindRatio, Numerator: "e", Denominator: "r", Margin: Margin{Relative: 0.1}, Critical: true},
			{Name: "latency", Kind: KindHistogram, Query: "h", Margin: Margin{Relative: 0.1}, Critical: true},
			{Name: "cpu", Kind: KindSeries, Query: "c", Margin: Margin{Relative: 0.1}, Critical: true},
		},
	}
}

type simOutcome struct {
	failedRuns    int            // runs with a fail verdict at any look
	failedMetric  map[string]int // runs in which each metric failed at some look
	naiveFailRuns int            // runs a fixed-sample z-test on the error rate would fail at some look
}

// simulate runs repeated looks at growing windows, as an analysis with a
// growing lookback does, and counts runs that ever fail.
func simulate(seed uint64, w world, runs, looks int) simOutcome {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	tpl := simTemplate()
	out := simOutcome{failedMetric: map[string]int{}}
	t0 := time.Unix(1700000000, 0)
	z := stat.NormalQuantile(1 - tpl.Alpha)
	for range runs {
		var b, c simArm
		var shared float64
		failed, naive := false, false
		metricFailed := map[string]bool{}
		for look := range looks {
			w.look(r, &b, &c, &shared, look, t0)
			obs := Observation{}
			for _, m := range tpl.Metrics {
				obs.Measurements = append(obs.Measurements, Measurement{Metric: m.Name, Baseline: b.data(m.Kind), Canary: c.data(m.Kind)})
			}
			rep := Judge(tpl, obs)
			if rep.Verdict == VerdictFail {
				failed = true
				for _, mr := range rep.Metrics {
					if mr.Verdict == VerdictFail && strings.Contains(rep.Reason, mr.Metric) {
						metricFailed[mr.Metric] = true
					}
				}
			}
			// What a fixed-sample one-sided test of the same hypothesis does
			// when it is simply repeated at every look.
			se := math.Sqrt(1/(c.errors+0.5) + 1/(b.errors+0.5))
			if (math.Log((c.errors+0.5)/(b.errors+0.5))-math.Log(1.1))/se > z {
				naive = true
			}
		}
		if failed {
			out.failedRuns++
		}
		if naive {
			out.naiveFailRuns++
		}
		for m := range metricFailed {
			out.failedMetric[m]++
		}
	}
	return out
}

// TestSimulationFalseFailsAcrossLooks: on A/A data, and on canaries exactly
// at the harm margin (the worst case of "no harm beyond the margin"), the
// share of runs that ever fail across 20 looks stays at or below alpha,
// while a fixed-sample test repeated at each look does not. A canary with
// twice the error rate is caught, and the failure names the metric.
func TestSimulationFalseFailsAcrossLooks(t *testing.T) {
	const (
		runs  = 150
		looks = 20
		alpha = 0.05
	)
	tests := []struct {
		name         string
		world        world
		maxFailShare float64 // of runs failing at any look
		minFailShare float64
		naiveAbove   float64 // the naive test's false-fail share must exceed this
		metric       string  // the metric that must be named
	}{
		{name: "A/A", world: world{1, 1, 1}, maxFailShare: alpha},
		{name: "every metric exactly at the margin", world: world{1.1, 1.1, 1.1}, maxFailShare: alpha, naiveAbove: alpha},
		{name: "2x error rate", world: world{2, 1, 1}, minFailShare: 0.9, maxFailShare: 1, metric: "error-rate"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := simulate(uint64(100+i), tc.world, runs, looks)
			share := float64(out.failedRuns) / runs
			t.Logf("failed runs %d/%d (per metric %v); naive repeated test %d/%d", out.failedRuns, runs, out.failedMetric, out.naiveFailRuns, runs)
			if share > tc.maxFailShare || share < tc.minFailShare {
				t.Errorf("share of failed runs %.3f, want within [%.2f, %.2f]", share, tc.minFailShare, tc.maxFailShare)
			}
			if tc.naiveAbove > 0 && float64(out.naiveFailRuns)/runs <= tc.naiveAbove {
				t.Errorf("the naive repeated test fails %d/%d runs: the simulation is too easy to show anything", out.naiveFailRuns, runs)
			}
			if tc.metric != "" && float64(out.failedMetric[tc.metric])/runs < tc.minFailShare {
				t.Errorf("%s named in %d/%d failed runs", tc.metric, out.failedMetric[tc.metric], runs)
			}
		})
	}
}
