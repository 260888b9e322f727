package canary

import (
	"math"
	"testing"
)

func near(got, want, relTol float64) bool {
	if math.IsInf(want, 0) || math.IsNaN(want) {
		return got == want || (math.IsNaN(got) && math.IsNaN(want))
	}
	return math.Abs(got-want) <= relTol*math.Max(1, math.Abs(want))
}

// Reference values: the published normal and Student t tables (e.g. NIST/
// SEMATECH e-Handbook tables 1.3.6.7.1 and 1.3.6.7.2), given here to the
// precision mpmath computes them (30 digits, outside this code).
func TestNormalQuantile(t *testing.T) {
	tests := []struct {
		name string
		p    float64
		want float64
	}{
		{"97.5%", 0.975, 1.95996398454005385560},
		{"95%", 0.95, 1.64485362695147228428},
		{"99.5%", 0.995, 2.57582930354890045386},
		{"99.9%", 0.999, 3.09023230616781327776},
		{"median", 0.5, 0},
		{"deep lower tail", 1e-10, -6.36134090240405619910},
		{"2.5%", 0.025, -1.95996398454005385560},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := normalQuantile(tc.p); !near(got, tc.want, 1e-12) {
				t.Errorf("normalQuantile(%v) = %.15g, want %.15g", tc.p, got, tc.want)
			}
			if tc.p != 0.5 {
				if back := normalCDF(tc.want); !near(back, tc.p, 1e-12) && math.Abs(back-tc.p) > 1e-22 {
					t.Errorf("normalCDF(%v) = %.15g, want %v", tc.want, back, tc.p)
				}
			}
		})
	}
	edge := []struct {
		name string
		p    float64
		want float64
	}{
		{"zero", 0, math.Inf(-1)},
		{"one", 1, math.Inf(1)},
		{"negative", -0.1, math.NaN()},
		{"above one", 1.1, math.NaN()},
		{"NaN", math.NaN(), math.NaN()},
	}
	for _, tc := range edge {
		t.Run(tc.name, func(t *testing.T) {
			if got := normalQuantile(tc.p); !near(got, tc.want, 0) {
				t.Errorf("normalQuantile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestLogNormalCDFTail(t *testing.T) {
	// log Φ(−40) from mpmath: log(erfc(40/√2)/2).
	const want = -804.608442013753788166
	if got := logNormalCDF(-40); !near(got, want, 1e-9) {
		t.Errorf("logNormalCDF(-40) = %.15g, want %.15g", got, want)
	}
	if got := logNormalCDF(-1.5); !near(got, math.Log(normalCDF(-1.5)), 1e-14) {
		t.Errorf("logNormalCDF(-1.5) = %v", got)
	}
	if got := logNormalCDF(math.Inf(-1)); !math.IsInf(got, -1) && !math.IsNaN(got) {
		t.Errorf("logNormalCDF(-Inf) = %v, want -Inf", got)
	}
}

func TestStudentTQuantile(t *testing.T) {
	tests := []struct {
		name string
		p    float64
		df   float64
		want float64
	}{
		{"df 1 (Cauchy) 97.5%", 0.975, 1, 12.7062047361746933141},
		{"df 2 99.5%", 0.995, 2, 9.92484320091828864033},
		{"df 5 97.5%", 0.975, 5, 2.57058183563631478279},
		{"df 10 97.5%", 0.975, 10, 2.22813885198627422452},
		{"df 30 95%", 0.95, 30, 1.69726088659395738368},
		{"fractional df 3.5 90%", 0.9, 3.5, 1.57657660513640526777},
		{"df 10 2.5% by symmetry", 0.025, 10, -2.22813885198627422452},
		{"median", 0.5, 7, 0},
		{"huge df is normal", 0.975, 1e9, 1.95996398454005385560},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := studentTQuantile(tc.p, tc.df)
			if !near(got, tc.want, 1e-9) {
				t.Errorf("studentTQuantile(%v, %v) = %.15g, want %.15g", tc.p, tc.df, got, tc.want)
			}
			if c := studentTCDF(tc.want, tc.df); !near(c, tc.p, 1e-10) {
				t.Errorf("studentTCDF(%v, %v) = %.15g, want %v", tc.want, tc.df, c, tc.p)
			}
		})
	}
	for _, bad := range [][2]float64{{0.5, 0}, {0.5, -1}, {1.5, 3}, {math.NaN(), 3}, {0.9, math.NaN()}} {
		if got := studentTQuantile(bad[0], bad[1]); !math.IsNaN(got) {
			t.Errorf("studentTQuantile(%v, %v) = %v, want NaN", bad[0], bad[1], got)
		}
	}
}

// Chi-square critical values with one degree of freedom from the published
// table: 3.841 at 5 %, 6.635 at 1 %, 10.828 at 0.1 %.
func TestChiSquareSF1(t *testing.T) {
	tests := []struct {
		name string
		x    float64
		want float64
	}{
		{"5% critical value", 3.841458820694124, 0.05},
		{"1% critical value", 6.634896601021214, 0.01},
		{"0.1% critical value", 10.827566170662733, 0.001},
		{"one", 1, 0.317310507862914102830},
		{"zero", 0, 1},
		{"negative", -3, 1},
		{"infinite", math.Inf(1), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := chiSquareSF1(tc.x); !near(got, tc.want, 1e-12) {
				t.Errorf("chiSquareSF1(%v) = %.15g, want %v", tc.x, got, tc.want)
			}
		})
	}
	if !math.IsNaN(chiSquareSF1(math.NaN())) {
		t.Error("chiSquareSF1(NaN) is not NaN")
	}
}

// Regularized incomplete beta values from mpmath's betainc.
func TestBetaIncLog(t *testing.T) {
	tests := []struct {
		name      string
		x, a, b   float64
		lower     float64 // I_x(a,b)
		logUpper  float64 // log(1 − I_x(a,b))
		tolerance float64
	}{
		{"small integers", 0.3, 2, 5, 0.579824999999999976009, -0.867083987819506772282, 1e-12},
		{"upper side", 0.9, 50, 3, 0.0966332851372522088711, -0.101626700736673114935, 1e-12},
		{"arcsine near zero", 0.001, 0.5, 0.5, 0.0201350416333774911820, -0.0203405143975580128641, 1e-12},
		{"hundreds", 0.5, 200, 210, 0.689485213427416145226, -1.16952375693062181430, 1e-10},
		{"fractional thousands, far tail", 0.6, 1000.5, 800.25, 0.999933998097839272355, -9.62582699573606903950, 1e-9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, up := betaIncLog(tc.x, tc.a, tc.b)
			if !near(math.Exp(lo), tc.lower, tc.tolerance) {
				t.Errorf("I = %.15g, want %.15g", math.Exp(lo), tc.lower)
			}
			if !near(up, tc.logUpper, tc.tolerance) {
				t.Errorf("log(1-I) = %.15g, want %.15g", up, tc.logUpper)
			}
		})
	}
	for _, bad := range [][3]float64{{0.5, 0, 1}, {0.5, 1, -1}, {math.NaN(), 1, 1}} {
		if lo, up := betaIncLog(bad[0], bad[1], bad[2]); !math.IsNaN(lo) || !math.IsNaN(up) {
			t.Errorf("betaIncLog%v = %v, %v; want NaN", bad, lo, up)
		}
	}
	if lo, up := betaIncLog(0, 2, 3); !math.IsInf(lo, -1) || up != 0 {
		t.Errorf("betaIncLog at 0 = %v, %v", lo, up)
	}
	if lo, up := betaIncLog(1, 2, 3); lo != 0 || !math.IsInf(up, -1) {
		t.Errorf("betaIncLog at 1 = %v, %v", lo, up)
	}
}

// Holm's procedure on the classic four-hypothesis example: sorted p-values
// 0.005, 0.01, 0.03, 0.04 are multiplied by 4, 3, 2, 1 and made monotone:
// 0.02, 0.03, 0.06, 0.06.
func TestHolm(t *testing.T) {
	tests := []struct {
		name string
		p    []float64
		want []float64
	}{
		{"four hypotheses", []float64{0.01, 0.04, 0.03, 0.005}, []float64{0.03, 0.06, 0.06, 0.02}},
		{"capped at one", []float64{0.5, 0.6}, []float64{1, 1}},
		{"single", []float64{0.04}, []float64{0.04}},
		{"NaN counts as one", []float64{math.NaN(), 0.01}, []float64{1, 0.02}},
		{"ties", []float64{0.01, 0.01, 0.2}, []float64{0.03, 0.03, 0.2}},
		{"empty", nil, []float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := holm(tc.p)
			if len(got) != len(tc.want) {
				t.Fatalf("holm(%v) = %v, want %v", tc.p, got, tc.want)
			}
			for i := range got {
				if !near(got[i], tc.want[i], 1e-12) {
					t.Errorf("holm(%v) = %v, want %v", tc.p, got, tc.want)
					break
				}
			}
		})
	}
}
