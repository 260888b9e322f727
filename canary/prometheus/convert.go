package prometheus

import (
	"fmt"
	"slices"

	"github.com/prometheus/common/model"

	"github.com/flagpole/flagpole/canary"
)

// elements converts an instant query result. A non-empty detail says why the
// result cannot be used.
func elements(val model.Value) (els []canary.Element, detail string) {
	switch v := val.(type) {
	case model.Vector:
		slices.SortStableFunc(v, func(a, b *model.Sample) int { return compareMetrics(a.Metric, b.Metric) })
		els = make([]canary.Element, 0, len(v))
		for _, s := range v {
			if s.Histogram != nil {
				return nil, fmt.Sprintf("series %s is a native histogram; query its classic _bucket series instead", s.Metric)
			}
			els = append(els, canary.Element{Labels: labels(s.Metric), Value: float64(s.Value)})
		}
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
	slices.SortStableFunc(m, func(a, b *model.SampleStream) int { return compareMetrics(a.Metric, b.Metric) })
	out = make([]canary.Series, 0, len(m))
	for _, ss := range m {
		if len(ss.Histograms) > 0 {
			return nil, fmt.Sprintf("series %s holds native histograms; query its classic _bucket series instead", ss.Metric)
		}
		pts := make([]canary.Point, len(ss.Values))
		for i, p := range ss.Values {
			pts[i] = canary.Point{T: p.Timestamp.Time().UTC(), V: float64(p.Value)}
		}
		out = append(out, canary.Series{Labels: labels(ss.Metric), Points: pts})
	}
	return out, ""
}

func labels(m model.Metric) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[string(k)] = string(v)
	}
	return out
}

func compareMetrics(a, b model.Metric) int {
	switch {
	case a.Before(b):
		return -1
	case b.Before(a):
		return 1
	}
	return 0
}
