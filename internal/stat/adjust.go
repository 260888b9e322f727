package stat

import (
	"math"
	"slices"
)

// Holm returns Holm's step-down adjusted p-values, in the input's order: with
// p sorted ascending, the k-th smallest (1-based) among m gets
// adj₍ₖ₎ = max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎). Rejecting every
// hypothesis whose adjusted p is ≤ α controls the family-wise error rate at α
// under any dependence. NaN and values above 1 count as 1, negative values as
// 0; the input is not modified and an empty input gives an empty result.
func Holm(p []float64) []float64 {
	m := len(p)
	adj := make([]float64, m)
	running := 0.0
	for rank, i := range ascending(p) {
		running = max(running, min(1, float64(m-rank)*clamp(p[i])))
		adj[i] = running
	}
	return adj
}

// BenjaminiHochberg returns Benjamini–Hochberg adjusted p-values (q-values),
// in the input's order: with p sorted ascending,
// adj₍ₖ₎ = min over j ≥ k of min(1, m/j·p₍ⱼ₎). Rejecting every hypothesis
// whose adjusted p is ≤ α controls the false discovery rate at α for
// independent or positively dependent tests. NaN and values above 1 count as
// 1, negative values as 0; the input is not modified and an empty input
// gives an empty result.
func BenjaminiHochberg(p []float64) []float64 {
	m := len(p)
	order := ascending(p)
	adj := make([]float64, m)
	running := 1.0
	for rank := m - 1; rank >= 0; rank-- {
		i := order[rank]
		running = min(running, min(1, float64(m)/float64(rank+1)*clamp(p[i])))
		adj[i] = running
	}
	return adj
}

// clamp maps a p-value into [0, 1], NaN to 1.
func clamp(p float64) float64 {
	if math.IsNaN(p) || p > 1 {
		return 1
	}
	return max(p, 0)
}

// ascending returns the indexes of p in ascending order of clamp(p), ties in
// input order.
func ascending(p []float64) []int {
	order := make([]int, len(p))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		pa, pb := clamp(p[a]), clamp(p[b])
		switch {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return 0
	})
	return order
}
