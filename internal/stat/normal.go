package stat

import "math"

const sqrt2Pi = 2.5066282746310002 // √(2π)

// NormalCDF returns Φ(x), the standard normal distribution function: 0 at
// -Inf, 1 at +Inf and NaN for NaN. Both tails keep their relative precision
// (it is computed from math.Erfc).
func NormalCDF(x float64) float64 {
	return 0.5 * math.Erfc(-x/math.Sqrt2)
}

// NormalPDF returns φ(x), the standard normal density: 0 at ±Inf and NaN for
// NaN.
func NormalPDF(x float64) float64 {
	return math.Exp(-0.5*x*x) / sqrt2Pi
}

// NormalLogCDF returns ln Φ(x), accurate far into the lower tail where Φ
// itself underflows (below x ≈ -38). It is -Inf at -Inf, 0 at +Inf and NaN
// for NaN.
func NormalLogCDF(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return math.NaN()
	case math.IsInf(x, -1):
		return math.Inf(-1)
	case x > -30:
		return math.Log(NormalCDF(x))
	}
	// Asymptotic series of the Mills ratio: Φ(x) ≈ φ(x)/(-x)·(1 − 1/x² + 3/x⁴ − 15/x⁶).
	x2 := x * x
	series := 1 - 1/x2 + 3/(x2*x2) - 15/(x2*x2*x2)
	return -0.5*x2 - 0.5*math.Log(2*math.Pi) - math.Log(-x) + math.Log(series)
}

// NormalQuantile returns Φ⁻¹(p), the standard normal quantile: -Inf at 0,
// +Inf at 1 and NaN outside [0, 1] or for NaN. It is accurate to a few ulps,
// also far in the tails: a starting value from math.Erfcinv (or from the tail
// asymptote below 1e-10) is refined by Halley steps on Φ computed from
// math.Erfc, which keeps tail precision that math.Erfcinv alone loses.
func NormalQuantile(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0 || p > 1:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p == 0.5:
		return 0
	case p > 0.5:
		return -NormalQuantile(1 - p) // 1-p is exact for p in [0.5, 1]
	}
	var x float64
	if p > 1e-10 {
		x = -math.Sqrt2 * math.Erfcinv(2*p)
	} else {
		// Φ(x) ≈ φ(x)/|x| in the lower tail: solve -x²/2 - ln|x| - ½ln 2π = ln p approximately.
		t := math.Sqrt(-2 * math.Log(p))
		x = -(t - (math.Log(t)+0.5*math.Log(2*math.Pi))/t)
	}
	if p < 1e-300 {
		return x // φ underflows; the asymptote is as good as it gets
	}
	for range 4 {
		u := (NormalCDF(x) - p) / NormalPDF(x)
		step := u / (1 + x*u/2)
		x -= step
		if math.Abs(step) <= 1e-15*math.Abs(x) {
			break
		}
	}
	return x
}

// LogAddExp returns ln(eᵃ + eᵇ) without overflow: -Inf when both are -Inf,
// +Inf when either is +Inf, NaN when either is NaN.
func LogAddExp(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	if a < b {
		a, b = b, a
	}
	if math.IsInf(a, 0) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// log1mExp returns ln(1 − eˣ) for x ≤ 0 without cancellation.
func log1mExp(x float64) float64 {
	if x > -math.Ln2 {
		return math.Log(-math.Expm1(x))
	}
	return math.Log1p(-math.Exp(x))
}
