package experiments

import (
	"math"
	"testing"

	"github.com/flagpole/flagpole/internal/stat"
)

// near reports whether got is within tol of want, relative for |want| > 1 and absolute otherwise.
func near(got, want, tol float64) bool {
	if math.IsInf(want, 0) || math.IsNaN(want) {
		return got == want || (math.IsNaN(got) && math.IsNaN(want))
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

func relNear(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Abs(want)
}

// Worked examples of Welch's t-test (the three examples in Wikipedia's
// "Welch's t-test" article, whose rounded figures are asserted first), at
// full precision from scipy 1.10.1: scipy.stats.ttest_ind(a, b,
// equal_var=False) for t and p, the Welch–Satterthwaite formula for df, and
// t.ppf(0.975, df) for the interval (good to about 1e-10).
func TestWelchWorkedExamples(t *testing.T) {
	cases := []struct {
		name                 string
		a, b                 []float64
		roundT, roundDF      float64
		roundP               float64
		wantT, wantP, wantDF float64
		wantLo, wantHi       float64
	}{
		{
			name:   "equal sizes, equal variances",
			a:      []float64{27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4},
			b:      []float64{27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4},
			roundT: -2.46, roundDF: 24.99, roundP: 0.021,
			wantT: -2.455356398286006, wantP: 0.021378001462866985, wantDF: 24.988529290231416,
			wantLo: -3.9840962671409264, wantHi: -0.34923706619240935,
		},
		{
			name:   "unequal sizes, unequal variances",
			a:      []float64{17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8},
			b:      []float64{21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5, 21.5, 21.8},
			roundT: -1.57, roundDF: 9.90, roundP: 0.149,
			wantT: -1.5654335235985037, wantP: 0.14884169660532834, wantDF: 9.904741248650831,
			wantLo: -3.6984213253524234, wantHi: 0.6484213253524262,
		},
		{
			name:   "unequal sizes, larger variance in the larger sample",
			a:      []float64{19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0},
			b:      []float64{28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4, 23.9, 13.3},
			roundT: -2.23, roundDF: 24.52, roundP: 0.035,
			wantT: -2.225512039969852, wantP: 0.035484530830010325, wantDF: 24.524634944257343,
			wantLo: -4.276458650120551, wantHi: -0.16354134987944713,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Treatment a against control b, as scipy's ttest_ind(a, b).
			ctl, _ := statsOf(c.b).Summarize(false)
			trt, _ := statsOf(c.a).Summarize(false)
			d, v := AbsoluteEffect(ctl, trt)
			df := WelchDF(ctl, trt)
			ci, p := WelchTest(d, v, df, 0.05)
			tstat := d / math.Sqrt(v)
			if math.Abs(tstat-c.roundT) > 0.005 || math.Abs(df-c.roundDF) > 0.005 || math.Abs(p-c.roundP) > 0.0005 {
				t.Errorf("t %.2f df %.2f p %.3f, textbook says t %.2f df %.2f p %.3f", tstat, df, p, c.roundT, c.roundDF, c.roundP)
			}
			if !relNear(tstat, c.wantT, 1e-12) || !relNear(df, c.wantDF, 1e-12) || !relNear(p, c.wantP, 1e-9) {
				t.Errorf("t %.17g df %.17g p %.17g, want %.17g %.17g %.17g", tstat, df, p, c.wantT, c.wantDF, c.wantP)
			}
			if !relNear(ci.Lower, c.wantLo, 1e-8) || !relNear(ci.Upper, c.wantHi, 1e-8) {
				t.Errorf("CI [%.17g, %.17g], want [%.17g, %.17g]", ci.Lower, ci.Upper, c.wantLo, c.wantHi)
			}
			// The one-sided p on the observed side is half the two-sided one.
			harm := welchHarmP(d, v, df, 1)
			if !relNear(harm, p/2, 1e-9) {
				t.Errorf("one-sided p %.17g, want %.17g", harm, p/2)
			}
		})
	}
}

func TestWelchDegenerate(t *testing.T) {
	zero := Summary{Users: 100, Value: 0}
	one := Summary{Users: 100, Value: 1}
	if _, p := WelchTest(0, 0, WelchDF(zero, zero), 0.05); p != 1 {
		t.Errorf("no variance, no effect: p = %v", p)
	}
	if _, p := WelchTest(1, 0, WelchDF(zero, one), 0.05); p != 0 {
		t.Errorf("no variance, an effect: p = %v", p)
	}
	if df := WelchDF(zero, one); df != 198 {
		t.Errorf("df without variance = %v, want n−2 = 198", df)
	}
}

func TestRelativeEffectDeltaMethod(t *testing.T) {
	c := Summary{Users: 1000, Value: 0.10, Variance: 0.09 / 1000}
	tr := Summary{Users: 1000, Value: 0.12, Variance: 0.1056 / 1000}
	lift, v, ok := RelativeEffect(c, tr)
	// Var(L) = Var_t/c² + t²·Var_c/c⁴ = 1.056e-4/0.01 + 0.0144·9e-5/1e-4
	want := 1.056e-4/0.01 + 0.0144*9e-5/1e-4
	if !ok || !relNear(lift, 0.2, 1e-12) || !relNear(v, want, 1e-12) {
		t.Errorf("lift %v variance %v, want 0.2 and %v", lift, v, want)
	}
	if _, _, ok := RelativeEffect(Summary{Value: 0}, tr); ok {
		t.Error("lift over a zero control is ok")
	}
}

func TestSequentialBoundary(t *testing.T) {
	const alpha = 0.05
	// At the tuning size, with a = −2 ln α and b = a + ln(1+a):
	// m = √((b+1)/b · (ln(1+b) + a)) = 3.0352089903762529 (mpmath, 30 digits).
	if m := SequentialMultiplier(10000, 10000, alpha); !relNear(m, 3.0352089903762529, 1e-13) {
		t.Errorf("m(tuning) = %.17g", m)
	}
	// The boundary is where the mixture martingale reaches 1/α: p = α there.
	for _, n := range []float64{100, 5000, 10000, 1e6} {
		m := SequentialMultiplier(n, 10000, alpha)
		if p := SequentialPValue(m, n, 10000, alpha); !relNear(p, alpha, 1e-12) {
			t.Errorf("n %v: p at the boundary = %v, want α", n, p)
		}
		if p := SequentialPValue(m*0.99, n, 10000, alpha); p <= alpha {
			t.Errorf("n %v: p inside the boundary = %v", n, p)
		}
		if m <= stat.NormalQuantile(1-alpha/2) {
			t.Errorf("n %v: sequential multiplier %v is not wider than the fixed one", n, m)
		}
	}
	// ρ² is tuned: at n = tuning, any other ρ² gives a wider sequence.
	rho2 := sequentialRho2(10000, alpha)
	best := mixtureMultiplier(10000, rho2, alpha)
	for _, f := range []float64{0.5, 0.9, 1.1, 2} {
		if m := mixtureMultiplier(10000, rho2*f, alpha); m <= best {
			t.Errorf("ρ²×%v gives multiplier %v ≤ tuned %v", f, m, best)
		}
	}
	// It grows slowly with n: like √ln n.
	if a, b := SequentialMultiplier(1e5, 1e4, alpha), SequentialMultiplier(1e7, 1e4, alpha); !(b > a && b < 1.5*a) {
		t.Errorf("m(1e5) = %v, m(1e7) = %v", a, b)
	}
	// One-sided: the half-normal mixture is about twice as strong far out,
	// and never weaker than the two-sided test on the same side.
	for _, z := range []float64{2, 3, 5} {
		two, one := SequentialPValue(z, 20000, 10000, alpha), SequentialOneSidedPValue(z, 20000, 10000, alpha)
		if !(one < two) {
			t.Errorf("z %v: one-sided p %v not below two-sided %v", z, one, two)
		}
		if z == 5 && !relNear(one, two/2, 1e-3) {
			t.Errorf("z 5: one-sided p %v, want about half of %v", one, two)
		}
	}
	if p := SequentialOneSidedPValue(-4, 20000, 10000, alpha); p != 1 {
		t.Errorf("one-sided p on the wrong side = %v, want 1", p)
	}
	if p := SequentialPValue(math.NaN(), 100, 100, alpha); p != 1 {
		t.Errorf("p of NaN = %v", p)
	}
}

// Conjugate normal update worked by hand: prior N(0, 0.3²) on the lift,
// observed lift 0.05 with standard error 0.02. Posterior precision
// 1/0.09 + 1/0.0004 = 22600/9, mean 0.05·2500·9/22600 = 1125/22600,
// sd √(9/22600), chance to win Φ(375/√22600) = Φ(2.4944629) = 0.9936926
// (mpmath; normal table: Φ(2.49) = 0.99361, Φ(2.50) = 0.99379).
func TestBayesianLift(t *testing.T) {
	p := BayesianLift(0.05, 0.0004, 0, 0.3, 0.05, HigherIsBetter)
	if !relNear(p.Mean, 1125.0/22600, 1e-13) || !relNear(p.StdDev, math.Sqrt(9.0/22600), 1e-13) {
		t.Errorf("posterior N(%v, %v²)", p.Mean, p.StdDev)
	}
	if !relNear(p.ChanceToWin, 0.9936926042563782, 1e-12) || p.ChanceToWin < 0.99361 || p.ChanceToWin > 0.99379 {
		t.Errorf("chance to win %v", p.ChanceToWin)
	}
	q := 1.959963984540054
	if !relNear(p.Lower, p.Mean-q*p.StdDev, 1e-13) || !relNear(p.Upper, p.Mean+q*p.StdDev, 1e-13) {
		t.Errorf("credible interval [%v, %v]", p.Lower, p.Upper)
	}
	lower := BayesianLift(0.05, 0.0004, 0, 0.3, 0.05, LowerIsBetter)
	if !relNear(lower.ChanceToWin, 1-p.ChanceToWin, 1e-12) {
		t.Errorf("lower-is-better chance to win %v", lower.ChanceToWin)
	}
	flat := BayesianLift(0.05, 0.0004, 0.5, 0, 0.05, HigherIsBetter)
	if flat.Mean != 0.05 || !relNear(flat.StdDev, 0.02, 1e-14) {
		t.Errorf("flat prior posterior %+v", flat)
	}
	point := BayesianLift(-0.01, 0, 0, 0.3, 0.05, HigherIsBetter)
	if point.ChanceToWin != 0 || point.StdDev != 0 {
		t.Errorf("no-variance posterior %+v", point)
	}
	// A strong prior pulls the estimate toward its mean.
	strong := BayesianLift(0.05, 0.0004, 0, 0.01, 0.05, HigherIsBetter)
	if !(strong.Mean < 0.02) {
		t.Errorf("strong prior left the mean at %v", strong.Mean)
	}
}

// Lehr's rule: with α = 0.05 two-sided and 80% power, each arm needs
// n = 2(z₀.₉₇₅ + z₀.₈)²σ²/δ² ≈ 15.7σ²/δ² users to detect δ.
func TestMinimumDetectableEffect(t *testing.T) {
	zsum := stat.NormalQuantile(0.975) + stat.NormalQuantile(0.8)
	nArm := 2 * zsum * zsum / (0.1 * 0.1) // σ = 1, δ = 0.1
	if nArm < 1569 || nArm > 1570 {
		t.Fatalf("per-arm n = %v, Lehr's rule gives about 1570", nArm)
	}
	se := math.Sqrt(2 / nArm)
	if mde := MinimumDetectableEffect(se, stat.NormalQuantile(0.975), 0.8); !relNear(mde, 0.1, 1e-12) {
		t.Errorf("MDE = %v, want 0.1", mde)
	}
	// requiredUsers: from 200 users (100 per arm, variance of Δ = 2/100), fixed mode.
	need := requiredUsers(200, 2.0/100, 0.1, 0.8, 0.05, ModeFixed, 0)
	if need != math.Ceil(2*nArm) {
		t.Errorf("required users %v, want %v", need, math.Ceil(2*nArm))
	}
	// Sequential: the MDE at the answer is small enough, a bit earlier it is not.
	const tuning = 5000
	need = requiredUsers(200, 2.0/100, 0.1, 0.8, 0.05, ModeSequential, tuning)
	mdeAt := func(n float64) float64 {
		return MinimumDetectableEffect(math.Sqrt(4/n), SequentialMultiplier(n, tuning, 0.05), 0.8)
	}
	if !(mdeAt(need) <= 0.1 && mdeAt(need*0.99) > 0.1) || need <= 2*nArm {
		t.Errorf("sequential required users %v: MDE there %v, 1%% earlier %v", need, mdeAt(need), mdeAt(need*0.99))
	}
	if got := requiredUsers(1e6, 4e-6, 0.1, 0.8, 0.05, ModeSequential, tuning); got != 1e6 {
		t.Errorf("already powered: required %v, want the current 1e6", got)
	}
	if got := requiredUsers(0, 1, 0.1, 0.8, 0.05, ModeFixed, 0); !math.IsInf(got, 1) {
		t.Errorf("no users: required %v", got)
	}
}

func TestSampleRatioMismatch(t *testing.T) {
	cases := []struct {
		name     string
		observed []int64
		weights  []int
		chi, p   float64
		mismatch bool
	}{
		// (5500−5000)²/5000 · 2 = 100 on 1 df: p = erfc(√50) = 1.5239706e-23.
		{"55/45 against 50/50", []int64{5500, 4500}, []int{1, 1}, 100, 1.5239706048321052e-23, true},
		{"exact split", []int64{5000, 5000}, []int{50, 50}, 0, 1, false},
		// 2:1:1 of 4000 expects 2000/1000/1000; (40² + 30² + 10²)/… = 0.8 + 0.9 + 0.1 = 1.8 on 2 df: p = e^−0.9.
		{"three arms, small noise", []int64{2040, 970, 990}, []int{2, 1, 1}, 1.8, math.Exp(-0.9), false},
		// 10,000 users, (5090−5000)²/5000·2 = 3.24: p = erfc(√1.62) = 0.0718.
		{"borderline noise", []int64{5090, 4910}, []int{1, 1}, 3.24, math.Erfc(math.Sqrt(1.62)), false},
		{"no users", []int64{0, 0}, []int{1, 1}, 0, 1, false},
		{"length mismatch", []int64{1, 2}, []int{1}, 0, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := SampleRatioMismatch(c.observed, c.weights)
			if !near(got.ChiSquare, c.chi, 1e-12) || !relNear(got.PValue, c.p, 1e-10) || got.Mismatch != c.mismatch {
				t.Errorf("got %+v, want χ² %v p %v mismatch %v", got, c.chi, c.p, c.mismatch)
			}
		})
	}
}
