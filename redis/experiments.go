package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/experiments"
)

// Experiments live next to their environment's event stream, under its hash
// tag, so that one Lua script can fold events, update statistics and
// acknowledge the stream entries atomically (also on a Redis Cluster):
//
//	PREFIX{events:ENV}:exps          set: experiment keys
//	PREFIX{events:ENV}:exp:KEY       hash: doc (experiment JSON), version, created, updated, run
//	PREFIX{events:ENV}:xu:KEY        hash: targeting key → folded user state (experiments.UserState JSON)
//	PREFIX{events:ENV}:xs:KEY        hash: folded statistics (see statField)
//	PREFIX{events:ENV}:xcursor       string: the highest entry ID folded (recreates the group of an embedded store)
//	PREFIX{events:ENV}:xepoch        string: counter of the changes to which experiments run and in which run
//	PREFIX experiments:envs          set: environments that have (or had) experiments
//
// "run" is "<status>:<restarts>": the fold script folds into an experiment
// only while it holds the run the consumer computed with. A write that
// changes the restarts count deletes xu and xs in the same script. A write
// that leaves the experiment neither draft nor running (stopped, archived:
// it never runs again) deletes xu, the per-user states, which only folding
// needs; xs, the per-arm statistics results read, stays. Since the fold
// script refuses any experiment whose run is not the running one the
// consumer computed with, a late event cannot recreate xu. Large keys are
// deleted with UNLINK, so a million users' states are freed off Redis's
// main thread.
//
// "xepoch" is bumped by every write that creates a running experiment,
// changes an experiment's run or touches a running one, and by every
// delete. A consumer caches the environment's running experiments together
// with the epoch it read before listing them, and the fold script refuses a
// batch computed at another epoch: an experiment that started after the
// cache was built is never missed (its exposures and events would otherwise
// be acknowledged without being folded into it).

func (k keyspace) expTag(env string) string        { return k.events(env) + ":" }
func (k keyspace) expSet(env string) string        { return k.expTag(env) + "exps" }
func (k keyspace) exp(env, key string) string      { return k.expTag(env) + "exp:" + key }
func (k keyspace) expUsers(env, key string) string { return k.expTag(env) + "xu:" + key }
func (k keyspace) expStats(env, key string) string { return k.expTag(env) + "xs:" + key }
func (k keyspace) expCursor(env string) string     { return k.expTag(env) + "xcursor" }
func (k keyspace) expEpoch(env string) string      { return k.expTag(env) + "xepoch" }
func (k keyspace) expEnvs() string                 { return k.prefix + "experiments:envs" }

// consumerGroup is the consumer group that folds events into experiments.
const consumerGroup = "flagpole-experiments"

var _ experiments.Store = (*Store)(nil)

// runToken names an experiment's run for the fold script.
func runToken(e *experiments.Experiment) string {
	return string(e.Status) + ":" + strconv.Itoa(e.Restarts)
}

// createExpScript stores a new experiment; one created running bumps the
// epoch. KEYS: exp, exps, epoch (absent from records journaled before
// there was one). ARGV: key, doc, at (RFC 3339), run.
var createExpScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', '1', 'created', ARGV[3], 'updated', ARGV[3], 'run', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
if KEYS[3] and string.match(ARGV[4], '^running:') then redis.call('INCR', KEYS[3]) end
return {'ok', '1'}
`)

// updateExpScript replaces an experiment at the expected version; a new
// restarts count discards the statistics, a run that is over (neither
// draft nor running) discards the per-user states. A write that changes
// the run or leaves or finds the experiment running bumps the epoch.
// KEYS: exp, users, stats, epoch (absent from records journaled before
// there was one). ARGV: ifVersion (0: any), doc, at, run, restarts.
var updateExpScript = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return {'notfound'} end
if ARGV[1] ~= '0' and ARGV[1] ~= v then return {'conflict', v} end
local old = redis.call('HGET', KEYS[1], 'run') or ''
local oldRestarts = string.match(old, ':(%d+)$') or ''
if oldRestarts ~= ARGV[5] then
  redis.call('UNLINK', KEYS[2], KEYS[3])
elseif not string.match(ARGV[4], '^running:') and not string.match(ARGV[4], '^draft:') then
  redis.call('UNLINK', KEYS[2])
end
if KEYS[4] and (old ~= ARGV[4] or string.match(old, '^running:') or string.match(ARGV[4], '^running:')) then
  redis.call('INCR', KEYS[4])
end
local nv = tostring(tonumber(v) + 1)
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', nv, 'updated', ARGV[3], 'run', ARGV[4])
return {'ok', nv}
`)

// deleteExpScript removes an experiment and its statistics and bumps the
// epoch. KEYS: exp, exps, users, stats, epoch (absent from records
// journaled before there was one). ARGV: key, ifVersion.
var deleteExpScript = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return {'notfound'} end
if ARGV[2] ~= '0' and ARGV[2] ~= v then return {'conflict', v} end
redis.call('UNLINK', KEYS[1], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
if KEYS[5] then redis.call('INCR', KEYS[5]) end
return {'ok'}
`)

// dropStatesScript deletes the per-user states of an experiment whose run
// is over (stopped or archived), left by a version that kept them; a draft,
// a running or a deleted experiment is left alone. KEYS: exp, users.
// Returns 1 when it deleted the states.
var dropStatesScript = goredis.NewScript(`
local run = redis.call('HGET', KEYS[1], 'run')
if not run or string.match(run, '^running:') or string.match(run, '^draft:') then return 0 end
return redis.call('UNLINK', KEYS[2])
`)

func init() {
	for sc, name := range map[*goredis.Script]string{
		createExpScript: "createExperiment", updateExpScript: "updateExperiment", deleteExpScript: "deleteExperiment",
		foldScript: "foldExperimentEvents", dropStatesScript: "dropExperimentStates",
	} {
		scriptNames[sc] = name
	}
}

// xdone wraps the metrics callback: outcomes callers expect are not errors.
func xdone(done func(error)) func(error) {
	return func(err error) {
		var ve *experiments.ValidationError
		switch {
		case errors.Is(err, experiments.ErrNotFound), errors.Is(err, experiments.ErrExists), errors.Is(err, experiments.ErrConflict),
			errors.As(err, &ve):
			err = nil
		}
		done(err)
	}
}

// xwrite is write for experiment operations.
func (s *Store) xwrite(fn func(fx *effects) error) error {
	if s.closed.Load() {
		return eunavailable(errClosed)
	}
	return eunavailable(s.write(fn))
}

func xtranslate(op string, err error) error { return eunavailable(translate(op, err)) }

func checkExpKey(key string) error {
	if key == "" {
		return &experiments.ValidationError{Problems: []experiments.Problem{{Path: "key", Message: "is required"}}}
	}
	return nil
}

// CreateExperiment implements experiments.Store. It also creates the
// environment's consumer group, so the events from now on are folded.
func (s *Store) CreateExperiment(ctx context.Context, env string, e *experiments.Experiment, at time.Time) (st experiments.Stored, err error) {
	done := xdone(s.met.start("create_experiment"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return st, err
	}
	if err := checkExpKey(e.Key); err != nil {
		return st, err
	}
	doc, err := json.Marshal(e)
	if err != nil {
		return st, fmt.Errorf("experiment %q cannot be encoded: %v", e.Key, err)
	}
	at = at.UTC()
	err = s.xwrite(func(fx *effects) error {
		if err := s.rdb.SAdd(ctx, s.keys.expEnvs(), env).Err(); err != nil {
			return xtranslate("create experiment", err)
		}
		fx.command("SADD", s.keys.expEnvs(), env)
		if err := s.ensureGroup(ctx, env, "$"); err != nil {
			return err
		}
		keys := []string{s.keys.exp(env, e.Key), s.keys.expSet(env), s.keys.expEpoch(env)}
		args := []any{e.Key, string(doc), at.Format(time.RFC3339Nano), runToken(e)}
		res, err := createExpScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return xtranslate("create experiment", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			fx.script(createExpScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "exists":
			return fmt.Errorf("experiment %q in environment %q: %w", e.Key, env, experiments.ErrExists)
		}
		return badReply("create experiment", res)
	})
	if err != nil {
		return st, err
	}
	return experiments.Stored{Experiment: *e, Version: 1, CreatedAt: at, UpdatedAt: at}, nil
}

// ensureGroup creates env's consumer group at start ("$": new entries only)
// unless it exists. Consumer groups are not part of an embedded store's
// data file, so they are not journaled.
func (s *Store) ensureGroup(ctx context.Context, env, start string) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.keys.events(env), consumerGroup, start).Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return xtranslate("create consumer group", err)
	}
	return nil
}

// Experiment implements experiments.Store.
func (s *Store) Experiment(ctx context.Context, env, key string) (st experiments.Stored, err error) {
	done := xdone(s.met.start("get_experiment"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return st, err
	}
	if s.closed.Load() {
		return st, eunavailable(errClosed)
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.exp(env, key), "doc", "version", "created", "updated").Result()
	if err != nil {
		return st, xtranslate("get experiment", err)
	}
	if vals[0] == nil {
		return st, fmt.Errorf("experiment %q in environment %q: %w", key, env, experiments.ErrNotFound)
	}
	return storedFrom(env, key, vals)
}

// storedFrom decodes the values of doc, version, created and updated.
func storedFrom(env, key string, vals []any) (experiments.Stored, error) {
	var st experiments.Stored
	str := func(i int) string { s, _ := vals[i].(string); return s }
	if err := json.Unmarshal([]byte(str(0)), &st.Experiment); err != nil {
		return st, fmt.Errorf("environment %q: experiment %q is malformed: %v", env, key, err)
	}
	v, err := strconv.ParseInt(str(1), 10, 64)
	if err != nil {
		return st, fmt.Errorf("environment %q: experiment %q has a malformed version", env, key)
	}
	st.Version = v
	st.CreatedAt, _ = time.Parse(time.RFC3339Nano, str(2))
	st.UpdatedAt, _ = time.Parse(time.RFC3339Nano, str(3))
	return st, nil
}

// Experiments implements experiments.Store.
func (s *Store) Experiments(ctx context.Context, env string) (out []experiments.Stored, err error) {
	done := xdone(s.met.start("list_experiments"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, eunavailable(errClosed)
	}
	keys, err := s.rdb.SMembers(ctx, s.keys.expSet(env)).Result()
	if err != nil {
		return nil, xtranslate("list experiments", err)
	}
	slices.Sort(keys)
	cmds := make([]*goredis.SliceCmd, len(keys))
	if len(keys) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HMGet(ctx, s.keys.exp(env, k), "doc", "version", "created", "updated")
			}
			return nil
		})
		if err != nil {
			return nil, xtranslate("list experiments", err)
		}
	}
	out = make([]experiments.Stored, 0, len(keys))
	for i, k := range keys {
		vals := cmds[i].Val()
		if len(vals) < 4 || vals[0] == nil {
			continue // deleted meanwhile
		}
		st, err := storedFrom(env, k, vals)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// UpdateExperiment implements experiments.Store.
func (s *Store) UpdateExperiment(ctx context.Context, env string, e *experiments.Experiment, w experiments.Write) (st experiments.Stored, err error) {
	done := xdone(s.met.start("update_experiment"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return st, err
	}
	if err := checkExpKey(e.Key); err != nil {
		return st, err
	}
	doc, err := json.Marshal(e)
	if err != nil {
		return st, fmt.Errorf("experiment %q cannot be encoded: %v", e.Key, err)
	}
	at := w.At.UTC()
	var version int64
	err = s.xwrite(func(fx *effects) error {
		if e.Status == experiments.StatusRunning {
			if err := s.ensureGroup(ctx, env, "$"); err != nil {
				return err
			}
		}
		keys := []string{s.keys.exp(env, e.Key), s.keys.expUsers(env, e.Key), s.keys.expStats(env, e.Key), s.keys.expEpoch(env)}
		args := []any{strconv.FormatInt(w.IfVersion, 10), string(doc), at.Format(time.RFC3339Nano), runToken(e), strconv.Itoa(e.Restarts)}
		res, err := updateExpScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return xtranslate("update experiment", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			if version, err = strconv.ParseInt(res[1], 10, 64); err != nil {
				return badReply("update experiment", res)
			}
			fx.script(updateExpScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("experiment %q in environment %q: %w", e.Key, env, experiments.ErrNotFound)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("experiment %q is at version %s, not %d: %w", e.Key, res[1], w.IfVersion, experiments.ErrConflict)
		}
		return badReply("update experiment", res)
	})
	if err != nil {
		return st, err
	}
	// Re-read for CreatedAt (one small read; writes are rare).
	st, err = s.Experiment(ctx, env, e.Key)
	if err != nil || st.Version != version {
		st = experiments.Stored{Experiment: *e, Version: version, UpdatedAt: at}
	}
	return st, nil
}

// DeleteExperiment implements experiments.Store.
func (s *Store) DeleteExperiment(ctx context.Context, env, key string, ifVersion int64) (err error) {
	done := xdone(s.met.start("delete_experiment"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return err
	}
	return s.xwrite(func(fx *effects) error {
		keys := []string{s.keys.exp(env, key), s.keys.expSet(env), s.keys.expUsers(env, key), s.keys.expStats(env, key), s.keys.expEpoch(env)}
		args := []any{key, strconv.FormatInt(ifVersion, 10)}
		res, err := deleteExpScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return xtranslate("delete experiment", err)
		}
		switch {
		case len(res) == 1 && res[0] == "ok":
			fx.script(deleteExpScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("experiment %q in environment %q: %w", key, env, experiments.ErrNotFound)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("experiment %q is at version %s, not %d: %w", key, res[1], ifVersion, experiments.ErrConflict)
		}
		return badReply("delete experiment", res)
	})
}

// Statistics fields of PREFIX{events:ENV}:xs:KEY. Integer fields start with
// "i:", floating-point ones with "f:"; metric keys never contain ':', so the
// arm is everything after the third ':'.
//
//	i:u:ARM            users exposed to ARM (crossovers removed)
//	i:c                crossover users
//	i:k:METRIC:ARM     conversions
//	f:s:METRIC:ARM     Σx      f:q:METRIC:ARM  Σx²
//	f:d:METRIC:ARM     Σy      f:e:METRIC:ARM  Σy²    f:p:METRIC:ARM  Σxy
func statFields(d experiments.Observations) (fields []string, deltas []string) {
	add := func(f, v string) { fields, deltas = append(fields, f), append(deltas, v) }
	fl := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for arm, n := range d.Users {
		if n != 0 {
			add("i:u:"+arm, strconv.FormatInt(n, 10))
		}
	}
	if d.Crossovers != 0 {
		add("i:c", strconv.FormatInt(d.Crossovers, 10))
	}
	for m, arms := range d.Metrics {
		for arm, st := range arms {
			if st.Conversions != 0 {
				add("i:k:"+m+":"+arm, strconv.FormatInt(st.Conversions, 10))
			}
			for _, f := range []struct {
				code string
				v    float64
			}{{"s", st.Sum}, {"q", st.SumSquares}, {"d", st.DenominatorSum}, {"e", st.DenominatorSumSquares}, {"p", st.SumProducts}} {
				if f.v != 0 {
					add("f:"+f.code+":"+m+":"+arm, fl(f.v))
				}
			}
		}
	}
	return fields, deltas
}

// observationsFrom decodes a statistics hash into e's observations: every
// arm and metric of e is present (zero when nothing was folded), and each
// metric's users are the arm's users.
func observationsFrom(e *experiments.Experiment, h map[string]string) experiments.Observations {
	obs := experiments.Observations{Users: map[string]int64{}, Metrics: map[string]map[string]experiments.Stats{}}
	arms := e.Arms()
	for _, a := range arms {
		obs.Users[a] = 0
	}
	for _, m := range e.Metrics {
		obs.Metrics[m.Key] = map[string]experiments.Stats{}
		for _, a := range arms {
			obs.Metrics[m.Key][a] = experiments.Stats{}
		}
	}
	for f, v := range h {
		kind, rest, _ := strings.Cut(f, ":")
		code, rest, _ := strings.Cut(rest, ":")
		if kind == "i" && code == "c" {
			obs.Crossovers, _ = strconv.ParseInt(v, 10, 64)
			continue
		}
		if kind == "i" && code == "u" {
			if _, ok := obs.Users[rest]; ok {
				obs.Users[rest], _ = strconv.ParseInt(v, 10, 64)
			}
			continue
		}
		metric, arm, ok := strings.Cut(rest, ":")
		byArm, known := obs.Metrics[metric]
		if !ok || !known {
			continue // a metric removed from the experiment
		}
		st, known := byArm[arm]
		if !known {
			continue
		}
		fv, _ := strconv.ParseFloat(v, 64)
		switch code {
		case "k":
			st.Conversions, _ = strconv.ParseInt(v, 10, 64)
		case "s":
			st.Sum = fv
		case "q":
			st.SumSquares = fv
		case "d":
			st.DenominatorSum = fv
		case "e":
			st.DenominatorSumSquares = fv
		case "p":
			st.SumProducts = fv
		}
		byArm[arm] = st
	}
	for _, m := range e.Metrics {
		for _, a := range arms {
			st := obs.Metrics[m.Key][a]
			st.Users = obs.Users[a]
			if !m.IsRatio() {
				st.DenominatorSum, st.DenominatorSumSquares, st.SumProducts = 0, 0, 0
			}
			obs.Metrics[m.Key][a] = st
		}
	}
	return obs
}

// Observations implements experiments.Store: one HGETALL of the statistics
// hash, whose size depends on the arms and metrics, not on the users. The
// statistics are those of the run the store holds; for an e of another run
// (a restart raced with the read) they are empty.
func (s *Store) Observations(ctx context.Context, env string, e *experiments.Experiment) (obs experiments.Observations, err error) {
	done := xdone(s.met.start("experiment_observations"))
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return obs, err
	}
	if s.closed.Load() {
		return obs, eunavailable(errClosed)
	}
	var run *goredis.StringCmd
	var all *goredis.MapStringStringCmd
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		run = p.HGet(ctx, s.keys.exp(env, e.Key), "run")
		all = p.HGetAll(ctx, s.keys.expStats(env, e.Key))
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return obs, xtranslate("read experiment statistics", err)
	}
	h := all.Val()
	if r := run.Val(); !strings.HasSuffix(r, ":"+strconv.Itoa(e.Restarts)) {
		h = nil
	}
	return observationsFrom(e, h), nil
}
