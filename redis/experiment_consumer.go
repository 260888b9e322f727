package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/internal/promreg"
)

// foldScript folds one batch of an environment's stream entries into its
// running experiments and acknowledges the entries, atomically:
//
//  1. when ARGV[2] is "1", every entry must still be pending for this
//     consumer (another consumer may have claimed and folded it): else
//     {'lost'} and nothing changes;
//  2. the environment's epoch must still be the one the consumer listed its
//     running experiments at (else {'stale', '0'}: an experiment started,
//     stopped, restarted or was deleted since), every experiment must still
//     be in the run the consumer computed with (else {'stale', i}) and
//     every user state must still be what the consumer read (else
//     {'retry'}): nothing changes;
//  3. the new user states are written, the statistics deltas added, the
//     entries acknowledged and the cursor moved to the highest entry ID.
//
// KEYS: stream, cursor, then per experiment: exp, users, stats, then the
// epoch. ARGV: group, check ("1"/"0"), consumer, nIDs, IDs…, nExps, then
// per experiment: run, nUsers, (user, old, new)…, nStats, (field, delta)…,
// then the epoch's value ("" when unset). Records journaled before there
// was an epoch have neither the key nor the value, and skip that check.
var foldScript = goredis.NewScript(`
local function idless(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local i = 4
local nids = tonumber(ARGV[i]); i = i + 1
local ids = {}
for j = 1, nids do ids[j] = ARGV[i]; i = i + 1 end
if ARGV[2] == '1' then
  for j = 1, nids do
    local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ids[j], ids[j], 1, ARGV[3])
    if type(p) ~= 'table' or #p ~= 1 then return {'lost'} end
  end
end
local nexp = tonumber(ARGV[i]); i = i + 1
if #KEYS == 3 + 3 * nexp and (redis.call('GET', KEYS[#KEYS]) or '') ~= ARGV[#ARGV] then
  return {'stale', '0'}
end
local base = i
for x = 1, nexp do
  local k = 3 + (x - 1) * 3
  if redis.call('HGET', KEYS[k], 'run') ~= ARGV[i] then return {'stale', tostring(x)} end
  i = i + 1
  local nu = tonumber(ARGV[i]); i = i + 1
  for u = 1, nu do
    if (redis.call('HGET', KEYS[k + 1], ARGV[i]) or '') ~= ARGV[i + 1] then return {'retry'} end
    i = i + 3
  end
  i = i + 1 + 2 * tonumber(ARGV[i])
end
i = base
for x = 1, nexp do
  local k = 3 + (x - 1) * 3
  i = i + 1
  local nu = tonumber(ARGV[i]); i = i + 1
  for u = 1, nu do
    if ARGV[i + 1] ~= ARGV[i + 2] then redis.call('HSET', KEYS[k + 1], ARGV[i], ARGV[i + 2]) end
    i = i + 3
  end
  local ns = tonumber(ARGV[i]); i = i + 1
  for s = 1, ns do
    if string.sub(ARGV[i], 1, 1) == 'i' then
      redis.call('HINCRBY', KEYS[k + 2], ARGV[i], ARGV[i + 1])
    else
      redis.call('HINCRBYFLOAT', KEYS[k + 2], ARGV[i], ARGV[i + 1])
    end
    i = i + 2
  end
end
if nids > 0 then
  redis.pcall('XACK', KEYS[1], ARGV[1], unpack(ids))
  local cur = redis.call('GET', KEYS[2])
  local best = cur
  for j = 1, nids do
    if not best or idless(best, ids[j]) then best = ids[j] end
  end
  if best ~= cur then redis.call('SET', KEYS[2], best) end
end
return {'ok'}
`)

// ConsumerOptions configure an [ExperimentConsumer]. Zero fields take defaults.
type ConsumerOptions struct {
	// Name identifies this consumer in the group; default host-pid-random.
	// Each replica needs its own.
	Name string
	// Batch is how many stream entries one fold takes; default 500.
	Batch int
	// Poll is how long a read waits for new entries; default 200ms.
	Poll time.Duration
	// ClaimIdle is how long an entry stays pending on a consumer before
	// another claims it (the consumer is presumed dead); default 30s.
	ClaimIdle time.Duration
	// Refresh is how long the running experiments of an environment are
	// cached; default 1s (a stale cache is detected and refreshed anyway).
	Refresh time.Duration
	// MetricsEvery is how often the gauges (lag, experiments by status and
	// health, crossovers) are refreshed; default 15s.
	MetricsEvery time.Duration
	// TidyEvery is how often the consumer tidies up: after stopped and
	// archived experiments (see [ExperimentConsumer.DropEndedStates]) and
	// after consumers that left the group (see
	// [ExperimentConsumer.RemoveIdleConsumers]); default 5m.
	TidyEvery time.Duration
	// ForgetIdle is how long a consumer with no pending entries may go
	// without reading before it is removed from the group (every restart of
	// a replica joins under a new name); default 1h. A live consumer
	// removed by mistake loses nothing: its next read joins again.
	ForgetIdle time.Duration
	// Registerer receives the consumer's metrics; nil records none.
	Registerer prometheus.Registerer
	// Logger receives fold failures; nil discards.
	Logger *slog.Logger
}

// ExperimentConsumer folds every environment's tracking events and
// exposures into the statistics of its running experiments, as a member of
// a Redis Streams consumer group: any number of replicas may run one, each
// entry is folded by exactly one of them, and entries left pending by a
// consumer that died are claimed by another after ConsumerOptions.ClaimIdle.
// Each batch is folded and acknowledged in one script, so nothing
// acknowledged is lost and nothing is counted twice. See experiments.Folder
// for the folding rules.
type ExperimentConsumer struct {
	s   *Store
	o   ConsumerOptions
	log *slog.Logger
	met *consumerMetrics

	mu    sync.Mutex
	cache map[string]runCache
}

type runCache struct {
	at      time.Time
	epoch   string // the environment's epoch, read before listing
	folders []*experiments.Folder
}

// ExperimentConsumer returns a consumer over the store's event streams.
// Errors: a metrics registration conflict.
func (s *Store) ExperimentConsumer(o ConsumerOptions) (*ExperimentConsumer, error) {
	if o.Name == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.Name = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.ClaimIdle <= 0 {
		o.ClaimIdle = 30 * time.Second
	}
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	if o.MetricsEvery <= 0 {
		o.MetricsEvery = 15 * time.Second
	}
	if o.TidyEvery <= 0 {
		o.TidyEvery = 5 * time.Minute
	}
	if o.ForgetIdle <= 0 {
		o.ForgetIdle = time.Hour
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	met, err := newConsumerMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &ExperimentConsumer{s: s, o: o, log: log, met: met, cache: map[string]runCache{}}, nil
}

// Name is the consumer's name in the group.
func (c *ExperimentConsumer) Name() string { return c.o.Name }

// Run folds events until ctx ends, then returns nil. Store outages are
// logged and retried.
func (c *ExperimentConsumer) Run(ctx context.Context) error {
	lastClaim, lastMetrics, lastTidy := time.Time{}, time.Time{}, time.Time{}
	for ctx.Err() == nil {
		if time.Since(lastTidy) >= c.o.TidyEvery {
			lastTidy = time.Now()
			if _, err := c.DropEndedStates(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("dropping the user states of ended experiments failed", "error", err)
			}
			if _, err := c.RemoveIdleConsumers(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("removing idle consumers from the experiment group failed", "error", err)
			}
		}
		if time.Since(lastClaim) >= c.o.ClaimIdle/2 {
			lastClaim = time.Now()
			if _, err := c.Claim(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("claiming pending experiment events failed", "error", err)
			}
		}
		if time.Since(lastMetrics) >= c.o.MetricsEvery {
			lastMetrics = time.Now()
			if err := c.RefreshMetrics(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("refreshing experiment metrics failed", "error", err)
			}
		}
		n, err := c.fold(ctx, true)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("folding experiment events failed", "error", err)
			sleep(ctx, c.o.Poll)
			continue
		}
		if n == 0 {
			sleep(ctx, c.o.Poll/4)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// FoldOnce reads and folds at most one batch of new entries per
// environment without waiting, and returns how many entries it folded.
// Errors: listing the environments fails with a wrapped
// experiments.ErrUnavailable (also once the store is closed); otherwise
// the failures of single environments (a store outage, a wrapped
// experiments.ErrUnavailable; a batch that lost too many races, left
// pending and retried later) are joined with errors.Join, and the other
// environments are folded all the same. Entries of a failed batch stay
// pending: nothing is acknowledged unless folded.
func (c *ExperimentConsumer) FoldOnce(ctx context.Context) (int, error) { return c.fold(ctx, false) }

func (c *ExperimentConsumer) envs(ctx context.Context) ([]string, error) {
	envs, err := c.s.rdb.SMembers(ctx, c.s.keys.expEnvs()).Result()
	if err != nil {
		return nil, xtranslate("list experiment environments", err)
	}
	return envs, nil
}

// eachEnv runs fn for every environment with experiments (n is how many
// there are) and adds up what it counts; the environments' errors are
// joined, and one failing does not stop the others. Errors: the store is
// closed or the environments cannot be listed (wrapped
// experiments.ErrUnavailable), else fn's.
func (c *ExperimentConsumer) eachEnv(ctx context.Context, fn func(env string, n int) (int, error)) (int, error) {
	if c.s.closed.Load() {
		return 0, eunavailable(errClosed)
	}
	envs, err := c.envs(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	var errs []error
	for _, env := range envs {
		k, err := fn(env, len(envs))
		total += k
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

func (c *ExperimentConsumer) fold(ctx context.Context, block bool) (int, error) {
	return c.eachEnv(ctx, func(env string, n int) (int, error) {
		wait := time.Duration(-1)
		if block && n == 1 {
			wait = c.o.Poll
		}
		msgs, err := c.read(ctx, env, wait)
		if err != nil || len(msgs) == 0 {
			return 0, err
		}
		if err := c.process(ctx, env, msgs); err != nil {
			return 0, err
		}
		return len(msgs), nil
	})
}

// read takes the next batch of env's new entries for this consumer,
// creating the group when it is missing (an embedded store restarted:
// after the last entry folded, or from the start).
func (c *ExperimentConsumer) read(ctx context.Context, env string, wait time.Duration) ([]goredis.XMessage, error) {
	key := c.s.keys.events(env)
	for attempt := 0; ; attempt++ {
		res, err := c.s.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{
			Group: consumerGroup, Consumer: c.o.Name, Streams: []string{key, ">"}, Count: int64(c.o.Batch), Block: wait,
		}).Result()
		if errors.Is(err, goredis.Nil) {
			return nil, nil
		}
		if err != nil && strings.Contains(err.Error(), "NOGROUP") && attempt == 0 {
			start, cerr := c.s.rdb.Get(ctx, c.s.keys.expCursor(env)).Result()
			if errors.Is(cerr, goredis.Nil) {
				start = "0"
			} else if cerr != nil {
				return nil, xtranslate("read experiment cursor", cerr)
			}
			if err := c.s.ensureGroup(ctx, env, start); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, xtranslate("read events", err)
		}
		if len(res) == 0 {
			return nil, nil
		}
		return res[0].Messages, nil
	}
}

// Claim takes over the entries pending for longer than ClaimIdle on any
// consumer (presumed dead) and folds them; it returns how many it folded.
// Errors: listing the environments fails with a wrapped
// experiments.ErrUnavailable; otherwise the failures of single
// environments (wrapped experiments.ErrUnavailable for a store outage) are
// joined with errors.Join, and the other environments are claimed all the
// same. Claimed entries that could not be folded stay pending on this
// consumer and are claimed again after ClaimIdle.
func (c *ExperimentConsumer) Claim(ctx context.Context) (int, error) {
	return c.eachEnv(ctx, func(env string, _ int) (int, error) {
		total := 0
		start := "0-0"
		for range 100 { // bounded per call
			msgs, next, err := c.s.rdb.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream: c.s.keys.events(env), Group: consumerGroup, MinIdle: c.o.ClaimIdle, Start: start,
				Count: int64(c.o.Batch), Consumer: c.o.Name,
			}).Result()
			if err != nil {
				if !strings.Contains(err.Error(), "NOGROUP") && !errors.Is(err, goredis.Nil) {
					return total, xtranslate("claim events", err)
				}
				return total, nil
			}
			if len(msgs) > 0 {
				if err := c.process(ctx, env, msgs); err != nil {
					return total, err
				}
				total += len(msgs)
				c.met.claimed(len(msgs))
			}
			if next == "0-0" || next == "" {
				return total, nil
			}
			start = next
		}
		return total, nil
	})
}

// DropEndedStates deletes, in every environment, the per-user fold states
// of stopped and archived experiments that are still stored (stopping an
// experiment deletes them; a version before that kept them). Each is one
// UNLINK, checked against the experiment's status in the same script, so a
// million users' states are freed off Redis's main thread and never those
// of a running experiment. The per-arm statistics stay. It returns how many
// experiments' states it deleted; errors are the store's, joined.
func (c *ExperimentConsumer) DropEndedStates(ctx context.Context) (int, error) {
	return c.eachEnv(ctx, func(env string, _ int) (int, error) {
		all, err := c.s.Experiments(ctx, env)
		if err != nil {
			return 0, err
		}
		dropped := 0
		var errs []error
		for i := range all {
			if st := all[i].Status; st == experiments.StatusRunning || st == experiments.StatusDraft {
				continue
			}
			keys := []string{c.s.keys.exp(env, all[i].Key), c.s.keys.expUsers(env, all[i].Key)}
			err := c.s.xwrite(func(fx *effects) error {
				n, err := dropStatesScript.Run(ctx, c.s.rdb, keys).Int()
				if err != nil {
					return xtranslate("drop experiment user states", err)
				}
				if n > 0 {
					fx.script(dropStatesScript, keys, nil)
					dropped++
				}
				return nil
			})
			if err != nil {
				errs = append(errs, err)
			}
		}
		return dropped, errors.Join(errs...)
	})
}

// delConsumerScript removes a consumer from the group unless entries are
// pending on it (deleting it would drop them from the group's pending list,
// so they would never be folded). KEYS: stream. ARGV: group, consumer.
// Returns 1 when it removed the consumer, 0 when entries are pending.
var delConsumerScript = goredis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// RemoveIdleConsumers removes, from every environment's consumer group,
// the consumers other than this one that have not read for longer than
// ConsumerOptions.ForgetIdle and have no pending entries: the names of
// replicas that restarted or left. The pending check and the removal are
// one script, so no entry is ever dropped; a consumer with pending entries
// stays until another claims them. Consumer groups are not part of an
// embedded store's files, so nothing is journaled. It returns how many
// consumers it removed; errors are the store's, joined.
func (c *ExperimentConsumer) RemoveIdleConsumers(ctx context.Context) (int, error) {
	removed, err := c.eachEnv(ctx, func(env string, _ int) (int, error) {
		stream := c.s.keys.events(env)
		cons, err := c.s.rdb.XInfoConsumers(ctx, stream, consumerGroup).Result()
		if err != nil {
			if !strings.Contains(err.Error(), "NOGROUP") && !strings.Contains(err.Error(), "no such key") {
				return 0, xtranslate("list consumers", err)
			}
			return 0, nil
		}
		removed := 0
		var errs []error
		for _, ci := range cons {
			if ci.Name == c.o.Name || ci.Pending > 0 || ci.Idle < c.o.ForgetIdle {
				continue
			}
			n, err := delConsumerScript.Run(ctx, c.s.rdb, []string{stream}, consumerGroup, ci.Name).Int()
			if err != nil {
				errs = append(errs, xtranslate("remove consumer", err))
				continue
			}
			removed += n
		}
		return removed, errors.Join(errs...)
	})
	c.met.removedConsumers(removed)
	return removed, err
}

// running returns the folders of env's running experiments and the
// environment's epoch they were listed at. The epoch is read first: a
// change between the two reads leaves the listing newer than the epoch, so
// the fold script refuses it and the next attempt lists again.
func (c *ExperimentConsumer) running(ctx context.Context, env string, refresh bool) (runCache, error) {
	c.mu.Lock()
	rc, ok := c.cache[env]
	c.mu.Unlock()
	if ok && !refresh && time.Since(rc.at) < c.o.Refresh {
		return rc, nil
	}
	epoch, err := c.s.rdb.Get(ctx, c.s.keys.expEpoch(env)).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return runCache{}, xtranslate("read experiment epoch", err)
	}
	all, err := c.s.Experiments(ctx, env)
	if err != nil {
		return runCache{}, err
	}
	var folders []*experiments.Folder
	for i := range all {
		if all[i].Status == experiments.StatusRunning {
			folders = append(folders, experiments.NewFolder(&all[i].Experiment))
		}
	}
	rc = runCache{at: time.Now(), epoch: epoch, folders: folders}
	c.mu.Lock()
	c.cache[env] = rc
	c.mu.Unlock()
	return rc, nil
}

// decodeStreamEvent decodes one stream entry; ok is false for a malformed one.
func decodeStreamEvent(m goredis.XMessage) (experiments.Event, bool) {
	raw, _ := m.Values[eventField].(string)
	var se storedEvent
	if err := json.Unmarshal([]byte(raw), &se); err != nil || se.Name == "" {
		return experiments.Event{}, false
	}
	return experiments.Event{
		Name: se.Name, TargetingKey: se.TargetingKey, Value: se.Value,
		Time: time.UnixMilli(se.TimeMillis).UTC(), FlagKey: se.FlagKey, Variant: se.Variant,
	}, true
}

// expWork is one experiment's share of a batch.
type expWork struct {
	f      *experiments.Folder
	users  []string
	old    []string
	states map[string]*experiments.UserState
}

// maxFoldAttempts bounds the retries of one batch under contention.
const maxFoldAttempts = 8

// process folds msgs, entries of env's stream delivered to this consumer.
func (c *ExperimentConsumer) process(ctx context.Context, env string, msgs []goredis.XMessage) error {
	events := make([]experiments.Event, len(msgs))
	ok := make([]bool, len(msgs))
	ids := make([]any, len(msgs))
	for i, m := range msgs {
		events[i], ok[i] = decodeStreamEvent(m)
		ids[i] = m.ID
	}
	refresh := false
	for attempt := 0; attempt < maxFoldAttempts; attempt++ {
		rc, err := c.running(ctx, env, refresh)
		if err != nil {
			return err
		}
		work := make([]*expWork, len(rc.folders))
		for x, f := range rc.folders {
			w := &expWork{f: f, states: map[string]*experiments.UserState{}}
			for i := range events {
				if ok[i] && f.Relevant(&events[i]) {
					if _, seen := w.states[events[i].TargetingKey]; !seen {
						w.states[events[i].TargetingKey] = nil
						w.users = append(w.users, events[i].TargetingKey)
					}
				}
			}
			work[x] = w
		}
		if err := c.readStates(ctx, env, work); err != nil {
			return err
		}
		folded := [2]int{}
		used := make([]bool, len(events))
		deltas := make([]experiments.Observations, len(work))
		for x, w := range work {
			for i := range events {
				ev := &events[i]
				if !ok[i] || !w.f.Relevant(ev) {
					continue
				}
				w.f.Fold(w.states[ev.TargetingKey], ev, &deltas[x])
				used[i] = true
				if ev.IsExposure() {
					folded[0]++
				} else {
					folded[1]++
				}
			}
		}
		keys := []string{c.s.keys.events(env), c.s.keys.expCursor(env)}
		head := []any{consumerGroup, "1", c.o.Name, strconv.Itoa(len(ids))}
		var body []any
		body = append(body, ids...)
		body = append(body, strconv.Itoa(len(work)))
		for x, w := range work {
			e := w.f.Experiment()
			keys = append(keys, c.s.keys.exp(env, e.Key), c.s.keys.expUsers(env, e.Key), c.s.keys.expStats(env, e.Key))
			body = append(body, runToken(e), strconv.Itoa(len(w.users)))
			for j, u := range w.users {
				b, err := json.Marshal(w.states[u])
				if err != nil {
					return fmt.Errorf("encoding the state of user %q: %v", u, err)
				}
				body = append(body, u, w.old[j], string(b))
			}
			fields, vals := statFields(deltas[x])
			body = append(body, strconv.Itoa(len(fields)))
			for j := range fields {
				body = append(body, fields[j], vals[j])
			}
		}
		keys = append(keys, c.s.keys.expEpoch(env))
		body = append(body, rc.epoch)
		var res []string
		err = c.s.xwrite(func(fx *effects) error {
			var err error
			res, err = foldScript.Run(ctx, c.s.rdb, keys, append(head, body...)...).StringSlice()
			if err != nil {
				return xtranslate("fold events", err)
			}
			if len(res) > 0 && res[0] == "ok" {
				// Replayed without the pending check (a restarted embedded
				// store has no consumer group) and without the epoch check
				// (a replay must apply what was applied).
				fx.script(foldScript, keys[:len(keys)-1], append([]any{consumerGroup, "0", c.o.Name, strconv.Itoa(len(ids))}, body[:len(body)-1]...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		switch {
		case len(res) > 0 && res[0] == "ok":
			ignored := 0
			for _, u := range used {
				if !u {
					ignored++
				}
			}
			c.met.folded(folded[0], folded[1], ignored)
			return nil
		case len(res) > 0 && res[0] == "lost":
			c.met.lost(len(msgs))
			return nil // another consumer claimed the batch and folds it
		case len(res) > 0 && res[0] == "stale":
			refresh = true
		case len(res) > 0 && res[0] == "retry":
		default:
			return badReply("fold events", res)
		}
		c.met.retry()
	}
	return fmt.Errorf("environment %q: folding %d events lost %d races in a row; they stay pending and are retried", env, len(msgs), maxFoldAttempts)
}

// readStates reads the states of every experiment's users in one round trip.
func (c *ExperimentConsumer) readStates(ctx context.Context, env string, work []*expWork) error {
	cmds := make([]*goredis.SliceCmd, len(work))
	_, err := c.s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for x, w := range work {
			if len(w.users) > 0 {
				cmds[x] = p.HMGet(ctx, c.s.keys.expUsers(env, w.f.Experiment().Key), w.users...)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return xtranslate("read user states", err)
	}
	for x, w := range work {
		w.old = make([]string, len(w.users))
		if cmds[x] == nil {
			continue
		}
		for j, v := range cmds[x].Val() {
			st := &experiments.UserState{}
			if s, ok := v.(string); ok {
				w.old[j] = s
				if err := json.Unmarshal([]byte(s), st); err != nil {
					st = &experiments.UserState{} // unreadable: start over
				}
			}
			w.states[w.users[j]] = st
		}
	}
	return nil
}

// RefreshMetrics recomputes the gauges: per environment the entries pending
// and behind the stream head, experiments by status and health, and the
// crossover users of running experiments (an experiment no longer running
// loses its series). Without a Registerer it does nothing and returns nil.
// Errors: listing the environments fails with a wrapped
// experiments.ErrUnavailable and no gauge changes; otherwise the failures
// of single environments or experiments (wrapped
// experiments.ErrUnavailable for a store outage) are joined with
// errors.Join, the other gauges are refreshed all the same, and the
// crossover series of an environment that failed are kept as they were.
func (c *ExperimentConsumer) RefreshMetrics(ctx context.Context) error {
	if c.met == nil {
		return nil
	}
	envs, err := c.envs(ctx)
	if err != nil {
		return err
	}
	counts := map[[2]string]float64{}
	var errs []error
	for _, env := range envs {
		crossovers := map[string]float64{}
		clean := true
		groups, err := c.s.rdb.XInfoGroups(ctx, c.s.keys.events(env)).Result()
		if err == nil {
			for _, g := range groups {
				if g.Name == consumerGroup {
					c.met.pending.WithLabelValues(env).Set(float64(g.Pending))
					c.met.lag.WithLabelValues(env).Set(float64(max(g.Lag, 0)))
				}
			}
		}
		all, err := c.s.Experiments(ctx, env)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range all {
			e := &all[i].Experiment
			health := "none"
			if e.Status == experiments.StatusRunning {
				obs, err := c.s.Observations(ctx, env, e)
				if err != nil {
					errs = append(errs, err)
					clean = false
					continue
				}
				r := experiments.Analyze(e, obs, time.Now())
				health = string(r.Health.Status)
				crossovers[e.Key] = float64(obs.Crossovers)
			}
			counts[[2]string{string(e.Status), health}]++
		}
		if clean {
			// Stopped, archived and deleted experiments lose their series.
			c.met.crossovers.DeletePartialMatch(prometheus.Labels{"env": env})
		}
		for key, n := range crossovers {
			c.met.crossovers.WithLabelValues(env, key).Set(n)
		}
	}
	c.met.experiments.Reset()
	for k, n := range counts {
		c.met.experiments.WithLabelValues(k[0], k[1]).Set(n)
	}
	return errors.Join(errs...)
}

// consumerMetrics are the consumer's collectors; nil records nothing.
type consumerMetrics struct {
	events      *prometheus.CounterVec
	retries     prometheus.Counter
	claims      prometheus.Counter
	lostBatches prometheus.Counter
	removed     prometheus.Counter
	pending     *prometheus.GaugeVec
	lag         *prometheus.GaugeVec
	experiments *prometheus.GaugeVec
	crossovers  *prometheus.GaugeVec
}

func newConsumerMetrics(reg prometheus.Registerer) (*consumerMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &consumerMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_experiment_events_folded_total",
			Help: "Stream entries folded into running experiments, by kind: exposure and event (counted once per experiment they feed), ignored (no running experiment uses them).",
		}, []string{"kind"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_experiment_fold_retries_total",
			Help: "Event batches folded again because another replica changed a user's state or an experiment changed meanwhile.",
		}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_experiment_events_claimed_total",
			Help: "Stream entries claimed from consumers that left them pending too long (presumed dead).",
		}),
		lostBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_experiment_events_lost_claims_total",
			Help: "Stream entries this consumer had read but another claimed first (they are folded there, once).",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flagpole_experiment_consumers_removed_total",
			Help: "Consumers removed from the experiment consumer group: idle longer than the bound, with nothing pending (replicas that restarted or left).",
		}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_experiment_consumer_pending",
			Help: "Stream entries delivered to a consumer and not yet folded, by environment.",
		}, []string{"env"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_experiment_consumer_lag",
			Help: "Stream entries not yet delivered to the consumer group (behind the stream head), by environment.",
		}, []string{"env"}),
		experiments: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_experiments",
			Help: "Experiments by status and health (health is none unless running).",
		}, []string{"status", "health"}),
		crossovers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flagpole_experiment_crossover_users",
			Help: "Users exposed to more than one arm of a running experiment (excluded from its statistics).",
		}, []string{"env", "experiment"}),
	}
	var err error
	if m.events, err = promreg.Register(reg, m.events); err != nil {
		return nil, err
	}
	if m.retries, err = promreg.Register(reg, m.retries); err != nil {
		return nil, err
	}
	if m.claims, err = promreg.Register(reg, m.claims); err != nil {
		return nil, err
	}
	if m.lostBatches, err = promreg.Register(reg, m.lostBatches); err != nil {
		return nil, err
	}
	if m.removed, err = promreg.Register(reg, m.removed); err != nil {
		return nil, err
	}
	if m.pending, err = promreg.Register(reg, m.pending); err != nil {
		return nil, err
	}
	if m.lag, err = promreg.Register(reg, m.lag); err != nil {
		return nil, err
	}
	if m.experiments, err = promreg.Register(reg, m.experiments); err != nil {
		return nil, err
	}
	if m.crossovers, err = promreg.Register(reg, m.crossovers); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *consumerMetrics) folded(exposures, events, ignored int) {
	if m == nil {
		return
	}
	m.events.WithLabelValues("exposure").Add(float64(exposures))
	m.events.WithLabelValues("event").Add(float64(events))
	if ignored > 0 {
		m.events.WithLabelValues("ignored").Add(float64(ignored))
	}
}

func (m *consumerMetrics) retry() {
	if m != nil {
		m.retries.Inc()
	}
}

func (m *consumerMetrics) claimed(n int) {
	if m != nil {
		m.claims.Add(float64(n))
	}
}

func (m *consumerMetrics) lost(n int) {
	if m != nil {
		m.lostBatches.Add(float64(n))
	}
}

func (m *consumerMetrics) removedConsumers(n int) {
	if m != nil && n > 0 {
		m.removed.Add(float64(n))
	}
}
