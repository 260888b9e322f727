package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/canary"
)

// The notification outbox (canary.Outbox).
//
// Keys, all under the one hash tag {outbox}:
//
//	PREFIX{outbox}:ntf:NID    hash: doc (notification JSON), at (ms), targets ("a,b"), op
//	PREFIX{outbox}:dlv:NID/T  hash: nid, target, state, attempts, next (ms, "" once ended),
//	                          updated (ms), token, owner ("" unless claimed), lease (ms),
//	                          lastStatus, lastError, op
//	PREFIX{outbox}:log:NID    list: attempt JSON, in the order recorded
//	PREFIX{outbox}:due        sorted set: pending delivery IDs by due time (ms); a claimed
//	                          delivery is scored by the end of its lease, so it is due again
//	                          once the lease lapses (a visibility timeout)
//	PREFIX{outbox}:index      sorted set: notification IDs by time (ms), for listing and pruning
//	PREFIX{outbox}:dead       sorted set: dead delivery IDs by when they were buried (ms)
//
// One hash tag puts the whole outbox in one Cluster slot, so every write —
// enqueue with its deliveries, the claim that pops due entries and leases
// them, the fenced record that logs an attempt and reschedules — is a
// single atomic Lua script on a Cluster too. Claim and prune reach keys
// they discover (delivery and notification hashes) by name inside the
// script; that is sound because those keys share the slot. Notification
// volume is small (events, not requests), so one slot is no hot spot.
// Times are the callers' clocks, in milliseconds; every write script is
// idempotent under go-redis's retry (an op token, or a claim whose due
// entries moved on).

func (k keyspace) outboxTag() string          { return k.prefix + "{outbox}:" }
func (k keyspace) outboxNtfPrefix() string    { return k.outboxTag() + "ntf:" }
func (k keyspace) outboxDlvPrefix() string    { return k.outboxTag() + "dlv:" }
func (k keyspace) outboxNtf(id string) string { return k.outboxNtfPrefix() + id }
func (k keyspace) outboxDlv(id string) string { return k.outboxDlvPrefix() + id }
func (k keyspace) outboxLog(id string) string { return k.outboxTag() + "log:" + id }
func (k keyspace) outboxDue() string          { return k.outboxTag() + "due" }
func (k keyspace) outboxIndex() string        { return k.outboxTag() + "index" }
func (k keyspace) outboxDead() string         { return k.outboxTag() + "dead" }

var _ canary.Outbox = (*Store)(nil)

// enqueueScript stores a notification and its pending deliveries.
// KEYS: ntf, index, due, dlv (one per target). ARGV: nid, doc, at (ms), op,
// targets joined by ",", then the targets in KEYS order.
var enqueueScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[4] then return {'ok'} end
  return {'exists'}
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'at', ARGV[3], 'targets', ARGV[5], 'op', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for i = 4, #KEYS do
  local t = ARGV[i + 2]
  local did = ARGV[1] .. '/' .. t
  redis.call('HSET', KEYS[i], 'nid', ARGV[1], 'target', t, 'state', 'pending', 'attempts', '0',
    'next', ARGV[3], 'updated', ARGV[3], 'token', '0', 'owner', '', 'lease', '0',
    'lastStatus', '0', 'lastError', '', 'op', '')
  redis.call('ZADD', KEYS[3], ARGV[3], did)
end
return {'ok'}
`)

// claimFields is how many values claimScript returns per claim.
const claimFields = 10

// claimScript leases due deliveries: it pops the earliest due entries,
// drops entries of deliveries that are no longer pending, raises each
// claimed delivery's token and re-scores its entry at the lease's end.
// KEYS: due. ARGV: dlv key prefix, ntf key prefix, now (ms), lease end (ms),
// limit, owner. Reply: 'ok', '1' when anything changed (else '0'), then per
// claim: id, token, nid, target, attempts, next, updated, lastStatus,
// lastError, notification doc.
var claimScript = goredis.NewScript(`
local out = {'ok', '0'}
local limit = tonumber(ARGV[5])
local got = 0
for round = 1, 4 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, limit - got)
  if #ids == 0 then break end
  out[2] = '1'
  local stale = 0
  for _, did in ipairs(ids) do
    local dk = ARGV[1] .. did
    local f = redis.call('HMGET', dk, 'state', 'nid', 'target', 'attempts', 'next', 'updated', 'lastStatus', 'lastError')
    if f[1] ~= 'pending' then
      redis.call('ZREM', KEYS[1], did)
      stale = stale + 1
    else
      local tok = redis.call('HINCRBY', dk, 'token', 1)
      redis.call('HSET', dk, 'owner', ARGV[6], 'lease', ARGV[4])
      redis.call('ZADD', KEYS[1], ARGV[4], did)
      local doc = redis.call('HGET', ARGV[2] .. f[2], 'doc') or ''
      table.insert(out, did)
      table.insert(out, string.format('%d', tok))
      for j = 2, 8 do table.insert(out, f[j] or '') end
      table.insert(out, doc)
      got = got + 1
    end
  end
  if stale == 0 or got >= limit then break end
end
return out
`)

// recordScript logs an attempt and moves the delivery on, fenced by the
// claim's token, owner and attempt count.
// KEYS: dlv, log, due, dead. ARGV: token, owner, attempts claimed, op,
// outcome, attempt JSON, status, error, retry at (ms), at (ms), delivery ID.
var recordScript = goredis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'state', 'token', 'owner', 'attempts', 'op')
if not f[1] then return {'notfound'} end
if f[5] == ARGV[4] then return {'ok'} end
if f[1] ~= 'pending' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] then
  return {'lost', f[1], f[2] or ''}
end
local n = string.format('%d', tonumber(f[4]) + 1)
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[1], 'attempts', n, 'lastStatus', ARGV[7], 'lastError', ARGV[8], 'updated', ARGV[10],
  'owner', '', 'lease', '0', 'op', ARGV[4])
if ARGV[5] == 'delivered' then
  redis.call('HSET', KEYS[1], 'state', 'delivered', 'next', '')
  redis.call('ZREM', KEYS[3], ARGV[11])
elseif ARGV[5] == 'retry' then
  redis.call('HSET', KEYS[1], 'next', ARGV[9])
  redis.call('ZADD', KEYS[3], ARGV[9], ARGV[11])
else
  redis.call('HSET', KEYS[1], 'state', 'dead', 'next', '')
  redis.call('ZREM', KEYS[3], ARGV[11])
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[11])
end
return {'ok'}
`)

// redriveScript makes a dead delivery pending again.
// KEYS: dlv, due, dead. ARGV: delivery ID, now (ms), op.
var redriveScript = goredis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'notfound'} end
if redis.call('HGET', KEYS[1], 'op') == ARGV[3] then return {'ok'} end
if st ~= 'dead' then return {'conflict', st} end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', '0', 'next', ARGV[2], 'updated', ARGV[2],
  'owner', '', 'lease', '0', 'op', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'ok'}
`)

// pruneScript removes a notification whose deliveries have all ended.
// KEYS: ntf, log, index, due, dead. ARGV: nid, dlv key prefix. Reply: 'ok'
// and 'pruned', 'busy' (a delivery is pending) or 'gone' (only a stale
// index entry was left).
var pruneScript = goredis.NewScript(`
local tg = redis.call('HGET', KEYS[1], 'targets')
if not tg then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'ok', 'gone'}
end
for t in string.gmatch(tg, '[^,]+') do
  if redis.call('HGET', ARGV[2] .. ARGV[1] .. '/' .. t, 'state') == 'pending' then return {'ok', 'busy'} end
end
for t in string.gmatch(tg, '[^,]+') do
  local did = ARGV[1] .. '/' .. t
  redis.call('DEL', ARGV[2] .. did)
  redis.call('ZREM', KEYS[4], did)
  redis.call('ZREM', KEYS[5], did)
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'ok', 'pruned'}
`)

func init() {
	for sc, name := range map[*goredis.Script]string{
		enqueueScript: "outboxEnqueue", claimScript: "outboxClaim", recordScript: "outboxRecord",
		redriveScript: "outboxRedrive", pruneScript: "outboxPrune",
	} {
		scriptNames[sc] = name
	}
}

// dlvFields are the delivery hash fields deliveryFrom reads, in order.
var dlvFields = []string{"state", "nid", "target", "attempts", "next", "updated", "lastStatus", "lastError"}

// deliveryFrom builds a delivery from the values of dlvFields (nil or ""
// for a missing field); ok is false when the hash does not exist.
func deliveryFrom(id string, vals []any) (canary.Delivery, bool) {
	s := func(i int) string {
		if i >= len(vals) {
			return ""
		}
		v, _ := vals[i].(string)
		return v
	}
	if s(0) == "" {
		return canary.Delivery{}, false
	}
	return deliveryFromStrings(id, []string{s(0), s(1), s(2), s(3), s(4), s(5), s(6), s(7)}), true
}

func deliveryFromStrings(id string, f []string) canary.Delivery {
	d := canary.Delivery{ID: id, State: canary.DeliveryState(f[0]), NotificationID: f[1], Target: f[2], LastError: f[7]}
	d.Attempts, _ = strconv.Atoi(f[3])
	if f[4] != "" {
		d.NextAt = msTime(f[4])
	}
	d.UpdatedAt = msTime(f[5])
	d.LastStatus, _ = strconv.Atoi(f[6])
	return d
}

func msTime(s string) time.Time {
	v, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(v).UTC()
}

func validationError(field, msg string) error {
	return &canary.ValidationError{Problems: []canary.FieldError{{Field: field, Message: msg}}}
}

// Enqueue implements canary.Outbox. Errors: canary.ErrExists,
// *canary.ValidationError, wrapped canary.ErrUnavailable.
func (s *Store) Enqueue(ctx context.Context, n canary.Notification, targets []string) (err error) {
	done := cdone(s.met.start("outbox_enqueue"))
	defer func() { done(err) }()
	if err := canary.CheckNotification(n); err != nil {
		return err
	}
	if err := canary.CheckTargets(targets); err != nil {
		return err
	}
	doc, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encoding notification %s: %v", n.ID, err)
	}
	return s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.outboxNtf(n.ID), s.keys.outboxIndex(), s.keys.outboxDue()}
		args := []any{n.ID, doc, ms(n.Time), newToken(), strings.Join(targets, ",")}
		for _, t := range targets {
			keys = append(keys, s.keys.outboxDlv(canary.DeliveryID(n.ID, t)))
			args = append(args, t)
		}
		res, err := enqueueScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("enqueue notification", err)
		}
		switch {
		case len(res) == 1 && res[0] == "ok":
			fx.script(enqueueScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "exists":
			return fmt.Errorf("notification %s: %w", n.ID, canary.ErrExists)
		}
		return badReply("enqueue notification", res)
	})
}

// Claim implements canary.Outbox. Errors: *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) (out []canary.Claim, err error) {
	done := cdone(s.met.start("outbox_claim"))
	defer func() { done(err) }()
	if err := canary.CheckClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	until := time.UnixMilli(now.UnixMilli()).Add(lease).UTC()
	out = []canary.Claim{}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.outboxDue()}
		args := []any{s.keys.outboxDlvPrefix(), s.keys.outboxNtfPrefix(), ms(now), ms(until), strconv.Itoa(limit), owner}
		res, err := claimScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("claim deliveries", err)
		}
		if len(res) < 2 || res[0] != "ok" || (len(res)-2)%claimFields != 0 {
			return badReply("claim deliveries", res[:min(len(res), 2)])
		}
		if res[1] == "1" {
			fx.script(claimScript, keys, args)
		}
		for i := 2; i < len(res); i += claimFields {
			f := res[i : i+claimFields]
			tok, terr := strconv.ParseInt(f[1], 10, 64)
			if terr != nil {
				return badReply("claim deliveries", f[:2])
			}
			c := canary.Claim{Owner: owner, Token: tok, LeaseUntil: until}
			c.Delivery = deliveryFromStrings(f[0], []string{"pending", f[2], f[3], f[4], f[5], f[6], f[7], f[8]})
			if jerr := json.Unmarshal([]byte(f[9]), &c.Notification); jerr != nil {
				s.log.Warn("outbox delivery claimed without a readable notification", "delivery", f[0], "error", jerr)
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Record implements canary.Outbox. Errors: canary.ErrNotFound,
// canary.ErrLeaseLost, *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) Record(ctx context.Context, c canary.Claim, a canary.Attempt) (d canary.Delivery, err error) {
	done := cdone(s.met.start("outbox_record"))
	defer func() { done(err) }()
	if err := canary.CheckAttempt(c, a); err != nil {
		return d, err
	}
	id := c.Delivery.ID
	nid, target, ok := canary.SplitDeliveryID(id)
	if !ok {
		return d, fmt.Errorf("delivery %q: %w", id, canary.ErrNotFound)
	}
	a.Target, a.Number, a.At = target, c.Delivery.Attempts+1, a.At.UTC()
	retryAt := ""
	if a.Outcome == canary.OutcomeRetry {
		a.RetryAt = time.UnixMilli(a.RetryAt.UnixMilli()).UTC()
		retryAt = ms(a.RetryAt)
	}
	doc, err := json.Marshal(a)
	if err != nil {
		return d, fmt.Errorf("encoding attempt on %s: %v", id, err)
	}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.outboxDlv(id), s.keys.outboxLog(nid), s.keys.outboxDue(), s.keys.outboxDead()}
		args := []any{strconv.FormatInt(c.Token, 10), c.Owner, strconv.Itoa(c.Delivery.Attempts), newToken(), string(a.Outcome), doc,
			strconv.Itoa(a.Status), a.Error, retryAt, ms(a.At), id}
		res, err := recordScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("record attempt", err)
		}
		switch {
		case len(res) == 1 && res[0] == "ok":
			fx.script(recordScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("delivery %s: %w", id, canary.ErrNotFound)
		case len(res) == 3 && res[0] == "lost":
			return fmt.Errorf("delivery %s is %s with token %s, not claimed with token %d: %w", id, res[1], res[2], c.Token, canary.ErrLeaseLost)
		}
		return badReply("record attempt", res)
	})
	if err != nil {
		return d, err
	}
	return s.delivery(ctx, id)
}

// delivery reads one delivery. Errors: canary.ErrNotFound, wrapped
// canary.ErrUnavailable.
func (s *Store) delivery(ctx context.Context, id string) (canary.Delivery, error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.outboxDlv(id), dlvFields...).Result()
	if err != nil {
		return canary.Delivery{}, ctranslate("read delivery", err)
	}
	d, ok := deliveryFrom(id, vals)
	if !ok {
		return canary.Delivery{}, fmt.Errorf("delivery %s: %w", id, canary.ErrNotFound)
	}
	return d, nil
}

// notificationLogs reads notifications with their deliveries (and, with
// attempts, their logs); notifications that no longer exist are left out.
func (s *Store) notificationLogs(ctx context.Context, ids []string, attempts bool) ([]canary.NotificationLog, error) {
	heads := make([]*goredis.SliceCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			heads[i] = p.HMGet(ctx, s.keys.outboxNtf(id), "doc", "targets")
		}
		return nil
	}); err != nil {
		return nil, ctranslate("read notifications", err)
	}
	type item struct {
		log     canary.NotificationLog
		targets []string
		dlvs    []*goredis.SliceCmd
		atts    *goredis.StringSliceCmd
	}
	var items []*item
	for i, id := range ids {
		vals := heads[i].Val()
		doc, _ := vals[0].(string)
		tg, _ := vals[1].(string)
		if doc == "" {
			continue
		}
		it := &item{targets: strings.Split(tg, ",")}
		if err := json.Unmarshal([]byte(doc), &it.log.Notification); err != nil {
			return nil, fmt.Errorf("stored notification %s is malformed: %v", id, err)
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return []canary.NotificationLog{}, nil
	}
	if _, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		for _, it := range items {
			for _, t := range it.targets {
				it.dlvs = append(it.dlvs, p.HMGet(ctx, s.keys.outboxDlv(canary.DeliveryID(it.log.Notification.ID, t)), dlvFields...))
			}
			if attempts {
				it.atts = p.LRange(ctx, s.keys.outboxLog(it.log.Notification.ID), 0, -1)
			}
		}
		return nil
	}); err != nil {
		return nil, ctranslate("read notifications", err)
	}
	out := make([]canary.NotificationLog, 0, len(items))
	for _, it := range items {
		it.log.Deliveries = []canary.Delivery{}
		for j, t := range it.targets {
			if d, ok := deliveryFrom(canary.DeliveryID(it.log.Notification.ID, t), it.dlvs[j].Val()); ok {
				it.log.Deliveries = append(it.log.Deliveries, d)
			}
		}
		if attempts {
			for _, doc := range it.atts.Val() {
				var a canary.Attempt
				if err := json.Unmarshal([]byte(doc), &a); err != nil {
					return nil, fmt.Errorf("a logged attempt of notification %s is malformed: %v", it.log.Notification.ID, err)
				}
				it.log.Attempts = append(it.log.Attempts, a)
			}
		}
		out = append(out, it.log)
	}
	return out, nil
}

// Notification implements canary.Outbox. Errors: canary.ErrNotFound,
// wrapped canary.ErrUnavailable.
func (s *Store) Notification(ctx context.Context, id string) (log canary.NotificationLog, err error) {
	done := cdone(s.met.start("outbox_notification"))
	defer func() { done(err) }()
	if canary.CheckNotification(canary.Notification{ID: id, Event: "x", Payload: json.RawMessage("{}"), Time: time.Unix(1, 0)}) != nil {
		return log, fmt.Errorf("notification %q: %w", id, canary.ErrNotFound)
	}
	if s.closed.Load() {
		return log, cunavailable(errClosed)
	}
	logs, err := s.notificationLogs(ctx, []string{id}, true)
	if err != nil {
		return log, err
	}
	if len(logs) == 0 {
		return log, fmt.Errorf("notification %q: %w", id, canary.ErrNotFound)
	}
	return logs[0], nil
}

// Notifications implements canary.Outbox. The cursor is "MILLIS:ID" of the
// last notification of the previous page. Errors: *canary.ValidationError
// (limit, cursor), wrapped canary.ErrUnavailable.
func (s *Store) Notifications(ctx context.Context, q canary.NotificationQuery) (page canary.NotificationPage, err error) {
	done := cdone(s.met.start("outbox_notifications"))
	defer func() { done(err) }()
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultNotificationPage, canary.MaxNotificationPage)
	if err != nil {
		return page, err
	}
	pos, err := parseTimeCursor(q.Cursor, func(id string) bool { return id != "" })
	if err != nil {
		return page, err
	}
	if s.closed.Load() {
		return page, cunavailable(errClosed)
	}
	page.Notifications = []canary.NotificationLog{}
	err = s.scanNewest(ctx, "notifications", s.keys.outboxIndex(), pos, limit, func(ids []string) (bool, error) {
		logs, err := s.notificationLogs(ctx, ids, false)
		if err != nil {
			return false, err
		}
		for _, l := range logs {
			if len(page.Notifications) == limit {
				last := page.Notifications[limit-1].Notification
				page.Next = timeCursor(last.Time, last.ID)
				return true, nil
			}
			page.Notifications = append(page.Notifications, l)
		}
		return false, nil
	})
	return page, err
}

// Dead implements canary.Outbox. Errors: *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) Dead(ctx context.Context, limit int) (out []canary.Delivery, err error) {
	done := cdone(s.met.start("outbox_dead"))
	defer func() { done(err) }()
	limit, err = canary.PageLimit("limit", limit, canary.DefaultNotificationPage, canary.MaxNotificationPage)
	if err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, cunavailable(errClosed)
	}
	ids, err := s.rdb.ZRevRange(ctx, s.keys.outboxDead(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, ctranslate("dead deliveries", err)
	}
	cmds := make([]*goredis.SliceCmd, len(ids))
	if len(ids) > 0 {
		if _, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HMGet(ctx, s.keys.outboxDlv(id), dlvFields...)
			}
			return nil
		}); err != nil {
			return nil, ctranslate("dead deliveries", err)
		}
	}
	out = []canary.Delivery{}
	for i, id := range ids {
		if d, ok := deliveryFrom(id, cmds[i].Val()); ok && d.State == canary.DeliveryDead {
			out = append(out, d)
		}
	}
	return out, nil
}

// Redrive implements canary.Outbox. Errors: canary.ErrNotFound,
// canary.ErrConflict, wrapped canary.ErrUnavailable.
func (s *Store) Redrive(ctx context.Context, id string, now time.Time) (d canary.Delivery, err error) {
	done := cdone(s.met.start("outbox_redrive"))
	defer func() { done(err) }()
	if _, _, ok := canary.SplitDeliveryID(id); !ok {
		return d, fmt.Errorf("delivery %q: %w", id, canary.ErrNotFound)
	}
	err = s.cwrite(func(fx *effects) error {
		keys := []string{s.keys.outboxDlv(id), s.keys.outboxDue(), s.keys.outboxDead()}
		args := []any{id, ms(now), newToken()}
		res, err := redriveScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil {
			return ctranslate("redrive delivery", err)
		}
		switch {
		case len(res) == 1 && res[0] == "ok":
			fx.script(redriveScript, keys, args)
			return nil
		case len(res) == 1 && res[0] == "notfound":
			return fmt.Errorf("delivery %s: %w", id, canary.ErrNotFound)
		case len(res) == 2 && res[0] == "conflict":
			return fmt.Errorf("delivery %s is %s, not dead: %w", id, res[1], canary.ErrConflict)
		}
		return badReply("redrive delivery", res)
	})
	if err != nil {
		return d, err
	}
	return s.delivery(ctx, id)
}

// Stats implements canary.Outbox. Errors: wrapped canary.ErrUnavailable.
func (s *Store) Stats(ctx context.Context, now time.Time) (st canary.OutboxStats, err error) {
	done := cdone(s.met.start("outbox_stats"))
	defer func() { done(err) }()
	if s.closed.Load() {
		return st, cunavailable(errClosed)
	}
	var due, pending, dead *goredis.IntCmd
	if _, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		due = p.ZCount(ctx, s.keys.outboxDue(), "-inf", ms(now))
		pending = p.ZCard(ctx, s.keys.outboxDue())
		dead = p.ZCard(ctx, s.keys.outboxDead())
		return nil
	}); err != nil {
		return st, ctranslate("outbox stats", err)
	}
	return canary.OutboxStats{Due: int(due.Val()), Pending: int(pending.Val()), Dead: int(dead.Val())}, nil
}

// Prune implements canary.Outbox. Errors: *canary.ValidationError, wrapped
// canary.ErrUnavailable.
func (s *Store) Prune(ctx context.Context, before time.Time, limit int) (n int, err error) {
	done := cdone(s.met.start("outbox_prune"))
	defer func() { done(err) }()
	if limit < 1 {
		return 0, validationError("limit", "must be at least 1")
	}
	if s.closed.Load() {
		return 0, cunavailable(errClosed)
	}
	ids, err := s.rdb.ZRangeByScore(ctx, s.keys.outboxIndex(), &goredis.ZRangeBy{Min: "-inf", Max: "(" + ms(before), Count: int64(limit)}).Result()
	if err != nil {
		return 0, ctranslate("prune notifications", err)
	}
	for _, id := range ids {
		err := s.cwrite(func(fx *effects) error {
			keys := []string{s.keys.outboxNtf(id), s.keys.outboxLog(id), s.keys.outboxIndex(), s.keys.outboxDue(), s.keys.outboxDead()}
			args := []any{id, s.keys.outboxDlvPrefix()}
			res, err := pruneScript.Run(ctx, s.rdb, keys, args...).StringSlice()
			if err != nil {
				return ctranslate("prune notifications", err)
			}
			if len(res) != 2 || res[0] != "ok" {
				return badReply("prune notifications", res)
			}
			switch res[1] {
			case "pruned":
				n++
				fx.script(pruneScript, keys, args)
			case "gone":
				fx.script(pruneScript, keys, args)
			}
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
