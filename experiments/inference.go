package experiments

import (
	"math"

	"github.com/flagpole/flagpole/internal/stat"
)

// Estimate is an effect with its standard error and an interval at the
// analysis's level: a confidence interval (fixed mode), a confidence
// sequence (sequential mode) or a credible interval (Bayesian mode).
type Estimate struct {
	Value  float64 `json:"value"`
	StdErr float64 `json:"stdErr"`
	Lower  float64 `json:"lower"`
	Upper  float64 `json:"upper"`
}

func interval(value, variance, q float64) Estimate {
	se := sqrtPos(variance)
	return Estimate{Value: value, StdErr: se, Lower: value - q*se, Upper: value + q*se}
}

func sqrtPos(v float64) float64 {
	if !(v > 0) {
		return 0
	}
	return math.Sqrt(v)
}

// AbsoluteEffect is Δ = treatment − control and its variance Var(t) + Var(c)
// (the arms are independent).
func AbsoluteEffect(control, treatment Summary) (effect, variance float64) {
	return treatment.Value - control.Value, treatment.Variance + control.Variance
}

// RelativeEffect is the lift L = treatment/control − 1 with its delta-method
// variance Var(L) ≈ Var(t)/c² + t²·Var(c)/c⁴. ok is false when the control
// value is 0 (no lift is defined).
func RelativeEffect(control, treatment Summary) (lift, variance float64, ok bool) {
	c, t := control.Value, treatment.Value
	if c == 0 || math.IsNaN(c) {
		return 0, 0, false
	}
	c2 := c * c
	return t/c - 1, treatment.Variance/c2 + t*t*control.Variance/(c2*c2), true
}

// WelchDF is the Welch–Satterthwaite degrees of freedom of Δ:
// (v_t + v_c)² / (v_t²/(n_t−1) + v_c²/(n_c−1)), where v are the variances of
// the arm estimates. With no variance at all it falls back to n_t + n_c − 2.
func WelchDF(control, treatment Summary) float64 {
	vc, vt := control.Variance, treatment.Variance
	nc, nt := float64(control.Users), float64(treatment.Users)
	den := 0.0
	if nc > 1 {
		den += vc * vc / (nc - 1)
	}
	if nt > 1 {
		den += vt * vt / (nt - 1)
	}
	if !(den > 0) {
		return math.Max(1, nc+nt-2)
	}
	return math.Max(1, (vc+vt)*(vc+vt)/den)
}

// WelchTest is the fixed-horizon two-sided Welch t-test of an effect with the
// given variance and degrees of freedom: the (1−alpha) confidence interval
// and the p-value. A zero variance gives p = 1 for a zero effect and p = 0
// otherwise.
func WelchTest(effect, variance, df, alpha float64) (ci Estimate, p float64) {
	q := stat.StudentTQuantile(1-alpha/2, df)
	ci = interval(effect, variance, q)
	return ci, welchP(effect, variance, df)
}

func welchP(effect, variance, df float64) float64 {
	se := sqrtPos(variance)
	if se == 0 {
		if effect == 0 {
			return 1
		}
		return 0
	}
	return 2 * stat.StudentTCDF(-math.Abs(effect/se), df)
}

// welchHarmP is the one-sided p-value of "the effect is on the harmful side",
// harm being sign·effect < 0 (sign = +1 when higher is better).
func welchHarmP(effect, variance, df, sign float64) float64 {
	se := sqrtPos(variance)
	if se == 0 {
		if sign*effect < 0 {
			return 0
		}
		return 1
	}
	return stat.StudentTCDF(sign*effect/se, df)
}

// Sequential testing with asymptotic confidence sequences (Waudby-Smith,
// Arnold, Wu, Howard, Ramdas: "Time-uniform central limit theory and
// asymptotic confidence sequences", Annals of Statistics, 2024).
//
// With n users in a comparison and V the variance of the effect estimate,
// the standardised sum behaves like a Brownian motion; Robbins' normal
// mixture over its drift, with mixing variance ρ², is a nonnegative
// martingale under the null,
//
//	M_n = (1 + r)^(-1/2) · exp(r·z² / (2(1 + r))),   r = n·ρ², z = Δ/√V,
//
// and Ville's inequality bounds P(∃n: M_n ≥ 1/α) by α. Solving M_n = 1/α
// for Δ gives the two-sided confidence sequence Δ ± m(n)·√V with
//
//	m(n) = √( (1+r)/r · (ln(1+r) − 2 ln α) ),
//
// valid simultaneously at every n, so results may be looked at any number
// of times. 1/M_n is the anytime-valid p-value. ρ² is chosen to make the
// sequence tightest at n = TuningUsers:
//
//	ρ² = (−2 ln α + ln(1 − 2 ln α)) / TuningUsers.
//
// The one-sided test (guardrails) mixes over one sign of the drift only (a
// half-normal mixture): M⁺_n = 2(1+r)^(-1/2)·exp(r·z²/(2(1+r)))·Φ(z·√(r/(1+r))).

// sequentialRho2 is the mixing variance ρ² tuned for the given users and alpha.
func sequentialRho2(tuning, alpha float64) float64 {
	a := -2 * math.Log(alpha)
	return (a + math.Log1p(a)) / math.Max(tuning, 1)
}

// SequentialMultiplier is m(n), the half-width of the two-sided (1−alpha)
// asymptotic confidence sequence at n users in standard errors, for a
// sequence tuned to be tightest at tuning users. It replaces the fixed
// z-quantile (1.96 at alpha = 0.05); it is at least that and grows like √ln n.
func SequentialMultiplier(n, tuning, alpha float64) float64 {
	return mixtureMultiplier(n, sequentialRho2(tuning, alpha), alpha)
}

// mixtureMultiplier is m(n) for an explicit mixing variance ρ².
func mixtureMultiplier(n, rho2, alpha float64) float64 {
	if !(n > 0) {
		return math.Inf(1)
	}
	r := n * rho2
	return math.Sqrt((1 + r) / r * (math.Log1p(r) - 2*math.Log(alpha)))
}

// SequentialPValue is the anytime-valid two-sided p-value 1/M_n of a
// standardised effect z = Δ/√V at n users (capped at 1). It is below alpha
// exactly when the confidence sequence excludes 0.
func SequentialPValue(z, n, tuning, alpha float64) float64 {
	if !(n > 0) || math.IsNaN(z) {
		return 1
	}
	r := n * sequentialRho2(tuning, alpha)
	logM := -0.5*math.Log1p(r) + r*z*z/(2*(1+r))
	return math.Min(1, math.Exp(-logM))
}

// SequentialOneSidedPValue is the anytime-valid one-sided p-value for a
// positive drift of z (use −z for the other side).
func SequentialOneSidedPValue(z, n, tuning, alpha float64) float64 {
	if !(n > 0) || math.IsNaN(z) {
		return 1
	}
	r := n * sequentialRho2(tuning, alpha)
	logM := math.Ln2 - 0.5*math.Log1p(r) + r*z*z/(2*(1+r)) + math.Log(stat.NormalCDF(z*math.Sqrt(r/(1+r))))
	return math.Min(1, math.Exp(-logM))
}

// sequentialP returns the two-sided anytime-valid p-value of an effect.
func sequentialP(effect, variance, n, tuning, alpha float64) float64 {
	se := sqrtPos(variance)
	if se == 0 {
		if effect == 0 {
			return 1
		}
		return 0
	}
	return SequentialPValue(effect/se, n, tuning, alpha)
}

// Posterior is the Bayesian result for a relative lift.
type Posterior struct {
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stdDev"`
	Lower  float64 `json:"lower"`
	Upper  float64 `json:"upper"`
	// ChanceToWin is the posterior probability that the lift goes the good
	// way (above 0 when higher is better, below 0 when lower is better).
	ChanceToWin float64 `json:"chanceToWin"`
}

// BayesianLift combines a normal prior N(priorMean, priorSD²) on the
// relative lift with the normal likelihood of the observed lift (its
// delta-method variance) into the conjugate normal posterior, with a
// (1−alpha) credible interval and the chance to win for direction dir.
// priorSD = 0 is read as a flat prior.
func BayesianLift(lift, variance, priorMean, priorSD, alpha float64, dir Direction) Posterior {
	var mean, sd float64
	switch {
	case !(variance > 0):
		mean, sd = lift, 0
	case !(priorSD > 0) || math.IsInf(priorSD, 1):
		mean, sd = lift, math.Sqrt(variance)
	default:
		precision := 1/(priorSD*priorSD) + 1/variance
		mean = (priorMean/(priorSD*priorSD) + lift/variance) / precision
		sd = math.Sqrt(1 / precision)
	}
	q := stat.NormalQuantile(1 - alpha/2)
	p := Posterior{Mean: mean, StdDev: sd, Lower: mean - q*sd, Upper: mean + q*sd}
	var up float64 // P(lift > 0)
	switch {
	case sd > 0:
		up = stat.NormalCDF(mean / sd)
	case mean > 0:
		up = 1
	case mean < 0:
		up = 0
	default:
		up = 0.5
	}
	if dir == LowerIsBetter {
		p.ChanceToWin = 1 - up
	} else {
		p.ChanceToWin = up
	}
	return p
}

// MinimumDetectableEffect is the smallest absolute effect that a test with
// critical multiplier q (for example 1.96, a t quantile or
// [SequentialMultiplier]) detects with the given power at standard error se:
// (q + Φ⁻¹(power))·se.
func MinimumDetectableEffect(se, q, power float64) float64 {
	return (q + stat.NormalQuantile(power)) * se
}

// requiredUsers is the number of users in a comparison at which the MDE
// reaches target (an absolute effect), assuming the variance of the effect
// shrinks as 1/n from its current value variance at n users. It returns n
// when the MDE is already small enough and +Inf when no finite n reaches it.
func requiredUsers(n, variance, target, power, alpha float64, mode Mode, tuning float64) float64 {
	if !(n > 0) || !(target > 0) {
		return math.Inf(1)
	}
	zb := stat.NormalQuantile(power)
	unit := variance * n // variance of the effect × users, constant as n grows
	mdeAt := func(m float64) float64 {
		q := stat.NormalQuantile(1 - alpha/2)
		if mode == ModeSequential {
			q = SequentialMultiplier(m, tuning, alpha)
		}
		return (q + zb) * math.Sqrt(unit/m)
	}
	if mdeAt(n) <= target {
		return n
	}
	if mode != ModeSequential {
		q := stat.NormalQuantile(1 - alpha/2)
		return math.Ceil(unit * (q + zb) * (q + zb) / (target * target))
	}
	// The sequential MDE decreases in m: bisect on log m.
	lo, hi := n, n
	for mdeAt(hi) > target {
		if hi > 1e15 {
			return math.Inf(1)
		}
		lo, hi = hi, hi*4
	}
	for hi-lo > math.Max(1, lo*1e-4) {
		mid := math.Sqrt(lo * hi)
		if mdeAt(mid) > target {
			lo = mid
		} else {
			hi = mid
		}
	}
	return math.Ceil(hi)
}

// SRMThreshold is the p-value below which a sample ratio mismatch makes an
// experiment unhealthy.
const SRMThreshold = 0.001

// SRM is Pearson's chi-square goodness-of-fit test of the users per arm
// against the configured split.
type SRM struct {
	ChiSquare float64 `json:"chiSquare"`
	DF        int     `json:"df"`
	PValue    float64 `json:"pValue"`
	// Mismatch is PValue < SRMThreshold.
	Mismatch bool `json:"mismatch"`
}

// SampleRatioMismatch tests the observed users per arm against the expected
// shares given by weights (same order, positive): χ² = Σ (O−E)²/E with
// k−1 degrees of freedom. With no users, or lengths that differ, it reports
// p = 1 (nothing to test).
func SampleRatioMismatch(observed []int64, weights []int) SRM {
	res := SRM{DF: len(observed) - 1, PValue: 1}
	if len(observed) != len(weights) || len(observed) < 2 {
		res.DF = max(res.DF, 0)
		return res
	}
	var total, wsum float64
	for i, o := range observed {
		total += float64(o)
		wsum += float64(weights[i])
	}
	if total <= 0 || wsum <= 0 {
		return res
	}
	for i, o := range observed {
		e := total * float64(weights[i]) / wsum
		if e <= 0 {
			continue
		}
		d := float64(o) - e
		res.ChiSquare += d * d / e
	}
	res.PValue = stat.ChiSquareSF(res.ChiSquare, float64(res.DF))
	res.Mismatch = res.PValue < SRMThreshold
	return res
}
