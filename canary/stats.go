package canary

import (
	"math"
	"slices"
)

// This file holds the special functions the judge needs: the normal and
// Student t distributions, the chi-square tail for one degree of freedom, the
// regularized incomplete beta function, and Holm's step-down adjustment. Every
// function is total: out-of-domain input yields NaN (or the documented limit),
// never a panic.

// normalCDF returns Φ(x), the standard normal distribution function.
func normalCDF(x float64) float64 {
	return 0.5 * math.Erfc(-x/math.Sqrt2)
}

// normalPDF returns φ(x), the standard normal density.
func normalPDF(x float64) float64 {
	return math.Exp(-0.5*x*x) / math.Sqrt(2*math.Pi)
}

// logNormalCDF returns log Φ(x), accurate far into the lower tail where Φ
// itself underflows.
func logNormalCDF(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return math.NaN()
	case x > -30:
		return math.Log(normalCDF(x))
	}
	// Asymptotic expansion of the Mills ratio: Φ(x) ≈ φ(x)/(-x)·(1 − 1/x² + 3/x⁴ − 15/x⁶).
	x2 := x * x
	series := 1 - 1/x2 + 3/(x2*x2) - 15/(x2*x2*x2)
	return -0.5*x2 - 0.5*math.Log(2*math.Pi) - math.Log(-x) + math.Log(series)
}

// normalQuantile returns Φ⁻¹(p). It returns -Inf at 0, +Inf at 1 and NaN
// outside [0, 1]. The library inverse (math.Erfcinv) is computed through
// 1 − x and loses relative precision in the lower tail, so two Newton steps on
// the accurate Φ restore it.
func normalQuantile(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0 || p > 1:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p > 0.5:
		return -normalQuantile(1 - p)
	}
	x := -math.Sqrt2 * math.Erfcinv(2*p)
	for range 2 {
		d := normalPDF(x)
		if d == 0 || math.IsInf(x, 0) {
			break
		}
		x -= (normalCDF(x) - p) / d
	}
	return x
}

// logBeta returns log B(a, b) for a, b > 0.
func logBeta(a, b float64) float64 {
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	return la + lb - lab
}

// log1mExp returns log(1 − eˣ) for x ≤ 0 without cancellation.
func log1mExp(x float64) float64 {
	if x > -math.Ln2 {
		return math.Log(-math.Expm1(x))
	}
	return math.Log1p(-math.Exp(x))
}

// logAddExp returns log(eᵃ + eᵇ).
func logAddExp(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	if math.IsInf(a, -1) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// betaIncLog returns log I_x(a, b) and log(1 − I_x(a, b)), the logs of the
// regularized incomplete beta function and its complement, for a, b > 0.
// It evaluates the continued fraction on whichever side converges and takes
// the complement in log space, so both tails stay accurate when tiny. For
// very large a and b, where the fraction would need too many terms, it falls
// back to a normal approximation of the beta distribution.
func betaIncLog(x, a, b float64) (lower, upper float64) {
	switch {
	case math.IsNaN(x) || math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0:
		return math.NaN(), math.NaN()
	case x <= 0:
		return math.Inf(-1), 0
	case x >= 1:
		return 0, math.Inf(-1)
	}
	if x < (a+1)/(a+b+2) {
		if cf, ok := betaContinuedFraction(x, a, b); ok {
			l := a*math.Log(x) + b*math.Log1p(-x) - logBeta(a, b) - math.Log(a) + math.Log(cf)
			return l, log1mExp(min(l, 0))
		}
	} else if cf, ok := betaContinuedFraction(1-x, b, a); ok {
		u := b*math.Log1p(-x) + a*math.Log(x) - logBeta(a, b) - math.Log(b) + math.Log(cf)
		return log1mExp(min(u, 0)), u
	}
	mean := a / (a + b)
	sd := math.Sqrt(a * b / ((a + b) * (a + b) * (a + b + 1)))
	z := (x - mean) / sd
	return logNormalCDF(z), logNormalCDF(-z)
}

// betaContinuedFraction evaluates the continued fraction of I_x(a, b) by the
// modified Lentz method; ok is false when it did not converge.
func betaContinuedFraction(x, a, b float64) (float64, bool) {
	const (
		tiny = 1e-300
		eps  = 1e-15
	)
	maxIter := 2000 + int(4*math.Sqrt(max(a, b)))
	c := 1.0
	d := 1 - (a+b)*x/(a+1)
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	f := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		// Even step.
		num := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		f *= d * c
		// Odd step.
		num = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < eps {
			return f, true
		}
	}
	return f, false
}

// studentTCDF returns the distribution function of Student's t with df
// degrees of freedom (df > 0; NaN otherwise).
func studentTCDF(t, df float64) float64 {
	switch {
	case math.IsNaN(t) || math.IsNaN(df) || df <= 0:
		return math.NaN()
	case math.IsInf(t, 1):
		return 1
	case math.IsInf(t, -1):
		return 0
	case df > 1e7:
		return normalCDF(t)
	}
	lower, _ := betaIncLog(df/(df+t*t), df/2, 0.5)
	tail := 0.5 * math.Exp(lower)
	if t > 0 {
		return 1 - tail
	}
	return tail
}

// studentTQuantile returns the p quantile of Student's t with df degrees of
// freedom, by Newton steps from the normal quantile guarded by bisection.
func studentTQuantile(p, df float64) float64 {
	switch {
	case math.IsNaN(p) || math.IsNaN(df) || df <= 0 || p < 0 || p > 1:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p == 0.5:
		return 0
	case p < 0.5:
		return -studentTQuantile(1-p, df)
	case df > 1e7:
		return normalQuantile(p)
	}
	lgHalf, _ := math.Lgamma((df + 1) / 2)
	lgDf, _ := math.Lgamma(df / 2)
	logNorm := lgHalf - lgDf - 0.5*math.Log(df*math.Pi)
	pdf := func(t float64) float64 {
		return math.Exp(logNorm - (df+1)/2*math.Log1p(t*t/df))
	}
	// The root lies in [0, hi]; grow hi until it brackets.
	lo, hi := 0.0, max(1.0, 2*normalQuantile(p))
	for studentTCDF(hi, df) < p && hi < 1e300 {
		lo, hi = hi, hi*4
	}
	x := min(max(normalQuantile(p), lo), hi)
	for range 200 {
		f := studentTCDF(x, df) - p
		if f < 0 {
			lo = x
		} else {
			hi = x
		}
		next := x - f/pdf(x)
		if !(next > lo && next < hi) {
			next = lo + (hi-lo)/2
		}
		if math.Abs(next-x) <= 1e-14*math.Abs(x) {
			return next
		}
		x = next
	}
	return x
}

// chiSquareSF1 returns the upper tail P(χ²₁ > x) of the chi-square
// distribution with one degree of freedom.
func chiSquareSF1(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return math.NaN()
	case x <= 0:
		return 1
	}
	return math.Erfc(math.Sqrt(x / 2))
}

// holm returns Holm's step-down adjusted p-values, in the input's order:
// the hypothesis with the k-th smallest p (1-based) among m gets
// max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎). Rejecting every hypothesis whose
// adjusted p is ≤ α controls the family-wise error rate at α under any
// dependence. NaN p-values are treated as 1.
func holm(p []float64) []float64 {
	m := len(p)
	order := make([]int, m)
	for i := range order {
		order[i] = i
	}
	val := func(i int) float64 {
		if math.IsNaN(p[i]) {
			return 1
		}
		return min(max(p[i], 0), 1)
	}
	slices.SortStableFunc(order, func(i, j int) int {
		a, b := val(i), val(j)
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	adj := make([]float64, m)
	running := 0.0
	for k, i := range order {
		running = max(running, min(1, float64(m-k)*val(i)))
		adj[i] = running
	}
	return adj
}
