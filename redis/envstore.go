package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

// writeScript creates an environment (ARGV[1] "create") or saves a new
// version of one (ARGV[1] "save"), atomically: it checks the version, writes
// the document, bumps the version, sets updatedAt, appends the audit entry
// to the log and to the per-flag index of every changed flag, trims the log
// and publishes the change.
//
// KEYS: meta, log, flag set, then one per-flag index per changed flag.
// ARGV: mode, expected version, doc, updatedAt, entry JSON, op token, audit
// cap, channel, env, clock (milliseconds, or "" to read the server's TIME;
// the embedded store's journal replays with the clock recorded), then the
// changed flag keys (matching KEYS[4..]).
//
// The op token makes the script idempotent: go-redis retries a command whose
// reply was lost, and a retry of a write that was applied must succeed
// rather than report a conflict with itself.
var writeScript = goredis.NewScript(`
local function pad(s, w)
  if #s < w then return string.rep('0', w - #s) .. s end
  return s
end
local meta = KEYS[1]
local cur = redis.call('HGET', meta, 'version')
if cur and redis.call('HGET', meta, 'op') == ARGV[6] then
  return {'ok', cur, redis.call('HGET', meta, 'updatedAt'), redis.call('HGET', meta, 'lastid')}
end
local v
if ARGV[1] == 'create' then
  if cur then return {'exists'} end
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('DEL', string.sub(KEYS[3], 1, #KEYS[3] - 5) .. 'flag:' .. f)
  end
  redis.call('DEL', KEYS[2], KEYS[3])
  v = 1
else
  if not cur then return {'notfound'} end
  if cur ~= ARGV[2] then return {'conflict', cur} end
  v = tonumber(cur) + 1
end
local ms
if ARGV[10] ~= '' then
  ms = tonumber(ARGV[10])
else
  local t = redis.call('TIME')
  ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local last = tonumber(redis.call('HGET', meta, 'lastms') or '0')
if ms < last then ms = last end
local vs = string.format('%d', v)
local mss = string.format('%d', ms)
local id = pad(mss, 13) .. '-' .. pad(vs, 10)
redis.call('HSET', meta, 'version', vs, 'doc', ARGV[3], 'updatedAt', ARGV[4], 'lastms', mss, 'op', ARGV[6], 'lastid', id)
redis.call('ZADD', KEYS[2], vs, id .. ' ' .. ARGV[5])
local cap = tonumber(ARGV[7])
local n = redis.call('ZCARD', KEYS[2])
local oldest = nil
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
  oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]
end
for i = 4, #KEYS do
  redis.call('ZADD', KEYS[i], vs, vs)
  redis.call('SADD', KEYS[3], ARGV[i + 7])
  if oldest then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. oldest) end
end
redis.call('PUBLISH', ARGV[8], vs .. ' ' .. ARGV[9])
return {'ok', vs, ARGV[4], id}
`)

// deleteScript removes an environment with its log and per-flag indexes and
// publishes version 0, but only if its version is ARGV[4] (absent, "" or "0":
// any version), so the check and the delete are one atomic step. The
// per-flag index keys are derived inside the script; they share the
// environment's hash tag, so they live in the same Cluster slot.
//
// KEYS: meta, log, flag set. ARGV: per-flag index key prefix, channel, env,
// expected version. Reply: 1 deleted, 0 absent, {'conflict', version}.
// Journal records written before ARGV[4] existed replay as unconditional.
var deleteScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then return 0 end
local want = ARGV[4]
if want and want ~= '' and want ~= '0' and cur ~= want then return {'conflict', cur} end
for _, f in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('DEL', ARGV[1] .. f) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], '0 ' .. ARGV[3])
return 1
`)

// auditScript reads one page of the audit log, newest first, in one round
// trip: nil when the environment does not exist.
//
// KEYS: meta, log, per-flag index (unused for ARGV[3] "all").
// ARGV: upper score bound ("+inf" or "(V"), count, "all" or "flag".
var auditScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[3] == 'all' then
  return redis.call('ZREVRANGEBYSCORE', KEYS[2], ARGV[1], '-inf', 'LIMIT', 0, ARGV[2])
end
local out = {}
for _, v in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[3], ARGV[1], '-inf', 'LIMIT', 0, ARGV[2])) do
  local m = redis.call('ZRANGEBYSCORE', KEYS[2], v, v)
  if #m == 0 then break end
  for _, e in ipairs(m) do out[#out + 1] = e end
end
return out
`)

// storedEntry is an audit entry as kept in the log; ID, version and
// environment are implied by where and how it is stored.
type storedEntry struct {
	Time    time.Time          `json:"t"`
	Actor   string             `json:"a"`
	Action  string             `json:"x"`
	Reason  string             `json:"r,omitempty"`
	Changes []flags.FlagChange `json:"c,omitempty"`
}

func checkEnv(env string) error {
	if env == "" {
		return &flags.InputError{Field: "environment", Problem: "is required"}
	}
	return nil
}

// CreateEnvironment stores a new environment at version 1 holding doc and
// records entry. Errors: flags.ErrExists, *flags.InputError for an empty
// name, wrapped flags.ErrUnavailable.
func (s *Store) CreateEnvironment(ctx context.Context, name string, doc []byte, entry flags.AuditEntry) (snap flags.Snapshot, err error) {
	done := s.met.start("create_environment")
	defer func() { done(err) }()
	if err := checkEnv(name); err != nil {
		return flags.Snapshot{}, err
	}
	err = s.write(func(fx *effects) error {
		snap, err = s.runWrite(ctx, fx, "create", name, 0, doc, entry)
		if err == nil || errors.Is(err, flags.ErrExists) {
			// The index is a separate key (another Cluster slot); adding is
			// idempotent, so a create that failed between the two steps is
			// repaired by its retry, which reports ErrExists.
			if ierr := s.rdb.SAdd(ctx, s.keys.environments(), name).Err(); ierr != nil {
				return translate("create environment", ierr)
			}
			fx.command("SADD", s.keys.environments(), name)
		}
		return err
	})
	return snap, err
}

// Save atomically replaces env's flag set with doc and appends entry when
// the current version is expected. Errors: flags.ErrConflict,
// flags.ErrNotFound, *flags.InputError, wrapped flags.ErrUnavailable.
func (s *Store) Save(ctx context.Context, env string, expected int64, doc []byte, entry flags.AuditEntry) (snap flags.Snapshot, err error) {
	done := s.met.start("save")
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return flags.Snapshot{}, err
	}
	err = s.write(func(fx *effects) error {
		snap, err = s.runWrite(ctx, fx, "save", env, expected, doc, entry)
		return err
	})
	return snap, err
}

func (s *Store) runWrite(ctx context.Context, fx *effects, mode, env string, expected int64, doc []byte, entry flags.AuditEntry) (flags.Snapshot, error) {
	if s.closed.Load() {
		return flags.Snapshot{}, errClosed
	}
	at := entry.Time
	if at.IsZero() {
		at = time.Now()
	}
	at = at.UTC()
	body, err := json.Marshal(storedEntry{Time: at, Actor: entry.Actor, Action: entry.Action, Reason: entry.Reason, Changes: entry.Changes})
	if err != nil {
		return flags.Snapshot{}, fmt.Errorf("encoding the audit entry: %v", err)
	}
	changed := changedFlags(entry.Changes)
	keys := make([]string, 0, 3+len(changed))
	keys = append(keys, s.keys.meta(env), s.keys.log(env), s.keys.flagSet(env))
	args := make([]any, 0, 10+len(changed))
	args = append(args, mode, strconv.FormatInt(expected, 10), doc, at.Format(time.RFC3339Nano), body,
		newToken(), s.auditLimit, s.keys.changes(), env, "")
	for _, f := range changed {
		keys = append(keys, s.keys.flagIndex(env, f))
		args = append(args, f)
	}
	op := "save"
	if mode == "create" {
		op = "create environment"
	}
	res, err := writeScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		return flags.Snapshot{}, translate(op, err)
	}
	switch {
	case len(res) == 4 && res[0] == "ok":
		v, verr := strconv.ParseInt(res[1], 10, 64)
		t, terr := time.Parse(time.RFC3339Nano, res[2])
		ms, _, _ := strings.Cut(res[3], "-")
		if verr != nil || terr != nil || ms == "" {
			return flags.Snapshot{}, fmt.Errorf("redis %s: malformed reply %q", op, res)
		}
		args[9] = ms // replaying the journal must reproduce the same entry ID
		fx.script(writeScript, keys, args)
		return flags.Snapshot{Env: env, Version: v, Document: slices.Clone(doc), UpdatedAt: t}, nil
	case len(res) >= 1 && res[0] == "exists":
		return flags.Snapshot{}, fmt.Errorf("environment %q: %w", env, flags.ErrExists)
	case len(res) >= 1 && res[0] == "notfound":
		return flags.Snapshot{}, fmt.Errorf("environment %q: %w", env, flags.ErrNotFound)
	case len(res) == 2 && res[0] == "conflict":
		return flags.Snapshot{}, fmt.Errorf("environment %q is at version %s, not %d: %w", env, res[1], expected, flags.ErrConflict)
	}
	return flags.Snapshot{}, fmt.Errorf("redis %s: unexpected reply %q", op, res)
}

// changedFlags lists the distinct flag keys an entry changed, sorted.
func changedFlags(cs []flags.FlagChange) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Key != "" {
			out = append(out, c.Key)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// DeleteEnvironment removes an environment, its flag set and its audit log
// and publishes the deletion (a Change with Version 0). With ifVersion 0 it
// deletes whatever version is stored; otherwise one script checks that the
// version is ifVersion and deletes, so no write can land in between.
// Errors: flags.ErrNotFound, flags.ErrConflict (nothing deleted),
// *flags.InputError, wrapped flags.ErrUnavailable.
func (s *Store) DeleteEnvironment(ctx context.Context, name string, ifVersion int64) (err error) {
	done := s.met.start("delete_environment")
	defer func() { done(err) }()
	if err := checkEnv(name); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	return s.write(func(fx *effects) error {
		keys := []string{s.keys.meta(name), s.keys.log(name), s.keys.flagSet(name)}
		args := []any{s.keys.flagIndexPrefix(name), s.keys.changes(), name, strconv.FormatInt(ifVersion, 10)}
		res, err := deleteScript.Run(ctx, s.rdb, keys, args...).Result()
		if err != nil {
			return translate("delete environment", err)
		}
		var deleted bool
		switch v := res.(type) {
		case int64:
			deleted = v == 1
		case []any:
			if len(v) == 2 && v[0] == "conflict" {
				// The environment is still there: its index entry stays.
				return fmt.Errorf("environment %q is at version %v, not %d; nothing was deleted: %w", name, v[1], ifVersion, flags.ErrConflict)
			}
			return fmt.Errorf("redis delete environment: unexpected reply %v", v)
		default:
			return fmt.Errorf("redis delete environment: unexpected reply %v", v)
		}
		if deleted {
			// Recorded as run: replayed in order, the version check passes again.
			fx.script(deleteScript, keys, args)
		}
		// The index is a separate key (another Cluster slot); removing is
		// idempotent, so a delete that failed between the two steps is
		// repaired by its retry, which reports ErrNotFound.
		if ierr := s.rdb.SRem(ctx, s.keys.environments(), name).Err(); ierr != nil {
			return translate("delete environment", ierr)
		}
		fx.command("SREM", s.keys.environments(), name)
		if !deleted {
			return fmt.Errorf("environment %q: %w", name, flags.ErrNotFound)
		}
		return nil
	})
}

// Environments lists every environment sorted by name. Errors: wrapped
// flags.ErrUnavailable.
func (s *Store) Environments(ctx context.Context) (out []flags.Environment, err error) {
	done := s.met.start("environments")
	defer func() { done(err) }()
	snaps, err := s.readAll(ctx, "environments", false)
	if err != nil {
		return nil, err
	}
	out = make([]flags.Environment, len(snaps))
	for i, sn := range snaps {
		out[i] = flags.Environment{Name: sn.Env, Version: sn.Version, UpdatedAt: sn.UpdatedAt}
	}
	return out, nil
}

// Snapshot reads env's current flag set. Errors: flags.ErrNotFound,
// *flags.InputError, wrapped flags.ErrUnavailable.
func (s *Store) Snapshot(ctx context.Context, env string) (snap flags.Snapshot, err error) {
	done := s.met.start("snapshot")
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return flags.Snapshot{}, err
	}
	if s.closed.Load() {
		return flags.Snapshot{}, errClosed
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.meta(env), "version", "updatedAt", "doc").Result()
	if err != nil {
		return flags.Snapshot{}, translate("snapshot", err)
	}
	snap, ok, err := decodeMeta(env, vals, true)
	if err != nil {
		return flags.Snapshot{}, err
	}
	if !ok {
		return flags.Snapshot{}, fmt.Errorf("environment %q: %w", env, flags.ErrNotFound)
	}
	return snap, nil
}

// Snapshots reads every environment's current flag set, sorted by name.
// Errors: wrapped flags.ErrUnavailable.
func (s *Store) Snapshots(ctx context.Context) (out []flags.Snapshot, err error) {
	done := s.met.start("snapshots")
	defer func() { done(err) }()
	return s.readAll(ctx, "snapshots", true)
}

// readAll reads the environment index, then every environment's metadata in
// one pipeline. Names whose environment has gone are skipped.
func (s *Store) readAll(ctx context.Context, op string, withDoc bool) ([]flags.Snapshot, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	names, err := s.rdb.SMembers(ctx, s.keys.environments()).Result()
	if err != nil {
		return nil, translate(op, err)
	}
	slices.Sort(names)
	fields := []string{"version", "updatedAt"}
	if withDoc {
		fields = append(fields, "doc")
	}
	cmds := make([]*goredis.SliceCmd, len(names))
	if len(names) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, n := range names {
				cmds[i] = p.HMGet(ctx, s.keys.meta(n), fields...)
			}
			return nil
		})
		if err != nil {
			return nil, translate(op, err)
		}
	}
	out := make([]flags.Snapshot, 0, len(names))
	for i, n := range names {
		snap, ok, err := decodeMeta(n, cmds[i].Val(), withDoc)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, snap)
		}
	}
	return out, nil
}

// decodeMeta turns an HMGET of version, updatedAt[, doc] into a Snapshot;
// ok is false when the environment does not exist.
func decodeMeta(env string, vals []any, withDoc bool) (flags.Snapshot, bool, error) {
	if len(vals) < 2 || vals[0] == nil {
		return flags.Snapshot{}, false, nil
	}
	vs, _ := vals[0].(string)
	ts, _ := vals[1].(string)
	v, verr := strconv.ParseInt(vs, 10, 64)
	t, terr := time.Parse(time.RFC3339Nano, ts)
	if verr != nil || terr != nil {
		return flags.Snapshot{}, false, fmt.Errorf("environment %q: stored metadata is malformed (version %q, updatedAt %q)", env, vs, ts)
	}
	snap := flags.Snapshot{Env: env, Version: v, UpdatedAt: t}
	if withDoc && len(vals) > 2 {
		d, _ := vals[2].(string)
		snap.Document = []byte(d)
	}
	return snap, true, nil
}

// Audit lists env's audit entries newest first, optionally only those that
// changed q.Flag. The cursor is the ID of the last entry of the previous
// page. Errors: flags.ErrNotFound, *flags.InputError (limit, cursor),
// wrapped flags.ErrUnavailable.
func (s *Store) Audit(ctx context.Context, env string, q flags.AuditQuery) (page flags.AuditPage, err error) {
	done := s.met.start("audit")
	defer func() { done(err) }()
	if err := checkEnv(env); err != nil {
		return flags.AuditPage{}, err
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > 500:
		return flags.AuditPage{}, &flags.InputError{Field: "limit", Problem: "must be 1 to 500"}
	}
	upper := "+inf"
	if q.Cursor != "" {
		v, ok := cursorVersion(q.Cursor)
		if !ok {
			return flags.AuditPage{}, &flags.InputError{Field: "cursor", Problem: "is not the next value of an earlier page"}
		}
		upper = "(" + strconv.FormatInt(v, 10)
	}
	if s.closed.Load() {
		return flags.AuditPage{}, errClosed
	}
	mode, idx := "all", s.keys.log(env)
	if q.Flag != "" {
		mode, idx = "flag", s.keys.flagIndex(env, q.Flag)
	}
	members, err := auditScript.Run(ctx, s.rdb, []string{s.keys.meta(env), s.keys.log(env), idx}, upper, limit+1, mode).StringSlice()
	if errors.Is(err, goredis.Nil) {
		return flags.AuditPage{}, fmt.Errorf("environment %q: %w", env, flags.ErrNotFound)
	}
	if err != nil {
		return flags.AuditPage{}, translate("audit", err)
	}
	page.Entries = make([]flags.AuditEntry, 0, min(len(members), limit))
	for _, m := range members {
		if len(page.Entries) == limit {
			page.Next = page.Entries[limit-1].ID
			break
		}
		e, err := decodeEntry(env, m)
		if err != nil {
			return flags.AuditPage{}, err
		}
		page.Entries = append(page.Entries, e)
	}
	return page, nil
}

// cursorVersion extracts the version from an entry ID "MILLIS-VERSION".
func cursorVersion(c string) (int64, bool) {
	ms, vs, ok := strings.Cut(c, "-")
	if !ok || ms == "" || strings.Trim(ms, "0123456789") != "" {
		return 0, false
	}
	v, err := strconv.ParseInt(vs, 10, 64)
	return v, err == nil && v > 0 && strings.Trim(vs, "0123456789") == ""
}

func decodeEntry(env, member string) (flags.AuditEntry, error) {
	id, body, ok := strings.Cut(member, " ")
	v, vok := cursorVersion(id)
	var se storedEntry
	if !ok || !vok || json.Unmarshal([]byte(body), &se) != nil {
		return flags.AuditEntry{}, fmt.Errorf("environment %q: a stored audit entry is malformed", env)
	}
	return flags.AuditEntry{ID: id, Env: env, Version: v, Time: se.Time, Actor: se.Actor, Action: se.Action, Reason: se.Reason, Changes: se.Changes}, nil
}

// write runs a mutating operation; fn reports each change it made to fx.
// For an embedded store the changes are durable before write returns.
func (s *Store) write(fn func(fx *effects) error) error {
	if s.emb == nil {
		return fn(nil)
	}
	return s.emb.write(fn)
}
