package canary

import (
	"math"
	"slices"
	"testing"
	"time"
)

// bucketsOf turns raw values into cumulative buckets whose bounds are the
// distinct values of both samples, so each observation sits in the bucket
// bounded by its own value and equal values share a bucket.
func bucketsOf(values, all []float64) []Bucket {
	bounds := slices.Clone(all)
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	out := make([]Bucket, 0, len(bounds)+1)
	for _, ub := range bounds {
		n := 0
		for _, v := range values {
			if v <= ub {
				n++
			}
		}
		out = append(out, Bucket{UpperBound: ub, Count: float64(n)})
	}
	return append(out, Bucket{UpperBound: inf, Count: float64(len(values))})
}

// Mann–Whitney on bucket counts against worked examples. U and the DeLong
// variance were counted pair by pair outside this code (Python, brute force
// with ties as ½).
func TestProbabilisticIndex(t *testing.T) {
	tests := []struct {
		name     string
		canary   []float64
		baseline []float64
		wantU    float64
		wantVar  float64 // DeLong variance of U/(n_c·n_b)
	}{
		// SciPy's mannwhitneyu example: males vs females, U₁ = 17 of 20 pairs.
		{"textbook example without ties", []float64{19, 22, 16, 29, 24}, []float64{20, 11, 17, 12}, 17, 0.019166666666666665},
		// Ordinal scores with many ties: U = 49 of 72 pairs.
		{"ordinal data with ties", []float64{1, 2, 2, 3, 3, 3, 4, 4, 5}, []float64{1, 1, 2, 2, 2, 3, 3, 4}, 49, 0.017288773148148147},
		{"all tied", []float64{3, 3, 3}, []float64{3, 3}, 3, 0},
		{"fully separated", []float64{10, 11, 12}, []float64{1, 2}, 6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			all := append(slices.Clone(tc.canary), tc.baseline...)
			cs, nc, _ := histogramSpans(bucketsOf(tc.canary, all))
			bs, nb, _ := histogramSpans(bucketsOf(tc.baseline, all))
			if nc != float64(len(tc.canary)) || nb != float64(len(tc.baseline)) {
				t.Fatalf("totals %v, %v", nc, nb)
			}
			theta, se := probabilisticIndex(cs, bs, nc, nb, make([]float64, len(cs)), make([]float64, len(bs)))
			if got := theta * nc * nb; !near(got, tc.wantU, 1e-12) {
				t.Errorf("U = %v, want %v", got, tc.wantU)
			}
			// The variance is floored at one pair's weight.
			wantVar := max(tc.wantVar, 1/(nc*nb))
			if got := se * se; !near(got, wantVar, 1e-12) {
				t.Errorf("variance = %v, want %v", got, wantVar)
			}
		})
	}
	// U is symmetric: U(c, b) + U(b, c) = n_c·n_b, whatever the ties.
	c, b := []float64{1, 2, 2, 3, 3, 3, 4, 4, 5}, []float64{1, 1, 2, 2, 2, 3, 3, 4}
	all := append(slices.Clone(c), b...)
	cs, nc, _ := histogramSpans(bucketsOf(c, all))
	bs, nb, _ := histogramSpans(bucketsOf(b, all))
	t1, _ := probabilisticIndex(cs, bs, nc, nb, make([]float64, 16), make([]float64, 16))
	t2, _ := probabilisticIndex(bs, cs, nb, nc, make([]float64, 16), make([]float64, 16))
	if !near(t1+t2, 1, 1e-12) {
		t.Errorf("θ(c,b) + θ(b,c) = %v, want 1", t1+t2)
	}
}

// P(X > Y) + ½P(X = Y) for uniform and point spans; the overlapping
// continuous cases were integrated with mpmath outside this code.
func TestAbove(t *testing.T) {
	tests := []struct {
		name string
		x, y span
		want float64
	}{
		{"U[1,3] vs U[2,5]", span{1, 3, 1}, span{2, 5, 1}, 1.0 / 12},
		{"U[0.5,1.5] vs U[0,1]", span{0.5, 1.5, 1}, span{0, 1, 1}, 0.875},
		{"same range", span{0, 1, 1}, span{0, 1, 1}, 0.5},
		{"wholly above", span{2, 3, 1}, span{0, 1, 1}, 1},
		{"touching below", span{0, 1, 1}, span{1, 2, 1}, 0},
		{"point inside range", span{0.25, 0.25, 1}, span{0, 1, 1}, 0.25},
		{"range around point", span{0, 1, 1}, span{0.25, 0.25, 1}, 0.75},
		{"equal points tie", span{2, 2, 1}, span{2, 2, 1}, 0.5},
		{"+Inf points tie", span{inf, inf, 1}, span{inf, inf, 1}, 0.5},
		{"+Inf above a range", span{inf, inf, 1}, span{0, 1, 1}, 1},
		{"range below +Inf", span{0, 1, 1}, span{inf, inf, 1}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := above(tc.x, tc.y); !near(got, tc.want, 1e-12) {
				t.Errorf("above = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHistogramSpans(t *testing.T) {
	tests := []struct {
		name        string
		in          []Bucket
		want        []span
		wantTotal   float64
		wantDropped int
	}{
		{"plain", []Bucket{{0.1, 5}, {0.5, 8}, {inf, 10}}, []span{{0, 0.1, 5}, {0.1, 0.5, 3}, {inf, inf, 2}}, 10, 0},
		{"unsorted with duplicates summed", []Bucket{{inf, 6}, {0.5, 4}, {0.1, 2}, {0.5, 4}, {0.1, 1}, {inf, 4}}, []span{{0, 0.1, 3}, {0.1, 0.5, 5}, {inf, inf, 2}}, 10, 0},
		{"non-monotone made monotone", []Bucket{{0.1, 5}, {0.2, 4}, {inf, 7}}, []span{{0, 0.1, 5}, {inf, inf, 2}}, 7, 0},
		{"NaN and negative dropped", []Bucket{{0.1, math.NaN()}, {math.NaN(), 3}, {0.2, -1}, {0.5, 2}, {inf, 2}}, []span{{0, 0.5, 2}}, 2, 3},
		{"non-positive first bound is a point", []Bucket{{-1, 2}, {1, 5}}, []span{{-1, -1, 2}, {-1, 1, 3}}, 5, 0},
		{"zero counts", []Bucket{{0.1, 0}, {inf, 0}}, nil, 0, 0},
		{"empty", nil, nil, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, total, dropped := histogramSpans(tc.in)
			if !slices.Equal(got, tc.want) || total != tc.wantTotal || dropped != tc.wantDropped {
				t.Errorf("got %v total %v dropped %d, want %v total %v dropped %d", got, total, dropped, tc.want, tc.wantTotal, tc.wantDropped)
			}
		})
	}
}

// Quantiles interpolate within a bucket as Prometheus's histogram_quantile
// does, and a quantile in the +Inf bucket is the largest finite bound.
func TestHistogramQuantile(t *testing.T) {
	spans, total, _ := histogramSpans([]Bucket{{0.1, 50}, {0.2, 100}, {0.4, 180}, {inf, 200}})
	tests := []struct {
		q, want float64
	}{{0.1, 0.04}, {0.25, 0.1}, {0.5, 0.2}, {0.75, 0.325}, {0.8, 0.35}, {0.95, 0.4}, {0.99, 0.4}}
	for _, tc := range tests {
		if got := histogramQuantile(spans, total, tc.q); !near(got, tc.want, 1e-12) {
			t.Errorf("q%v = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := histogramQuantile(nil, 0, 0.5); !math.IsNaN(got) {
		t.Errorf("empty histogram quantile = %v, want NaN", got)
	}
}

func TestAlignPoints(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(i int, v float64) Point { return Point{T: t0.Add(time.Duration(i) * time.Minute), V: v} }
	canary := []Point{at(3, 30), at(0, 1), at(1, math.NaN()), at(2, 20), at(5, 50)}
	baseline := []Point{at(0, 2), at(1, 3), at(2, math.Inf(1)), at(3, 4), at(4, 5)}
	pairs, dropped := alignPoints(canary, baseline, &seriesScratch{})
	want := [][2]float64{{1, 2}, {30, 4}}
	if !slices.Equal(pairs, want) {
		t.Errorf("pairs = %v, want %v", pairs, want)
	}
	// Dropped: the NaN pair, the Inf pair, canary t=5 and baseline t=4 unmatched.
	if dropped != 4 {
		t.Errorf("dropped = %d, want 4", dropped)
	}
	// Timestamps agreeing to the millisecond align; sorted input needs no copy.
	c2 := []Point{{T: t0.Add(300 * time.Microsecond), V: 1}, {T: t0.Add(time.Second), V: 2}}
	b2 := []Point{{T: t0, V: 3}, {T: t0.Add(time.Second + 2*time.Millisecond), V: 4}}
	pairs, dropped = alignPoints(c2, b2, &seriesScratch{})
	if !slices.Equal(pairs, [][2]float64{{1, 3}}) || dropped != 2 {
		t.Errorf("millisecond alignment: %v dropped %d", pairs, dropped)
	}
}

func TestSerialMeanSE(t *testing.T) {
	// Independent-looking short data: the plain standard error of the mean
	// (no positive lag-1 correlation to correct for).
	mean, se, df := serialMeanSE([]float64{1, -1, 1, -1, 1, -1, 1, -1})
	if mean != 0 || !near(se, math.Sqrt(8.0/7/8), 1e-12) || df != 7 {
		t.Errorf("alternating: mean %v se %v df %v", mean, se, df)
	}
	// Constant data has no spread at all.
	if _, se, _ := serialMeanSE([]float64{2, 2, 2}); se != 0 {
		t.Errorf("constant: se %v", se)
	}
	// Strongly autocorrelated data: the corrected standard error is several
	// times the naive one, with few degrees of freedom.
	for _, n := range []int{12, 400} {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = math.Sin(float64(i) / 8)
		}
		_, se, df := serialMeanSE(xs)
		var m, ss float64
		for _, x := range xs {
			m += x
		}
		m /= float64(n)
		for _, x := range xs {
			ss += (x - m) * (x - m)
		}
		naive := math.Sqrt(ss / float64(n-1) / float64(n))
		if se < 3*naive || df > float64(n)/5 {
			t.Errorf("n=%d: se %v (df %v), naive %v: want a much larger se and few df", n, se, df, naive)
		}
	}
}

func TestCSLevel(t *testing.T) {
	cases := []struct {
		alpha float64
		want  string
	}{
		{alpha: 0.05, want: "95% CS"},
		{alpha: 0.01, want: "99% CS"},
		{alpha: 0.001, want: "99.9% CS"},
		{alpha: 0.0001, want: "99.99% CS"},
		{alpha: 0.1, want: "90% CS"},
	}
	for _, tc := range cases {
		if got := csLevel(tc.alpha); got != tc.want {
			t.Errorf("csLevel(%v) = %q, want %q", tc.alpha, got, tc.want)
		}
	}
}
