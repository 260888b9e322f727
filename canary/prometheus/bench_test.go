package prometheus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// bucketVector is an instant-query answer of n histogram buckets for two arms.
func bucketVector(n int) string {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		arm := []string{"baseline", "canary"}[i%2]
		fmt.Fprintf(&b, `{"metric":{"__name__":"workload_request_duration_seconds_bucket","arm":%q,"job":"workload","instance":"127.0.0.1:9","le":"%g"},"value":[1700000000.123,"%d"]}`, arm, float64(i)/10, i*7)
	}
	b.WriteString(`]}}`)
	return b.String()
}

// BenchmarkInstant is one instant query answered by an httptest server with
// 200 series (100 buckets per arm): HTTP, decoding and conversion.
func BenchmarkInstant(b *testing.B) {
	body := bucketVector(200)
	s := newTestSource(b, &fakeProm{handler: respond(200, body)}, Config{})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		els, err := s.Instant(ctx, "q", time.Time{})
		if err != nil || len(els) != 200 {
			b.Fatal(err, len(els))
		}
	}
}

// BenchmarkConvertVector is the conversion alone of 200 samples.
func BenchmarkConvertVector(b *testing.B) {
	vec := make(model.Vector, 200)
	for i := range vec {
		vec[i] = &model.Sample{Metric: model.Metric{"__name__": "x_bucket", "arm": model.LabelValue([]string{"baseline", "canary"}[i%2]), "le": model.LabelValue(fmt.Sprint(i))}, Value: model.SampleValue(i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		if els, detail := elements(vec); detail != "" || len(els) != 200 {
			b.Fatal(detail)
		}
	}
}
