package stat

import (
	"math"
	"testing"
)

// Reference values: chi-square table (A&S Table 26.8: χ²(0.95; 1) = 3.841,
// χ²(0.95; 10) = 18.307, χ²(0.999; 1) = 10.828, …) at full precision from
// scipy 1.10.1 (scipy.stats.chi2.ppf); the survival at a quantile is its
// tail probability. Closed forms: df = 2 has P(X > x) = exp(−x/2) and df = 1
// has P(X > x) = erfc(√(x/2)).
func TestChiSquare(t *testing.T) {
	tests := []struct {
		name          string
		x, df, wantSF float64
	}{
		{"95% df1", 3.841458820694124, 1, 0.05},
		{"95% df2", 5.991464547107979, 2, 0.05},
		{"95% df3", 7.814727903251179, 3, 0.05},
		{"95% df4", 9.487729036781154, 4, 0.05},
		{"95% df10", 18.307038053275146, 10, 0.05},
		{"95% df30", 43.77297182574219, 30, 0.05},
		{"99% df1", 6.634896601021214, 1, 0.01},
		{"99.9% df1", 10.827566170662733, 1, 0.001},
		{"99.9% df3", 16.26623619623813, 3, 0.001},
		{"99.9% df10", 29.58829844507442, 10, 0.001},
		{"df1 at one", 1, 1, 0.317310507862914102830},
		{"df2 closed form", 7, 2, math.Exp(-3.5)},
		{"df1 closed form", 2.5, 1, math.Erfc(math.Sqrt(1.25))},
		{"far tail df1", 100, 1, 1.5239706048320995e-23},
		{"far tail df10", 100, 10, 5.4497019829205215e-17},
		{"zero", 0, 3, 1},
		{"df1 zero", 0, 1, 1},
		{"negative x", -1, 3, 1},
		{"df1 negative x", -3, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChiSquareSF(tc.x, tc.df); !relNear(got, tc.wantSF, 1e-10) || !near(got, tc.wantSF, 1e-12) {
				t.Errorf("ChiSquareSF(%v, %v) = %.17g, want %.17g", tc.x, tc.df, got, tc.wantSF)
			}
			if got := ChiSquareCDF(tc.x, tc.df); !near(got, 1-tc.wantSF, 1e-12) {
				t.Errorf("ChiSquareCDF(%v, %v) = %.17g, want %.17g", tc.x, tc.df, got, 1-tc.wantSF)
			}
		})
	}
	// Lower tail: scipy.stats.chi2.cdf(0.5, 30).
	if got := ChiSquareCDF(0.5, 30); !relNear(got, 5.634558720450966e-22, 1e-9) {
		t.Errorf("ChiSquareCDF(0.5, 30) = %g", got)
	}
	edge := []struct {
		name          string
		x, df, sf, cd float64
	}{
		{"infinite x", math.Inf(1), 1, 0, 1},
		{"infinite x, df 4", math.Inf(1), 4, 0, 1},
		{"df zero", 1, 0, math.NaN(), math.NaN()},
		{"df negative", 1, -1, math.NaN(), math.NaN()},
		{"x NaN", math.NaN(), 2, math.NaN(), math.NaN()},
		{"x NaN, df 1", math.NaN(), 1, math.NaN(), math.NaN()},
		{"df NaN", 2, math.NaN(), math.NaN(), math.NaN()},
	}
	for _, tc := range edge {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChiSquareSF(tc.x, tc.df); !near(got, tc.sf, 0) {
				t.Errorf("ChiSquareSF(%v, %v) = %v, want %v", tc.x, tc.df, got, tc.sf)
			}
			if got := ChiSquareCDF(tc.x, tc.df); !near(got, tc.cd, 0) {
				t.Errorf("ChiSquareCDF(%v, %v) = %v, want %v", tc.x, tc.df, got, tc.cd)
			}
		})
	}
}
