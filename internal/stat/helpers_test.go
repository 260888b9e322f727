package stat

import "math"

// near reports whether got is within tol of want, relative for |want| > 1
// and absolute otherwise; infinities and NaN must match exactly.
func near(got, want, tol float64) bool {
	if math.IsInf(want, 0) || math.IsNaN(want) {
		return got == want || (math.IsNaN(got) && math.IsNaN(want))
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// relNear reports whether got is within tol of want relative to |want|.
func relNear(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Abs(want)
}
