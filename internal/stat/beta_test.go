package stat

import (
	"math"
	"testing"
)

// Reference values: ln B(a, b) from mpmath (40 digits). The large cases are
// where ln Γ(a) − ln Γ(a+b) cancels: summing math.Lgamma there loses about
// 1e-8 absolute.
func TestLogBeta(t *testing.T) {
	tests := []struct {
		name       string
		a, b, want float64
		tol        float64
	}{
		{"small integers: ln(1/12)", 2, 3, -2.48490664978800031023, 1e-14},
		{"arcsine: ln π", 0.5, 0.5, 1.144729885849400174143, 1e-14},
		{"symmetric in its arguments", 3, 2, -2.48490664978800031023, 1e-14},
		{"one large, one small", 1e6, 0.5, -6.335390211057436964987, 1e-14},
		{"small first", 0.5, 1e6, -6.335390211057436964987, 1e-14},
		{"large, moderate", 1e7, 20, -283.0220478319545517383, 1e-14},
		{"both large", 3e6, 2.5e6, -3789556.955515786023189, 1e-14},
		{"Stirling boundary", 12.5, 0.25, 0.664138816410165018599, 1e-14},
		{"zero", 0, 1, math.NaN(), 0},
		{"negative", 1, -2, math.NaN(), 0},
		{"NaN", math.NaN(), 1, math.NaN(), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LogBeta(tc.a, tc.b); !near(got, tc.want, tc.tol) {
				t.Errorf("LogBeta(%v, %v) = %.17g, want %.17g", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// Regularized incomplete beta values from mpmath's betainc.
func TestBetaIncLog(t *testing.T) {
	tests := []struct {
		name      string
		x, a, b   float64
		lower     float64 // I_x(a,b)
		logUpper  float64 // ln(1 − I_x(a,b))
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
			lo, up := BetaIncLog(tc.x, tc.a, tc.b)
			if !near(math.Exp(lo), tc.lower, tc.tolerance) {
				t.Errorf("I = %.15g, want %.15g", math.Exp(lo), tc.lower)
			}
			if !near(up, tc.logUpper, tc.tolerance) {
				t.Errorf("log(1-I) = %.15g, want %.15g", up, tc.logUpper)
			}
		})
	}
	edge := []struct {
		name      string
		x, a, b   float64
		lower, up float64
	}{
		{"a zero", 0.5, 0, 1, math.NaN(), math.NaN()},
		{"b negative", 0.5, 1, -1, math.NaN(), math.NaN()},
		{"x NaN", math.NaN(), 1, 1, math.NaN(), math.NaN()},
		{"at zero", 0, 2, 3, math.Inf(-1), 0},
		{"below zero", -1, 2, 3, math.Inf(-1), 0},
		{"at one", 1, 2, 3, 0, math.Inf(-1)},
		{"above one", 2, 2, 3, 0, math.Inf(-1)},
	}
	for _, tc := range edge {
		t.Run(tc.name, func(t *testing.T) {
			lo, up := BetaIncLog(tc.x, tc.a, tc.b)
			if !near(lo, tc.lower, 0) || !near(up, tc.up, 0) {
				t.Errorf("BetaIncLog(%v, %v, %v) = %v, %v; want %v, %v", tc.x, tc.a, tc.b, lo, up, tc.lower, tc.up)
			}
		})
	}
}
