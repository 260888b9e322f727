package experiments

import (
	"math"
	"testing"
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

// Reference values: standard normal tables (Abramowitz & Stegun 26.2), which
// scipy 1.10.1 reproduces to the digits given (scipy.stats.norm.cdf/ppf).
func TestNormal(t *testing.T) {
	cdf := []struct {
		name    string
		x, want float64
	}{
		{"zero", 0, 0.5},
		{"1.96", 1.96, 0.9750021048517795},
		{"-3", -3, 0.0013498980316300933},
		{"-10 far tail", -10, 7.61985302416047e-24},
	}
	for _, c := range cdf {
		t.Run("cdf/"+c.name, func(t *testing.T) {
			if got := NormalCDF(c.x); !relNear(got, c.want, 1e-13) {
				t.Errorf("NormalCDF(%v) = %.17g, want %.17g", c.x, got, c.want)
			}
		})
	}
	q := []struct {
		name    string
		p, want float64
	}{
		{"median", 0.5, 0},
		{"0.975", 0.975, 1.959963984540054},
		{"0.995", 0.995, 2.5758293035489004},
		{"0.9", 0.9, 1.2815515655446004},
		{"0.8 (power)", 0.8, 0.8416212335729143},
		{"0.025", 0.025, -1.959963984540054},
		{"1e-10", 1e-10, -6.361340902404056},
		{"1e-20", 1e-20, -9.262340089798409},
		{"zero", 0, math.Inf(-1)},
		{"one", 1, math.Inf(1)},
		{"negative", -0.1, math.NaN()},
		{"above one", 1.5, math.NaN()},
		{"NaN", math.NaN(), math.NaN()},
	}
	for _, c := range q {
		t.Run("quantile/"+c.name, func(t *testing.T) {
			if got := NormalQuantile(c.p); !near(got, c.want, 1e-14) {
				t.Errorf("NormalQuantile(%v) = %.17g, want %.17g", c.p, got, c.want)
			}
		})
	}
	// Round trip across the whole range.
	for _, p := range []float64{1e-300, 1e-100, 1e-15, 1e-5, 0.01, 0.3, 0.7, 0.99, 1 - 1e-12} {
		x := NormalQuantile(p)
		if got := NormalCDF(x); !relNear(got, p, 1e-12) && !(p > 0.5 && near(got, p, 1e-15)) {
			t.Errorf("NormalCDF(NormalQuantile(%g)) = %g", p, got)
		}
	}
}

// Reference values: Student t quantiles from the standard table (A&S Table
// 26.10: t(0.975; 1) = 12.706, t(0.975; 10) = 2.228, t(0.995; 20) = 2.845, …)
// to the digits printed there; full precision from mpmath at 40 digits
// (root of the regularized incomplete beta). scipy 1.10.1's t.ppf is off by
// up to 1e-10 here (it gives 12.706204736432 for df = 1 where the exact value
// is cot(π/40) = 12.706204736174693), so it is not used as the reference.
// CDF values for df = 1 and 2 have closed forms: 1/2 + atan(t)/π and
// 1/2 + t/(2√(2+t²)).
func TestStudentT(t *testing.T) {
	quantiles := []struct {
		name        string
		p, df, want float64
	}{
		{"df1 closed form", 0.975, 1, 1 / math.Tan(math.Pi/40)},
		{"df2", 0.975, 2, 4.3026527297494617894},
		{"df3", 0.975, 3, 3.1824463052837084359},
		{"df5", 0.975, 5, 2.5705818356363147828},
		{"df10", 0.975, 10, 2.2281388519862742245},
		{"df30", 0.975, 30, 2.0422724563012378878},
		{"df120", 0.975, 120, 1.9799304050824404567},
		{"df10 one-sided 95%", 0.95, 10, 1.8124611228116758693},
		{"df1 99.5%", 0.995, 1, 63.656741162871524447},
		{"df3 99.5%", 0.995, 3, 5.8409093097333554113},
		{"df20 99.5%", 0.995, 20, 2.8453397097861080688},
		{"fractional Welch df", 0.975, 24.95, 2.0597478519922199894},
		{"df1000", 0.975, 1000, 1.9623390808264081039},
		{"df1e6 expansion", 0.975, 1e6, 1.9599663568141066553},
		{"lower tail df5", 0.025, 5, -2.5705818356363147828},
		{"infinite df is normal", 0.975, math.Inf(1), 1.959963984540054},
		{"p 0", 0, 5, math.Inf(-1)},
		{"p 1", 1, 5, math.Inf(1)},
		{"df 0", 0.9, 0, math.NaN()},
		{"df negative", 0.9, -3, math.NaN()},
		{"p NaN", math.NaN(), 3, math.NaN()},
	}
	for _, c := range quantiles {
		t.Run("quantile/"+c.name, func(t *testing.T) {
			if got := StudentTQuantile(c.p, c.df); !near(got, c.want, 1e-13) {
				t.Errorf("StudentTQuantile(%v, %v) = %.17g, want %.17g", c.p, c.df, got, c.want)
			}
		})
	}
	cdfs := []struct {
		name        string
		x, df, want float64
	}{
		{"df1 closed form", 2, 1, 0.5 + math.Atan(2)/math.Pi},
		{"df2 closed form", 2, 2, 0.5 + 2/(2*math.Sqrt(6))},
		{"df2 negative", -1.5, 2, 0.5 - 1.5/(2*math.Sqrt(2+2.25))},
		{"df10", 2, 10, 0.96330598261462981719},
		{"df30", 2, 30, 0.97268747751850844804},
		{"df1e6", 2, 1e6, 0.97724973307434039579},
		{"zero", 0, 7, 0.5},
		{"+Inf", math.Inf(1), 7, 1},
	}
	for _, c := range cdfs {
		t.Run("cdf/"+c.name, func(t *testing.T) {
			if got := StudentTCDF(c.x, c.df); !near(got, c.want, 1e-12) {
				t.Errorf("StudentTCDF(%v, %v) = %.17g, want %.17g", c.x, c.df, got, c.want)
			}
		})
	}
	// Upper tails keep relative precision (mpmath, 40 digits).
	tails := []struct{ df, want float64 }{{1, 0.062832958189001183814}, {10, 0.00026866680137822630854}, {120, 9.8909529022698276618e-7}}
	for _, c := range tails {
		if got := 1 - StudentTCDF(5, c.df); !relNear(got, c.want, 1e-9) {
			t.Errorf("P(T > 5; %v) = %.17g, want %.17g", c.df, got, c.want)
		}
		if got := StudentTCDF(-5, c.df); !relNear(got, c.want, 1e-12) {
			t.Errorf("P(T < -5; %v) = %.17g, want %.17g", c.df, got, c.want)
		}
	}
}

// Reference values: chi-square table (A&S Table 26.8: χ²(0.95; 1) = 3.841,
// χ²(0.95; 10) = 18.307, χ²(0.999; 1) = 10.828, …) at full precision from
// scipy 1.10.1 (scipy.stats.chi2.ppf); the survival at a quantile is its
// tail probability. Closed forms: df = 2 has P(X > x) = exp(−x/2) and df = 1
// has P(X > x) = erfc(√(x/2)).
func TestChiSquare(t *testing.T) {
	quantiles := []struct {
		name          string
		x, df, wantSF float64
	}{
		{"95% df1", 3.841458820694124, 1, 0.05},
		{"95% df2", 5.991464547107979, 2, 0.05},
		{"95% df3", 7.814727903251179, 3, 0.05},
		{"95% df4", 9.487729036781154, 4, 0.05},
		{"95% df10", 18.307038053275146, 10, 0.05},
		{"95% df30", 43.77297182574219, 30, 0.05},
		{"99.9% df1", 10.827566170662733, 1, 0.001},
		{"99.9% df3", 16.26623619623813, 3, 0.001},
		{"99.9% df10", 29.58829844507442, 10, 0.001},
		{"df2 closed form", 7, 2, math.Exp(-3.5)},
		{"df1 closed form", 2.5, 1, math.Erfc(math.Sqrt(1.25))},
		{"far tail df1", 100, 1, 1.5239706048320995e-23},
		{"far tail df10", 100, 10, 5.4497019829205215e-17},
		{"zero", 0, 3, 1},
		{"negative x", -1, 3, 1},
	}
	for _, c := range quantiles {
		t.Run(c.name, func(t *testing.T) {
			if got := ChiSquareSF(c.x, c.df); !relNear(got, c.wantSF, 1e-10) {
				t.Errorf("ChiSquareSF(%v, %v) = %.17g, want %.17g", c.x, c.df, got, c.wantSF)
			}
			if got := ChiSquareCDF(c.x, c.df); !near(got, 1-c.wantSF, 1e-12) {
				t.Errorf("ChiSquareCDF(%v, %v) = %.17g, want %.17g", c.x, c.df, got, 1-c.wantSF)
			}
		})
	}
	// Lower tail: scipy.stats.chi2.cdf(0.5, 30).
	if got := ChiSquareCDF(0.5, 30); !relNear(got, 5.634558720450966e-22, 1e-9) {
		t.Errorf("ChiSquareCDF(0.5, 30) = %g", got)
	}
	for _, bad := range [][2]float64{{1, 0}, {1, -1}, {math.NaN(), 2}, {2, math.NaN()}} {
		if got := ChiSquareSF(bad[0], bad[1]); !math.IsNaN(got) {
			t.Errorf("ChiSquareSF(%v, %v) = %v, want NaN", bad[0], bad[1], got)
		}
	}
}

func FuzzDistributions(f *testing.F) {
	f.Add(0.975, 10.0, 3.0)
	f.Add(1e-300, 0.5, 1e9)
	f.Fuzz(func(t *testing.T, p, df, x float64) {
		// Never panic; results are in range or NaN.
		if q := StudentTQuantile(p, df); !math.IsNaN(q) && p > 0 && p < 1 && df >= 1 && df < 1e9 {
			if c := StudentTCDF(q, df); math.Abs(c-p) > 1e-6*math.Max(1e-3, p) && !math.IsInf(q, 0) {
				t.Errorf("StudentTCDF(StudentTQuantile(%g, %g)) = %g", p, df, c)
			}
		}
		if v := ChiSquareSF(x, df); !math.IsNaN(v) && (v < 0 || v > 1) {
			t.Errorf("ChiSquareSF(%g, %g) = %g out of [0,1]", x, df, v)
		}
		if v := NormalQuantile(p); !math.IsNaN(v) && (p < 0 || p > 1) {
			t.Errorf("NormalQuantile(%g) = %g, want NaN", p, v)
		}
	})
}
