package experiments

import "math"

// Stats are the sufficient statistics of one metric in one arm: enough to
// compute means, variances and the delta-method variance of a ratio without
// keeping a single raw event. x is a user's metric value (the numerator for
// mean and ratio metrics) and y the denominator (mean and ratio metrics only),
// both as returned by [Metric.UserValue].
//
// Exposed users who never sent an event count as zeros; a consumer may add
// them with Add(0, 0) on exposure, or leave them out and let [Analyze] pad
// Users up to the arm's exposure count (zeros add nothing to the sums).
type Stats struct {
	Users       int64   `json:"users"`
	Conversions int64   `json:"conversions"` // users with x ≠ 0
	Sum         float64 `json:"sum"`         // Σx
	SumSquares  float64 `json:"sumSquares"`  // Σx²
	// Ratio metrics only.
	DenominatorSum        float64 `json:"denominatorSum,omitempty"`        // Σy
	DenominatorSumSquares float64 `json:"denominatorSumSquares,omitempty"` // Σy²
	SumProducts           float64 `json:"sumProducts,omitempty"`           // Σxy
}

// Add counts one more user with values x and y (y is 0 for metrics that are
// not ratios). Non-finite values count as 0.
func (s *Stats) Add(x, y float64) {
	x, y = finite(x), finite(y)
	s.Users++
	s.add(x, y, 1)
}

// Replace changes the values of a user already counted from (oldX, oldY) to
// (newX, newY): how a consumer folds a user's later events without
// rescanning. Users is unchanged. Non-finite values count as 0.
func (s *Stats) Replace(oldX, oldY, newX, newY float64) {
	s.add(finite(oldX), finite(oldY), -1)
	s.add(finite(newX), finite(newY), 1)
}

func (s *Stats) add(x, y, sign float64) {
	if x != 0 {
		s.Conversions += int64(sign)
	}
	s.Sum += sign * x
	s.SumSquares += sign * x * x
	s.DenominatorSum += sign * y
	s.DenominatorSumSquares += sign * y * y
	s.SumProducts += sign * x * y
}

// Merge adds o's users into s, as if every user of o had been added to s.
func (s *Stats) Merge(o Stats) {
	s.Users += o.Users
	s.Conversions += o.Conversions
	s.Sum += o.Sum
	s.SumSquares += o.SumSquares
	s.DenominatorSum += o.DenominatorSum
	s.DenominatorSumSquares += o.DenominatorSumSquares
	s.SumProducts += o.SumProducts
}

// Summary is one arm's estimate of a metric.
type Summary struct {
	Users int64 `json:"users"`
	// Value is the mean of x, or for ratio metrics Σx/Σy.
	Value float64 `json:"value"`
	// Variance is the variance of Value as an estimate (s²/n, or the
	// delta-method variance of the ratio).
	Variance float64 `json:"variance"`
	// StdDev is the per-user standard deviation of x (informational).
	StdDev float64 `json:"stdDev"`
}

// Summarize estimates the metric in this arm; ratio selects the ratio
// estimator Σx/Σy. ok is false when there are fewer than two users or, for a
// ratio, when Σy is 0: no estimate with a variance exists then.
//
// For a ratio R = x̄/ȳ the delta method gives
// Var(R) ≈ (s²ₓ − 2R·sₓᵧ + R²·s²ᵧ) / (n·ȳ²).
func (s Stats) Summarize(ratio bool) (sum Summary, ok bool) {
	sum, ok = s.summarize(ratio)
	if !ok || !isFinite(sum.Value) || !isFinite(sum.Variance) || !isFinite(sum.StdDev) {
		// Corrupt or overflowing statistics give no estimate rather than NaN.
		if !isFinite(sum.Value) || !isFinite(sum.StdDev) {
			sum.Value, sum.StdDev = 0, 0
		}
		sum.Variance = 0
		return sum, false
	}
	return sum, true
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (s Stats) summarize(ratio bool) (sum Summary, ok bool) {
	sum.Users = s.Users
	if s.Users < 2 {
		if s.Users == 1 && !ratio {
			sum.Value = s.Sum
		}
		return sum, false
	}
	n := float64(s.Users)
	mx := s.Sum / n
	vx := sampleCov(s.SumSquares, s.Sum, s.Sum, n)
	sum.StdDev = sqrtPos(vx)
	if !ratio {
		sum.Value = mx
		sum.Variance = vx / n
		return sum, true
	}
	my := s.DenominatorSum / n
	if my == 0 {
		return sum, false
	}
	vy := sampleCov(s.DenominatorSumSquares, s.DenominatorSum, s.DenominatorSum, n)
	cxy := sampleCov(s.SumProducts, s.Sum, s.DenominatorSum, n)
	r := mx / my
	sum.Value = r
	sum.Variance = max(0, (vx-2*r*cxy+r*r*vy)/(n*my*my))
	return sum, true
}

// sampleCov is the unbiased sample covariance (Σab − Σa·Σb/n)/(n−1), clamped
// at 0 when a and b are the same variable and rounding made it negative.
func sampleCov(sumAB, sumA, sumB, n float64) float64 {
	c := (sumAB - sumA*sumB/n) / (n - 1)
	if sumA == sumB && c < 0 {
		return 0
	}
	return c
}
