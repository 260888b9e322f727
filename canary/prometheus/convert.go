package prometheus

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/model"

	"github.com/flagpole/flagpole/canary"
)

// elements converts an instant query result. A non-empty detail says why the
// result cannot be used.
func elements(val model.Value) (els []canary.Element, detail string) {
	switch v := val.(type) {
	case model.Vector:
		els = make([]canary.Element, 0, len(v))
		keys := make([]string, 0, len(v))
		var names []string
		for _, s := range v {
			if s.Histogram != nil {
				return nil, fmt.Sprintf("series %s is a native histogram; query its classic _bucket series instead", s.Metric)
			}
			var key string
			key, names = sortKey(s.Metric, names)
			keys = append(keys, key)
			els = append(els, canary.Element{Labels: labels(s.Metric), Value: float64(s.Value)})
		}
		sortByKeys(els, keys)
		return els, ""
	case *model.Scalar:
		return []canary.Element{{Labels: map[string]string{}, Value: float64(v.Value)}}, ""
	case model.Matrix:
		return nil, "the query returns a range vector; an instant query needs an instant vector or scalar (wrap it in a function such as increase() or use a range query)"
	case *model.String:
		return nil, "the query returns a string, not a number"
	case nil:
		return nil, "Prometheus returned no result type"
	default:
		return nil, fmt.Sprintf("unexpected result type %s", val.Type())
	}
}

// seriesOf converts a range query result.
func seriesOf(val model.Value) (out []canary.Series, detail string) {
	m, ok := val.(model.Matrix)
	if !ok {
		if val == nil {
			return nil, "Prometheus returned no result type"
		}
		return nil, fmt.Sprintf("a range query returned %s, not a matrix", val.Type())
	}
	out = make([]canary.Series, 0, len(m))
	keys := make([]string, 0, len(m))
	var names []string
	for _, ss := range m {
		if len(ss.Histograms) > 0 {
			return nil, fmt.Sprintf("series %s holds native histograms; query its classic _bucket series instead", ss.Metric)
		}
		pts := make([]canary.Point, len(ss.Values))
		for i, p := range ss.Values {
			pts[i] = canary.Point{T: p.Timestamp.Time().UTC(), V: float64(p.Value)}
		}
		var key string
		key, names = sortKey(ss.Metric, names)
		keys = append(keys, key)
		out = append(out, canary.Series{Labels: labels(ss.Metric), Points: pts})
	}
	sortByKeys(out, keys)
	return out, ""
}

func labels(m model.Metric) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[string(k)] = string(v)
	}
	return out
}

// sortKey renders a label set as sorted name/value pairs, so results sort by
// labels with one string per series; names is scratch space, returned for reuse.
func sortKey(m model.Metric, names []string) (string, []string) {
	names = names[:0]
	size := 0
	for k, v := range m {
		names = append(names, string(k))
		size += len(k) + len(v) + 2
	}
	slices.Sort(names)
	var b strings.Builder
	b.Grow(size)
	for _, k := range names {
		b.WriteString(k)
		b.WriteByte(0xfe)
		b.WriteString(string(m[model.LabelName(k)]))
		b.WriteByte(0xff)
	}
	return b.String(), names
}

// sortByKeys orders items by keys (same length), stably.
func sortByKeys[T any](items []T, keys []string) {
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	sorted := make([]T, len(items))
	for i, j := range idx {
		sorted[i] = items[j]
	}
	copy(items, sorted)
}
