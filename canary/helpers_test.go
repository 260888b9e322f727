package canary

import (
	"math"
	"time"
)

var inf = math.Inf(1)

// near reports whether got is within relTol of want, relative for |want| > 1
// and absolute otherwise; infinities and NaN must match exactly.
func near(got, want, relTol float64) bool {
	if math.IsInf(want, 0) || math.IsNaN(want) {
		return got == want || (math.IsNaN(got) && math.IsNaN(want))
	}
	return math.Abs(got-want) <= relTol*math.Max(1, math.Abs(want))
}

func ptr[T any](v T) *T { return &v }

func pts(n int, level float64, seed int) []Point {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]Point, n)
	for i := range out {
		out[i] = Point{T: t0.Add(time.Duration(i) * time.Minute), V: level * (1 + 0.05*math.Sin(float64(i+seed)*1.7))}
	}
	return out
}
