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

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
)

// The canary analysis store: templates, runs, measurements and leases.
//
// Keys (besides those listed in keyspace):
//
//	PREFIX{templates}:docs      hash: name → template JSON (without its version)
//	PREFIX{templates}:versions  hash: name → current version
//	PREFIX{templates}:updated   hash: name → updatedAt (RFC 3339)
//	PREFIX{templates}:seq       hash: name → highest version ever (kept across deletes)
//	PREFIX{templates}:ops       hash: name → op token of the last put (idempotent retries)
//	PREFIX{run:ID}:run          hash: version, doc (run JSON), op, created (ms), template, phase, wake (ms, "" once ended)
//	PREFIX{run:ID}:steps        sorted set: step JSON scored by step number
//	PREFIX{run:ID}:lease        hash: owner ("" when released), token, expires (ms)
//	PREFIX runs                 sorted set: run IDs by creation (ms)
//	PREFIX runs:template:NAME   sorted set: one template's run IDs by creation (ms)
//	PREFIX runs:due             sorted set: IDs of runs not ended, by wake time (ms, rounded up)
//
// A run's keys share the hash tag {run:ID}, so each run write — the
// version check, the fencing-token check, the measurement append and the
// new state — is one atomic script on a Cluster too. The three run indexes
// are separate keys in other slots, maintained beside the scripts: entries
// are added before a run is created (so a crash leaves at worst an entry
// without a run, which readers skip and DueRuns removes) and moved after
// each update; DueRuns compares every entry it returns with the run's own
// wake time and repairs the index when a crash left it behind.
//
// Lease times are the callers' clocks (milliseconds), not the server's, so
// replicas need roughly synchronised clocks; the fencing token, not the
// expiry, is what keeps a step from being recorded twice.

func (k keyspace) templateTag() string       { return k.prefix + "{templates}:" }
func (k keyspace) templateDocs() string      { return k.templateTag() + "docs" }
func (k keyspace) templateVersions() string  { return k.templateTag() + "versions" }
func (k keyspace) templateUpdated() string   { return k.templateTag() + "updated" }
func (k keyspace) templateSeq() string       { return k.templateTag() + "seq" }
func (k keyspace) templateOps() string       { return k.templateTag() + "ops" }
func (k keyspace) runTag(id string) string   { return k.prefix + "{run:" + id + "}:" }
func (k keyspace) run(id string) string      { return k.runTag(id) + "run" }
func (k keyspace) runSteps(id string) string { return k.runTag(id) + "steps" }
func (k keyspace) runLease(id string) string { return k.runTag(id) + "lease" }
func (k keyspace) runsAll() string           { return k.prefix + "runs" }
func (k keyspace) runsDue() string           { return k.prefix + "runs:due" }
func (k keyspace) runsOf(tpl string) string  { return k.prefix + "runs:template:" + tpl }
func (k keyspace) templateKeys() []string {
	return []string{k.templateDocs(), k.templateVersions(), k.templateUpdated(), k.templateSeq(), k.templateOps()}
}

var _ canary.Store = (*Store)(nil)

// putTemplateScript creates or replaces a template at one above the highest
// version its name ever had.
// KEYS: docs, versions, updated, seq, ops. ARGV: name, doc, updatedAt,
// mode ("create" or "put"), expected version ("0": any), op token.
var putTemplateScript = goredis.NewScript(`
local name = ARGV[1]
local cur = redis.call('HGET', KEYS[2], name)
if cur and redis.call('HGET', KEYS[5], name) == ARGV[6] then return {'ok', cur} end
if ARGV[4] == 'create' and cur then return {'exists', cur} end
if ARGV[5] ~= '0' then
  if not cur then return {'notfound'} end
  if cur ~= ARGV[5] then return {'conflict', cur} end
end
local v = string.format('%d', tonumber(redis.call('HGET', KEYS[4], name) or '0') + 1)
redis.call('HSET', KEYS[1], name, ARGV[2])
redis.call('HSET', KEYS[2], name, v)
redis.call('HSET', KEYS[3], name, ARGV[3])
redis.call('HSET', KEYS[4], name, v)
redis.call('HSET', KEYS[5], name, ARGV[6])
return {'ok', v}
`)

// deleteTemplateScript removes a template but not its version counter.
// KEYS: docs, versions, updated, seq, ops. ARGV: name, expected version ("0": any).
var deleteTemplateScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return {'notfound'} end
if ARGV[2] ~= '0' and cur ~= ARGV[2] then return {'conflict', cur} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return {'ok'}
`)

// createRunScript stores a new run at version 1.
// KEYS: run. ARGV: doc, op token, created (ms), template, phase, wake.
var createRunScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[2] then return {'ok', redis.call('HGET', KEYS[1], 'version')} end
  return {'exists'}
end
redis.call('HSET', KEYS[1], 'version', '1', 'doc', ARGV[1], 'op', ARGV[2], 'created', ARGV[3], 'template', ARGV[4], 'phase', ARGV[5], 'wake', ARGV[6])
return {'ok', '1'}
`)

// updateRunScript replaces a run at the expected version, fenced by the
// lease token when one is given, appending a step that is not yet stored.
// KEYS: run, steps, lease. ARGV: expected version, doc, op token, token
// ("0": none), step number ("" for none), step JSON, phase, wake.
var updateRunScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then return {'notfound'} end
if redis.call('HGET', KEYS[1], 'op') == ARGV[3] then return {'ok', cur} end
if ARGV[4] ~= '0' then
  local lt = redis.call('HGET', KEYS[3], 'token') or '0'
  local lo = redis.call('HGET', KEYS[3], 'owner') or ''
  if lt ~= ARGV[4] or lo == '' then return {'fenced', lt} end
end
if cur ~= ARGV[1] then return {'conflict', cur} end
if ARGV[5] ~= '' then
  if redis.call('ZCOUNT', KEYS[2], ARGV[5], ARGV[5]) > 0 then return {'steptaken'} end
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
end
local v = string.format('%d', tonumber(cur) + 1)
redis.call('HSET', KEYS[1], 'version', v, 'doc', ARGV[2], 'op', ARGV[3], 'phase', ARGV[7], 'wake', ARGV[8])
return {'ok', v}
`)

// acquireLeaseScript gives owner the lease: the same token when owner
// holds it unexpired, a new one when it is free or lapsed.
// KEYS: lease, run. ARGV: owner, now (ms), ttl (ms).
var acquireLeaseScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {'notfound'} end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
local tok = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
local now = tonumber(ARGV[2])
local live = owner ~= '' and now < exp
if live and owner ~= ARGV[1] then return {'held', owner, string.format('%d', exp)} end
if not live then tok = tok + 1 end
local ts = string.format('%d', tok)
local e = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', ts, 'expires', e)
return {'ok', ts, e}
`)

// renewLeaseScript extends the lease while the token is current.
// KEYS: lease, run. ARGV: owner, token, now (ms), ttl (ms).
var renewLeaseScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {'notfound'} end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local tok = redis.call('HGET', KEYS[1], 'token') or '0'
if owner == '' or owner ~= ARGV[1] or tok ~= ARGV[2] then return {'lost', tok} end
local e = string.format('%d', tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'expires', e)
return {'ok', tok, e}
`)

// releaseLeaseScript frees the lease, keeping its token, when the token is
// current. KEYS: lease. ARGV: owner, token.
var releaseLeaseScript = goredis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner == '' or owner ~= ARGV[1] or (redis.call('HGET', KEYS[1], 'token') or '0') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'expires', '0')
return 1
`)

// stepsScript reads a page of a run's steps, or nil when the run does not
// exist. KEYS: run, steps. ARGV: lower bound ("(N"), count.
var stepsScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
`)

func init() {
	// The embedded store's journal replays these scripts by name.
	for sc, name := range map[*goredis.Script]string{
		putTemplateScript: "putTemplate", deleteTemplateScript: "deleteTemplate",
		createRunScript: "createRun", updateRunScript: "updateRun",
		acquireLeaseScript: "acquireLease", renewLeaseScript: "renewLease", releaseLeaseScript: "releaseLease",
	} {
		scriptNames[sc] = name
	}
}

// unavailable is a store outage reported to canary callers: it reads like
// the store's own error and matches both canary.ErrUnavailable and
// flags.ErrUnavailable.
type unavailable struct{ err error }

func (u *unavailable) Error() string   { return u.err.Error() }
func (u *unavailable) Unwrap() []error { return []error{u.err, canary.ErrUnavailable} }

// ctranslate is translate for the canary store.
func ctranslate(op string, err error) error {
	return cunavailable(translate(op, err))
}

// cunavailable marks an error wrapping flags.ErrUnavailable as
// canary.ErrUnavailable too.
func cunavailable(err error) error {
	if errors.Is(err, flags.ErrUnavailable) && !errors.Is(err, canary.ErrUnavailable) {
		return &unavailable{err}
	}
	return err
}

// cdone wraps the metrics callback: outcomes callers expect are not errors.
func cdone(done func(error)) func(error) {
	return func(err error) {
		var ve *canary.ValidationError
		switch {
		case errors.Is(err, canary.ErrNotFound), errors.Is(err, canary.ErrExists), errors.Is(err, canary.ErrConflict),
			errors.Is(err, canary.ErrLeaseHeld), errors.Is(err, canary.ErrLeaseLost), errors.Is(err, canary.ErrStepRecorded),
			errors.As(err, &ve):
			err = nil
		}
		done(err)
	}
}

// cwrite is write for canary operations: journal failures of the embedded
// store are outages too.
func (s *Store) cwrite(fn func(fx *effects) error) error {
	if s.closed.Load() {
		return cunavailable(errClosed)
	}
	return cunavailable(s.write(fn))
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// wakeScore is a run's due-index score: its wake time rounded up to the
// millisecond (so an entry at or before now is really due), "" once ended.
func wakeScore(r *canary.Run) string {
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

func badReply(op string, res []string) error {
	return fmt.Errorf("redis %s: unexpected reply %q", op, res)
}

// ---- templates ----

// PutTemplate implements canary.Store. Errors: canary.ErrExists,
// canary.ErrNotFound, canary.ErrConflict, *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) PutTemplate(ctx context.Context, t *canary.Template, o canary.TemplateWrite) (st canary.StoredTemplate, err error) {
	done := cdone(s.met.start("put_template"))
	defer func() { done(err) }()
	if t == nil || t.Name == "" {
		return st, &canary.ValidationError{Problems: []canary.FieldError{{Field: "name", Message: "required"}}}
	}
	cp := *t
	cp.Version = 0
	doc, err := json.Marshal(&cp)
	if err != nil {
		return st, fmt.Errorf("encoding template %q: %v", t.Name, err)
	}
	mode := "put"
	if o.Create {
		mode = "create"
	}
	at := o.At.UTC()
	err = s.cwrite(func(fx *effects) error {
		keys := s.keys.templateKeys()
		args := []any{t.Name, doc, at.Format(time.RFC3339Nano), mode, strconv.Itoa(o.IfVersion), newToken()}
		res, err := putTemplateScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("put template", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			v, perr := strconv.Atoi(res[1])
			if perr != nil {
				return badReply("put template", res)
			}
			fx.script(putTemplateScript, keys, args)
			cp.Version = v
			st = canary.StoredTemplate{Template: cp, UpdatedAt: at}
			return nil
		case len(res) >= 1 && res[0] == "exists":
			return fmt.Errorf("template %q: %w", t.Name, canary.ErrExists)
		case len(res) >= 1 && res[0] == "notfound":
			return fmt.Errorf("template %q: %w", t.Name, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("template %q is at version %s, not %d: %w", t.Name, res[1], o.IfVersion, canary.ErrConflict)
		}
		return badReply("put template", res)
	})
	if err != nil {
		return canary.StoredTemplate{}, err
	}
	// Decode what was stored, so the caller gets no slices shared with t.
	var out canary.StoredTemplate
	if jerr := json.Unmarshal(doc, &out.Template); jerr != nil {
		return canary.StoredTemplate{}, fmt.Errorf("template %q: %v", t.Name, jerr)
	}
	out.Version, out.UpdatedAt = st.Version, st.UpdatedAt
	return out, nil
}

// Template implements canary.Store. Errors: canary.ErrNotFound, wrapped
// canary.ErrUnavailable.
func (s *Store) Template(ctx context.Context, name string) (st canary.StoredTemplate, err error) {
	done := cdone(s.met.start("template"))
	defer func() { done(err) }()
	if s.closed.Load() {
		return st, cunavailable(errClosed)
	}
	var doc, ver, upd *goredis.StringCmd
	_, err = s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		doc = p.HGet(ctx, s.keys.templateDocs(), name)
		ver = p.HGet(ctx, s.keys.templateVersions(), name)
		upd = p.HGet(ctx, s.keys.templateUpdated(), name)
		return nil
	})
	if errors.Is(err, goredis.Nil) || (err == nil && errors.Is(doc.Err(), goredis.Nil)) {
		return st, fmt.Errorf("template %q: %w", name, canary.ErrNotFound)
	}
	if err != nil {
		return st, ctranslate("template", err)
	}
	return decodeStoredTemplate(name, doc.Val(), ver.Val(), upd.Val())
}

func decodeStoredTemplate(name, doc, ver, upd string) (canary.StoredTemplate, error) {
	var st canary.StoredTemplate
	v, verr := strconv.Atoi(ver)
	t, terr := time.Parse(time.RFC3339Nano, upd)
	if verr != nil || terr != nil || json.Unmarshal([]byte(doc), &st.Template) != nil {
		return canary.StoredTemplate{}, fmt.Errorf("stored template %q is malformed", name)
	}
	st.Version, st.UpdatedAt = v, t
	return st, nil
}

// Templates implements canary.Store. Errors: wrapped canary.ErrUnavailable.
func (s *Store) Templates(ctx context.Context) (out []canary.StoredTemplate, err error) {
	done := cdone(s.met.start("templates"))
	defer func() { done(err) }()
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	var docs, vers, upds *goredis.MapStringStringCmd
	_, err = s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		docs = p.HGetAll(ctx, s.keys.templateDocs())
		vers = p.HGetAll(ctx, s.keys.templateVersions())
		upds = p.HGetAll(ctx, s.keys.templateUpdated())
		return nil
	})
	if err != nil {
		return nil, ctranslate("templates", err)
	}
	out = make([]canary.StoredTemplate, 0, len(docs.Val()))
	for name, doc := range docs.Val() {
		st, err := decodeStoredTemplate(name, doc, vers.Val()[name], upds.Val()[name])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b canary.StoredTemplate) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteTemplate implements canary.Store. Errors: canary.ErrNotFound,
// canary.ErrConflict, wrapped canary.ErrUnavailable.
func (s *Store) DeleteTemplate(ctx context.Context, name string, ifVersion int) (err error) {
	done := cdone(s.met.start("delete_template"))
	defer func() { done(err) }()
	return s.cwrite(func(fx *effects) error {
		keys, args := s.keys.templateKeys(), []any{name, strconv.Itoa(ifVersion)}
		res, err := deleteTemplateScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("delete template", err)
		}
		switch {
		case len(res) == 1 && res[0] == "ok":
			fx.script(deleteTemplateScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("template %q: %w", name, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("template %q is at version %s, not %d: %w", name, res[1], ifVersion, canary.ErrConflict)
		}
		return badReply("delete template", res)
	})
}

// ---- runs ----

// CreateRun implements canary.Store. Errors: canary.ErrExists,
// *canary.ValidationError, wrapped canary.ErrUnavailable.
func (s *Store) CreateRun(ctx context.Context, r *canary.Run) (sr canary.StoredRun, err error) {
	done := cdone(s.met.start("create_run"))
	defer func() { done(err) }()
	if r == nil {
		return sr, &canary.ValidationError{Problems: []canary.FieldError{{Field: "run", Message: "required"}}}
	}
	if err := canary.CheckRunID(r.ID); err != nil {
		return sr, err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return sr, fmt.Errorf("encoding run %s: %v", r.ID, err)
	}
	created, wake := ms(r.CreatedAt), wakeScore(r)
	err = s.cwrite(func(fx *effects) error {
		// The indexes first: a crash between them and the run leaves entries
		// without a run, which readers skip; never a run nobody schedules.
		// NX keeps an existing run's entries should the ID be taken.
		ix := []struct{ key, score string }{{s.keys.runsAll(), created}, {s.keys.runsOf(r.Template.Name), created}}
		if wake != "" {
			ix = append(ix, struct{ key, score string }{s.keys.runsDue(), wake})
		}
		for _, e := range ix {
			if err := s.rdb.Do(ctx, "ZADD", e.key, "NX", e.score, r.ID).Err(); err != nil {
				return ctranslate("create run", err)
			}
			fx.command("ZADD", e.key, "NX", e.score, r.ID)
		}
		keys := []string{s.keys.run(r.ID)}
		args := []any{doc, newToken(), created, r.Template.Name, string(r.Phase), wake}
		res, err := createRunScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("create run", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			fx.script(createRunScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "exists":
			return fmt.Errorf("run %s: %w", r.ID, canary.ErrExists)
		}
		return badReply("create run", res)
	})
	if err != nil {
		return canary.StoredRun{}, err
	}
	return decodeRun(r.ID, string(doc), 1)
}

func decodeRun(id, doc string, version int64) (canary.StoredRun, error) {
	sr := canary.StoredRun{Version: version}
	if err := json.Unmarshal([]byte(doc), &sr.Run); err != nil {
		return canary.StoredRun{}, fmt.Errorf("stored run %s is malformed: %v", id, err)
	}
	return sr, nil
}

// Run implements canary.Store. Errors: canary.ErrNotFound, wrapped
// canary.ErrUnavailable.
func (s *Store) Run(ctx context.Context, id string) (sr canary.StoredRun, err error) {
	done := cdone(s.met.start("run"))
	defer func() { done(err) }()
	if canary.CheckRunID(id) != nil {
		return sr, fmt.Errorf("run %q: %w", id, canary.ErrNotFound)
	}
	if s.closed.Load() {
		return sr, cunavailable(errClosed)
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.run(id), "version", "doc").Result()
	if err != nil {
		return sr, ctranslate("run", err)
	}
	return runFromHash(id, vals)
}

// runFromHash decodes an HMGET of version and doc.
func runFromHash(id string, vals []any) (canary.StoredRun, error) {
	doc, v, err := versionedDoc("run", id, vals)
	if err != nil {
		return canary.StoredRun{}, err
	}
	return decodeRun(id, doc, v)
}

// versionedDoc reads an HMGET of version and doc of a canary record (a run
// or a rollout): canary.ErrNotFound when the record is absent.
func versionedDoc(kind, id string, vals []any) (doc string, version int64, err error) {
	if len(vals) < 2 || vals[0] == nil {
		return "", 0, fmt.Errorf("%s %s: %w", kind, id, canary.ErrNotFound)
	}
	vs, _ := vals[0].(string)
	doc, _ = vals[1].(string)
	if version, err = strconv.ParseInt(vs, 10, 64); err != nil {
		return "", 0, fmt.Errorf("stored %s %s has a malformed version %q", kind, id, vs)
	}
	return doc, version, nil
}

// Runs implements canary.Store. The cursor is "MILLIS:ID" of the last run
// of the previous page. Errors: *canary.ValidationError (limit, cursor),
// wrapped canary.ErrUnavailable.
func (s *Store) Runs(ctx context.Context, q canary.RunQuery) (page canary.RunPage, err error) {
	done := cdone(s.met.start("runs"))
	defer func() { done(err) }()
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultRunPage, canary.MaxRunPage)
	if err != nil {
		return page, err
	}
	pos, err := parseTimeCursor(q.Cursor, func(id string) bool { return canary.CheckRunID(id) == nil })
	if err != nil {
		return page, err
	}
	if s.closed.Load() {
		return page, cunavailable(errClosed)
	}
	index := s.keys.runsAll()
	if q.Template != "" {
		index = s.keys.runsOf(q.Template)
	}
	page.Runs = []canary.StoredRun{}
	err = s.scanNewest(ctx, "runs", index, pos, limit, func(ids []string) (bool, error) {
		cmds := make([]*goredis.SliceCmd, len(ids))
		if len(ids) > 0 {
			if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for i, id := range ids {
					cmds[i] = p.HMGet(ctx, s.keys.run(id), "version", "doc", "template", "phase")
				}
				return nil
			}); err != nil {
				return false, ctranslate("runs", err)
			}
		}
		for i, id := range ids {
			vals := cmds[i].Val()
			if len(vals) < 4 || vals[0] == nil {
				continue // an index entry whose run was never created
			}
			tpl, _ := vals[2].(string)
			phase, _ := vals[3].(string)
			if (q.Template != "" && tpl != q.Template) || (len(q.Phases) > 0 && !slices.Contains(q.Phases, canary.Phase(phase))) {
				continue
			}
			if len(page.Runs) == limit {
				last := page.Runs[limit-1]
				page.Next = timeCursor(last.CreatedAt, last.ID)
				return true, nil
			}
			sr, err := runFromHash(id, vals[:2])
			if err != nil {
				return false, err
			}
			page.Runs = append(page.Runs, sr)
		}
		return false, nil
	})
	return page, err
}

// UpdateRun implements canary.Store. Errors: canary.ErrNotFound,
// canary.ErrConflict, canary.ErrLeaseLost, canary.ErrStepRecorded,
// *canary.ValidationError, wrapped canary.ErrUnavailable.
func (s *Store) UpdateRun(ctx context.Context, u canary.RunUpdate) (sr canary.StoredRun, err error) {
	done := cdone(s.met.start("update_run"))
	defer func() { done(err) }()
	if err := canary.CheckRunUpdate(u); err != nil {
		return sr, err
	}
	id := u.Run.ID
	doc, err := json.Marshal(u.Run)
	if err != nil {
		return sr, fmt.Errorf("encoding run %s: %v", id, err)
	}
	stepNum, stepDoc := "", []byte(nil)
	if u.Step != nil {
		if stepDoc, err = json.Marshal(u.Step); err != nil {
			return sr, fmt.Errorf("encoding step %d of run %s: %v", u.Step.Number, id, err)
		}
		stepNum = strconv.Itoa(u.Step.Number)
	}
	wake := wakeScore(u.Run)
	var version int64
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.run(id), s.keys.runSteps(id), s.keys.runLease(id)}
		args := []any{strconv.FormatInt(u.IfVersion, 10), doc, newToken(), strconv.FormatInt(u.Token, 10), stepNum, stepDoc, string(u.Run.Phase), wake}
		res, err := updateRunScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("update run", err)
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			if version, err = strconv.ParseInt(res[1], 10, 64); err != nil {
				return badReply("update run", res)
			}
			fx.script(updateRunScript, keys, args)
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("run %s: %w", id, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "fenced":
			return fmt.Errorf("run %s: token %d, current lease %s: %w", id, u.Token, res[1], canary.ErrLeaseLost)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("run %s is at version %s, not %d: %w", id, res[1], u.IfVersion, canary.ErrConflict)
		case len(res) == 1 && res[0] == "steptaken":
			return fmt.Errorf("run %s step %s: %w", id, stepNum, canary.ErrStepRecorded)
		default:
			return badReply("update run", res)
		}
		// Move the run in the due index. Should this fail, DueRuns repairs
		// the entry from the run's own wake time.
		var ierr error
		if wake == "" {
			ierr = s.rdb.ZRem(ctx, s.keys.runsDue(), id).Err()
			fx.command("ZREM", s.keys.runsDue(), id)
		} else {
			ierr = s.rdb.Do(ctx, "ZADD", s.keys.runsDue(), wake, id).Err()
			fx.command("ZADD", s.keys.runsDue(), wake, id)
		}
		if ierr != nil {
			s.log.Warn("analysis run saved but not rescheduled; the next due-run scan repairs it", "run", id, "error", ctranslate("update run", ierr))
		}
		return nil
	})
	if err != nil {
		return canary.StoredRun{}, err
	}
	return decodeRun(id, string(doc), version)
}

// staleIndexEntry is how old an entry of a run that does not exist must be
// before DueRuns removes it (younger ones may be a creation in progress).
const staleIndexEntry = time.Minute

// DueRuns implements canary.Store. Entries that disagree with their run
// (ended, moved, or never created) are repaired as they are met. Errors:
// wrapped canary.ErrUnavailable.
func (s *Store) DueRuns(ctx context.Context, now time.Time, limit int) (out []string, err error) {
	done := cdone(s.met.start("due_runs"))
	defer func() { done(err) }()
	out = []string{}
	if limit <= 0 {
		return out, nil
	}
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	nowMS := now.UnixMilli()
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.keys.runsDue(), &goredis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(nowMS, 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, ctranslate("due runs", err)
	}
	if len(zs) == 0 {
		return out, nil
	}
	cmds := make([]*goredis.SliceCmd, len(zs))
	if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, z := range zs {
			id, _ := z.Member.(string)
			cmds[i] = p.HMGet(ctx, s.keys.run(id), "version", "wake")
		}
		return nil
	}); err != nil {
		return nil, ctranslate("due runs", err)
	}
	type fix struct {
		remove bool
		id     string
		score  string
	}
	var fixes []fix
	for i, z := range zs {
		id, _ := z.Member.(string)
		vals := cmds[i].Val()
		score := int64(z.Score)
		switch {
		case len(vals) < 2 || vals[0] == nil:
			if nowMS-score > staleIndexEntry.Milliseconds() {
				fixes = append(fixes, fix{remove: true, id: id})
			}
		case vals[1] == nil || vals[1] == "":
			fixes = append(fixes, fix{remove: true, id: id})
		default:
			w, _ := vals[1].(string)
			wms, perr := strconv.ParseInt(w, 10, 64)
			switch {
			case perr != nil:
				s.log.Warn("analysis run has a malformed wake time; skipped", "run", id, "wake", w)
			case wms != score:
				fixes = append(fixes, fix{id: id, score: w})
				if wms <= nowMS {
					out = append(out, id)
				}
			default:
				out = append(out, id)
			}
		}
	}
	if len(fixes) > 0 {
		err := s.cwrite(func(fx *effects) error {
			for _, f := range fixes {
				var err error
				if f.remove {
					err = s.rdb.ZRem(ctx, s.keys.runsDue(), f.id).Err()
					fx.command("ZREM", s.keys.runsDue(), f.id)
				} else {
					err = s.rdb.Do(ctx, "ZADD", s.keys.runsDue(), "XX", f.score, f.id).Err()
					fx.command("ZADD", s.keys.runsDue(), "XX", f.score, f.id)
				}
				if err != nil {
					return ctranslate("due runs", err)
				}
			}
			return nil
		})
		if err != nil {
			s.log.Warn("could not repair the analysis due index", "error", err)
		}
	}
	return out, nil
}

// Measurements implements canary.Store. Errors: canary.ErrNotFound,
// *canary.ValidationError (limit), wrapped canary.ErrUnavailable.
func (s *Store) Measurements(ctx context.Context, runID string, after, limit int) (out []canary.Step, err error) {
	done := cdone(s.met.start("measurements"))
	defer func() { done(err) }()
	limit, err = canary.PageLimit("limit", limit, canary.DefaultMeasurementPage, canary.MaxMeasurementPage)
	if err != nil {
		return nil, err
	}
	if canary.CheckRunID(runID) != nil {
		return nil, fmt.Errorf("run %q: %w", runID, canary.ErrNotFound)
	}
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	members, err := stepsScript.Run(ctx, s.rdb, []string{s.keys.run(runID), s.keys.runSteps(runID)}, "("+strconv.Itoa(after), limit).StringSlice()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("run %s: %w", runID, canary.ErrNotFound)
	}
	if err != nil {
		return nil, ctranslate("measurements", err)
	}
	out = make([]canary.Step, len(members))
	for i, m := range members {
		if err := json.Unmarshal([]byte(m), &out[i]); err != nil {
			return nil, fmt.Errorf("a stored measurement of run %s is malformed: %v", runID, err)
		}
	}
	return out, nil
}

// ---- leases ----

// AcquireLease implements canary.Store. Errors: canary.ErrNotFound,
// canary.ErrLeaseHeld, *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) AcquireLease(ctx context.Context, runID, owner string, now time.Time, ttl time.Duration) (l canary.Lease, err error) {
	done := cdone(s.met.start("acquire_lease"))
	defer func() { done(err) }()
	return s.acquireLease(ctx, s.runLeased(runID), owner, now, ttl)
}

// leased names what a lease fences, for the scripts' keys and the errors:
// an analysis run (runLeased) or a rollout (rolloutLeased).
type leased struct {
	what   string // the noun errors name: "run" or "rollout"
	id     string
	valid  bool   // whether id is well formed; a malformed one is never stored
	lease  string // the lease key
	object string // the leased object's key, which must exist to be leased
	op     string // the redis error's operation, after "acquire " or "release "
}

func (s *Store) runLeased(id string) leased {
	return leased{what: "run", id: id, valid: canary.CheckRunID(id) == nil, lease: s.keys.runLease(id), object: s.keys.run(id), op: "lease"}
}

func (s *Store) rolloutLeased(id string) leased {
	return leased{what: "rollout", id: id, valid: canary.CheckRolloutID(id) == nil, lease: s.keys.rolloutLease(id), object: s.keys.rollout(id), op: "rollout lease"}
}

// acquireLease runs acquireLeaseScript for AcquireLease and
// AcquireRolloutLease, with their error contract.
func (s *Store) acquireLease(ctx context.Context, t leased, owner string, now time.Time, ttl time.Duration) (l canary.Lease, err error) {
	if err := canary.CheckLeaseRequest(t.id, owner, ttl); err != nil {
		return l, err
	}
	if !t.valid {
		return l, fmt.Errorf("%s %q: %w", t.what, t.id, canary.ErrNotFound)
	}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{t.lease, t.object}
		args := []any{owner, ms(now), strconv.FormatInt(ttl.Milliseconds(), 10)}
		res, err := acquireLeaseScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("acquire "+t.op, err)
		}
		switch {
		case len(res) == 3 && res[0] == "ok":
			if l, err = leaseFromReply(t.id, owner, res); err != nil {
				return err
			}
			fx.script(acquireLeaseScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("%s %s: %w", t.what, t.id, canary.ErrNotFound)
		case len(res) == 3 && res[0] == "held":
			exp, _ := strconv.ParseInt(res[2], 10, 64)
			return fmt.Errorf("%s %s: held by %s until %s: %w", t.what, t.id, res[1], time.UnixMilli(exp).UTC().Format(time.RFC3339Nano), canary.ErrLeaseHeld)
		}
		return badReply("acquire "+t.op, res)
	})
	return l, err
}

func leaseFromReply(runID, owner string, res []string) (canary.Lease, error) {
	tok, terr := strconv.ParseInt(res[1], 10, 64)
	exp, eerr := strconv.ParseInt(res[2], 10, 64)
	if terr != nil || eerr != nil {
		return canary.Lease{}, badReply("lease", res)
	}
	return canary.Lease{RunID: runID, Owner: owner, Token: tok, ExpiresAt: time.UnixMilli(exp).UTC()}, nil
}

// RenewLease implements canary.Store. Errors: canary.ErrLeaseLost,
// canary.ErrNotFound, *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) RenewLease(ctx context.Context, l canary.Lease, now time.Time, ttl time.Duration) (out canary.Lease, err error) {
	done := cdone(s.met.start("renew_lease"))
	defer func() { done(err) }()
	if err := canary.CheckLeaseRequest(l.RunID, l.Owner, ttl); err != nil {
		return out, err
	}
	if canary.CheckRunID(l.RunID) != nil {
		return out, fmt.Errorf("run %q: %w", l.RunID, canary.ErrNotFound)
	}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.runLease(l.RunID), s.keys.run(l.RunID)}
		args := []any{l.Owner, strconv.FormatInt(l.Token, 10), ms(now), strconv.FormatInt(ttl.Milliseconds(), 10)}
		res, err := renewLeaseScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("renew lease", err)
		}
		switch {
		case len(res) == 3 && res[0] == "ok":
			if out, err = leaseFromReply(l.RunID, l.Owner, res); err != nil {
				return err
			}
			fx.script(renewLeaseScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("run %s: %w", l.RunID, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "lost":
			return fmt.Errorf("run %s: token %d, current lease %s: %w", l.RunID, l.Token, res[1], canary.ErrLeaseLost)
		}
		return badReply("renew lease", res)
	})
	return out, err
}

// ReleaseLease implements canary.Store. Errors: wrapped
// canary.ErrUnavailable.
func (s *Store) ReleaseLease(ctx context.Context, l canary.Lease) (err error) {
	done := cdone(s.met.start("release_lease"))
	defer func() { done(err) }()
	return s.releaseLease(ctx, s.runLeased(l.RunID), l)
}

// releaseLease runs releaseLeaseScript for ReleaseLease and
// ReleaseRolloutLease: a lease with no owner or a malformed ID is nothing
// to release.
func (s *Store) releaseLease(ctx context.Context, t leased, l canary.Lease) error {
	if l.Owner == "" || !t.valid {
		return nil
	}
	return s.cwrite(func(fx *effects) error {
		keys, args := []string{t.lease}, []any{l.Owner, strconv.FormatInt(l.Token, 10)}
		n, err := releaseLeaseScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return ctranslate("release "+t.op, err)
		}
		if n == 1 {
			fx.script(releaseLeaseScript, keys, args)
		}
		return nil
	})
}
