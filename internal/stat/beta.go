package stat

import "math"

const (
	cfEps  = 1e-15  // relative convergence of the continued fractions
	cfTiny = 1e-300 // Lentz's guard against division by zero
)

// LogBeta returns ln B(a, b) for a, b > 0, and NaN otherwise. For a large
// argument the log-gammas are combined analytically (Stirling's series with
// its remainder δ), which avoids the cancellation of ln Γ(a) − ln Γ(a+b) when
// a is in the millions.
func LogBeta(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0 {
		return math.NaN()
	}
	if a < b {
		a, b = b, a
	}
	if math.IsInf(a, 1) {
		return math.Inf(-1)
	}
	if a < 10 {
		lab, _ := math.Lgamma(a + b)
		la, _ := math.Lgamma(a)
		lb, _ := math.Lgamma(b)
		return la + lb - lab
	}
	// ln Γ(a) − ln Γ(a+b) = −(a−½)·ln(1+b/a) − b·ln(a+b) + b + δ(a) − δ(a+b)
	diff := -(a-0.5)*math.Log1p(b/a) - b*math.Log(a+b) + b + stirlingRemainder(a) - stirlingRemainder(a+b)
	if b < 10 {
		lb, _ := math.Lgamma(b)
		return lb + diff
	}
	// ln Γ(b) by Stirling as well: ½ln 2π + (b−½)ln b − b + δ(b).
	return 0.5*math.Log(2*math.Pi) + (b-0.5)*math.Log(b) - b + stirlingRemainder(b) + diff
}

// stirlingRemainder is δ(x) = ln Γ(x) − ((x−½)ln x − x + ½ln 2π) for x ≥ 10,
// from its asymptotic series (error below 1e-13 there).
func stirlingRemainder(x float64) float64 {
	x2 := x * x
	return (1.0/12 - (1.0/360-(1.0/1260-(1.0/1680-1.0/(1188*x2))/x2)/x2)/x2) / x
}

// BetaIncLog returns ln I_x(a, b) and ln(1 − I_x(a, b)), the logs of the
// regularized incomplete beta function and of its complement, for a, b > 0.
// Both tails stay accurate when tiny. x ≤ 0 gives (-Inf, 0), x ≥ 1 gives
// (0, -Inf); a NaN argument or a, b ≤ 0 gives (NaN, NaN).
func BetaIncLog(x, a, b float64) (lower, upper float64) {
	return betaIncLog(x, 1-x, a, b)
}

// betaIncLog is [BetaIncLog] given both x and y = 1 − x, so that a caller can
// pass whichever it computed without cancellation. It evaluates the continued
// fraction (DLMF 8.17.22) on whichever side converges fast and takes the
// complement in log space. For very large a and b, where the fraction would
// need too many terms, it falls back to the normal approximation of the beta
// distribution.
func betaIncLog(x, y, a, b float64) (lower, upper float64) {
	switch {
	case math.IsNaN(x) || math.IsNaN(y) || math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0:
		return math.NaN(), math.NaN()
	case x <= 0:
		return math.Inf(-1), 0
	case y <= 0:
		return 0, math.Inf(-1)
	}
	// ln x and ln y via log1p of the smaller one: for large a even a rounding
	// of x near 1 would be amplified a-fold.
	lx, ly := math.Log(x), math.Log(y)
	if x > 0.5 {
		lx = math.Log1p(-y)
	} else {
		ly = math.Log1p(-x)
	}
	if x < (a+1)/(a+b+2) {
		if cf, ok := betaContinuedFraction(x, a, b); ok {
			l := a*lx + b*ly - LogBeta(a, b) - math.Log(a) + math.Log(cf)
			return l, log1mExp(min(l, 0))
		}
	} else if cf, ok := betaContinuedFraction(y, b, a); ok {
		u := a*lx + b*ly - LogBeta(a, b) - math.Log(b) + math.Log(cf)
		return log1mExp(min(u, 0)), u
	}
	mean := a / (a + b)
	sd := math.Sqrt(a * b / ((a + b) * (a + b) * (a + b + 1)))
	z := (x - mean) / sd
	return NormalLogCDF(z), NormalLogCDF(-z)
}

// betaContinuedFraction evaluates the continued fraction of I_x(a, b) by the
// modified Lentz method; ok is false when it did not converge.
func betaContinuedFraction(x, a, b float64) (float64, bool) {
	maxIter := 2000 + int(4*math.Sqrt(max(a, b)))
	c := 1.0
	d := 1 - (a+b)*x/(a+1)
	if math.Abs(d) < cfTiny {
		d = cfTiny
	}
	d = 1 / d
	f := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		// Even step: d_{2m} = m(b−m)x / ((a+2m−1)(a+2m)).
		num := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 + num*d
		if math.Abs(d) < cfTiny {
			d = cfTiny
		}
		c = 1 + num/c
		if math.Abs(c) < cfTiny {
			c = cfTiny
		}
		d = 1 / d
		f *= d * c
		// Odd step: d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)).
		num = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 + num*d
		if math.Abs(d) < cfTiny {
			d = cfTiny
		}
		c = 1 + num/c
		if math.Abs(c) < cfTiny {
			c = cfTiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < cfEps {
			return f, true
		}
	}
	return f, false
}
