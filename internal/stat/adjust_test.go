package stat

import (
	"math"
	"slices"
	"testing"
)

// Adjusted p-values worked by hand (R's p.adjust gives the same):
// p = (0.01, 0.04, 0.03, 0.005), sorted 0.005, 0.01, 0.03, 0.04.
// Holm: 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(1·0.04, 0.06) = 0.06.
// BH: 0.04·4/4 = 0.04, min(0.03·4/3, 0.04) = 0.04, 0.01·4/2 = 0.02, min(0.005·4, 0.02) = 0.02.
func TestAdjust(t *testing.T) {
	four := []float64{0.01, 0.04, 0.03, 0.005}
	tests := []struct {
		name string
		got  []float64
		want []float64
	}{
		{"holm four hypotheses", Holm(four), []float64{0.03, 0.06, 0.06, 0.02}},
		{"bh four hypotheses", BenjaminiHochberg(four), []float64{0.02, 0.04, 0.04, 0.02}},
		{"holm caps at one", Holm([]float64{0.5, 0.6}), []float64{1, 1}},
		{"holm caps at one again", Holm([]float64{0.6, 0.7}), []float64{1, 1}},
		{"holm single", Holm([]float64{0.04}), []float64{0.04}},
		{"holm NaN counts as one", Holm([]float64{math.NaN(), 0.01}), []float64{1, 0.02}},
		{"bh NaN counts as one", BenjaminiHochberg([]float64{math.NaN(), 0.01}), []float64{1, 0.02}},
		{"holm out of range clamped", Holm([]float64{1.5, -0.1}), []float64{1, 0}},
		{"holm ties", Holm([]float64{0.01, 0.01, 0.2}), []float64{0.03, 0.03, 0.2}},
		{"holm empty", Holm(nil), []float64{}},
		{"bh empty", BenjaminiHochberg(nil), []float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.got) != len(tc.want) {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
			for i := range tc.got {
				if !near(tc.got[i], tc.want[i], 1e-15) {
					t.Errorf("got %v, want %v", tc.got, tc.want)
					break
				}
			}
		})
	}
	in := slices.Clone(four)
	Holm(in)
	BenjaminiHochberg(in)
	if !slices.Equal(in, four) {
		t.Errorf("the adjustments modified their input: %v", in)
	}
}

// Benjamini & Hochberg (1995), section 4: of these 15 p-values the
// step-up procedure at q = 0.05 rejects the four smallest, while
// Bonferroni-type procedures (Holm) reject three.
func TestAdjustBenjaminiHochbergPaper(t *testing.T) {
	p := []float64{0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000}
	count := func(adj []float64) int {
		n := 0
		for _, a := range adj {
			if a < 0.05 {
				n++
			}
		}
		return n
	}
	if n := count(BenjaminiHochberg(p)); n != 4 {
		t.Errorf("BH rejects %d, want 4", n)
	}
	if n := count(Holm(p)); n != 3 {
		t.Errorf("Holm rejects %d, want 3", n)
	}
}
