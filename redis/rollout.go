package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/canary"
)

// The rollout store: progressive flag rollouts and their leases.
//
// Keys, all sharing the hash tag {rollouts} so that every write — version
// check, fencing, the one-active-rollout-per-flag index and the due index —
// is one atomic script, on a Cluster too (rollouts are few: one slot is
// plenty):
//
//	PREFIX{rollouts}:r:ID      hash: version, doc (rollout JSON), op, env, flag, state, created (ms)
//	PREFIX{rollouts}:lease:ID  hash: owner ("" when released), token, expires (ms)
//	PREFIX{rollouts}:all       sorted set: rollout IDs by creation (ms)
//	PREFIX{rollouts}:active    hash: "ENV/FLAG" → ID of its active rollout
//	PREFIX{rollouts}:due       sorted set: IDs of rollouts with a wake time, by it (ms, rounded up)
//	PREFIX{rollouts}:ended     sorted set: IDs of ended rollouts, by when they ended (ms)
//
// Retention: once a rollout is created, up to maxRolloutTrim rollouts that
// ended more than RolloutRetention before its creation are deleted (with
// their leases and index entries; a refused creation deletes nothing), so
// that the store, and every listing that walks "all", stays bounded. A
// rollout retried after it ended leaves "ended" again.
//
// Environment names and flag keys never contain '/', so "ENV/FLAG" is
// unambiguous. Lease times are the callers' clocks, as for analysis runs.

func (k keyspace) rolloutTag() string            { return k.prefix + "{rollouts}:" }
func (k keyspace) rollout(id string) string      { return k.rolloutTag() + "r:" + id }
func (k keyspace) rolloutLease(id string) string { return k.rolloutTag() + "lease:" + id }
func (k keyspace) rolloutsAll() string           { return k.rolloutTag() + "all" }
func (k keyspace) rolloutsActive() string        { return k.rolloutTag() + "active" }
func (k keyspace) rolloutsDue() string           { return k.rolloutTag() + "due" }
func (k keyspace) rolloutsEnded() string         { return k.rolloutTag() + "ended" }

// RolloutRetention is how long an ended rollout is kept: the next rollout
// created after that deletes it.
const RolloutRetention = 30 * 24 * time.Hour

// maxRolloutTrim bounds the expired rollouts one creation deletes.
const maxRolloutTrim = 100

var _ canary.RolloutStore = (*Store)(nil)

// createRolloutScript stores a new rollout at version 1 and indexes it.
// KEYS: rollout, all, active, due. ARGV: id, doc, op token, env, flag,
// state, created (ms), active key ("" when not active), wake ("" none).
// Journal records from when this script also trimmed expired rollouts
// carry a fifth key and three more ARGV; replay ignores them, so the
// rollouts such a run deleted come back until the next creation trims them
// again (they are still in "ended").
var createRolloutScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[3] then return {'ok', redis.call('HGET', KEYS[1], 'version')} end
  return {'exists'}
end
if ARGV[8] ~= '' then
  local holder = redis.call('HGET', KEYS[3], ARGV[8])
  if holder then return {'active', holder} end
  redis.call('HSET', KEYS[3], ARGV[8], ARGV[1])
end
redis.call('HSET', KEYS[1], 'version', '1', 'doc', ARGV[2], 'op', ARGV[3], 'env', ARGV[4], 'flag', ARGV[5], 'state', ARGV[6], 'created', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
if ARGV[9] ~= '' then redis.call('ZADD', KEYS[4], ARGV[9], ARGV[1]) end
return {'ok', '1'}
`)

// trimRolloutsScript deletes expired rollouts: their hash and lease, and
// their entries in the listing, due and ended indexes. KEYS: all, due,
// ended, then each rollout's hash and lease, in ARGV's order. ARGV: the
// cutoff (ms), then the IDs. An ID is deleted only if it is still in
// "ended" below the cutoff (a retry since it was read takes it out). The
// reply is {'ok', how many were deleted}.
var trimRolloutsScript = goredis.NewScript(`
local cutoff = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local ended = redis.call('ZSCORE', KEYS[3], id)
  if ended and tonumber(ended) < cutoff then
    redis.call('DEL', KEYS[2 * i], KEYS[2 * i + 1])
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    n = n + 1
  end
end
return {'ok', string.format('%d', n)}
`)

// updateRolloutScript replaces a rollout at the expected version, fenced
// by the lease token when one is given, and moves it in the indexes.
// KEYS: rollout, lease, active, due, ended. ARGV: id, expected version,
// doc, op token, token ("0": none), env, flag, state, active key, active
// ("1"/"0"), wake ("" none), ended (ms; "" while not ended). Records
// journaled before the ended index have neither the fifth key nor ARGV[12]
// and leave it alone.
var updateRolloutScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then return {'notfound'} end
if redis.call('HGET', KEYS[1], 'op') == ARGV[4] then return {'ok', cur} end
if ARGV[5] ~= '0' then
  local lt = redis.call('HGET', KEYS[2], 'token') or '0'
  local lo = redis.call('HGET', KEYS[2], 'owner') or ''
  if lt ~= ARGV[5] or lo == '' then return {'fenced', lt} end
end
if cur ~= ARGV[2] then return {'conflict', cur} end
if redis.call('HGET', KEYS[1], 'env') ~= ARGV[6] or redis.call('HGET', KEYS[1], 'flag') ~= ARGV[7] then return {'moved'} end
local holder = redis.call('HGET', KEYS[3], ARGV[9])
if ARGV[10] == '1' then
  if holder and holder ~= ARGV[1] then return {'active', holder} end
  redis.call('HSET', KEYS[3], ARGV[9], ARGV[1])
elseif holder == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[9])
end
local v = string.format('%d', tonumber(cur) + 1)
redis.call('HSET', KEYS[1], 'version', v, 'doc', ARGV[3], 'op', ARGV[4], 'state', ARGV[8])
if ARGV[11] == '' then redis.call('ZREM', KEYS[4], ARGV[1]) else redis.call('ZADD', KEYS[4], ARGV[11], ARGV[1]) end
if KEYS[5] and ARGV[12] then
  if ARGV[12] == '' then redis.call('ZREM', KEYS[5], ARGV[1]) else redis.call('ZADD', KEYS[5], ARGV[12], ARGV[1]) end
end
return {'ok', v}
`)

func init() {
	scriptNames[createRolloutScript] = "createRollout"
	scriptNames[updateRolloutScript] = "updateRollout"
	scriptNames[trimRolloutsScript] = "trimRollouts"
}

// rdone is cdone for rollouts: ErrRolloutActive is an expected outcome.
func rdone(done func(error)) func(error) {
	d := cdone(done)
	return func(err error) {
		if errors.Is(err, canary.ErrRolloutActive) {
			err = nil
		}
		d(err)
	}
}

// rolloutWake is a rollout's due-index score (see wakeScore).
func rolloutWake(r *canary.Rollout) string {
	w := r.WakeAt()
	if w.IsZero() {
		return ""
	}
	m := w.UnixMilli()
	if w.After(time.UnixMilli(m)) {
		m++
	}
	return strconv.FormatInt(m, 10)
}

func rolloutActiveKey(r *canary.Rollout) string { return r.Env + "/" + r.Flag }

// endedMS is an ended rollout's score in the retention index ("" while it
// has not ended).
func endedMS(r *canary.Rollout) string {
	if !r.State.Terminal() {
		return ""
	}
	at := r.EndedAt
	if at.IsZero() {
		at = r.UpdatedAt
	}
	return ms(at)
}

func decodeRollout(id, doc string, version int64) (canary.StoredRollout, error) {
	sr := canary.StoredRollout{Version: version}
	if err := json.Unmarshal([]byte(doc), &sr.Rollout); err != nil {
		return canary.StoredRollout{}, fmt.Errorf("stored rollout %s is malformed: %v", id, err)
	}
	return sr, nil
}

// CreateRollout implements canary.RolloutStore. Errors: canary.ErrExists,
// canary.ErrRolloutActive, *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) CreateRollout(ctx context.Context, r *canary.Rollout) (sr canary.StoredRollout, err error) {
	done := rdone(s.met.start("create_rollout"))
	defer func() { done(err) }()
	if err := canary.CheckRollout(r); err != nil {
		return sr, err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return sr, fmt.Errorf("encoding rollout %s: %v", r.ID, err)
	}
	active := ""
	if r.State.Active() {
		active = rolloutActiveKey(r)
	}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.rollout(r.ID), s.keys.rolloutsAll(), s.keys.rolloutsActive(), s.keys.rolloutsDue()}
		args := []any{r.ID, doc, newToken(), r.Env, r.Flag, string(r.State), ms(r.CreatedAt), active, rolloutWake(r)}
		res, err := createRolloutScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("create rollout", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			fx.script(createRolloutScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "exists":
			return fmt.Errorf("rollout %s: %w", r.ID, canary.ErrExists)
		case len(res) == 2 && res[0] == "active":
			return fmt.Errorf("flag %q in environment %q has rollout %s: %w", r.Flag, r.Env, res[1], canary.ErrRolloutActive)
		}
		return badReply("create rollout", res)
	})
	if err != nil {
		return canary.StoredRollout{}, err
	}
	// The rollout is stored: a failed trim is not the caller's error, and
	// the next creation tries again.
	if terr := s.trimRollouts(ctx, r.CreatedAt.Add(-RolloutRetention)); terr != nil {
		s.log.Warn("could not delete expired rollouts; the next creation retries", "error", terr)
	}
	return decodeRollout(r.ID, string(doc), 1)
}

// trimRollouts deletes up to maxRolloutTrim rollouts that ended before
// cutoff. It reads their IDs first, so that the script can declare every
// key it deletes, and journals the script only when it deleted something.
// Errors: wrapped canary.ErrUnavailable.
func (s *Store) trimRollouts(ctx context.Context, cutoff time.Time) error {
	return s.cwrite(func(fx *effects) error {
		c := ms(cutoff)
		ids, err := s.rdb.ZRangeByScore(ctx, s.keys.rolloutsEnded(), &goredis.ZRangeBy{Min: "-inf", Max: "(" + c, Count: maxRolloutTrim}).Result()
		if err != nil {
			return ctranslate("trim rollouts", err)
		}
		if len(ids) == 0 {
			return nil
		}
		keys := make([]string, 0, 3+2*len(ids))
		keys = append(keys, s.keys.rolloutsAll(), s.keys.rolloutsDue(), s.keys.rolloutsEnded())
		args := make([]any, 0, 1+len(ids))
		args = append(args, c)
		for _, id := range ids {
			keys = append(keys, s.keys.rollout(id), s.keys.rolloutLease(id))
			args = append(args, id)
		}
		res, err := trimRolloutsScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("trim rollouts", err)
		}
		if len(res) != 2 || res[0] != "ok" {
			return badReply("trim rollouts", res)
		}
		if res[1] != "0" {
			fx.script(trimRolloutsScript, keys, args)
		}
		return nil
	})
}

// Rollout implements canary.RolloutStore. Errors: canary.ErrNotFound,
// wrapped canary.ErrUnavailable.
func (s *Store) Rollout(ctx context.Context, id string) (sr canary.StoredRollout, err error) {
	done := rdone(s.met.start("rollout"))
	defer func() { done(err) }()
	if canary.CheckRolloutID(id) != nil {
		return sr, fmt.Errorf("rollout %q: %w", id, canary.ErrNotFound)
	}
	if s.closed.Load() {
		return sr, cunavailable(errClosed)
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.rollout(id), "version", "doc").Result()
	if err != nil {
		return sr, ctranslate("rollout", err)
	}
	return rolloutFromHash(id, vals)
}

func rolloutFromHash(id string, vals []any) (canary.StoredRollout, error) {
	doc, v, err := versionedDoc("rollout", id, vals)
	if err != nil {
		return canary.StoredRollout{}, err
	}
	return decodeRollout(id, doc, v)
}

// ActiveRollout implements canary.RolloutStore. Errors: canary.ErrNotFound,
// wrapped canary.ErrUnavailable.
func (s *Store) ActiveRollout(ctx context.Context, env, flag string) (sr canary.StoredRollout, err error) {
	done := rdone(s.met.start("active_rollout"))
	defer func() { done(err) }()
	if s.closed.Load() {
		return sr, cunavailable(errClosed)
	}
	id, err := s.rdb.HGet(ctx, s.keys.rolloutsActive(), env+"/"+flag).Result()
	if errors.Is(err, goredis.Nil) {
		return sr, fmt.Errorf("flag %q in environment %q has no active rollout: %w", flag, env, canary.ErrNotFound)
	}
	if err != nil {
		return sr, ctranslate("active rollout", err)
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.rollout(id), "version", "doc").Result()
	if err != nil {
		return sr, ctranslate("active rollout", err)
	}
	return rolloutFromHash(id, vals)
}

// Rollouts implements canary.RolloutStore. Errors: *canary.ValidationError
// (limit), wrapped canary.ErrUnavailable.
func (s *Store) Rollouts(ctx context.Context, q canary.RolloutQuery) (out []canary.StoredRollout, err error) {
	done := rdone(s.met.start("rollouts"))
	defer func() { done(err) }()
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultRolloutPage, canary.MaxRolloutPage)
	if err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	out = []canary.StoredRollout{}
	const chunk = 256
	for offset := int64(0); ; offset += chunk {
		ids, err := s.rdb.ZRevRange(ctx, s.keys.rolloutsAll(), offset, offset+chunk-1).Result()
		if err != nil {
			return nil, ctranslate("rollouts", err)
		}
		cmds := make([]*goredis.SliceCmd, len(ids))
		if len(ids) > 0 {
			if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for i, id := range ids {
					cmds[i] = p.HMGet(ctx, s.keys.rollout(id), "version", "doc", "env", "flag", "state")
				}
				return nil
			}); err != nil {
				return nil, ctranslate("rollouts", err)
			}
		}
		for i, id := range ids {
			vals := cmds[i].Val()
			if len(vals) < 5 || vals[0] == nil {
				continue
			}
			env, _ := vals[2].(string)
			flag, _ := vals[3].(string)
			state, _ := vals[4].(string)
			if !q.Matches(&canary.Rollout{Env: env, Flag: flag, State: canary.RolloutState(state)}) {
				continue
			}
			sr, err := rolloutFromHash(id, vals[:2])
			if err != nil {
				return nil, err
			}
			out = append(out, sr)
			if len(out) == limit {
				return out, nil
			}
		}
		if len(ids) < chunk {
			return out, nil
		}
	}
}

// UpdateRollout implements canary.RolloutStore. Errors: canary.ErrNotFound,
// canary.ErrConflict, canary.ErrLeaseLost, canary.ErrRolloutActive,
// *canary.ValidationError, wrapped canary.ErrUnavailable.
func (s *Store) UpdateRollout(ctx context.Context, u canary.RolloutUpdate) (sr canary.StoredRollout, err error) {
	done := rdone(s.met.start("update_rollout"))
	defer func() { done(err) }()
	if err := canary.CheckRolloutUpdate(u); err != nil {
		return sr, err
	}
	r := u.Rollout
	doc, err := json.Marshal(r)
	if err != nil {
		return sr, fmt.Errorf("encoding rollout %s: %v", r.ID, err)
	}
	active := "0"
	if r.State.Active() {
		active = "1"
	}
	var version int64
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.rollout(r.ID), s.keys.rolloutLease(r.ID), s.keys.rolloutsActive(), s.keys.rolloutsDue(), s.keys.rolloutsEnded()}
		args := []any{r.ID, strconv.FormatInt(u.IfVersion, 10), doc, newToken(), strconv.FormatInt(u.Token, 10),
			r.Env, r.Flag, string(r.State), rolloutActiveKey(r), active, rolloutWake(r), endedMS(r)}
		res, err := updateRolloutScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("update rollout", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			if version, err = strconv.ParseInt(res[1], 10, 64); err != nil {
				return badReply("update rollout", res)
			}
			fx.script(updateRolloutScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("rollout %s: %w", r.ID, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "fenced":
			return fmt.Errorf("rollout %s: token %d, current lease %s: %w", r.ID, u.Token, res[1], canary.ErrLeaseLost)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("rollout %s is at version %s, not %d: %w", r.ID, res[1], u.IfVersion, canary.ErrConflict)
		case len(res) == 1 && res[0] == "moved":
			return &canary.ValidationError{Problems: []canary.FieldError{{Field: "rollout", Message: "a rollout's env and flag cannot change"}}}
		case len(res) == 2 && res[0] == "active":
			return fmt.Errorf("flag %q in environment %q has rollout %s: %w", r.Flag, r.Env, res[1], canary.ErrRolloutActive)
		}
		return badReply("update rollout", res)
	})
	if err != nil {
		return canary.StoredRollout{}, err
	}
	return decodeRollout(r.ID, string(doc), version)
}

// DueRollouts implements canary.RolloutStore. Errors: wrapped
// canary.ErrUnavailable.
func (s *Store) DueRollouts(ctx context.Context, now time.Time, limit int) (out []string, err error) {
	done := rdone(s.met.start("due_rollouts"))
	defer func() { done(err) }()
	out = []string{}
	if limit <= 0 {
		return out, nil
	}
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	ids, err := s.rdb.ZRangeByScore(ctx, s.keys.rolloutsDue(), &goredis.ZRangeBy{Min: "-inf", Max: ms(now), Count: int64(limit)}).Result()
	if err != nil {
		return nil, ctranslate("due rollouts", err)
	}
	return append(out, ids...), nil
}

// AcquireRolloutLease implements canary.RolloutStore with the analysis
// runs' lease script. Errors: canary.ErrNotFound, canary.ErrLeaseHeld,
// *canary.ValidationError, wrapped canary.ErrUnavailable.
func (s *Store) AcquireRolloutLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (l canary.Lease, err error) {
	done := rdone(s.met.start("acquire_rollout_lease"))
	defer func() { done(err) }()
	return s.acquireLease(ctx, s.rolloutLeased(id), owner, now, ttl)
}

// ReleaseRolloutLease implements canary.RolloutStore. Errors: wrapped
// canary.ErrUnavailable.
func (s *Store) ReleaseRolloutLease(ctx context.Context, l canary.Lease) (err error) {
	done := rdone(s.met.start("release_rollout_lease"))
	defer func() { done(err) }()
	return s.releaseLease(ctx, s.rolloutLeased(l.RunID), l)
}
