package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
)

// Tracking events: one Redis Stream per environment (besides the keys
// listed in keyspace):
//
//	PREFIX{events:NAME}   stream: one entry per event, field "e" = the event's JSON (storedEvent)
//
// The stream has a hash tag of its own, so an environment's event traffic
// lands on another Cluster slot than its flag set. Each batch is one
// MULTI/EXEC of XADDs with an approximate MAXLEN, so a batch is stored
// whole or not at all and old events are trimmed as new ones arrive.
// Deleting an environment does not delete its events.

func (k keyspace) events(env string) string { return k.prefix + "{events:" + env + "}" }

// DefaultEventLimit is roughly how many events an environment's log keeps
// when [Store.EventLog] is given no limit: older events are trimmed first.
const DefaultEventLimit = 1_000_000

// EventLog is the store's experiments.EventLog: tracking events and
// exposures in a Redis Stream per environment. Get one from
// [Store.EventLog]; it is safe for concurrent use and lives as long as the
// store.
type EventLog struct {
	s     *Store
	limit int64
}

var _ experiments.EventLog = (*EventLog)(nil)

// EventLog returns the store's event log, keeping about limit events per
// environment (Redis trims whole stream nodes, so a few more may stay);
// limit 0 or less means DefaultEventLimit.
func (s *Store) EventLog(limit int64) *EventLog {
	if limit <= 0 {
		limit = DefaultEventLimit
	}
	return &EventLog{s: s, limit: limit}
}

// storedEvent is an event as the stream keeps it: short names, because
// stream entries do not share value bytes, and the time in milliseconds.
type storedEvent struct {
	Name         string         `json:"n"`
	TargetingKey string         `json:"k,omitempty"`
	Value        *float64       `json:"v,omitempty"`
	Details      map[string]any `json:"d,omitempty"`
	Context      map[string]any `json:"c,omitempty"`
	TimeMillis   int64          `json:"t"`
	FlagKey      string         `json:"f,omitempty"`
	Variant      string         `json:"x,omitempty"`
}

// eventField is the one field of every stream entry.
const eventField = "e"

// Append implements experiments.EventLog: the batch is validated, then
// stored whole in one transaction (for the embedded store, durably before
// Append returns). Times are kept to the millisecond. Errors:
// *experiments.InvalidEventError (also for details or context that cannot
// be encoded as JSON), *flags.InputError for an empty environment name,
// and an error matching both experiments.ErrUnavailable and
// flags.ErrUnavailable when Redis cannot be reached — the batch may then
// have been stored.
func (l *EventLog) Append(ctx context.Context, env string, events []experiments.Event) (err error) {
	if err := checkEnv(env); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	payloads := make([]string, len(events))
	for i := range events {
		e := &events[i]
		if ps := e.Validate(); ps != nil {
			return &experiments.InvalidEventError{Index: i, Problems: ps}
		}
		b, err := json.Marshal(storedEvent{
			Name: e.Name, TargetingKey: e.TargetingKey, Value: e.Value, Details: e.Details, Context: e.Context,
			TimeMillis: e.Time.UnixMilli(), FlagKey: e.FlagKey, Variant: e.Variant,
		})
		if err != nil {
			return &experiments.InvalidEventError{Index: i, Problems: []experiments.Problem{
				{Path: "details", Message: "details or context cannot be encoded as JSON: " + err.Error()}}}
		}
		payloads[i] = string(b)
	}
	done := l.s.met.start("append_events")
	defer func() { done(err) }()
	if l.s.closed.Load() {
		return eunavailable(errClosed)
	}
	key := l.s.keys.events(env)
	err = l.s.write(func(fx *effects) error {
		adds := make([]*goredis.StringCmd, len(payloads))
		_, err := l.s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			for i, b := range payloads {
				adds[i] = p.XAdd(ctx, &goredis.XAddArgs{Stream: key, MaxLen: l.limit, Approx: true, Values: []any{eventField, b}})
			}
			return nil
		})
		if err != nil {
			return translate("append events", err)
		}
		for i, b := range payloads {
			// The journal replays the entries with the IDs they were given.
			fx.command("XADD", key, "MAXLEN", "~", strconv.FormatInt(l.limit, 10), adds[i].Val(), eventField, b)
		}
		return nil
	})
	return eunavailable(err)
}

// StoredEvent is an event as the log holds it, with its stream entry ID.
type StoredEvent struct {
	// ID is the entry ID ("MILLIS-SEQ"), increasing in arrival order.
	ID string
	experiments.Event
}

var entryID = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// Read returns up to count of env's events stored after the entry ID after
// ("" for the oldest kept), oldest first; fewer, or none, at the end of the
// log. Errors: *flags.InputError for an empty environment name, a
// malformed after or a count below 1; an error naming the entry for one
// that cannot be decoded; an error matching experiments.ErrUnavailable and
// flags.ErrUnavailable when Redis cannot be reached.
func (l *EventLog) Read(ctx context.Context, env, after string, count int) (out []StoredEvent, err error) {
	if err := checkEnv(env); err != nil {
		return nil, err
	}
	start := "-"
	if after != "" {
		if !entryID.MatchString(after) {
			return nil, &flags.InputError{Field: "after", Problem: `must be a stream entry ID such as "1700000000000-0"`}
		}
		start = "(" + after
	}
	if count < 1 {
		return nil, &flags.InputError{Field: "count", Problem: "must be at least 1"}
	}
	done := l.s.met.start("read_events")
	defer func() { done(err) }()
	if l.s.closed.Load() {
		return nil, eunavailable(errClosed)
	}
	msgs, err := l.s.rdb.XRangeN(ctx, l.s.keys.events(env), start, "+", int64(count)).Result()
	if err != nil {
		return nil, eunavailable(translate("read events", err))
	}
	out = make([]StoredEvent, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values[eventField].(string)
		var se storedEvent
		if err := json.Unmarshal([]byte(raw), &se); err != nil || se.Name == "" {
			return nil, fmt.Errorf("environment %q: event entry %s is malformed", env, m.ID)
		}
		out = append(out, StoredEvent{ID: m.ID, Event: experiments.Event{
			Name: se.Name, TargetingKey: se.TargetingKey, Value: se.Value, Details: se.Details, Context: se.Context,
			Time: time.UnixMilli(se.TimeMillis).UTC(), FlagKey: se.FlagKey, Variant: se.Variant,
		}})
	}
	return out, nil
}

// eventsUnavailable is a store outage reported to event-log callers: it
// reads like the store's own error and matches both
// experiments.ErrUnavailable and flags.ErrUnavailable.
type eventsUnavailable struct{ err error }

func (u *eventsUnavailable) Error() string   { return u.err.Error() }
func (u *eventsUnavailable) Unwrap() []error { return []error{u.err, experiments.ErrUnavailable} }

// eunavailable marks an error wrapping flags.ErrUnavailable as
// experiments.ErrUnavailable too.
func eunavailable(err error) error {
	if errors.Is(err, flags.ErrUnavailable) && !errors.Is(err, experiments.ErrUnavailable) {
		return &eventsUnavailable{err}
	}
	return err
}

// streamEntry is one stream entry in the embedded store's data file.
// Consumer groups are not kept.
type streamEntry struct {
	ID     blob   `json:"id"`
	Values []blob `json:"v"`
}

func dumpStream(m *miniredis.Miniredis, key string) ([]streamEntry, error) {
	es, err := m.Stream(key)
	if err != nil {
		return nil, err
	}
	out := make([]streamEntry, len(es))
	for i, e := range es {
		out[i] = streamEntry{ID: blob(e.ID), Values: toBlobs(e.Values)}
	}
	return out, nil
}

func loadStream(m *miniredis.Miniredis, key string, es []streamEntry) error {
	for _, e := range es {
		if _, err := m.XAdd(key, string(e.ID), fromBlobs(e.Values)); err != nil {
			return err
		}
	}
	return nil
}
