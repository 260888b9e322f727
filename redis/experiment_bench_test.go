package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/experiments/storetest"
	"github.com/flagpole/flagpole/redis/redistest"
)

func benchStore(b *testing.B) *Store {
	srv := redistest.Start(b)
	s, err := Open(context.Background(), Options{URL: srv.URL(), Prefix: "bench:"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkExperimentIngest is event ingestion end to end against
// redis-server: batches of 100 events appended through the event log (as the
// events endpoint does) and folded by one consumer into a running experiment
// with four metrics. Users come back (10,000 users, an exposure and about
// four tracking events each). One op is one event.
func BenchmarkExperimentIngest(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	e := storetest.Running("bench")
	if _, err := s.CreateExperiment(ctx, "prod", e, storetest.T0); err != nil {
		b.Fatal(err)
	}
	c, err := s.ExperimentConsumer(ConsumerOptions{Batch: 1000})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const users = 10_000
	at := storetest.T0.Add(time.Second)
	events := make([]experiments.Event, 0, 100)
	log := s.EventLog(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		events = events[:0]
		for j := 0; j < 100 && i < b.N; j, i = j+1, i+1 {
			u := fmt.Sprint("user-", rng.IntN(users))
			switch rng.IntN(5) {
			case 0:
				events = append(events, experiments.Event{Name: experiments.ExposureEvent, TargetingKey: u, FlagKey: e.FlagKey, Variant: e.Assign(u).Variant, Time: at})
			case 1, 2:
				events = append(events, experiments.Event{Name: "visit", TargetingKey: u, Time: at})
			default:
				v := float64(rng.IntN(100))
				events = append(events, experiments.Event{Name: "purchase", TargetingKey: u, Value: &v, Time: at})
			}
		}
		if err := log.Append(ctx, "prod", events); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 0 || i == b.N {
			for {
				n, err := c.FoldOnce(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkExperimentResults reads the results of an experiment with
// 1,000,000 users: Observations (one round trip) and Analyze. The
// statistics are seeded by folding every user's exposure and events with
// experiments.Folder in this process and adding the summed delta to the
// statistics hash, exactly as the fold script would have over many batches
// (the per-user states are not kept: results never read them).
func BenchmarkExperimentResults(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	e := storetest.Running("big")
	if _, err := s.CreateExperiment(ctx, "prod", e, storetest.T0); err != nil {
		b.Fatal(err)
	}
	f := experiments.NewFolder(e)
	rng := rand.New(rand.NewPCG(3, 4))
	at := storetest.T0.Add(time.Second)
	var total experiments.Observations
	for u := range 1_000_000 {
		user := fmt.Sprint("user-", u)
		var st experiments.UserState
		var d experiments.Observations
		ex := experiments.Event{Name: experiments.ExposureEvent, TargetingKey: user, FlagKey: e.FlagKey, Variant: e.Assign(user).Variant, Time: at}
		f.Fold(&st, &ex, &d)
		visit := experiments.Event{Name: "visit", TargetingKey: user, Time: at}
		f.Fold(&st, &visit, &d)
		if rng.IntN(4) == 0 {
			v := float64(1 + rng.IntN(200))
			p := experiments.Event{Name: "purchase", TargetingKey: user, Value: &v, Time: at}
			f.Fold(&st, &p, &d)
		}
		total.MergeDelta(d)
	}
	fields, deltas := statFields(total)
	key := s.keys.expStats("prod", e.Key)
	for i := range fields {
		var err error
		if fields[i][0] == 'i' {
			err = s.rdb.HIncrBy(ctx, key, fields[i], mustInt(deltas[i])).Err()
		} else {
			err = s.rdb.HIncrByFloat(ctx, key, fields[i], mustFloat(deltas[i])).Err()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			b.Fatal(err)
		}
		r := experiments.Analyze(e, obs, at)
		if r.Users != 1_000_000-total.Crossovers {
			b.Fatalf("users = %d", r.Users)
		}
	}
}

func mustInt(s string) int64 {
	var v int64
	fmt.Sscan(s, &v)
	return v
}

func mustFloat(s string) float64 {
	var v float64
	fmt.Sscan(s, &v)
	return v
}
