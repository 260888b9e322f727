package canarytest

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
	"github.com/flagpole/flagpole/canary/internal/memlease"
)

// Memory is an in-process canary.Store for tests and single-process tools.
// It keeps everything as JSON, as a real store does, so values come back
// exactly as a real store would return them (NaN as null and back, no
// shared slices). It is safe for concurrent use. Fail makes it answer
// ErrUnavailable, to test callers' error paths.
type Memory struct {
	mu        sync.Mutex
	templates map[string]memTemplate
	seq       map[string]int // highest version each template name ever had
	runs      map[string]*memRun
	down      error
}

type memTemplate struct {
	doc     []byte
	version int
	updated time.Time
}

type memRun struct {
	doc     []byte
	version int64
	created time.Time
	tpl     string
	phase   canary.Phase
	wake    time.Time
	steps   map[int][]byte
	lease   canary.Lease // Owner "" when released
}

var _ canary.Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{templates: map[string]memTemplate{}, seq: map[string]int{}, runs: map[string]*memRun{}}
}

// Fail makes every later call return an error wrapping
// canary.ErrUnavailable (true) or work again (false).
func (m *Memory) Fail(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = nil
	if down {
		m.down = fmt.Errorf("memory store switched off: %w", canary.ErrUnavailable)
	}
}

// lock takes the lock and reports a simulated outage or a done context.
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

// PutTemplate implements canary.Store.
func (m *Memory) PutTemplate(ctx context.Context, t *canary.Template, o canary.TemplateWrite) (canary.StoredTemplate, error) {
	if t == nil || t.Name == "" {
		return canary.StoredTemplate{}, &canary.ValidationError{Problems: []canary.FieldError{{Field: "name", Message: "required"}}}
	}
	if err := m.lock(ctx); err != nil {
		return canary.StoredTemplate{}, err
	}
	defer m.mu.Unlock()
	cur, ok := m.templates[t.Name]
	switch {
	case o.Create && ok:
		return canary.StoredTemplate{}, fmt.Errorf("template %q: %w", t.Name, canary.ErrExists)
	case o.IfVersion != 0 && !ok:
		return canary.StoredTemplate{}, fmt.Errorf("template %q: %w", t.Name, canary.ErrNotFound)
	case o.IfVersion != 0 && cur.version != o.IfVersion:
		return canary.StoredTemplate{}, fmt.Errorf("template %q is at version %d, not %d: %w", t.Name, cur.version, o.IfVersion, canary.ErrConflict)
	}
	v := m.seq[t.Name] + 1
	cp := *t
	cp.Version = v
	doc, err := json.Marshal(&cp)
	if err != nil {
		return canary.StoredTemplate{}, fmt.Errorf("encoding template %q: %v", t.Name, err)
	}
	m.seq[t.Name] = v
	m.templates[t.Name] = memTemplate{doc: doc, version: v, updated: o.At.UTC()}
	return decodeTemplate(m.templates[t.Name])
}

func decodeTemplate(mt memTemplate) (canary.StoredTemplate, error) {
	var st canary.StoredTemplate
	if err := json.Unmarshal(mt.doc, &st.Template); err != nil {
		return canary.StoredTemplate{}, fmt.Errorf("stored template is malformed: %v", err)
	}
	st.Version, st.UpdatedAt = mt.version, mt.updated
	return st, nil
}

// Template implements canary.Store.
func (m *Memory) Template(ctx context.Context, name string) (canary.StoredTemplate, error) {
	if err := m.lock(ctx); err != nil {
		return canary.StoredTemplate{}, err
	}
	defer m.mu.Unlock()
	mt, ok := m.templates[name]
	if !ok {
		return canary.StoredTemplate{}, fmt.Errorf("template %q: %w", name, canary.ErrNotFound)
	}
	return decodeTemplate(mt)
}

// Templates implements canary.Store.
func (m *Memory) Templates(ctx context.Context) ([]canary.StoredTemplate, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make([]canary.StoredTemplate, 0, len(m.templates))
	for _, mt := range m.templates {
		st, err := decodeTemplate(mt)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b canary.StoredTemplate) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteTemplate implements canary.Store.
func (m *Memory) DeleteTemplate(ctx context.Context, name string, ifVersion int) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	cur, ok := m.templates[name]
	switch {
	case !ok:
		return fmt.Errorf("template %q: %w", name, canary.ErrNotFound)
	case ifVersion != 0 && cur.version != ifVersion:
		return fmt.Errorf("template %q is at version %d, not %d: %w", name, cur.version, ifVersion, canary.ErrConflict)
	}
	delete(m.templates, name)
	return nil
}

// CreateRun implements canary.Store.
func (m *Memory) CreateRun(ctx context.Context, r *canary.Run) (canary.StoredRun, error) {
	if r == nil {
		return canary.StoredRun{}, &canary.ValidationError{Problems: []canary.FieldError{{Field: "run", Message: "required"}}}
	}
	if err := canary.CheckRunID(r.ID); err != nil {
		return canary.StoredRun{}, err
	}
	doc, err := json.Marshal(r)
	if err != nil {
		return canary.StoredRun{}, fmt.Errorf("encoding run %s: %v", r.ID, err)
	}
	if err := m.lock(ctx); err != nil {
		return canary.StoredRun{}, err
	}
	defer m.mu.Unlock()
	if _, ok := m.runs[r.ID]; ok {
		return canary.StoredRun{}, fmt.Errorf("run %s: %w", r.ID, canary.ErrExists)
	}
	mr := &memRun{doc: doc, version: 1, created: r.CreatedAt.UTC().Truncate(time.Millisecond), tpl: r.Template.Name, phase: r.Phase, wake: r.WakeAt(), steps: map[int][]byte{}}
	m.runs[r.ID] = mr
	return mr.decode()
}

func (mr *memRun) decode() (canary.StoredRun, error) {
	var sr canary.StoredRun
	if err := json.Unmarshal(mr.doc, &sr.Run); err != nil {
		return canary.StoredRun{}, fmt.Errorf("stored run is malformed: %v", err)
	}
	sr.Version = mr.version
	return sr, nil
}

// Run implements canary.Store.
func (m *Memory) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	if err := m.lock(ctx); err != nil {
		return canary.StoredRun{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.runs[id]
	if !ok {
		return canary.StoredRun{}, fmt.Errorf("run %s: %w", id, canary.ErrNotFound)
	}
	return mr.decode()
}

// Runs implements canary.Store. Cursors are "MILLIS:ID" of the last run of
// the previous page.
func (m *Memory) Runs(ctx context.Context, q canary.RunQuery) (canary.RunPage, error) {
	limit, err := canary.PageLimit("limit", q.Limit, canary.DefaultRunPage, canary.MaxRunPage)
	if err != nil {
		return canary.RunPage{}, err
	}
	var afterMS int64
	var afterID string
	if q.Cursor != "" {
		ms, id, ok := strings.Cut(q.Cursor, ":")
		v, perr := strconv.ParseInt(ms, 10, 64)
		if !ok || perr != nil || id == "" {
			return canary.RunPage{}, &canary.ValidationError{Problems: []canary.FieldError{{Field: "cursor", Message: "is not the next value of an earlier page"}}}
		}
		afterMS, afterID = v, id
	}
	if err := m.lock(ctx); err != nil {
		return canary.RunPage{}, err
	}
	defer m.mu.Unlock()
	type item struct {
		ms int64
		id string
		mr *memRun
	}
	var all []item
	for id, mr := range m.runs {
		all = append(all, item{mr.created.UnixMilli(), id, mr})
	}
	slices.SortFunc(all, func(a, b item) int { return cmp.Or(cmp.Compare(b.ms, a.ms), strings.Compare(b.id, a.id)) })
	page := canary.RunPage{Runs: []canary.StoredRun{}}
	for _, it := range all {
		if q.Cursor != "" && (it.ms > afterMS || (it.ms == afterMS && it.id >= afterID)) {
			continue
		}
		if q.Template != "" && it.mr.tpl != q.Template {
			continue
		}
		if len(q.Phases) > 0 && !slices.Contains(q.Phases, it.mr.phase) {
			continue
		}
		if len(page.Runs) == limit {
			last := page.Runs[limit-1]
			page.Next = strconv.FormatInt(last.CreatedAt.UnixMilli(), 10) + ":" + last.ID
			break
		}
		sr, err := it.mr.decode()
		if err != nil {
			return canary.RunPage{}, err
		}
		page.Runs = append(page.Runs, sr)
	}
	return page, nil
}

// UpdateRun implements canary.Store.
func (m *Memory) UpdateRun(ctx context.Context, u canary.RunUpdate) (canary.StoredRun, error) {
	if err := canary.CheckRunUpdate(u); err != nil {
		return canary.StoredRun{}, err
	}
	doc, err := json.Marshal(u.Run)
	if err != nil {
		return canary.StoredRun{}, fmt.Errorf("encoding run %s: %v", u.Run.ID, err)
	}
	var step []byte
	if u.Step != nil {
		if step, err = json.Marshal(u.Step); err != nil {
			return canary.StoredRun{}, fmt.Errorf("encoding step %d of run %s: %v", u.Step.Number, u.Run.ID, err)
		}
	}
	if err := m.lock(ctx); err != nil {
		return canary.StoredRun{}, err
	}
	defer m.mu.Unlock()
	id := u.Run.ID
	mr, ok := m.runs[id]
	switch {
	case !ok:
		return canary.StoredRun{}, fmt.Errorf("run %s: %w", id, canary.ErrNotFound)
	case u.Token > 0 && (mr.lease.Token != u.Token || mr.lease.Owner == ""):
		return canary.StoredRun{}, fmt.Errorf("run %s: token %d, current lease %d: %w", id, u.Token, mr.lease.Token, canary.ErrLeaseLost)
	case mr.version != u.IfVersion:
		return canary.StoredRun{}, fmt.Errorf("run %s is at version %d, not %d: %w", id, mr.version, u.IfVersion, canary.ErrConflict)
	case u.Step != nil && mr.steps[u.Step.Number] != nil:
		return canary.StoredRun{}, fmt.Errorf("run %s step %d: %w", id, u.Step.Number, canary.ErrStepRecorded)
	}
	if u.Step != nil {
		mr.steps[u.Step.Number] = step
	}
	mr.doc, mr.version, mr.phase, mr.wake = doc, mr.version+1, u.Run.Phase, u.Run.WakeAt()
	return mr.decode()
}

// DueRuns implements canary.Store.
func (m *Memory) DueRuns(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	type item struct {
		wake time.Time
		id   string
	}
	var due []item
	for id, mr := range m.runs {
		if !mr.phase.Terminal() && !mr.wake.After(now) {
			due = append(due, item{mr.wake, id})
		}
	}
	slices.SortFunc(due, func(a, b item) int { return cmp.Or(a.wake.Compare(b.wake), strings.Compare(a.id, b.id)) })
	out := make([]string, 0, min(len(due), max(limit, 0)))
	for _, it := range due {
		if len(out) >= limit {
			break
		}
		out = append(out, it.id)
	}
	return out, nil
}

// Measurements implements canary.Store.
func (m *Memory) Measurements(ctx context.Context, runID string, after, limit int) ([]canary.Step, error) {
	limit, err := canary.PageLimit("limit", limit, canary.DefaultMeasurementPage, canary.MaxMeasurementPage)
	if err != nil {
		return nil, err
	}
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	mr, ok := m.runs[runID]
	if !ok {
		return nil, fmt.Errorf("run %s: %w", runID, canary.ErrNotFound)
	}
	nums := make([]int, 0, len(mr.steps))
	for n := range mr.steps {
		if n > after {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	out := make([]canary.Step, 0, min(len(nums), limit))
	for _, n := range nums[:min(len(nums), limit)] {
		var s canary.Step
		if err := json.Unmarshal(mr.steps[n], &s); err != nil {
			return nil, fmt.Errorf("stored step %d of run %s is malformed: %v", n, runID, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// AcquireLease implements canary.Store.
func (m *Memory) AcquireLease(ctx context.Context, runID, owner string, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if err := canary.CheckLeaseRequest(runID, owner, ttl); err != nil {
		return canary.Lease{}, err
	}
	if err := m.lock(ctx); err != nil {
		return canary.Lease{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.runs[runID]
	if !ok {
		return canary.Lease{}, fmt.Errorf("run %s: %w", runID, canary.ErrNotFound)
	}
	return memlease.Acquire(&mr.lease, "run", runID, owner, now, ttl)
}

// RenewLease implements canary.Store.
func (m *Memory) RenewLease(ctx context.Context, l canary.Lease, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if err := canary.CheckLeaseRequest(l.RunID, l.Owner, ttl); err != nil {
		return canary.Lease{}, err
	}
	if err := m.lock(ctx); err != nil {
		return canary.Lease{}, err
	}
	defer m.mu.Unlock()
	mr, ok := m.runs[l.RunID]
	if !ok {
		return canary.Lease{}, fmt.Errorf("run %s: %w", l.RunID, canary.ErrNotFound)
	}
	return memlease.Renew(&mr.lease, "run", l, now, ttl)
}

// ReleaseLease implements canary.Store.
func (m *Memory) ReleaseLease(ctx context.Context, l canary.Lease) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if mr, ok := m.runs[l.RunID]; ok {
		memlease.Release(&mr.lease, l)
	}
	return nil
}
