package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/outboxtest"
)

// BenchmarkOutboxCycle is one notification's life in the outbox: enqueue
// with one target, claim, record it delivered (three atomic scripts and a
// read-back).
func BenchmarkOutboxCycle(b *testing.B) {
	for _, name := range []string{"redis-server", "embedded"} {
		b.Run(name, func(b *testing.B) {
			s := benchStores(b)[name](b)
			ctx := b.Context()
			now := outboxtest.T0
			i := 0
			for b.Loop() {
				i++
				if err := s.Enqueue(ctx, outboxtest.Notification(fmt.Sprintf("n%d", i), now), []string{"ops"}); err != nil {
					b.Fatal(err)
				}
				cs, err := s.Claim(ctx, "bench", now, time.Minute, 1)
				if err != nil || len(cs) != 1 {
					b.Fatalf("claim = %d, %v", len(cs), err)
				}
				if _, err := s.Record(ctx, cs[0], canary.Attempt{At: now, Outcome: canary.OutcomeDelivered, Status: 200}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOutboxIdlePoll is what an idle sender costs each poll: a claim
// that finds nothing due (with 1,000 deliveries scheduled later) and the
// queue-depth read.
func BenchmarkOutboxIdlePoll(b *testing.B) {
	for _, name := range []string{"redis-server", "embedded"} {
		b.Run(name, func(b *testing.B) {
			s := benchStores(b)[name](b)
			ctx := b.Context()
			for i := range 1000 {
				if err := s.Enqueue(ctx, outboxtest.Notification(fmt.Sprintf("later%d", i), outboxtest.T0.Add(time.Hour)), []string{"ops"}); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				cs, err := s.Claim(ctx, "bench", outboxtest.T0, time.Minute, 8)
				if err != nil || len(cs) != 0 {
					b.Fatalf("claim = %d, %v", len(cs), err)
				}
				if _, err := s.Stats(ctx, outboxtest.T0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
