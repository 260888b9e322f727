package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// BenchmarkRolloutTick measures one controller poll with n active
// rollouts, each in an analysis-gated step whose run is still measuring:
// the worst case, as every one is due at every poll (lease, rollout and
// run read, nothing written).
func BenchmarkRolloutTick(b *testing.B) {
	stores := map[string]func(b *testing.B) *redis.Store{
		"embedded": func(b *testing.B) *redis.Store {
			s, err := redis.OpenEmbedded(b.Context(), b.TempDir(), redis.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
	srv := redistest.Start(b)
	stores["redis-server"] = func(b *testing.B) *redis.Store {
		s, err := redis.Open(b.Context(), redis.Options{URL: srv.URL(), Prefix: fmt.Sprintf("bench%d:", time.Now().UnixNano())})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	for _, name := range []string{"embedded", "redis-server"} {
		for _, n := range []int{10, 100, 500} {
			b.Run(fmt.Sprintf("%s/rollouts=%d", name, n), func(b *testing.B) {
				s := stores[name](b)
				ctl := benchRollouts(b, s, n)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					got, err := ctl.Tick(ctx)
					if err != nil || got != n {
						b.Fatalf("Tick = %d, %v; want %d", got, err, n)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/rollout")
			})
		}
	}
}

// benchRollouts creates n flags with a running rollout each, their
// analyses started, and returns a controller.
func benchRollouts(b *testing.B, s *redis.Store, n int) *canary.RolloutController {
	ctx := b.Context()
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`, i)
	}
	sb.WriteString("}}")
	doc, err := flags.Parse([]byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	fs := flags.NewService(s, nil)
	if _, err := fs.CreateEnvironment(ctx, "prod", doc, flags.WriteOptions{Actor: "bench"}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.PutTemplate(ctx, canarytest.Template("http-errors", time.Hour, 3), canary.TemplateWrite{At: time.Now()}); err != nil {
		b.Fatal(err)
	}
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{Rollouts: s, Analyses: s, Flags: fs, FlagReader: s})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		_, err := svc.Create(ctx, canary.RolloutRequest{Env: "prod", Flag: fmt.Sprintf("f%d", i), Variant: "on", From: "off",
			Steps: []canary.RolloutStep{{Percent: 1, Analysis: &canary.StepAnalysis{Template: "http-errors"}}, {Percent: 100}}}, "bench", "")
		if err != nil {
			b.Fatal(err)
		}
	}
	ctl, err := canary.NewRolloutController(canary.RolloutControllerConfig{Service: svc, Owner: "bench", LeaseTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ctl.Tick(ctx); err != nil { // starts the analyses
		b.Fatal(err)
	}
	return ctl
}
