package redis_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// eventBackends runs f on the embedded store and on a real redis-server.
func eventBackends(t *testing.T, f func(t *testing.T, open func(t *testing.T) *redis.Store)) {
	t.Run("embedded", func(t *testing.T) { f(t, openEmbedded) })
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		f(t, func(t *testing.T) *redis.Store { return openReal(t, srv) })
	})
}

func sampleEvents(n int, at time.Time) []experiments.Event {
	out := make([]experiments.Event, n)
	for i := range out {
		v := float64(i) + 0.5
		out[i] = experiments.Event{
			Name: "checkout", TargetingKey: fmt.Sprintf("user-%d", i), Value: &v,
			Details: map[string]any{"plan": "pro", "items": float64(i % 3)},
			Context: map[string]any{"country": "NL"},
			Time:    at.Add(time.Duration(i) * time.Millisecond),
		}
		if i%4 == 3 {
			out[i] = experiments.Event{Name: experiments.ExposureEvent, TargetingKey: fmt.Sprintf("user-%d", i),
				FlagKey: "new-checkout", Variant: "on", Time: at}
		}
	}
	return out
}

func readAll(t *testing.T, log *redis.EventLog, env string) []redis.StoredEvent {
	t.Helper()
	var all []redis.StoredEvent
	after := ""
	for {
		page, err := log.Read(t.Context(), env, after, 7)
		if err != nil {
			t.Fatalf("Read(after %q): %v", after, err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
}

func TestEventLogRoundTrip(t *testing.T) {
	eventBackends(t, func(t *testing.T, open func(t *testing.T) *redis.Store) {
		log := open(t).EventLog(0)
		at := time.Date(2025, 5, 1, 10, 0, 0, 123_000_000, time.UTC)
		first, second := sampleEvents(20, at), sampleEvents(5, at.Add(time.Hour))
		if err := log.Append(t.Context(), "prod", first); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if err := log.Append(t.Context(), "prod", second); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if err := log.Append(t.Context(), "staging", first[:1]); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if err := log.Append(t.Context(), "prod", nil); err != nil {
			t.Errorf("Append of an empty batch: %v", err)
		}
		got := readAll(t, log, "prod")
		want := append(first, second...)
		if len(got) != len(want) {
			t.Fatalf("read %d events, want %d", len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(got[i].Event, want[i]) {
				t.Errorf("event %d = %+v, want %+v", i, got[i].Event, want[i])
			}
			if i > 0 && !idLess(got[i-1].ID, got[i].ID) {
				t.Errorf("IDs not increasing: %s then %s", got[i-1].ID, got[i].ID)
			}
		}
		if n := len(readAll(t, log, "staging")); n != 1 {
			t.Errorf("staging holds %d events, want 1", n)
		}
		if n := len(readAll(t, log, "empty")); n != 0 {
			t.Errorf("an environment without events holds %d", n)
		}
	})
}

// idLess compares stream entry IDs "MS-SEQ" numerically.
func idLess(a, b string) bool {
	var am, as, bm, bs int64
	_, _ = fmt.Sscanf(a, "%d-%d", &am, &as)
	_, _ = fmt.Sscanf(b, "%d-%d", &bm, &bs)
	return am < bm || (am == bm && as < bs)
}

func TestEventLogRefusesBadInput(t *testing.T) {
	eventBackends(t, func(t *testing.T, open func(t *testing.T) *redis.Store) {
		log := open(t).EventLog(0)
		at := time.Now()
		good := sampleEvents(3, at)
		cases := []struct {
			name   string
			env    string
			events []experiments.Event
			index  int
			path   string
		}{
			{"no name", "prod", append(good[:2:2], experiments.Event{Time: at}), 2, "name"},
			{"exposure without variant", "prod", []experiments.Event{{Name: experiments.ExposureEvent, TargetingKey: "u", FlagKey: "f", Time: at}}, 0, "variant"},
			{"unencodable details", "prod", []experiments.Event{{Name: "x", Details: map[string]any{"ch": make(chan int)}, Time: at}}, 0, "details"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := log.Append(t.Context(), c.env, c.events)
				var ie *experiments.InvalidEventError
				if !errors.As(err, &ie) || ie.Index != c.index || ie.Problems[0].Path != c.path {
					t.Fatalf("Append = %v, want an InvalidEventError at %d naming %s", err, c.index, c.path)
				}
			})
		}
		if n := len(readAll(t, log, "prod")); n != 0 {
			t.Errorf("refused batches stored %d events", n)
		}
		var in *flags.InputError
		if err := log.Append(t.Context(), "", good); !errors.As(err, &in) {
			t.Errorf("Append to an empty environment name = %v, want *flags.InputError", err)
		}
		for _, c := range []struct {
			after string
			count int
			field string
		}{{"nope", 10, "after"}, {"1-2-3", 10, "after"}, {"", 0, "count"}} {
			if _, err := log.Read(t.Context(), "prod", c.after, c.count); !errors.As(err, &in) || in.Field != c.field {
				t.Errorf("Read(%q, %d) = %v, want an InputError naming %s", c.after, c.count, err, c.field)
			}
		}
	})
}

func TestEventLogIsCapped(t *testing.T) {
	eventBackends(t, func(t *testing.T, open func(t *testing.T) *redis.Store) {
		log := open(t).EventLog(100)
		at := time.Now()
		for range 20 {
			if err := log.Append(t.Context(), "prod", sampleEvents(50, at)); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
		// Redis trims whole nodes of 100 entries, so a few hundred may stay
		// (miniredis trims exactly); never fewer than the limit.
		got := readAll(t, log, "prod")
		if len(got) < 100 || len(got) > 300 {
			t.Errorf("the log holds %d of 1000 events, want about 100", len(got))
		}
		if last := got[len(got)-1]; last.TargetingKey != "user-49" {
			t.Errorf("the newest event was trimmed: last is %+v", last.Event)
		}
	})
}

func TestEventLogConcurrentAppends(t *testing.T) {
	eventBackends(t, func(t *testing.T, open func(t *testing.T) *redis.Store) {
		log := open(t).EventLog(0)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Go(func() {
				for range 5 {
					evs := sampleEvents(10, time.Now())
					for i := range evs {
						evs[i].TargetingKey = fmt.Sprintf("g%d", g)
					}
					if err := log.Append(context.Background(), "prod", evs); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Append: %v", err)
		}
		got := readAll(t, log, "prod")
		if len(got) != 8*5*10 {
			t.Fatalf("stored %d events, want %d", len(got), 8*5*10)
		}
		// A batch is one transaction: its ten events are adjacent.
		for i := 0; i < len(got); i += 10 {
			for j := i + 1; j < i+10; j++ {
				if got[j].TargetingKey != got[i].TargetingKey {
					t.Fatalf("batches interleave at %d: %s then %s", j, got[i].TargetingKey, got[j].TargetingKey)
				}
			}
		}
	})
}

// TestEventLogEmbeddedPersistence checks that events survive a clean
// restart (from the data file) and a crash (from the journal).
func TestEventLogEmbeddedPersistence(t *testing.T) {
	dir := t.TempDir()
	opts := redis.Options{Prefix: "p:"}
	s, err := redis.OpenEmbedded(t.Context(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	want := sampleEvents(30, at)
	if err := s.EventLog(0).Append(t.Context(), "prod", want[:20]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = redis.OpenEmbedded(t.Context(), dir, opts)
	if err != nil {
		t.Fatalf("reopening after a clean close: %v", err)
	}
	if err := s.EventLog(0).Append(t.Context(), "prod", want[20:]); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, s.EventLog(0), "prod")
	// A crash now: copy the files as they are, journal included.
	crashed := t.TempDir()
	for _, name := range []string{redis.DataFile, redis.JournalFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()

	for name, d := range map[string]string{"after close": dir, "after a crash": crashed} {
		s, err := redis.OpenEmbedded(t.Context(), d, opts)
		if err != nil {
			t.Fatalf("%s: reopening: %v", name, err)
		}
		got := readAll(t, s.EventLog(0), "prod")
		if !reflect.DeepEqual(got, before) {
			t.Errorf("%s: %d events, want the %d stored (first %+v)", name, len(got), len(before), got[:min(1, len(got))])
		}
		// New events go after the restored ones.
		if err := s.EventLog(0).Append(t.Context(), "prod", want[:1]); err != nil {
			t.Errorf("%s: Append: %v", name, err)
		} else if all := readAll(t, s.EventLog(0), "prod"); len(all) != len(before)+1 || !idLess(before[len(before)-1].ID, all[len(all)-1].ID) {
			t.Errorf("%s: appending after the restore went wrong: %d events", name, len(all))
		}
		_ = s.Close()
	}
}

func TestEventLogOutage(t *testing.T) {
	srv := redistest.Start(t)
	s := openReal(t, srv)
	log := s.EventLog(0)
	evs := sampleEvents(5, time.Now())
	if err := log.Append(t.Context(), "prod", evs); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := log.Append(ctx, "prod", evs)
	if !errors.Is(err, experiments.ErrUnavailable) || !errors.Is(err, flags.ErrUnavailable) {
		t.Errorf("Append with Redis down = %v, want experiments.ErrUnavailable and flags.ErrUnavailable", err)
	}
	if _, err := log.Read(ctx, "prod", "", 10); !errors.Is(err, experiments.ErrUnavailable) {
		t.Errorf("Read with Redis down = %v, want experiments.ErrUnavailable", err)
	}
	srv.Restart()
	waitFor(t, "an append after the restart", func() bool { return log.Append(t.Context(), "prod", evs) == nil })
	if n := len(readAll(t, log, "prod")); n != 10 {
		t.Errorf("after the outage the log holds %d events, want 10 (the failed batch stored nothing)", n)
	}

	_ = s.Close()
	if err := log.Append(t.Context(), "prod", evs); !errors.Is(err, experiments.ErrUnavailable) {
		t.Errorf("Append on a closed store = %v, want experiments.ErrUnavailable", err)
	}
	if _, err := log.Read(t.Context(), "prod", "", 1); !errors.Is(err, experiments.ErrUnavailable) {
		t.Errorf("Read on a closed store = %v, want experiments.ErrUnavailable", err)
	}
}

// BenchmarkEventLogAppend measures appending batches to a real
// redis-server: one transaction of XADDs per batch.
func BenchmarkEventLogAppend(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			srv := redistest.Start(b)
			s, err := redis.Open(b.Context(), redis.Options{URL: srv.URL()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			log := s.EventLog(0)
			evs := sampleEvents(size, time.Now())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := log.Append(b.Context(), "prod", evs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
