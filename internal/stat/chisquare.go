package stat

import "math"

const gammaMaxTerms = 10000 // hard bound on series and continued-fraction terms

// ChiSquareCDF returns P(X ≤ x) for a chi-square variable with df > 0
// degrees of freedom (not necessarily an integer): 0 for x ≤ 0, NaN for a
// NaN argument or df ≤ 0.
func ChiSquareCDF(x, df float64) float64 {
	switch {
	case math.IsNaN(x) || math.IsNaN(df) || df <= 0:
		return math.NaN()
	case x <= 0:
		return 0
	case df == 1:
		return math.Erf(math.Sqrt(x / 2))
	}
	p, _ := regGamma(df/2, x/2)
	return p
}

// ChiSquareSF returns the survival function P(X > x) = 1 − [ChiSquareCDF]
// of a chi-square variable with df > 0 degrees of freedom, computed directly
// so that tiny p-values keep their precision (df = 1 by the closed form
// erfc(√(x/2))): 1 for x ≤ 0, NaN for a NaN argument or df ≤ 0.
func ChiSquareSF(x, df float64) float64 {
	switch {
	case math.IsNaN(x) || math.IsNaN(df) || df <= 0:
		return math.NaN()
	case x <= 0:
		return 1
	case df == 1:
		return math.Erfc(math.Sqrt(x / 2))
	}
	_, q := regGamma(df/2, x/2)
	return q
}

// regGamma returns the regularized incomplete gamma functions P(a, x) and
// Q(a, x) = 1 − P(a, x) for a > 0, x > 0: the power series when x < a+1,
// otherwise Legendre's continued fraction for Q (DLMF 8.9.2), evaluated by
// the modified Lentz method.
func regGamma(a, x float64) (p, q float64) {
	if math.IsInf(x, 1) {
		return 1, 0
	}
	lg, _ := math.Lgamma(a)
	logFront := a*math.Log(x) - x - lg // ln(x^a e^-x / Γ(a))
	if x < a+1 {
		// P = x^a e^-x / Γ(a+1) · Σ xⁿ / ((a+1)…(a+n))
		term := 1 / a
		sum := term
		for n := 1; n < gammaMaxTerms; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*cfEps {
				break
			}
		}
		p = min(math.Exp(logFront)*sum, 1)
		return p, 1 - p
	}
	// Q = x^a e^-x / Γ(a) · 1/(x+1-a- 1·(1-a)/(x+3-a- 2·(2-a)/(x+5-a- …))).
	b := x + 1 - a
	c := 1 / cfTiny
	d := 1 / b
	h := d
	for i := 1; i < gammaMaxTerms; i++ {
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
	q = min(math.Exp(logFront)*h, 1)
	return 1 - q, q
}
