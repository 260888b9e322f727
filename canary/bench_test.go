package canary

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// benchObservation builds 20 metrics of one kind (or a mix) with 10,000
// samples or 100 histogram buckets per arm.
func benchObservation(kind Kind) (*Template, Observation) {
	r := rand.New(rand.NewPCG(1, 2))
	tpl := &Template{Name: "bench"}
	var obs Observation
	bounds := make([]float64, 99)
	for i := range bounds {
		bounds[i] = 0.001 * math.Pow(1.1, float64(i))
	}
	t0 := time.Unix(1700000000, 0)
	for i := range 20 {
		k := kind
		if kind == "" {
			k = []Kind{KindRatio, KindHistogram, KindSeries, KindThreshold}[i%4]
		}
		name := fmt.Sprintf("m%02d", i)
		m := Metric{Name: name, Kind: k, Query: "q", Margin: Margin{Relative: 0.1}}
		ms := Measurement{Metric: name}
		switch k {
		case KindRatio:
			m.Query, m.Numerator, m.Denominator = "", "e", "r"
			ms.Baseline = ArmData{Count: 100 + float64(r.IntN(20)), Total: 10000}
			ms.Canary = ArmData{Count: 100 + float64(r.IntN(20)), Total: 10000}
		case KindHistogram:
			for _, arm := range []*ArmData{&ms.Baseline, &ms.Canary} {
				cum := 0.0
				for _, ub := range bounds {
					cum += float64(50 + r.IntN(100))
					arm.Buckets = append(arm.Buckets, Bucket{UpperBound: ub, Count: cum})
				}
				arm.Buckets = append(arm.Buckets, Bucket{UpperBound: math.Inf(1), Count: cum + 10})
			}
		case KindSeries:
			for _, arm := range []*ArmData{&ms.Baseline, &ms.Canary} {
				arm.Points = make([]Point, 10000)
				for j := range arm.Points {
					arm.Points[j] = Point{T: t0.Add(time.Duration(j) * 10 * time.Second), V: 1 + 0.1*r.NormFloat64()}
				}
			}
		case KindThreshold:
			m.Margin = Margin{}
			m.Max = ptr(1.0)
			ms.Canary = ArmData{Value: 0.5}
		}
		tpl.Metrics = append(tpl.Metrics, m)
		obs.Measurements = append(obs.Measurements, ms)
	}
	return tpl, obs
}

// BenchmarkJudge20Metrics: the target is ≤ 5 ms per judgement of 20 metrics
// with 10,000 samples or 100 histogram buckets per arm.
func BenchmarkJudge20Metrics(b *testing.B) {
	for _, kind := range []Kind{KindSeries, KindHistogram, KindRatio, ""} {
		name := string(kind)
		if name == "" {
			name = "mixed"
		}
		b.Run(name, func(b *testing.B) {
			tpl, obs := benchObservation(kind)
			b.ReportAllocs()
			for b.Loop() {
				rep := Judge(tpl, obs)
				if len(rep.Metrics) != 20 {
					b.Fatal("wrong report")
				}
			}
		})
	}
}

func BenchmarkParseTemplate(b *testing.B) {
	tpl, err := ParseTemplate([]byte(minimal))
	if err != nil || tpl == nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTemplate([]byte(minimal)); err != nil {
			b.Fatal(err)
		}
	}
}
