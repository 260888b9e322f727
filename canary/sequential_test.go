package canary

import (
	"math"
	"testing"

	"github.com/flagpole/flagpole/internal/stat"
)

// The one-sided normal-mixture e-value against its defining integral,
// ∫₀^∞ exp(u(est−θ₀)/s² − u²/2s²)·2φ(u/τ)/τ du, evaluated by mpmath's
// quadrature outside this code.
func TestMixLogE(t *testing.T) {
	tests := []struct {
		name                 string
		est, se, theta0, tau float64
		want                 float64
	}{
		{"evidence of harm", 0.3, 0.1, 0.1, 0.2, 1.45091415358410177303},
		{"below the boundary", 0.05, 0.1, 0.1, 0.2, -1.12826527969301586408},
		{"well below", -0.2, 0.05, 0, 0.1, -2.37200230714076655096},
		{"at the boundary", 0, 1, 0, 0.5, -0.111571775657104877883},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mixLogE(tc.est, tc.se, tc.theta0, tc.tau, true); !near(got, tc.want, 1e-10) {
				t.Errorf("mixLogE = %.15g, want %.15g", got, tc.want)
			}
			// The other side is the mirror image.
			if got := mixLogE(-tc.est, tc.se, -tc.theta0, tc.tau, false); !near(got, tc.want, 1e-10) {
				t.Errorf("mirrored mixLogE = %.15g, want %.15g", got, tc.want)
			}
		})
	}
	for _, bad := range [][4]float64{{1, 0, 0, 1}, {1, math.NaN(), 0, 1}, {math.NaN(), 1, 0, 1}, {1, math.Inf(1), 0, 1}, {1, 1, 0, 0}} {
		if got := mixLogE(bad[0], bad[1], bad[2], bad[3], true); got != 0 {
			t.Errorf("mixLogE%v = %v, want 0 (no information)", bad, got)
		}
	}
	// Deep in the null the one-sided e-value decays (only like 1/|est|, as
	// alternatives just past θ₀ keep likelihood ratios near 1) and stays
	// finite where Φ underflows.
	prev := 0.0
	for _, est := range []float64{-1, -5, -50, -500} {
		got := mixLogE(est, 1, 0, 1, true)
		if math.IsNaN(got) || math.IsInf(got, 0) || got >= prev {
			t.Errorf("mixLogE(%v) = %v, want finite and below %v", est, got, prev)
		}
		prev = got
	}
}

// At est ± radius the two-sided mixture equals exactly 1/α.
func TestMixRadius(t *testing.T) {
	for _, tc := range []struct{ se, tau, alpha float64 }{{0.1, 0.2, 0.05}, {0.01, 0.5, 0.01}, {2, 0.1, 0.1}} {
		r := mixRadius(tc.se, tc.tau, tc.alpha)
		s2, t2 := tc.se*tc.se, tc.tau*tc.tau
		logE := 0.5*math.Log(s2/(s2+t2)) + t2*r*r/(2*s2*(s2+t2))
		if !near(logE, math.Log(1/tc.alpha), 1e-12) {
			t.Errorf("radius %v gives log E %v, want %v", r, logE, math.Log(1/tc.alpha))
		}
		if z := stat.NormalQuantile(1 - tc.alpha/2); r <= z*tc.se {
			t.Errorf("radius %v is not wider than the fixed-sample %v: repeated looks need more", r, z*tc.se)
		}
	}
	if !math.IsInf(mixRadius(0, 1, 0.05), 1) {
		t.Error("zero standard error gives a finite radius")
	}
}

func TestSamplesNeeded(t *testing.T) {
	const se, tau, alpha, power = 0.1, 0.1, 0.05, 0.8
	target := 0.1
	f := samplesNeeded(se, tau, alpha, power, target)
	if f <= 1 {
		t.Fatalf("factor %v: se 0.1 cannot detect 0.1 yet", f)
	}
	if got := detectable(se/math.Sqrt(f), tau, alpha, power); !(got <= target && got > target*0.999) {
		t.Errorf("at the needed size the MDE is %v, want %v", got, target)
	}
	if g := samplesNeeded(se/10, tau, alpha, power, target); g >= 1 {
		t.Errorf("factor %v for an already powered test, want < 1", g)
	}
	if g := samplesNeeded(se, tau, alpha, power, 0); !math.IsInf(g, 1) {
		t.Errorf("zero target gives %v, want +Inf", g)
	}
}

// The truncated beta-binomial mixture e-value against its defining integral,
// ∫_{q₀}^1 qˣ(1−q)ⁿ⁻ˣ Beta(q; kq₀, k(1−q₀)) dq / P(q > q₀) / (q₀ˣ(1−q₀)ⁿ⁻ˣ),
// computed outside this code with mpmath at 40 digits (beta functions and
// betainc, cross-checked by quadrature with breakpoints).
func TestBBLogE(t *testing.T) {
	tests := []struct {
		name        string
		x, n, q0, k float64
		want        float64
	}{
		{"more events in the canary", 30, 50, 0.5, 10, 0.526736963421323035037},
		{"fewer events", 12, 50, 0.5238, 10, -2.51812903950927189722},
		{"zero events", 0, 20, 0.3, 10, -1.73510567539949476728},
		{"clear excess", 400, 600, 0.55, 10, 15.2887840620419958366},
		{"fractional counts", 5.5, 9.25, 0.4, 3, 0.348586839404684747924},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := bbLogE(tc.x, tc.n, tc.q0, tc.k, true); !near(got, tc.want, 1e-8) {
				t.Errorf("bbLogE = %.15g, want %.15g", got, tc.want)
			}
			// Swapping successes and failures mirrors the test.
			if got := bbLogE(tc.n-tc.x, tc.n, 1-tc.q0, tc.k, false); !near(got, tc.want, 1e-8) {
				t.Errorf("mirrored bbLogE = %.15g, want %.15g", got, tc.want)
			}
		})
	}
	for _, bad := range [][4]float64{{1, 0, 0.5, 10}, {5, 3, 0.5, 10}, {-1, 3, 0.5, 10}, {1, 3, 0, 10}, {1, 3, 1, 10}, {1, 3, 0.5, 0}, {math.NaN(), 3, 0.5, 10}} {
		if got := bbLogE(bad[0], bad[1], bad[2], bad[3], true); got != 0 {
			t.Errorf("bbLogE%v = %v, want 0 (no information)", bad, got)
		}
	}
	// Huge counts (the continued fraction's fallback) stay finite and sensible.
	if got := bbLogE(6e6, 1e7, 0.5, 10, true); !(got > 1000) || math.IsInf(got, 0) {
		t.Errorf("bbLogE with 10M events = %v, want huge and finite", got)
	}
}

func TestBBInterval(t *testing.T) {
	const alpha = 0.05
	tests := []struct {
		name       string
		x, n, a, b float64
	}{
		{"balanced", 50, 100, 5, 5},
		{"zero successes", 0, 40, 5, 5},
		{"all successes", 40, 40, 5, 5},
		{"skewed prior", 7, 90, 1, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := bbInterval(tc.x, tc.n, tc.a, tc.b, alpha)
			mle := tc.x / tc.n
			if !(lo <= mle && mle <= hi && 0 <= lo && hi <= 1 && lo < hi) {
				t.Fatalf("interval [%v, %v] does not hold the MLE %v", lo, hi, mle)
			}
			logE := func(q float64) float64 {
				ll := 0.0
				if tc.x > 0 {
					ll += tc.x * math.Log(q)
				}
				if tc.n > tc.x {
					ll += (tc.n - tc.x) * math.Log1p(-q)
				}
				return stat.LogBeta(tc.a+tc.x, tc.b+tc.n-tc.x) - stat.LogBeta(tc.a, tc.b) - ll
			}
			for _, end := range []float64{lo, hi} {
				if end == 0 || end == 1 {
					continue
				}
				if got := logE(end); !near(got, math.Log(1/alpha), 1e-6) {
					t.Errorf("log E at the end %v = %v, want log(1/α) = %v", end, got, math.Log(1/alpha))
				}
			}
		})
	}
	if lo, hi := bbInterval(0, 0, 1, 1, alpha); lo != 0 || hi != 1 {
		t.Errorf("no data gives [%v, %v], want [0, 1]", lo, hi)
	}
}
