package outboxtest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// Memory is an in-process canary.Outbox for tests and single-process tools.
// It keeps notifications as JSON, as a real store does, so values come back
// as a real store would return them. It is safe for concurrent use. Fail
// makes it answer canary.ErrUnavailable, to test callers' error paths.
type Memory struct {
	mu    sync.Mutex
	ntfs  map[string]*memNotification
	dlvs  map[string]*memDelivery
	down  bool
	calls int
}

type memNotification struct {
	doc      []byte
	at       time.Time
	targets  []string
	attempts [][]byte
}

type memDelivery struct {
	d      canary.Delivery
	token  int64
	owner  string
	lease  time.Time // while claimed
	due    time.Time // the due-index time: NextAt, or the lease's end while claimed
	deadAt time.Time
}

var _ canary.Outbox = (*Memory)(nil)

// NewMemory returns an empty outbox.
func NewMemory() *Memory {
	return &Memory{ntfs: map[string]*memNotification{}, dlvs: map[string]*memDelivery{}}
}

// Fail makes every later call return an error wrapping
// canary.ErrUnavailable (true) or work again (false).
func (m *Memory) Fail(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

// Calls reports how many calls the outbox has answered.
func (m *Memory) Calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

func (m *Memory) enter() error {
	m.mu.Lock()
	m.calls++
	if m.down {
		m.mu.Unlock()
		return fmt.Errorf("memory outbox: %w", canary.ErrUnavailable)
	}
	return nil
}

// Enqueue implements canary.Outbox.
func (m *Memory) Enqueue(ctx context.Context, n canary.Notification, targets []string) error {
	if err := canary.CheckNotification(n); err != nil {
		return err
	}
	if err := canary.CheckTargets(targets); err != nil {
		return err
	}
	doc, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := m.enter(); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if _, ok := m.ntfs[n.ID]; ok {
		return fmt.Errorf("notification %s: %w", n.ID, canary.ErrExists)
	}
	at := truncMS(n.Time)
	m.ntfs[n.ID] = &memNotification{doc: doc, at: at, targets: slices.Clone(targets)}
	for _, t := range targets {
		id := canary.DeliveryID(n.ID, t)
		m.dlvs[id] = &memDelivery{
			d:   canary.Delivery{ID: id, NotificationID: n.ID, Target: t, State: canary.DeliveryPending, NextAt: at, UpdatedAt: at},
			due: at,
		}
	}
	return nil
}

func (m *Memory) notification(id string) canary.Notification {
	var n canary.Notification
	_ = json.Unmarshal(m.ntfs[id].doc, &n)
	return n
}

// Claim implements canary.Outbox.
func (m *Memory) Claim(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]canary.Claim, error) {
	if err := canary.CheckClaim(owner, lease, limit); err != nil {
		return nil, err
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	now = truncMS(now)
	var due []*memDelivery
	for _, d := range m.dlvs {
		if d.d.State == canary.DeliveryPending && !d.due.After(now) {
			due = append(due, d)
		}
	}
	slices.SortFunc(due, func(a, b *memDelivery) int {
		if c := a.due.Compare(b.due); c != 0 {
			return c
		}
		return strings.Compare(a.d.ID, b.d.ID)
	})
	if len(due) > limit {
		due = due[:limit]
	}
	until := now.Add(lease).UTC()
	out := []canary.Claim{}
	for _, d := range due {
		d.token++
		d.owner, d.lease, d.due = owner, until, until
		out = append(out, canary.Claim{Delivery: d.d, Notification: m.notification(d.d.NotificationID), Owner: owner, Token: d.token, LeaseUntil: until})
	}
	return out, nil
}

// Record implements canary.Outbox.
func (m *Memory) Record(ctx context.Context, c canary.Claim, a canary.Attempt) (canary.Delivery, error) {
	if err := canary.CheckAttempt(c, a); err != nil {
		return canary.Delivery{}, err
	}
	if err := m.enter(); err != nil {
		return canary.Delivery{}, err
	}
	defer m.mu.Unlock()
	d, ok := m.dlvs[c.Delivery.ID]
	if !ok {
		return canary.Delivery{}, fmt.Errorf("delivery %s: %w", c.Delivery.ID, canary.ErrNotFound)
	}
	if d.d.State != canary.DeliveryPending || d.token != c.Token || d.owner != c.Owner || d.d.Attempts != c.Delivery.Attempts {
		return canary.Delivery{}, fmt.Errorf("delivery %s: token %d is not the current claim: %w", c.Delivery.ID, c.Token, canary.ErrLeaseLost)
	}
	a.Target = d.d.Target
	a.Number = d.d.Attempts + 1
	a.At = a.At.UTC()
	if !a.RetryAt.IsZero() {
		a.RetryAt = truncMS(a.RetryAt)
	}
	doc, err := json.Marshal(a)
	if err != nil {
		return canary.Delivery{}, err
	}
	n := m.ntfs[d.d.NotificationID]
	n.attempts = append(n.attempts, doc)
	d.d.Attempts = a.Number
	d.d.LastStatus, d.d.LastError = a.Status, a.Error
	d.d.UpdatedAt = truncMS(a.At)
	d.owner, d.lease = "", time.Time{}
	switch a.Outcome {
	case canary.OutcomeDelivered:
		d.d.State, d.d.NextAt = canary.DeliveryDelivered, time.Time{}
	case canary.OutcomeRetry:
		d.d.NextAt, d.due = a.RetryAt, a.RetryAt
	case canary.OutcomeDead:
		d.d.State, d.d.NextAt = canary.DeliveryDead, time.Time{}
		d.deadAt = truncMS(a.At)
	}
	return d.d, nil
}

// Notification implements canary.Outbox.
func (m *Memory) Notification(ctx context.Context, id string) (canary.NotificationLog, error) {
	if err := m.enter(); err != nil {
		return canary.NotificationLog{}, err
	}
	defer m.mu.Unlock()
	n, ok := m.ntfs[id]
	if !ok {
		return canary.NotificationLog{}, fmt.Errorf("notification %q: %w", id, canary.ErrNotFound)
	}
	log := m.logOf(id)
	for _, doc := range n.attempts {
		var a canary.Attempt
		_ = json.Unmarshal(doc, &a)
		log.Attempts = append(log.Attempts, a)
	}
	return log, nil
}

func (m *Memory) logOf(id string) canary.NotificationLog {
	log := canary.NotificationLog{Notification: m.notification(id), Deliveries: []canary.Delivery{}}
	for _, t := range m.ntfs[id].targets {
		log.Deliveries = append(log.Deliveries, m.dlvs[canary.DeliveryID(id, t)].d)
	}
	return log
}

// Notifications implements canary.Outbox. The cursor is "MILLIS:ID" of the
// last notification of the previous page.
func (m *Memory) Notifications(ctx context.Context, q canary.NotificationQuery) (canary.NotificationPage, error) {
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultNotificationPage, canary.MaxNotificationPage)
	if err != nil {
		return canary.NotificationPage{}, err
	}
	var curMS int64
	var curID string
	if q.Cursor != "" {
		var ok bool
		if curMS, curID, ok = ParseCursor(q.Cursor); !ok {
			return canary.NotificationPage{}, &canary.ValidationError{Problems: []canary.FieldError{{Field: "cursor", Message: "is not the next value of an earlier page"}}}
		}
	}
	if err := m.enter(); err != nil {
		return canary.NotificationPage{}, err
	}
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.ntfs))
	for id := range m.ntfs {
		ids = append(ids, id)
	}
	// Newest first: by time descending, then ID descending.
	slices.SortFunc(ids, func(a, b string) int {
		if c := cmp.Compare(m.ntfs[b].at.UnixMilli(), m.ntfs[a].at.UnixMilli()); c != 0 {
			return c
		}
		return strings.Compare(b, a)
	})
	page := canary.NotificationPage{Notifications: []canary.NotificationLog{}}
	for _, id := range ids {
		ms := m.ntfs[id].at.UnixMilli()
		if q.Cursor != "" && (ms > curMS || (ms == curMS && id >= curID)) {
			continue
		}
		if len(page.Notifications) == limit {
			last := page.Notifications[limit-1].Notification
			page.Next = Cursor(last.Time, last.ID)
			break
		}
		page.Notifications = append(page.Notifications, m.logOf(id))
	}
	return page, nil
}

// Dead implements canary.Outbox.
func (m *Memory) Dead(ctx context.Context, limit int) ([]canary.Delivery, error) {
	limit, err := canary.PageLimit("limit", limit, canary.DefaultNotificationPage, canary.MaxNotificationPage)
	if err != nil {
		return nil, err
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var dead []*memDelivery
	for _, d := range m.dlvs {
		if d.d.State == canary.DeliveryDead {
			dead = append(dead, d)
		}
	}
	slices.SortFunc(dead, func(a, b *memDelivery) int {
		if c := b.deadAt.Compare(a.deadAt); c != 0 {
			return c
		}
		return strings.Compare(b.d.ID, a.d.ID)
	})
	out := []canary.Delivery{}
	for i, d := range dead {
		if i == limit {
			break
		}
		out = append(out, d.d)
	}
	return out, nil
}

// Redrive implements canary.Outbox.
func (m *Memory) Redrive(ctx context.Context, id string, now time.Time) (canary.Delivery, error) {
	if err := m.enter(); err != nil {
		return canary.Delivery{}, err
	}
	defer m.mu.Unlock()
	d, ok := m.dlvs[id]
	if !ok {
		return canary.Delivery{}, fmt.Errorf("delivery %q: %w", id, canary.ErrNotFound)
	}
	if d.d.State != canary.DeliveryDead {
		return canary.Delivery{}, fmt.Errorf("delivery %s is %s, not dead: %w", id, d.d.State, canary.ErrConflict)
	}
	now = truncMS(now)
	d.d.State, d.d.Attempts, d.d.NextAt, d.d.UpdatedAt = canary.DeliveryPending, 0, now, now
	d.due, d.deadAt = now, time.Time{}
	return d.d, nil
}

// Stats implements canary.Outbox.
func (m *Memory) Stats(ctx context.Context, now time.Time) (canary.OutboxStats, error) {
	if err := m.enter(); err != nil {
		return canary.OutboxStats{}, err
	}
	defer m.mu.Unlock()
	now = truncMS(now)
	var st canary.OutboxStats
	for _, d := range m.dlvs {
		switch d.d.State {
		case canary.DeliveryPending:
			st.Pending++
			if !d.due.After(now) {
				st.Due++
			}
		case canary.DeliveryDead:
			st.Dead++
		}
	}
	return st, nil
}

// Prune implements canary.Outbox.
func (m *Memory) Prune(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit < 1 {
		return 0, &canary.ValidationError{Problems: []canary.FieldError{{Field: "limit", Message: "must be at least 1"}}}
	}
	if err := m.enter(); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	var old []string
	for id, n := range m.ntfs {
		if n.at.UnixMilli() < before.UnixMilli() {
			old = append(old, id)
		}
	}
	slices.SortFunc(old, func(a, b string) int {
		if c := m.ntfs[a].at.Compare(m.ntfs[b].at); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	if len(old) > limit {
		old = old[:limit]
	}
	removed := 0
next:
	for _, id := range old {
		for _, t := range m.ntfs[id].targets {
			if m.dlvs[canary.DeliveryID(id, t)].d.State == canary.DeliveryPending {
				continue next
			}
		}
		for _, t := range m.ntfs[id].targets {
			delete(m.dlvs, canary.DeliveryID(id, t))
		}
		delete(m.ntfs, id)
		removed++
	}
	return removed, nil
}

// Cursor is the page cursor of a notification at t with ID id:
// "MILLIS:ID". Backends share it so that pages are interchangeable.
func Cursor(t time.Time, id string) string {
	return strconv.FormatInt(t.UnixMilli(), 10) + ":" + id
}

// ParseCursor reads a Cursor; ok is false when c is malformed.
func ParseCursor(c string) (ms int64, id string, ok bool) {
	m, id, found := strings.Cut(c, ":")
	v, err := strconv.ParseInt(m, 10, 64)
	if !found || err != nil || id == "" {
		return 0, "", false
	}
	return v, id, true
}

// truncMS rounds t down to the millisecond in UTC, the precision stores keep.
func truncMS(t time.Time) time.Time {
	return time.UnixMilli(t.UnixMilli()).UTC()
}
