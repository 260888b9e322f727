// Package rollouttest is the conformance suite every canary.RolloutStore
// backend runs (the same tests against the embedded store, a real Redis,
// or anything else that claims to be one), and an in-memory store for tests
// of the store's callers.
package rollouttest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/internal/memlease"
)

// Memory is an in-process canary.RolloutStore for tests. It keeps rollouts
// as JSON, as a real store does, so values come back as a real store
// returns them (no shared slices). It is safe for concurrent use. Fail
// makes it answer ErrUnavailable.
type Memory struct {
	mu       sync.Mutex
	rollouts map[string]*memRollout
	active   map[string]string // env/flag → ID
	down     error
}

type memRollout struct {
	doc     []byte
	version int64
	r       canary.Rollout // decoded, for filters
	lease   canary.Lease
}

var _ canary.RolloutStore = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{rollouts: map[string]*memRollout{}, active: map[string]string{}}
}

// Fail makes every later call return an error wrapping
// canary.ErrUnavailable (true) or work again (false).
func (m *Memory) Fail(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = nil
	if down {
		m.down = fmt.Errorf("memory rollout store switched off: %w", canary.ErrUnavailable)
	}
}

func (m *Memory) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if err := m.down; err != nil {
		m.mu.Unlock()
		return err
	}
	return nil
}

func activeKey(env, flag string) string { return env + "/" + flag }

func decode(doc []byte, version int64) (canary.StoredRollout, error) {
	sr := canary.StoredRollout{Version: version}
	if err := json.Unmarshal(doc, &sr.Rollout); err != nil {
		return canary.StoredRollout{}, err
	}
	return sr, nil
}

// CreateRollout implements canary.RolloutStore.
func (m *Memory) CreateRollout(ctx context.Context, r *canary.Rollout) (canary.StoredRollout, error) {
	if err := canary.CheckRollout(r); err != nil {
		return canary.StoredRollout{}, err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return canary.StoredRollout{}, err
	}
	if err := m.lock(ctx); err != nil {
		return canary.StoredRollout{}, err
	}
	defer m.mu.Unlock()
	if _, ok := m.rollouts[r.ID]; ok {
		return canary.StoredRollout{}, fmt.Errorf("rollout %s: %w", r.ID, canary.ErrExists)
	}
	if r.State.Active() {
		if id, ok := m.active[activeKey(r.Env, r.Flag)]; ok {
			return canary.StoredRollout{}, fmt.Errorf("flag %q in %q has rollout %s: %w", r.Flag, r.Env, id, canary.ErrRolloutActive)
		}
		m.active[activeKey(r.Env, r.Flag)] = r.ID
	}
	sr, err := decode(doc, 1)
	if err != nil {
		return sr, err
	}
	m.rollouts[r.ID] = &memRollout{doc: doc, version: 1, r: sr.Rollout}
	return sr, nil
}

// Rollout implements canary.RolloutStore.
func (m *Memory) Rollout(ctx context.Context, id string) (canary.StoredRollout, error) {
	if err := m.lock(ctx); err != nil {
		return canary.StoredRollout{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.rollouts[id]
	if !ok {
		return canary.StoredRollout{}, fmt.Errorf("rollout %q: %w", id, canary.ErrNotFound)
	}
	return decode(mr.doc, mr.version)
}

// ActiveRollout implements canary.RolloutStore.
func (m *Memory) ActiveRollout(ctx context.Context, env, flag string) (canary.StoredRollout, error) {
	if err := m.lock(ctx); err != nil {
		return canary.StoredRollout{}, err
	}
	defer m.mu.Unlock()
	id, ok := m.active[activeKey(env, flag)]
	if !ok {
		return canary.StoredRollout{}, fmt.Errorf("flag %q in %q has no active rollout: %w", flag, env, canary.ErrNotFound)
	}
	mr := m.rollouts[id]
	return decode(mr.doc, mr.version)
}

// Rollouts implements canary.RolloutStore.
func (m *Memory) Rollouts(ctx context.Context, q canary.RolloutQuery) ([]canary.StoredRollout, error) {
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultRolloutPage, canary.MaxRolloutPage)
	if err != nil {
		return nil, err
	}
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var all []*memRollout
	for _, mr := range m.rollouts {
		if q.Matches(&mr.r) {
			all = append(all, mr)
		}
	}
	slices.SortFunc(all, func(a, b *memRollout) int {
		if c := b.r.CreatedAt.UnixMilli() - a.r.CreatedAt.UnixMilli(); c != 0 {
			return cmp.Compare(c, 0)
		}
		return cmp.Compare(b.r.ID, a.r.ID)
	})
	out := []canary.StoredRollout{}
	for _, mr := range all[:min(limit, len(all))] {
		sr, err := decode(mr.doc, mr.version)
		if err != nil {
			return nil, err
		}
		out = append(out, sr)
	}
	return out, nil
}

// UpdateRollout implements canary.RolloutStore.
func (m *Memory) UpdateRollout(ctx context.Context, u canary.RolloutUpdate) (canary.StoredRollout, error) {
	if err := canary.CheckRolloutUpdate(u); err != nil {
		return canary.StoredRollout{}, err
	}
	r := u.Rollout
	doc, err := json.Marshal(r)
	if err != nil {
		return canary.StoredRollout{}, err
	}
	if err := m.lock(ctx); err != nil {
		return canary.StoredRollout{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.rollouts[r.ID]
	if !ok {
		return canary.StoredRollout{}, fmt.Errorf("rollout %s: %w", r.ID, canary.ErrNotFound)
	}
	if u.Token != 0 && (mr.lease.Token != u.Token || mr.lease.Owner == "") {
		return canary.StoredRollout{}, fmt.Errorf("rollout %s: token %d, current lease %d: %w", r.ID, u.Token, mr.lease.Token, canary.ErrLeaseLost)
	}
	if mr.version != u.IfVersion {
		return canary.StoredRollout{}, fmt.Errorf("rollout %s is at version %d, not %d: %w", r.ID, mr.version, u.IfVersion, canary.ErrConflict)
	}
	if r.Env != mr.r.Env || r.Flag != mr.r.Flag {
		return canary.StoredRollout{}, &canary.ValidationError{Problems: []canary.FieldError{{Field: "rollout", Message: "a rollout's env and flag cannot change"}}}
	}
	key := activeKey(r.Env, r.Flag)
	if r.State.Active() {
		if id, ok := m.active[key]; ok && id != r.ID {
			return canary.StoredRollout{}, fmt.Errorf("flag %q in %q has rollout %s: %w", r.Flag, r.Env, id, canary.ErrRolloutActive)
		}
		m.active[key] = r.ID
	} else if m.active[key] == r.ID {
		delete(m.active, key)
	}
	sr, err := decode(doc, mr.version+1)
	if err != nil {
		return sr, err
	}
	mr.doc, mr.version, mr.r = doc, mr.version+1, sr.Rollout
	return sr, nil
}

// wakeMS is a rollout's due time rounded up to the millisecond, as a real
// store keeps it; ok is false when it has none.
func wakeMS(r *canary.Rollout) (int64, bool) {
	w := r.WakeAt()
	if w.IsZero() {
		return 0, false
	}
	ms := w.UnixMilli()
	if w.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms, true
}

// DueRollouts implements canary.RolloutStore.
func (m *Memory) DueRollouts(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	type due struct {
		id string
		at int64
	}
	var ds []due
	for id, mr := range m.rollouts {
		if at, ok := wakeMS(&mr.r); ok && at <= now.UnixMilli() {
			ds = append(ds, due{id, at})
		}
	}
	slices.SortFunc(ds, func(a, b due) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	out := []string{}
	for _, d := range ds[:min(max(limit, 0), len(ds))] {
		out = append(out, d.id)
	}
	return out, nil
}

// AcquireRolloutLease implements canary.RolloutStore.
func (m *Memory) AcquireRolloutLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if err := canary.CheckLeaseRequest(id, owner, ttl); err != nil {
		return canary.Lease{}, err
	}
	if err := m.lock(ctx); err != nil {
		return canary.Lease{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.rollouts[id]
	if !ok {
		return canary.Lease{}, fmt.Errorf("rollout %s: %w", id, canary.ErrNotFound)
	}
	return memlease.Acquire(&mr.lease, "rollout", id, owner, now, ttl)
}

// ReleaseRolloutLease implements canary.RolloutStore.
func (m *Memory) ReleaseRolloutLease(ctx context.Context, l canary.Lease) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if mr, ok := m.rollouts[l.RunID]; ok {
		memlease.Release(&mr.lease, l)
	}
	return nil
}
