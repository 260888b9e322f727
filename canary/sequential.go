package canary

import (
	"math"

	"github.com/flagpole/flagpole/internal/stat"
)

// This file holds the anytime-valid tests the judge decides with. Each test
// produces an e-value E: a nonnegative statistic whose expectation is at most
// 1 under the null hypothesis at every look, because it is a (super)martingale
// in the accumulating data. By Ville's inequality the chance that E ever
// reaches 1/α, at any of arbitrarily many looks, is at most α, so looking
// after every interval does not inflate false alarms, and 1/E is a p-value
// valid at any stopping time. Mixing likelihood ratios over a prior on the
// alternative is the mixture sequential probability ratio test (mSPRT) of
// Robbins (1970), as used for online experiments by Johari, Koomen, Pekelis &
// Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests"
// (Operations Research, 2022), and for software deployments by Lindon, Sanden
// & Shirikian, "Rapid Regression Detection in Software Deployments through
// Sequential Testing" (KDD 2022), whose count test conditions on the total
// number of events and mixes a beta prior over the canary's share of them.
//
// Two families are used:
//   - the normal mixture, for effects estimated as approximately normal with a
//     standard error (means, log ratios, probabilistic indices); its
//     validity is asymptotic, since the standard error is estimated;
//   - the beta-binomial mixture, for event counts; exact for Poisson counts
//     given the exposure of each arm.

// mixLogE returns the log e-value of the one-sided normal mixture test of
// H₀: θ ≤ θ₀ against θ > θ₀ (greater) or of H₀: θ ≥ θ₀ against θ < θ₀, given
// an estimate est ~ N(θ, se²). The mixing distribution puts a half-normal of
// scale tau on the alternative side, so
//
//	E = 2·√(s²/(s²+τ²)) · exp(a²/2b) · Φ(a/√b),  a = (est−θ₀)/s², b = 1/s² + 1/τ².
//
// Each component likelihood ratio is a supermartingale under every θ in H₀,
// so the mixture is too.
func mixLogE(est, se, theta0, tau float64, greater bool) float64 {
	if !greater {
		est, theta0 = -est, -theta0
	}
	s2, t2 := se*se, tau*tau
	if !(s2 > 0) || !(t2 > 0) || math.IsNaN(est) || math.IsNaN(theta0) || math.IsInf(s2, 0) {
		return 0 // no information: E = 1
	}
	a := (est - theta0) / s2
	b := 1/s2 + 1/t2
	return math.Ln2 + 0.5*math.Log(s2/(s2+t2)) + a*a/(2*b) + stat.NormalLogCDF(a/math.Sqrt(b))
}

// mixRadius returns the half-width of the two-sided normal-mixture confidence
// sequence at level 1−α: θ₀ lies outside est ± radius exactly when the
// two-sided mixture (a normal of scale tau around θ₀) reaches 1/α, so the
// interval covers θ at every look simultaneously with probability ≥ 1−α.
func mixRadius(se, tau, alpha float64) float64 {
	s2, t2 := se*se, tau*tau
	if !(s2 > 0) || !(t2 > 0) || math.IsInf(s2, 0) {
		return math.Inf(1)
	}
	return math.Sqrt(2 * s2 * (s2 + t2) / t2 * (math.Log(1/alpha) + 0.5*math.Log((s2+t2)/s2)))
}

// detectable returns the minimum detectable effect of the normal-mixture
// test with standard error se: the distance from the boundary at which a
// true effect is detected with the given power, radius + z_power·se.
func detectable(se, tau, alpha, power float64) float64 {
	return mixRadius(se, tau, alpha) + stat.NormalQuantile(power)*se
}

// samplesNeeded returns the factor by which the sample must grow (standard
// errors shrink as 1/√n) before the minimum detectable effect falls to
// target; 1 or less means it already has. It is found by bisection on a log
// scale to about 0.1 %, plenty for a sample size shown to humans.
func samplesNeeded(se, tau, alpha, power, target float64) float64 {
	if !(target > 0) || !(se > 0) || math.IsInf(se, 0) {
		return math.Inf(1)
	}
	zPower := stat.NormalQuantile(power)
	at := func(f float64) float64 {
		s := se / math.Sqrt(f)
		return mixRadius(s, tau, alpha) + zPower*s
	}
	lo, hi := 1.0, 1.0
	if at(1) <= target {
		for lo > 1e-12 && at(lo) <= target {
			hi, lo = lo, lo/16
		}
	} else {
		for at(hi) > target {
			lo, hi = hi, hi*16
			if hi > 1e18 {
				return math.Inf(1)
			}
		}
	}
	for hi/lo > 1.001 {
		mid := math.Sqrt(lo * hi)
		if at(mid) <= target {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// bbLogE returns the log e-value of the one-sided beta-binomial mixture test
// for x successes in n trials of H₀: q ≤ q₀ against q > q₀ (greater), or of
// H₀: q ≥ q₀ against q < q₀. The prior is Beta(k·q₀, k·(1−q₀)) truncated to
// the alternative side, so
//
//	E = B(a+x, b+n−x)·P(q > q₀ | a+x, b+n−x) / (B(a, b)·P(q > q₀ | a, b)) / (q₀ˣ(1−q₀)ⁿ⁻ˣ).
//
// By monotone likelihood ratios each component is a supermartingale under
// every q on the null side, so the test holds H₀ as a composite hypothesis.
// x and n may be fractional (Prometheus increase() extrapolates).
func bbLogE(x, n, q0, k float64, greater bool) float64 {
	if !(n > 0) || !(q0 > 0 && q0 < 1) || !(k > 0) || !(x >= 0) || x > n {
		return 0
	}
	if !greater {
		x, q0 = n-x, 1-q0
	}
	a, b := k*q0, k*(1-q0)
	_, postUpper := stat.BetaIncLog(q0, a+x, b+n-x)
	_, priorUpper := stat.BetaIncLog(q0, a, b)
	logLik0 := x*math.Log(q0) + (n-x)*math.Log1p(-q0)
	if x == 0 {
		logLik0 = n * math.Log1p(-q0)
	} else if x == n {
		logLik0 = n * math.Log(q0)
	}
	return stat.LogBeta(a+x, b+n-x) + postUpper - stat.LogBeta(a, b) - priorUpper - logLik0
}

// bbInterval returns the confidence sequence for a binomial proportion q at
// level 1−α from the two-sided beta-binomial mixture with prior Beta(a, b):
// the q₀ whose mixture e-value stays below 1/α. The e-value's log is convex in
// q₀ and at most 0 at the maximum-likelihood x/n, so the set is an interval
// containing x/n; its ends are found by bisection.
func bbInterval(x, n, a, b, alpha float64) (lo, hi float64) {
	if !(n > 0) || !(x >= 0) || x > n {
		return 0, 1
	}
	marg := stat.LogBeta(a+x, b+n-x) - stat.LogBeta(a, b)
	limit := math.Log(1 / alpha)
	excess := func(q float64) float64 {
		var ll float64
		if x > 0 {
			ll += x * math.Log(q)
		}
		if n-x > 0 {
			ll += (n - x) * math.Log1p(-q)
		}
		return marg - ll - limit
	}
	mle := x / n
	lo, hi = 0, 1
	if x > 0 {
		l, h := 0.0, mle
		for range 64 {
			mid := l + (h-l)/2
			if excess(mid) >= 0 {
				l = mid
			} else {
				h = mid
			}
		}
		lo = l
	}
	if x < n {
		l, h := mle, 1.0
		for range 64 {
			mid := l + (h-l)/2
			if excess(mid) >= 0 {
				h = mid
			} else {
				l = mid
			}
		}
		hi = h
	}
	return lo, hi
}
