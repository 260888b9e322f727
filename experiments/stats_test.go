package experiments

import (
	"math"
	"math/rand/v2"
	"testing"
)

func statsOf(xs []float64) Stats {
	var s Stats
	for _, x := range xs {
		s.Add(x, 0)
	}
	return s
}

func TestStatsMergeAndReplace(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var all, a, b Stats
	for i := range 1000 {
		x, y := r.ExpFloat64()*10, float64(r.IntN(4)+1)
		if r.IntN(3) == 0 {
			x = 0
		}
		all.Add(x, y)
		if i%2 == 0 {
			a.Add(x, y)
		} else {
			b.Add(x, y)
		}
	}
	a.Merge(b)
	if a.Users != all.Users || a.Conversions != all.Conversions ||
		!relNear(a.Sum, all.Sum, 1e-12) || !relNear(a.SumSquares, all.SumSquares, 1e-12) ||
		!relNear(a.DenominatorSum, all.DenominatorSum, 1e-12) || !relNear(a.SumProducts, all.SumProducts, 1e-12) {
		t.Errorf("merged halves %+v differ from the whole %+v", a, all)
	}

	// A user first seen with nothing, then converting twice.
	var folded, direct Stats
	folded.Add(0, 0)
	folded.Replace(0, 0, 1, 2)
	folded.Replace(1, 2, 5, 3)
	direct.Add(5, 3)
	if folded != direct {
		t.Errorf("folded %+v, want %+v", folded, direct)
	}
	folded.Replace(5, 3, 0, 0)
	if folded.Conversions != 0 || folded.Sum != 0 || folded.Users != 1 {
		t.Errorf("after going back to zero: %+v", folded)
	}

	var bad Stats
	bad.Add(math.NaN(), math.Inf(1))
	if bad != (Stats{Users: 1}) {
		t.Errorf("non-finite values counted: %+v", bad)
	}
}

// Textbook example: the data 2, 4, 4, 4, 5, 5, 7, 9 have mean 5, population
// standard deviation 2, so sample variance 32/7.
func TestSummarizeMean(t *testing.T) {
	s := statsOf([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	sum, ok := s.Summarize(false)
	if !ok || sum.Value != 5 || !relNear(sum.Variance, 32.0/7/8, 1e-14) || !relNear(sum.StdDev, math.Sqrt(32.0/7), 1e-14) {
		t.Errorf("Summarize = %+v, %v", sum, ok)
	}
	// Padding with exposed users who did nothing: 8 more zeros.
	s.Users = 16
	sum, _ = s.Summarize(false)
	// mean 40/16 = 2.5; Σx² = 232, sample variance (232 − 1600/16)/15 = 8.8.
	if sum.Value != 2.5 || !relNear(sum.Variance, 8.8/16, 1e-14) {
		t.Errorf("padded Summarize = %+v", sum)
	}
	for _, n := range []int{0, 1} {
		s := statsOf(make([]float64, n))
		if _, ok := s.Summarize(false); ok {
			t.Errorf("Summarize with %d users is ok", n)
		}
	}
}

// TestSummarizeRatio checks the delta-method variance against a direct
// two-pass computation from the per-user values, and that a constant
// denominator of 1 reduces a ratio to a plain mean.
func TestSummarizeRatio(t *testing.T) {
	xs := []float64{1, 3, 2, 0, 5, 4}
	ys := []float64{2, 4, 2, 1, 3, 5}
	var s, ones Stats
	for i := range xs {
		s.Add(xs[i], ys[i])
		ones.Add(xs[i], 1)
	}
	n := float64(len(xs))
	var mx, my float64
	for i := range xs {
		mx += xs[i] / n
		my += ys[i] / n
	}
	var vx, vy, cxy float64
	for i := range xs {
		vx += (xs[i] - mx) * (xs[i] - mx) / (n - 1)
		vy += (ys[i] - my) * (ys[i] - my) / (n - 1)
		cxy += (xs[i] - mx) * (ys[i] - my) / (n - 1)
	}
	r := mx / my // 15/17
	want := (vx - 2*r*cxy + r*r*vy) / (n * my * my)
	sum, ok := s.Summarize(true)
	if !ok || !relNear(sum.Value, 15.0/17, 1e-14) || !relNear(sum.Variance, want, 1e-12) {
		t.Errorf("ratio Summarize = %+v, want value %v variance %v", sum, 15.0/17, want)
	}
	mean, _ := statsOf(xs).Summarize(false)
	asRatio, _ := ones.Summarize(true)
	if !relNear(asRatio.Value, mean.Value, 1e-14) || !relNear(asRatio.Variance, mean.Variance, 1e-12) {
		t.Errorf("ratio over 1 = %+v, mean = %+v", asRatio, mean)
	}
	var zeroDen Stats
	zeroDen.Add(1, 0)
	zeroDen.Add(2, 0)
	if _, ok := zeroDen.Summarize(true); ok {
		t.Error("ratio with Σy = 0 is ok")
	}
}
