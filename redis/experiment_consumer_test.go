package redis

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/experiments/storetest"
	"github.com/flagpole/flagpole/redis/redistest"
)

// consumerStores runs f against a real redis-server and the embedded store.
func consumerStores(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Run("embedded", func(t *testing.T) {
		s, err := OpenEmbedded(context.Background(), t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		f(t, s)
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		s, err := Open(context.Background(), Options{URL: srv.URL(), Prefix: fmt.Sprintf("c%d:", time.Now().UnixNano())})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		f(t, s)
	})
}

func startExperiment(t *testing.T, s *Store, env, key string) *experiments.Experiment {
	t.Helper()
	e := storetest.Running(key)
	if _, err := s.CreateExperiment(context.Background(), env, e, storetest.T0); err != nil {
		t.Fatal(err)
	}
	return e
}

func drain(t *testing.T, c *ExperimentConsumer) {
	t.Helper()
	for {
		n, err := c.FoldOnce(context.Background())
		if err != nil {
			t.Fatalf("FoldOnce: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// TestConsumerDeadReplica: a replica reads a batch and dies before folding
// it; another claims it and folds it once. The dead replica coming back
// with its batch changes nothing.
func TestConsumerDeadReplica(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		e := startExperiment(t, s, "prod", "x")
		events, want := storetest.Traffic(e, 300, 5)
		if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
			t.Fatal(err)
		}
		dead, err := s.ExperimentConsumer(ConsumerOptions{Name: "dead", Batch: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		// The dead replica's read: delivered, never folded or acknowledged.
		msgs, err := dead.read(ctx, "prod", -1)
		if err != nil || len(msgs) != len(events) {
			t.Fatalf("read %d entries (%v), want %d", len(msgs), err, len(events))
		}
		live, err := s.ExperimentConsumer(ConsumerOptions{Name: "live", Batch: 100, ClaimIdle: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := live.FoldOnce(ctx); err != nil || n != 0 {
			t.Fatalf("FoldOnce = %d, %v: entries delivered to another consumer must not be read again", n, err)
		}
		time.Sleep(5 * time.Millisecond) // let the entries idle past ClaimIdle
		n, err := live.Claim(ctx)
		if err != nil || n != len(events) {
			t.Fatalf("Claim = %d, %v; want %d", n, err, len(events))
		}
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckObservations(t, e, obs, want)
		// The dead replica wakes up and folds its stale batch: refused.
		if err := dead.process(ctx, "prod", msgs); err != nil {
			t.Fatalf("late process: %v", err)
		}
		again, _ := s.Observations(ctx, "prod", e)
		storetest.CheckObservations(t, e, again, want)
		pending, err := s.rdb.XPending(ctx, s.keys.events("prod"), consumerGroup).Result()
		if err != nil || pending.Count != 0 {
			t.Errorf("pending = %+v, %v; want none", pending, err)
		}
	})
}

// TestConsumersRace: replicas folding one stream concurrently, with many
// events per user, count every event exactly once.
func TestConsumersRace(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		e := startExperiment(t, s, "prod", "x")
		var all []experiments.Event
		var want storetest.Expected
		for seed := uint64(10); seed < 14; seed++ {
			ev, w := storetest.Traffic(e, 60, seed)
			all = append(all, ev...)
			if want.Users == nil {
				want = w
				continue
			}
			for k, v := range w.Users {
				want.Users[k] += v
			}
			want.Crossovers += w.Crossovers
			for k, v := range w.Tallies {
				want.Tallies[k] = v
			}
			for k, v := range w.Arms {
				want.Arms[k] = v
			}
		}
		reg := prometheus.NewRegistry()
		var wg sync.WaitGroup
		cs := make([]*ExperimentConsumer, 3)
		for i := range cs {
			c, err := s.ExperimentConsumer(ConsumerOptions{Name: fmt.Sprint("r", i), Batch: 7, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			cs[i] = c
		}
		// Append in chunks while the consumers fold.
		stop := make(chan struct{})
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.FoldOnce(ctx); err != nil {
						t.Errorf("FoldOnce: %v", err)
						return
					}
				}
			}()
		}
		for i := 0; i < len(all); i += 50 {
			if err := s.EventLog(0).Append(ctx, "prod", all[i:min(i+50, len(all))]); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		close(stop)
		wg.Wait()
		drain(t, cs[0])
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckObservations(t, e, obs, want)
		folded := testutil.ToFloat64(cs[0].met.events.WithLabelValues("exposure")) + testutil.ToFloat64(cs[0].met.events.WithLabelValues("event"))
		if folded < float64(len(all))*0.5 {
			t.Errorf("folded-events metric = %v for %d events", folded, len(all))
		}
		if err := cs[0].RefreshMetrics(ctx); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(cs[0].met.experiments.WithLabelValues("running", "healthy")) + testutil.ToFloat64(cs[0].met.experiments.WithLabelValues("running", "unhealthy")); got != 1 {
			t.Errorf("running experiments gauge = %v, want 1", got)
		}
		if got := testutil.ToFloat64(cs[0].met.crossovers.WithLabelValues("prod", "x")); got != float64(want.Crossovers) {
			t.Errorf("crossover gauge = %v, want %d", got, want.Crossovers)
		}
	})
}

// TestFoldScriptChecks exercises the script's refusals directly.
func TestFoldScriptChecks(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		e := startExperiment(t, s, "prod", "x")
		key := s.keys.events("prod")
		id, err := s.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{eventField, `{"n":"visit","t":1}`}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: consumerGroup, Consumer: "me", Streams: []string{key, ">"}, Block: -1}).Result(); err != nil {
			t.Fatal(err)
		}
		epoch, err := s.rdb.Get(ctx, s.keys.expEpoch("prod")).Result()
		if err != nil {
			t.Fatalf("epoch after creating a running experiment: %v", err)
		}
		// epoch "-" is a record journaled before there was an epoch: no
		// epoch key, no epoch value, no check.
		run := func(consumer, token, old, epoch string) []string {
			keys := []string{key, s.keys.expCursor("prod"), s.keys.exp("prod", e.Key), s.keys.expUsers("prod", e.Key), s.keys.expStats("prod", e.Key)}
			args := []any{consumerGroup, "1", consumer, "1", id, "1", token, "1", "u1", old, `{"a":"old"}`, "1", "i:u:old", "1"}
			if epoch != "-" {
				keys, args = append(keys, s.keys.expEpoch("prod")), append(args, epoch)
			}
			res, err := foldScript.Run(ctx, s.rdb, keys, args...).StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		cases := []struct{ name, consumer, token, old, epoch, want string }{
			{"entry pending on another consumer", "other", runToken(e), "", epoch, "lost"},
			{"experiment in another run", "me", "running:9", "", epoch, "stale"},
			{"experiments started or stopped since (epoch moved)", "me", runToken(e), "", epoch + "0", "stale"},
			{"epoch never set, consumer read one", "me", runToken(e), "", "", "stale"},
			{"user state changed meanwhile", "me", runToken(e), `{"a":"new"}`, epoch, "retry"},
			{"applies", "me", runToken(e), "", epoch, "ok"},
			{"already acknowledged", "me", runToken(e), `{"a":"old"}`, epoch, "lost"},
		}
		for _, tc := range cases {
			if got := run(tc.consumer, tc.token, tc.old, tc.epoch); got[0] != tc.want {
				t.Errorf("%s: %v, want %s", tc.name, got, tc.want)
			}
		}
		// A journaled record, replayed by a restarted embedded store: no
		// pending check, no epoch; it applies whatever the epoch now is.
		if err := s.rdb.Incr(ctx, s.keys.expEpoch("prod")).Err(); err != nil {
			t.Fatal(err)
		}
		replayed, err := foldScript.Run(ctx, s.rdb,
			[]string{key, s.keys.expCursor("prod"), s.keys.exp("prod", e.Key), s.keys.expUsers("prod", e.Key), s.keys.expStats("prod", e.Key)},
			consumerGroup, "0", "me", "1", id, "1", runToken(e), "1", "u2", "", `{"a":"new"}`, "1", "i:u:new", "1").StringSlice()
		if err != nil || replayed[0] != "ok" {
			t.Errorf("journaled record: %v, %v; want ok", replayed, err)
		}
		obs, _ := s.Observations(ctx, "prod", e)
		if obs.Users["old"] != 1 || obs.Users["new"] != 1 {
			t.Errorf("users = %v, want old: 1 (applied once), new: 1 (the replayed record)", obs.Users)
		}
		if cur, _ := s.rdb.Get(ctx, s.keys.expCursor("prod")).Result(); cur != id {
			t.Errorf("cursor = %q, want %q", cur, id)
		}
	})
}

// TestEmbeddedRestartKeepsFoldedStatistics: the journal replays folds (the
// consumer group is gone after a restart) and folding resumes after the
// last entry folded, counting nothing twice.
func TestEmbeddedRestartKeepsFoldedStatistics(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := startExperiment(t, s, "prod", "x")
	first, want := storetest.Traffic(e, 100, 21)
	if err := s.EventLog(0).Append(ctx, "prod", first); err != nil {
		t.Fatal(err)
	}
	c, _ := s.ExperimentConsumer(ConsumerOptions{})
	drain(t, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	second, w2 := storetest.Traffic(e, 100, 22)
	if err := s.EventLog(0).Append(ctx, "prod", second); err != nil {
		t.Fatal(err)
	}
	c, _ = s.ExperimentConsumer(ConsumerOptions{})
	drain(t, c)
	for k, v := range w2.Users {
		want.Users[k] += v
	}
	want.Crossovers += w2.Crossovers
	for k, v := range w2.Tallies {
		want.Tallies[k] = v
	}
	for k, v := range w2.Arms {
		want.Arms[k] = v
	}
	obs, err := s.Observations(ctx, "prod", e)
	if err != nil {
		t.Fatal(err)
	}
	storetest.CheckObservations(t, e, obs, want)
}

// userStateKeys counts env's per-user state hashes and their fields.
func userStateKeys(t *testing.T, s *Store, env string) (keys, fields int64) {
	t.Helper()
	ctx := context.Background()
	iter := s.rdb.Scan(ctx, 0, s.keys.expTag(env)+"xu:*", 100).Iterator()
	for iter.Next(ctx) {
		keys++
		n, err := s.rdb.HLen(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		fields += n
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys, fields
}

// TestStopDropsUserStates: stopping an experiment deletes its per-user
// states and keeps its statistics; late events, folded by a consumer that
// still believes the experiment runs, recreate nothing; archiving changes
// nothing either.
func TestStopDropsUserStates(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		e := startExperiment(t, s, "prod", "x")
		events, want := storetest.Traffic(e, 300, 31)
		if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
			t.Fatal(err)
		}
		// Refresh: an hour, so the consumer keeps the running experiment cached.
		c, err := s.ExperimentConsumer(ConsumerOptions{Name: "c", Refresh: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		if keys, fields := userStateKeys(t, s, "prod"); keys != 1 || fields < 100 {
			t.Fatalf("before stop: %d state keys with %d users, want 1 key with the exposed users", keys, fields)
		}
		running, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckObservations(t, e, running, want)

		stopped := *e
		if err := stopped.Stop(storetest.T0.Add(time.Hour), experiments.StopDecision{Outcome: experiments.OutcomeNone}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &stopped, experiments.Write{At: storetest.T0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		check := func(when string, ex *experiments.Experiment) {
			t.Helper()
			if keys, fields := userStateKeys(t, s, "prod"); keys != 0 || fields != 0 {
				t.Errorf("%s: %d state keys with %d users, want none", when, keys, fields)
			}
			obs, err := s.Observations(ctx, "prod", ex)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if !reflect.DeepEqual(obs, running) {
				t.Errorf("%s: statistics changed:\n got %+v\nwant %+v", when, obs, running)
			}
		}
		check("after stop", &stopped)

		late, _ := storetest.Traffic(e, 200, 32)
		if err := s.EventLog(0).Append(ctx, "prod", late); err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		check("after late events", &stopped)
		if p, err := s.rdb.XPending(ctx, s.keys.events("prod"), consumerGroup).Result(); err != nil || p.Count != 0 {
			t.Errorf("pending = %+v, %v; want the late events acknowledged", p, err)
		}

		archived := stopped
		if err := archived.Archive(storetest.T0.Add(2 * time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &archived, experiments.Write{At: storetest.T0.Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		check("after archive", &archived)
	})
}

// TestDropEndedStates: states an earlier version kept for a stopped
// experiment are deleted; a running experiment's are not.
func TestDropEndedStates(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		x := startExperiment(t, s, "prod", "x")
		y := startExperiment(t, s, "prod", "y")
		events, _ := storetest.Traffic(y, 100, 41)
		if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
			t.Fatal(err)
		}
		c, err := s.ExperimentConsumer(ConsumerOptions{Name: "c"})
		if err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		stopped := *x
		if err := stopped.Stop(storetest.T0.Add(time.Hour), experiments.StopDecision{Outcome: experiments.OutcomeNone}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &stopped, experiments.Write{}); err != nil {
			t.Fatal(err)
		}
		// What a version that kept the states of stopped experiments left.
		if err := s.rdb.HSet(ctx, s.keys.expUsers("prod", "x"), "u1", "{}", "u2", "{}").Err(); err != nil {
			t.Fatal(err)
		}
		_, yBefore := userStateKeys(t, s, "prod")
		yBefore -= 2
		if n, err := c.DropEndedStates(ctx); err != nil || n != 1 {
			t.Fatalf("DropEndedStates = %d, %v; want 1", n, err)
		}
		if n, _ := s.rdb.Exists(ctx, s.keys.expUsers("prod", "x")).Result(); n != 0 {
			t.Error("the stopped experiment's states are still there")
		}
		if yAfter, _ := s.rdb.HLen(ctx, s.keys.expUsers("prod", "y")).Result(); yAfter != yBefore || yAfter == 0 {
			t.Errorf("running experiment's states: %d users, want %d (untouched)", yAfter, yBefore)
		}
		if n, err := c.DropEndedStates(ctx); err != nil || n != 0 {
			t.Errorf("second DropEndedStates = %d, %v; want 0", n, err)
		}
	})
}

// TestEmbeddedStopDropsStatesAcrossRestart: the deletion is journaled, so a
// restarted embedded store has no states and the same statistics.
func TestEmbeddedStopDropsStatesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := startExperiment(t, s, "prod", "x")
	events, want := storetest.Traffic(e, 100, 51)
	if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
		t.Fatal(err)
	}
	c, _ := s.ExperimentConsumer(ConsumerOptions{})
	drain(t, c)
	if err := e.Stop(storetest.T0.Add(time.Hour), experiments.StopDecision{Outcome: experiments.OutcomeRollback}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateExperiment(ctx, "prod", e, experiments.Write{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if keys, fields := userStateKeys(t, s, "prod"); keys != 0 || fields != 0 {
		t.Errorf("after restart: %d state keys with %d users, want none", keys, fields)
	}
	obs, err := s.Observations(ctx, "prod", e)
	if err != nil {
		t.Fatal(err)
	}
	storetest.CheckObservations(t, e, obs, want)
}

// TestRemoveIdleConsumers: consumers idle past the bound with nothing
// pending leave the group; one with pending entries stays until they are
// claimed, a recent one and the caller itself stay, and nothing is lost.
func TestRemoveIdleConsumers(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		e := startExperiment(t, s, "prod", "x")
		events, want := storetest.Traffic(e, 40, 61)
		if len(events) < 30 {
			t.Fatalf("only %d events", len(events))
		}
		if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		consumer := func(name string) *ExperimentConsumer {
			c, err := s.ExperimentConsumer(ConsumerOptions{Name: name, Batch: 10, ClaimIdle: time.Millisecond, ForgetIdle: 100 * time.Millisecond, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		self, goneClean, gonePending, recent := consumer("self"), consumer("gone-clean"), consumer("gone-pending"), consumer("recent")
		msgs, err := goneClean.read(ctx, "prod", -1)
		if err != nil || len(msgs) != 10 {
			t.Fatalf("gone-clean read %d, %v", len(msgs), err)
		}
		if err := goneClean.process(ctx, "prod", msgs); err != nil {
			t.Fatal(err)
		}
		if msgs, err := gonePending.read(ctx, "prod", -1); err != nil || len(msgs) != 10 {
			t.Fatalf("gone-pending read %d, %v", len(msgs), err)
		}
		drain(t, self)
		time.Sleep(150 * time.Millisecond) // every consumer so far idles past ForgetIdle
		// A consumer joins only with a read that delivers: an event of a
		// user never exposed, which counts nowhere.
		if err := s.EventLog(0).Append(ctx, "prod", []experiments.Event{{Name: "purchase", TargetingKey: "nobody", Time: storetest.T0}}); err != nil {
			t.Fatal(err)
		}
		if msgs, err := recent.read(ctx, "prod", -1); err != nil || len(msgs) != 1 {
			t.Fatalf("recent read %d, %v; want 1", len(msgs), err)
		} else if err := recent.process(ctx, "prod", msgs); err != nil {
			t.Fatal(err)
		}
		members := func() []string {
			t.Helper()
			cons, err := s.rdb.XInfoConsumers(ctx, s.keys.events("prod"), consumerGroup).Result()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range cons {
				names = append(names, c.Name)
			}
			slices.Sort(names)
			return names
		}
		type step struct {
			name    string
			before  func()
			removed int
			left    []string
		}
		claim := func() {
			if n, err := self.Claim(ctx); err != nil || n != 10 {
				t.Fatalf("Claim = %d, %v; want 10", n, err)
			}
		}
		steps := []step{
			{"idle and empty leaves; pending, recent and self stay", func() {}, 1, []string{"gone-pending", "recent", "self"}},
			{"pending claimed by another: it leaves too", claim, 1, []string{"recent", "self"}},
			{"nothing more to remove", func() {}, 0, []string{"recent", "self"}},
		}
		wantRemoved := 2.0
		if s.emb != nil {
			// miniredis reports no idle time for readers (-1): unknown is
			// never idle enough. One process owns an embedded store and its
			// groups are not kept across restarts, so names do not pile up.
			all := []string{"gone-clean", "gone-pending", "recent", "self"}
			steps = []step{{"idle unknown: all stay", func() {}, 0, all}, {"claimed: all stay", claim, 0, all}}
			wantRemoved = 0
		}
		// The script itself refuses a consumer with pending entries (the
		// list RemoveIdleConsumers read may be stale by then).
		if n, err := delConsumerScript.Run(ctx, s.rdb, []string{s.keys.events("prod")}, consumerGroup, "gone-pending").Int(); err != nil || n != 0 {
			t.Errorf("removing a consumer with pending entries = %d, %v; want 0", n, err)
		}
		for _, st := range steps {
			st.before()
			n, err := self.RemoveIdleConsumers(ctx)
			if err != nil || n != st.removed {
				t.Errorf("%s: RemoveIdleConsumers = %d, %v; want %d", st.name, n, err, st.removed)
			}
			if got := members(); !slices.Equal(got, st.left) {
				t.Errorf("%s: group members %v, want %v", st.name, got, st.left)
			}
		}
		obs, err := s.Observations(ctx, "prod", e)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckObservations(t, e, obs, want)
		if p, err := s.rdb.XPending(ctx, s.keys.events("prod"), consumerGroup).Result(); err != nil || p.Count != 0 {
			t.Errorf("pending = %+v, %v; want none", p, err)
		}
		if got := testutil.ToFloat64(self.met.removed); got != wantRemoved {
			t.Errorf("consumers removed metric = %v, want %v", got, wantRemoved)
		}
	})
}

// TestConsumerSeesStartedExperiment: a consumer whose cache of running
// experiments was built before an experiment started (and would keep it for
// an hour) still folds the exposures and events appended right after the
// start into it: the environment's epoch moved, so the fold script refuses
// the cached view, and the consumer refreshes and folds again.
func TestConsumerSeesStartedExperiment(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		draft := storetest.Sample("x")
		if _, err := s.CreateExperiment(ctx, "prod", draft, storetest.T0); err != nil {
			t.Fatal(err)
		}
		c, err := s.ExperimentConsumer(ConsumerOptions{Name: "c", Refresh: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		// An event that counts nowhere makes the consumer cache the
		// environment's running experiments: none.
		if err := s.EventLog(0).Append(ctx, "prod", []experiments.Event{{Name: "purchase", TargetingKey: "nobody", Time: storetest.T0}}); err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		if rc, err := c.running(ctx, "prod", false); err != nil || len(rc.folders) != 0 {
			t.Fatalf("cached running experiments = %d, %v; want none", len(rc.folders), err)
		}

		started := *draft
		if err := started.Start(storetest.T0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateExperiment(ctx, "prod", &started, experiments.Write{At: storetest.T0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		events, want := storetest.Traffic(&started, 200, 71)
		if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		obs, err := s.Observations(ctx, "prod", &started)
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckObservations(t, &started, obs, want)
		if p, err := s.rdb.XPending(ctx, s.keys.events("prod"), consumerGroup).Result(); err != nil || p.Count != 0 {
			t.Errorf("pending = %+v, %v; want every entry acknowledged", p, err)
		}
	})
}

// TestExperimentEpoch: the writes that change which experiments run, in
// which run, or touch a running one bump the environment's epoch; the
// others, and refused writes, do not.
func TestExperimentEpoch(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		at := storetest.T0.Add(time.Hour)
		d, r := storetest.Sample("d"), storetest.Running("r")
		update := func(e *experiments.Experiment, change func(*experiments.Experiment) error) func() error {
			return func() error {
				if err := change(e); err != nil {
					return err
				}
				_, err := s.UpdateExperiment(ctx, "prod", e, experiments.Write{At: at})
				return err
			}
		}
		edit := func(e *experiments.Experiment) error { e.Hypothesis += "!"; return nil }
		steps := []struct {
			name  string
			write func() error
			bumps bool
		}{
			{"create a draft", func() error { _, err := s.CreateExperiment(ctx, "prod", d, at); return err }, false},
			{"edit a draft", update(d, edit), false},
			{"create a running experiment", func() error { _, err := s.CreateExperiment(ctx, "prod", r, at); return err }, true},
			{"start", update(d, func(e *experiments.Experiment) error { return e.Start(at) }), true},
			{"edit a running experiment", update(d, edit), true},
			{"restart", update(d, func(e *experiments.Experiment) error { return e.Restart(at, "salt-2") }), true},
			{"stop", update(d, func(e *experiments.Experiment) error {
				return e.Stop(at, experiments.StopDecision{Outcome: experiments.OutcomeNone})
			}), true},
			{"archive", update(d, func(e *experiments.Experiment) error { return e.Archive(at) }), true},
			{"update refused: version conflict", func() error {
				_, err := s.UpdateExperiment(ctx, "prod", r, experiments.Write{IfVersion: 99, At: at})
				if !errors.Is(err, experiments.ErrConflict) {
					return fmt.Errorf("got %v, want ErrConflict", err)
				}
				return nil
			}, false},
			{"delete refused: not found", func() error {
				if err := s.DeleteExperiment(ctx, "prod", "nope", 0); !errors.Is(err, experiments.ErrNotFound) {
					return fmt.Errorf("got %v, want ErrNotFound", err)
				}
				return nil
			}, false},
			{"delete a running experiment", func() error { return s.DeleteExperiment(ctx, "prod", "r", 0) }, true},
		}
		epoch := func() int64 {
			t.Helper()
			n, err := s.rdb.Get(ctx, s.keys.expEpoch("prod")).Int64()
			if err != nil && !errors.Is(err, goredis.Nil) {
				t.Fatal(err)
			}
			return n
		}
		for _, st := range steps {
			before := epoch()
			if err := st.write(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if moved := epoch() != before; moved != st.bumps {
				t.Errorf("%s: epoch moved = %v, want %v", st.name, moved, st.bumps)
			}
		}
	})
}

// TestCrossoverGaugeFollowsRunningExperiments: an experiment that stops or
// is deleted loses its crossover series at the next refresh.
func TestCrossoverGaugeFollowsRunningExperiments(t *testing.T) {
	consumerStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		x, y := startExperiment(t, s, "prod", "x"), startExperiment(t, s, "prod", "y")
		for i, e := range []*experiments.Experiment{x, y} {
			events, _ := storetest.Traffic(e, 120, uint64(81+i))
			if err := s.EventLog(0).Append(ctx, "prod", events); err != nil {
				t.Fatal(err)
			}
		}
		c, err := s.ExperimentConsumer(ConsumerOptions{Name: "c", Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		drain(t, c)
		series := func() []string {
			t.Helper()
			if err := c.RefreshMetrics(ctx); err != nil {
				t.Fatal(err)
			}
			ch := make(chan prometheus.Metric, 10)
			c.met.crossovers.Collect(ch)
			close(ch)
			var names []string
			for m := range ch {
				var d dto.Metric
				if err := m.Write(&d); err != nil {
					t.Fatal(err)
				}
				names = append(names, d.GetLabel()[0].GetValue()+"/"+d.GetLabel()[1].GetValue())
			}
			slices.Sort(names)
			return names
		}
		steps := []struct {
			name   string
			change func() error
			want   []string
		}{
			{"both running", func() error { return nil }, []string{"prod/x", "prod/y"}},
			{"x stopped", func() error {
				if err := x.Stop(storetest.T0.Add(time.Hour), experiments.StopDecision{Outcome: experiments.OutcomeNone}); err != nil {
					return err
				}
				_, err := s.UpdateExperiment(ctx, "prod", x, experiments.Write{})
				return err
			}, []string{"prod/y"}},
			{"y deleted", func() error { return s.DeleteExperiment(ctx, "prod", "y", 0) }, nil},
		}
		for _, st := range steps {
			if err := st.change(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if got := series(); !slices.Equal(got, st.want) {
				t.Errorf("%s: crossover series %v, want %v", st.name, got, st.want)
			}
		}
	})
}
