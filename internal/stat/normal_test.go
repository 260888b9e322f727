package stat

import (
	"math"
	"testing"
)

// Reference values: standard normal tables (Abramowitz & Stegun 26.2; NIST/
// SEMATECH e-Handbook table 1.3.6.7.1), at full precision from scipy 1.10.1
// (scipy.stats.norm.cdf/ppf) and mpmath (30 digits), both outside this code.
func TestNormalCDF(t *testing.T) {
	tests := []struct {
		name    string
		x, want float64
	}{
		{"zero", 0, 0.5},
		{"1.96", 1.96, 0.9750021048517795},
		{"-3", -3, 0.0013498980316300933},
		{"-10 far tail", -10, 7.61985302416047e-24},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalCDF(tc.x); !relNear(got, tc.want, 1e-13) {
				t.Errorf("NormalCDF(%v) = %.17g, want %.17g", tc.x, got, tc.want)
			}
		})
	}
	edge := []struct {
		name    string
		x, want float64
	}{
		{"-Inf", math.Inf(-1), 0},
		{"+Inf", math.Inf(1), 1},
		{"NaN", math.NaN(), math.NaN()},
	}
	for _, tc := range edge {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalCDF(tc.x); !near(got, tc.want, 0) {
				t.Errorf("NormalCDF(%v) = %v, want %v", tc.x, got, tc.want)
			}
		})
	}
}

func TestNormalQuantile(t *testing.T) {
	tests := []struct {
		name    string
		p, want float64
		tol     float64
	}{
		{"median", 0.5, 0, 0},
		{"97.5%", 0.975, 1.95996398454005385560, 1e-14},
		{"95%", 0.95, 1.64485362695147228428, 1e-14},
		{"99.5%", 0.995, 2.57582930354890045386, 1e-14},
		{"99.9%", 0.999, 3.09023230616781327776, 1e-14},
		{"90%", 0.9, 1.2815515655446004, 1e-14},
		{"80% (power)", 0.8, 0.8416212335729143, 1e-14},
		{"2.5%", 0.025, -1.95996398454005385560, 1e-14},
		{"deep lower tail 1e-10", 1e-10, -6.36134090240405619910, 1e-14},
		{"deeper lower tail 1e-20", 1e-20, -9.262340089798409, 1e-14},
		{"zero", 0, math.Inf(-1), 0},
		{"one", 1, math.Inf(1), 0},
		{"negative", -0.1, math.NaN(), 0},
		{"above one", 1.5, math.NaN(), 0},
		{"just above one", 1.1, math.NaN(), 0},
		{"NaN", math.NaN(), math.NaN(), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalQuantile(tc.p); !near(got, tc.want, tc.tol) {
				t.Errorf("NormalQuantile(%v) = %.17g, want %.17g", tc.p, got, tc.want)
			}
			if tc.p > 0 && tc.p < 1 && tc.p != 0.5 {
				if back := NormalCDF(tc.want); !near(back, tc.p, 1e-12) && math.Abs(back-tc.p) > 1e-22 {
					t.Errorf("NormalCDF(%v) = %.17g, want %v", tc.want, back, tc.p)
				}
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

func TestNormalLogCDF(t *testing.T) {
	tests := []struct {
		name    string
		x, want float64
		tol     float64
	}{
		// ln Φ(−40) from mpmath: log(erfc(40/√2)/2); Φ itself underflows.
		{"far tail -40", -40, -804.608442013753788166, 1e-9},
		{"moderate -1.5", -1.5, math.Log(0.5 * math.Erfc(1.5/math.Sqrt2)), 1e-14},
		{"+Inf", math.Inf(1), 0, 0},
		{"-Inf", math.Inf(-1), math.Inf(-1), 0},
		{"NaN", math.NaN(), math.NaN(), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalLogCDF(tc.x); !near(got, tc.want, tc.tol) {
				t.Errorf("NormalLogCDF(%v) = %.17g, want %.17g", tc.x, got, tc.want)
			}
		})
	}
	// The series and the direct formula meet at -30.
	if lo, hi := NormalLogCDF(math.Nextafter(-30, -31)), NormalLogCDF(-30); !near(lo, hi, 1e-12) {
		t.Errorf("NormalLogCDF jumps at -30: %.17g vs %.17g", lo, hi)
	}
}

func TestLogAddExp(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name       string
		a, b, want float64
	}{
		{"equal", 0, 0, math.Ln2},
		{"ordered either way", math.Log(3), math.Log(1), math.Log(4)},
		{"swapped", math.Log(1), math.Log(3), math.Log(4)},
		{"no overflow", 1000, 1000, 1000 + math.Ln2},
		{"one side empty", -inf, 2, 2},
		{"both empty", -inf, -inf, -inf},
		{"infinite", inf, 3, inf},
		{"both infinite", inf, inf, inf},
		{"NaN", math.NaN(), 1, math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LogAddExp(tc.a, tc.b); !near(got, tc.want, 1e-15) {
				t.Errorf("LogAddExp(%v, %v) = %.17g, want %.17g", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
