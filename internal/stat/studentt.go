package stat

import "math"

// StudentTCDF returns the distribution function of Student's t with df
// degrees of freedom (df > 0, not necessarily an integer; +Inf gives the
// normal). It is 0 at t = -Inf, 1 at +Inf, and NaN for a NaN argument or
// df ≤ 0. The lower tail keeps its relative precision; for the two-sided
// tail P(|T| ≥ |t|) use 2·StudentTCDF(−|t|, df), which is exact in floating
// point.
func StudentTCDF(t, df float64) float64 {
	switch {
	case math.IsNaN(t) || math.IsNaN(df) || df <= 0:
		return math.NaN()
	case math.IsInf(df, 1):
		return NormalCDF(t)
	case math.IsInf(t, 1):
		return 1
	case math.IsInf(t, -1):
		return 0
	case t == 0:
		return 0.5
	case df > 1e7:
		// The continued fraction below converges too slowly here and loses
		// up to 1e-8 relative by df = 1e9; the expansion is better.
		return studentTLargeDF(t, df)
	}
	// The two-sided tail P(|T| > |t|) is I_x(df/2, 1/2) with x = df/(df+t²);
	// x and 1−x = t²/(df+t²) are each computed without cancellation.
	t2 := t * t
	lower, _ := betaIncLog(df/(df+t2), t2/(df+t2), df/2, 0.5)
	tail := math.Exp(lower)
	if t > 0 {
		return 1 - tail/2
	}
	return tail / 2
}

// studentTLargeDF is the distribution function of Student's t for large df
// from its expansion in 1/df (Fisher, 1925) to the second order:
//
//	F(t) = Φ(t) − φ(t)·[(t³+t)/(4df) + (3t⁷−7t⁵−5t³−3t)/(96df²)] + O(df⁻³),
//
// evaluated on the lower tail so that it keeps its relative precision. Above
// df = 1e7 its relative error is below 1e-14 for |t| ≤ 5 and 1e-8 at |t| = 20.
func studentTLargeDF(t, df float64) float64 {
	x := -math.Abs(t)
	x2 := x * x
	corr := x*(x2+1)/(4*df) + x*(((3*x2-7)*x2-5)*x2-3)/(96*df*df)
	tail := min(max(NormalCDF(x)-NormalPDF(x)*corr, 0), 0.5)
	if t > 0 {
		return 1 - tail
	}
	return tail
}

// studentTPDF is the density of Student's t with df degrees of freedom.
func studentTPDF(t, df float64) float64 {
	lg1, _ := math.Lgamma((df + 1) / 2)
	lg2, _ := math.Lgamma(df / 2)
	return math.Exp(lg1 - lg2 - 0.5*math.Log(df*math.Pi) - (df+1)/2*math.Log1p(t*t/df))
}

// StudentTQuantile returns the p quantile of Student's t with df degrees of
// freedom: -Inf at 0, +Inf at 1, and NaN outside [0, 1], for df ≤ 0 or for a
// NaN argument. df = 1 and 2 use closed forms, df above 1e12 the normal;
// otherwise a Cornish–Fisher start (Abramowitz & Stegun 26.7.5) is refined by
// safeguarded Newton steps on [StudentTCDF].
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
	case df > 1e12:
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
		next := t - f/studentTPDF(t, df)
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
