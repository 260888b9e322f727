package stat

import (
	"math"
	"testing"
)

// Reference values: Student t quantiles from the standard tables (A&S Table
// 26.10, NIST/SEMATECH table 1.3.6.7.2: t(0.975; 1) = 12.706, t(0.975; 10) =
// 2.228, t(0.995; 20) = 2.845, …) to the digits printed there; full precision
// from mpmath at 30–40 digits (root of the regularized incomplete beta).
// scipy 1.10.1's t.ppf is off by up to 1e-10 here (it gives 12.706204736432
// for df = 1 where the exact value is cot(π/40) = 12.706204736174693), so it
// is not used as the reference.
func TestStudentTQuantile(t *testing.T) {
	tests := []struct {
		name        string
		p, df, want float64
	}{
		{"df1 closed form", 0.975, 1, 1 / math.Tan(math.Pi/40)},
		{"df1 (Cauchy) 97.5%", 0.975, 1, 12.7062047361746933141},
		{"df2", 0.975, 2, 4.3026527297494617894},
		{"df2 99.5%", 0.995, 2, 9.92484320091828864033},
		{"df3", 0.975, 3, 3.1824463052837084359},
		{"df5", 0.975, 5, 2.5705818356363147828},
		{"df10", 0.975, 10, 2.2281388519862742245},
		{"df30", 0.975, 30, 2.0422724563012378878},
		{"df30 95%", 0.95, 30, 1.69726088659395738368},
		{"df120", 0.975, 120, 1.9799304050824404567},
		{"df10 one-sided 95%", 0.95, 10, 1.8124611228116758693},
		{"df1 99.5%", 0.995, 1, 63.656741162871524447},
		{"df3 99.5%", 0.995, 3, 5.8409093097333554113},
		{"df20 99.5%", 0.995, 20, 2.8453397097861080688},
		{"fractional df 3.5 90%", 0.9, 3.5, 1.57657660513640526777},
		{"fractional Welch df", 0.975, 24.95, 2.0597478519922199894},
		{"df1000", 0.975, 1000, 1.9623390808264081039},
		{"df1e6 expansion", 0.975, 1e6, 1.9599663568141066553},
		// mpmath: the normal quantile 1.959963984540054 plus 2.37e-9.
		{"huge df 1e9", 0.975, 1e9, 1.9599639869123254686},
		{"lower tail df5", 0.025, 5, -2.5705818356363147828},
		{"lower tail df10 by symmetry", 0.025, 10, -2.2281388519862742245},
		{"infinite df is normal", 0.975, math.Inf(1), 1.959963984540054},
		{"median", 0.5, 7, 0},
		{"p 0", 0, 5, math.Inf(-1)},
		{"p 1", 1, 5, math.Inf(1)},
		{"df 0", 0.9, 0, math.NaN()},
		{"df 0 at the median", 0.5, 0, math.NaN()},
		{"df negative", 0.9, -3, math.NaN()},
		{"df negative at the median", 0.5, -1, math.NaN()},
		{"p above one", 1.5, 3, math.NaN()},
		{"p NaN", math.NaN(), 3, math.NaN()},
		{"df NaN", 0.9, math.NaN(), math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := StudentTQuantile(tc.p, tc.df)
			if !near(got, tc.want, 1e-13) {
				t.Errorf("StudentTQuantile(%v, %v) = %.17g, want %.17g", tc.p, tc.df, got, tc.want)
			}
			if tc.p > 0 && tc.p < 1 && tc.df > 0 {
				if c := StudentTCDF(tc.want, tc.df); !near(c, tc.p, 1e-10) {
					t.Errorf("StudentTCDF(%v, %v) = %.17g, want %v", tc.want, tc.df, c, tc.p)
				}
			}
		})
	}
	// With huge df the t quantile approaches the normal one: the difference
	// is z(z²+1)/(4df) to first order.
	for _, df := range []float64{1e9, 1e13} {
		q, z := StudentTQuantile(0.975, df), NormalQuantile(0.975)
		if d := q - z; d < 0 || d > 1e-8 {
			t.Errorf("StudentTQuantile(0.975, %g) − NormalQuantile(0.975) = %g, want in [0, 1e-8]", df, d)
		}
	}
}

// CDF values for df = 1 and 2 have closed forms: 1/2 + atan(t)/π and
// 1/2 + t/(2√(2+t²)); the others are from mpmath at 40 digits.
func TestStudentTCDF(t *testing.T) {
	tests := []struct {
		name        string
		x, df, want float64
	}{
		{"df1 closed form", 2, 1, 0.5 + math.Atan(2)/math.Pi},
		{"df2 closed form", 2, 2, 0.5 + 2/(2*math.Sqrt(6))},
		{"df2 negative", -1.5, 2, 0.5 - 1.5/(2*math.Sqrt(2+2.25))},
		{"df10", 2, 10, 0.96330598261462981719},
		{"df30", 2, 30, 0.97268747751850844804},
		{"df1e6", 2, 1e6, 0.97724973307434039579},
		{"df1e7 lower", -3, 1e7, 0.0013499013555185806256},
		{"df3e7 upper", 5, 3e7, 0.99999971334681750435},
		{"infinite df is normal", 2, math.Inf(1), 0.5 * math.Erfc(-2/math.Sqrt2)},
		{"zero", 0, 7, 0.5},
		{"+Inf", math.Inf(1), 7, 1},
		{"-Inf", math.Inf(-1), 7, 0},
		{"df 0", 1, 0, math.NaN()},
		{"df NaN", 1, math.NaN(), math.NaN()},
		{"t NaN", math.NaN(), 3, math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := StudentTCDF(tc.x, tc.df); !near(got, tc.want, 1e-12) {
				t.Errorf("StudentTCDF(%v, %v) = %.17g, want %.17g", tc.x, tc.df, got, tc.want)
			}
		})
	}
	// Large df, beyond the continued fraction's reach: relative precision of
	// the lower tail (mpmath, 50 digits).
	large := []struct {
		name        string
		x, df, want float64
	}{
		{"df1e8", -2, 1e8, 0.022750133297953376441},
		{"df1e9 far tail", -10, 1e9, 7.6198724530455390421e-24},
		{"df1e12", -2, 1e12, 0.022750131948314184617},
	}
	for _, tc := range large {
		t.Run("large/"+tc.name, func(t *testing.T) {
			if got := StudentTCDF(tc.x, tc.df); !relNear(got, tc.want, 1e-13) {
				t.Errorf("StudentTCDF(%v, %v) = %.17g, want %.17g", tc.x, tc.df, got, tc.want)
			}
		})
	}
	// Tails keep their precision (mpmath, 40 digits): the lower tail
	// relatively, the upper one as 1 − CDF allows.
	tails := []struct {
		name     string
		df, want float64
	}{
		{"df1", 1, 0.062832958189001183814},
		{"df10", 10, 0.00026866680137822630854},
		{"df120", 120, 9.8909529022698276618e-7},
	}
	for _, tc := range tails {
		t.Run("tail/"+tc.name, func(t *testing.T) {
			if got := 1 - StudentTCDF(5, tc.df); !relNear(got, tc.want, 1e-9) {
				t.Errorf("P(T > 5; %v) = %.17g, want %.17g", tc.df, got, tc.want)
			}
			if got := StudentTCDF(-5, tc.df); !relNear(got, tc.want, 1e-12) {
				t.Errorf("P(T < -5; %v) = %.17g, want %.17g", tc.df, got, tc.want)
			}
			if got := 2 * StudentTCDF(-5, tc.df); !relNear(got, 2*tc.want, 1e-12) {
				t.Errorf("P(|T| > 5; %v) = %.17g, want %.17g", tc.df, got, 2*tc.want)
			}
		})
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
		if lo, up := BetaIncLog(x, df, p); !math.IsNaN(lo) && (lo > 0 || up > 0) {
			t.Errorf("BetaIncLog(%g, %g, %g) = %g, %g; want logs of probabilities", x, df, p, lo, up)
		}
	})
}
