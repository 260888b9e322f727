package experiments

import "math"

// This file holds the probability distributions the analysis needs: the
// standard normal, Student's t and the chi-square distribution. They are
// computed from math.Erfc, math.Lgamma and continued fractions for the
// regularized incomplete beta and gamma functions (DLMF 8.17.22 and 8.9.2),
// with no dependency beyond the standard library. Every function returns NaN
// for a NaN or out-of-domain argument and never panics.

const (
	sqrt2Pi  = 2.5066282746310002 // √(2π)
	cfEps    = 1e-15              // relative convergence of the continued fractions
	cfTiny   = 1e-300             // Lentz's guard against division by zero
	cfMaxRun = 10000              // hard bound on continued-fraction terms
)

// NormalCDF is Φ(x), the standard normal distribution function.
func NormalCDF(x float64) float64 {
	return 0.5 * math.Erfc(-x/math.Sqrt2)
}

// normalPDF is φ(x), the standard normal density.
func normalPDF(x float64) float64 {
	return math.Exp(-0.5*x*x) / sqrt2Pi
}

// NormalQuantile is Φ⁻¹(p), the standard normal quantile: -Inf at 0, +Inf at
// 1 and NaN outside [0, 1]. It is accurate to a few ulps, also far in the
// tails (a starting value from math.Erfcinv or the tail asymptote, refined by
// Halley steps on Φ computed from math.Erfc, which keeps tail precision).
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
		e := NormalCDF(x) - p
		u := e / normalPDF(x)
		step := u / (1 + x*u/2)
		x -= step
		if math.Abs(step) <= 1e-15*math.Abs(x) {
			break
		}
	}
	return x
}

// StudentTCDF is the distribution function of Student's t with df degrees of
// freedom (df > 0, not necessarily an integer; +Inf gives the normal).
func StudentTCDF(t, df float64) float64 {
	if math.IsNaN(t) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	if math.IsInf(df, 1) {
		return NormalCDF(t)
	}
	if math.IsInf(t, 0) {
		if t > 0 {
			return 1
		}
		return 0
	}
	// The two-sided tail P(|T| > |t|) is I_x(df/2, 1/2) with x = df/(df+t²).
	tail := studentTwoSided(t, df)
	if t > 0 {
		return 1 - tail/2
	}
	return tail / 2
}

// studentTwoSided is P(|T| ≥ |t|) for Student's t with df degrees of freedom.
func studentTwoSided(t, df float64) float64 {
	if t == 0 {
		return 1
	}
	t2 := t * t
	// x = df/(df+t²) and 1-x = t²/(df+t²), each computed without cancellation.
	x := df / (df + t2)
	y := t2 / (df + t2)
	return regIncBeta2(df/2, 0.5, x, y)
}

// studentPDF is the density of Student's t with df degrees of freedom.
func studentPDF(t, df float64) float64 {
	lg1, _ := math.Lgamma((df + 1) / 2)
	lg2, _ := math.Lgamma(df / 2)
	return math.Exp(lg1 - lg2 - 0.5*math.Log(df*math.Pi) - (df+1)/2*math.Log1p(t*t/df))
}

// StudentTQuantile is the p-quantile of Student's t with df degrees of
// freedom: -Inf at 0, +Inf at 1, NaN outside [0, 1] or for df ≤ 0. df = 1 and
// 2 use closed forms; otherwise a Cornish–Fisher start (Abramowitz & Stegun
// 26.7.5) is refined by safeguarded Newton steps on [StudentTCDF].
func StudentTQuantile(p, df float64) float64 {
	switch {
	case math.IsNaN(p) || math.IsNaN(df) || p < 0 || p > 1 || df <= 0:
		return math.NaN()
	case p == 0:
		return math.Inf(-1)
	case p == 1:
		return math.Inf(1)
	case p == 0.5:
		return 0
	case p > 0.5:
		return -StudentTQuantile(1-p, df)
	case math.IsInf(df, 1) || df > 1e12:
		return NormalQuantile(p)
	case df == 1:
		return math.Tan(math.Pi * (p - 0.5))
	case df == 2:
		return (2*p - 1) / math.Sqrt(2*p*(1-p))
	}
	z := NormalQuantile(p)
	z2 := z * z
	t := z + z*(z2+1)/(4*df) + z*((5*z2+16)*z2+3)/(96*df*df) +
		z*(((3*z2+19)*z2+17)*z2-15)/(384*df*df*df)
	if df > 1e5 {
		return t // the expansion's next term is below 1e-16 relative here
	}
	// The root lies in (lo, hi) with CDF(lo) < p < CDF(hi) = 1/2.
	lo, hi := math.Inf(-1), 0.0
	if t >= 0 || math.IsNaN(t) {
		t = z
	}
	for range 200 {
		f := StudentTCDF(t, df) - p
		if f == 0 {
			return t
		}
		if f < 0 {
			lo = t
		} else {
			hi = t
		}
		next := t - f/studentPDF(t, df)
		if !(next > lo && next < hi) { // also catches NaN
			if math.IsInf(lo, -1) {
				next = 2*math.Min(t, -1) - 1 // walk out until the root is bracketed
			} else {
				next = (lo + hi) / 2
			}
		}
		if math.Abs(next-t) <= 1e-14*math.Max(1, math.Abs(t)) {
			return next
		}
		t = next
	}
	return t
}

// ChiSquareCDF is P(X ≤ x) for a chi-square variable with df > 0 degrees of freedom.
func ChiSquareCDF(x, df float64) float64 {
	if math.IsNaN(x) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	if x <= 0 {
		return 0
	}
	p, _ := regGamma(df/2, x/2)
	return p
}

// ChiSquareSF is P(X > x) = 1 - [ChiSquareCDF], computed directly so that
// tiny p-values keep their precision.
func ChiSquareSF(x, df float64) float64 {
	if math.IsNaN(x) || math.IsNaN(df) || df <= 0 {
		return math.NaN()
	}
	if x <= 0 {
		return 1
	}
	_, q := regGamma(df/2, x/2)
	return q
}

// regGamma returns the regularized incomplete gamma functions P(a, x) and
// Q(a, x) = 1 - P(a, x) for a > 0, x > 0: the power series when x < a+1,
// otherwise Legendre's continued fraction for Q.
func regGamma(a, x float64) (p, q float64) {
	lg, _ := math.Lgamma(a)
	logFront := a*math.Log(x) - x - lg // log(x^a e^-x / Γ(a))
	if x < a+1 {
		// P = x^a e^-x / Γ(a+1) · Σ xⁿ / ((a+1)…(a+n))
		term := 1 / a
		sum := term
		for n := 1; n < cfMaxRun; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*cfEps {
				break
			}
		}
		p = math.Exp(logFront) * sum
		p = math.Min(p, 1)
		return p, 1 - p
	}
	// Q = x^a e^-x / Γ(a) · 1/(x+1-a- 1·(1-a)/(x+3-a- 2·(2-a)/(x+5-a- …))), by modified Lentz.
	b := x + 1 - a
	c := 1 / cfTiny
	d := 1 / b
	h := d
	for i := 1; i < cfMaxRun; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < cfTiny {
			d = cfTiny
		}
		c = b + an/c
		if math.Abs(c) < cfTiny {
			c = cfTiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < cfEps {
			break
		}
	}
	q = math.Exp(logFront) * h
	q = math.Min(q, 1)
	return 1 - q, q
}

// regIncBeta2 is the regularized incomplete beta function I_x(a, b) for
// a, b > 0, given both x and y = 1-x so that callers can pass whichever they
// computed without cancellation. It uses the continued fraction on the side
// where it converges fast and the symmetry I_x(a,b) = 1 - I_y(b,a) otherwise.
func regIncBeta2(a, b, x, y float64) float64 {
	if x <= 0 {
		return 0
	}
	if y <= 0 {
		return 1
	}
	// log x and log y via log1p of the smaller one: for large a even a
	// rounding of x near 1 would be amplified a-fold.
	lx, ly := math.Log(x), math.Log(y)
	if x > 0.5 {
		lx = math.Log1p(-y)
	} else {
		ly = math.Log1p(-x)
	}
	logFront := a*lx + b*ly - logBeta(a, b)
	if x < (a+1)/(a+b+2) {
		return math.Exp(logFront) * betaCF(a, b, x) / a
	}
	return 1 - math.Exp(logFront)*betaCF(b, a, y)/b
}

// betaCF evaluates the continued fraction of I_x(a, b) (DLMF 8.17.22) by the
// modified Lentz method.
func betaCF(a, b, x float64) float64 {
	c := 1.0
	d := 1 - (a+b)*x/(a+1)
	if math.Abs(d) < cfTiny {
		d = cfTiny
	}
	d = 1 / d
	h := d
	for m := 1; m < cfMaxRun; m++ {
		fm := float64(m)
		// even step: d_{2m} = m(b-m)x / ((a+2m-1)(a+2m))
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
		h *= d * c
		// odd step: d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1))
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
		del := d * c
		h *= del
		if math.Abs(del-1) < cfEps {
			break
		}
	}
	return h
}

// logBeta is ln B(a, b) for a, b > 0. For a large argument the log-gammas
// are combined analytically (Stirling's series with its remainder δ), which
// avoids the cancellation of ln Γ(a) − ln Γ(a+b) when a is in the millions.
func logBeta(a, b float64) float64 {
	if a < b {
		a, b = b, a
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
