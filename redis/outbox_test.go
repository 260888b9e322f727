package redis_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/outboxtest"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

func TestOutboxConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		outboxtest.Run(t, func(t *testing.T) canary.Outbox { return openEmbedded(t) })
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		outboxtest.Run(t, func(t *testing.T) canary.Outbox { return openReal(t, srv) })
	})
}

// TestOutboxEmbeddedPersistence enqueues, claims and records, then reopens
// a copy of the data directory taken before Close (as after a crash, so the
// journal replays every script): the deliveries, their tokens and the
// attempt log are back, and a stale claim from before the crash is still
// fenced.
func TestOutboxEmbeddedPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := redis.OpenEmbedded(ctx, dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := outboxtest.T0
	if err := s.Enqueue(ctx, outboxtest.Notification("n1", t0), []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, outboxtest.Notification("n2", t0.Add(time.Hour)), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Claim(ctx, "w1", t0, time.Minute, 10)
	if err != nil || len(cs) != 2 {
		t.Fatalf("claim = %v, %v", cs, err)
	}
	if _, err := s.Record(ctx, cs[0], canary.Attempt{At: t0, Outcome: canary.OutcomeDelivered, Status: 204}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, cs[1], canary.Attempt{At: t0, Outcome: canary.OutcomeRetry, Status: 503, Error: "down", RetryAt: t0.Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	again, err := s.Claim(ctx, "w1", t0.Add(10*time.Second), time.Minute, 10)
	if err != nil || len(again) != 1 {
		t.Fatalf("second claim = %v, %v", again, err)
	}
	copyDir := t.TempDir()
	for _, name := range []string{redis.DataFile, redis.JournalFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{copyDir, dir} {
		s2, err := redis.OpenEmbedded(ctx, d, redis.Options{})
		if err != nil {
			t.Fatalf("reopening %s: %v", d, err)
		}
		log, err := s2.Notification(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if len(log.Attempts) != 2 || log.Deliveries[0].State != canary.DeliveryDelivered || log.Deliveries[1].State != canary.DeliveryPending || log.Deliveries[1].Attempts != 1 {
			t.Errorf("%s: after reopening, n1 = %+v", d, log)
		}
		// The claim made before the crash still holds its lease, and its
		// token still fences a stale record.
		if cs, err := s2.Claim(ctx, "w2", t0.Add(20*time.Second), time.Minute, 10); err != nil || len(cs) != 0 {
			t.Errorf("%s: claimed %v (%v) while the pre-crash lease held", d, cs, err)
		}
		stale := again[0]
		stale.Token--
		if _, err := s2.Record(ctx, stale, canary.Attempt{At: t0, Outcome: canary.OutcomeDelivered}); !errors.Is(err, canary.ErrLeaseLost) {
			t.Errorf("%s: a stale token recorded: %v", d, err)
		}
		d2, err := s2.Record(ctx, again[0], canary.Attempt{At: t0.Add(11 * time.Second), Outcome: canary.OutcomeDelivered, Status: 200})
		if err != nil || d2.State != canary.DeliveryDelivered || d2.Attempts != 2 {
			t.Errorf("%s: the live claim records %+v, %v", d, d2, err)
		}
		st, err := s2.Stats(ctx, t0.Add(2*time.Hour))
		if err != nil || st != (canary.OutboxStats{Due: 1, Pending: 1}) {
			t.Errorf("%s: stats = %+v, %v; want n2 alone pending and due", d, st, err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOutboxUnavailable checks that a closed store reports outages as
// canary.ErrUnavailable from every outbox method.
func TestOutboxUnavailable(t *testing.T) {
	s, err := redis.OpenEmbedded(t.Context(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	ctx := t.Context()
	calls := map[string]func() error{
		"Enqueue": func() error { return s.Enqueue(ctx, outboxtest.Notification("n", outboxtest.T0), []string{"a"}) },
		"Claim": func() error {
			_, err := s.Claim(ctx, "w", outboxtest.T0, time.Minute, 1)
			return err
		},
		"Record": func() error {
			_, err := s.Record(ctx, canary.Claim{Delivery: canary.Delivery{ID: "n/a"}, Owner: "w", Token: 1}, canary.Attempt{At: outboxtest.T0, Outcome: canary.OutcomeDelivered})
			return err
		},
		"Notification": func() error { _, err := s.Notification(ctx, "n"); return err },
		"Notifications": func() error {
			_, err := s.Notifications(ctx, canary.NotificationQuery{})
			return err
		},
		"Dead":    func() error { _, err := s.Dead(ctx, 0); return err },
		"Redrive": func() error { _, err := s.Redrive(ctx, "n/a", outboxtest.T0); return err },
		"Stats":   func() error { _, err := s.Stats(ctx, outboxtest.T0); return err },
		"Prune":   func() error { _, err := s.Prune(ctx, outboxtest.T0, 1); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, canary.ErrUnavailable) {
				t.Errorf("%s on a closed store = %v, want canary.ErrUnavailable", name, err)
			}
		})
	}
}
