package canary_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/canary/rollouttest"
	"github.com/flagpole/flagpole/flags"
)

// memFlags is an in-memory flags.Store for the rollout tests (the real
// stores are tested against redis in the redis and api packages).
type memFlags struct {
	mu    sync.Mutex
	envs  map[string]flags.Snapshot
	audit map[string][]flags.AuditEntry
}

func newMemFlags() *memFlags {
	return &memFlags{envs: map[string]flags.Snapshot{}, audit: map[string][]flags.AuditEntry{}}
}

func (m *memFlags) CreateEnvironment(_ context.Context, name string, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.envs[name]; ok {
		return flags.Snapshot{}, flags.ErrExists
	}
	s := flags.Snapshot{Env: name, Version: 1, Document: doc, UpdatedAt: e.Time}
	m.envs[name] = s
	e.Version = 1
	m.audit[name] = append(m.audit[name], e)
	return s, nil
}

func (m *memFlags) DeleteEnvironment(_ context.Context, name string, ifVersion int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.envs[name]
	if !ok {
		return flags.ErrNotFound
	}
	if ifVersion != 0 && s.Version != ifVersion {
		return flags.ErrConflict
	}
	delete(m.envs, name)
	return nil
}

func (m *memFlags) Environments(context.Context) ([]flags.Environment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []flags.Environment
	for _, s := range m.envs {
		out = append(out, flags.Environment{Name: s.Env, Version: s.Version, UpdatedAt: s.UpdatedAt})
	}
	slices.SortFunc(out, func(a, b flags.Environment) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memFlags) Snapshot(_ context.Context, env string) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.envs[env]
	if !ok {
		return s, fmt.Errorf("environment %q: %w", env, flags.ErrNotFound)
	}
	return s, nil
}

func (m *memFlags) Snapshots(ctx context.Context) ([]flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []flags.Snapshot
	for _, s := range m.envs {
		out = append(out, s)
	}
	return out, nil
}

func (m *memFlags) Save(_ context.Context, env string, expected int64, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.envs[env]
	if !ok {
		return s, flags.ErrNotFound
	}
	if s.Version != expected {
		return s, flags.ErrConflict
	}
	s = flags.Snapshot{Env: env, Version: expected + 1, Document: doc, UpdatedAt: e.Time}
	m.envs[env] = s
	e.Version = s.Version
	m.audit[env] = append(m.audit[env], e)
	return s, nil
}

func (m *memFlags) Audit(_ context.Context, env string, q flags.AuditQuery) (flags.AuditPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return flags.AuditPage{Entries: slices.Clone(m.audit[env])}, nil
}

func (m *memFlags) entries(env string) []flags.AuditEntry {
	p, _ := m.Audit(context.Background(), env, flags.AuditQuery{})
	return p.Entries
}

func (m *memFlags) Subscribe(ctx context.Context, fn func(flags.Change)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (m *memFlags) Ping(context.Context) error { return nil }

// flagOf returns env's flag key as stored.
func (m *memFlags) flagOf(t *testing.T, env, key string) *flags.Flag {
	t.Helper()
	s, err := m.Snapshot(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	d, err := flags.Parse(s.Document)
	if err != nil {
		t.Fatal(err)
	}
	return d.Flags[key]
}

// serves returns "default/targeting" of env's flag key: its default
// variant and its targeting as stored ("-" for none).
func (m *memFlags) serves(t *testing.T, env, key string) string {
	t.Helper()
	f := m.flagOf(t, env, key)
	tg := "-"
	if len(f.Targeting) > 0 {
		tg = string(f.Targeting)
	}
	def := ""
	if f.DefaultVariant != nil {
		def = *f.DefaultVariant
	}
	return def + " " + tg
}

// notes records notifications.
type notes struct {
	mu  sync.Mutex
	ns  []canary.Notification
	err error
}

func (n *notes) Notify(_ context.Context, x canary.Notification) (canary.Notification, []string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return x, nil, n.err
	}
	for _, old := range n.ns {
		if old.ID == x.ID {
			return x, []string{"hook"}, nil // the outbox drops a repeat
		}
	}
	n.ns = append(n.ns, x)
	return x, []string{"hook"}, nil
}

func (n *notes) events() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, x := range n.ns {
		out = append(out, string(x.Event))
	}
	return out
}

func (n *notes) fail(err error) {
	n.mu.Lock()
	n.err = err
	n.mu.Unlock()
}

// world is one test's stores and services.
type world struct {
	t        *testing.T
	flagsMem *memFlags
	flags    *flags.Service
	analyses *canarytest.Memory
	rollouts *rollouttest.Memory
	notes    *notes
	svc      *canary.RolloutService
}

const checkoutDoc = `{"flags":{
 "checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},
 "styled":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"plan"},"pro"]},"on","off"]}}
}}`

func newWorld(t *testing.T, envs ...string) *world {
	t.Helper()
	w := &world{t: t, flagsMem: newMemFlags(), analyses: canarytest.NewMemory(), rollouts: rollouttest.NewMemory(), notes: &notes{}}
	w.flags = flags.NewService(w.flagsMem, nil)
	for _, env := range envs {
		d, err := flags.Parse([]byte(checkoutDoc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.flags.CreateEnvironment(t.Context(), env, d, flags.WriteOptions{Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	tpl := canarytest.Template("http-errors", time.Minute, 3)
	tpl.Args = []canary.Arg{{Name: "flag"}, {Name: "service"}}
	tpl.SampleRatio.Tolerance = 0.1
	if _, err := w.analyses.PutTemplate(t.Context(), tpl, canary.TemplateWrite{At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	exact := canarytest.Template("exact-split", time.Minute, 3)
	if _, err := w.analyses.PutTemplate(t.Context(), exact, canary.TemplateWrite{At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{
		Rollouts: w.rollouts, Analyses: w.analyses, Flags: w.flags, FlagReader: w.flagsMem, Notifier: w.notes,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.svc = svc
	return w
}

// gatedSteps: 1 % gated by an analysis for 5 minutes, 5 % for 10 minutes,
// 100 %.
func gatedSteps() []canary.RolloutStep {
	return []canary.RolloutStep{
		{Percent: 1, MinDuration: "5m", Analysis: &canary.StepAnalysis{Template: "http-errors", Values: map[string]string{"service": "web"}}},
		{Percent: 5, MinDuration: "10m"},
		{Percent: 100},
	}
}

func (w *world) start(req canary.RolloutRequest) canary.StoredRollout {
	w.t.Helper()
	if req.Env == "" {
		req.Env = "prod"
	}
	if req.Flag == "" {
		req.Flag, req.Variant, req.From = "checkout", "on", "off"
	}
	if req.Steps == nil {
		req.Steps = gatedSteps()
	}
	sr, err := w.svc.Create(w.t.Context(), req, "alice", "ship it")
	if err != nil {
		w.t.Fatalf("Create: %v", err)
	}
	return sr
}

func (w *world) get(id string) canary.StoredRollout {
	w.t.Helper()
	sr, err := w.rollouts.Rollout(w.t.Context(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return sr
}

// endRun ends an analysis run as phase, as a runner would.
func (w *world) endRun(id string, phase canary.Phase, msg string) {
	w.t.Helper()
	sr, err := w.analyses.Run(w.t.Context(), id)
	if err != nil {
		w.t.Fatalf("run %s: %v", id, err)
	}
	sr.Phase, sr.Message, sr.EndedAt = phase, msg, time.Now().UTC()
	sr.Steps = append(sr.Steps, canary.Step{Number: 1, At: time.Now().UTC(), Report: canary.Report{Verdict: canary.VerdictFail, Reason: msg}})
	sr.NextAt = time.Time{}
	if _, err := w.analyses.UpdateRun(w.t.Context(), canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version}); err != nil {
		w.t.Fatal(err)
	}
}

// rolloutAudit lists the reasons of the rollout's flag writes in env.
func (w *world) rolloutAudit(env, id string) []string {
	var out []string
	for _, e := range w.flagsMem.entries(env) {
		if e.Actor == "rollout:"+id {
			out = append(out, e.Reason)
		}
	}
	return out
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// hookRuns is an analysis store that calls before (or after) creating a
// run, once: to act on a rollout exactly there.
type hookRuns struct {
	*canarytest.Memory
	mu            sync.Mutex
	before, after func(id string)
}

func (h *hookRuns) CreateRun(ctx context.Context, r *canary.Run) (canary.StoredRun, error) {
	h.mu.Lock()
	before := h.before
	h.before = nil
	h.mu.Unlock()
	if before != nil {
		before(r.ID)
	}
	out, err := h.Memory.CreateRun(ctx, r)
	h.mu.Lock()
	after := h.after
	h.after = nil
	h.mu.Unlock()
	if after != nil && err == nil {
		after(r.ID)
	}
	return out, err
}

// hookAnalyses makes the world's service use an analysis store with hooks.
func (w *world) hookAnalyses() *hookRuns {
	w.t.Helper()
	h := &hookRuns{Memory: w.analyses}
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{
		Rollouts: w.rollouts, Analyses: h, Flags: w.flags, FlagReader: w.flagsMem, Notifier: w.notes,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.svc = svc
	return h
}

// hookFlags is a flag store that calls beforeSave once, right before a
// flag set is saved: to act exactly between a flag write's checks and its
// save.
type hookFlags struct {
	*memFlags
	mu         sync.Mutex
	beforeSave func()
}

func (h *hookFlags) Save(ctx context.Context, env string, expected int64, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	h.mu.Lock()
	f := h.beforeSave
	h.beforeSave = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return h.memFlags.Save(ctx, env, expected, doc, e)
}

// hookFlagSaves makes the world's service write flags through a hookFlags.
func (w *world) hookFlagSaves() *hookFlags {
	w.t.Helper()
	h := &hookFlags{memFlags: w.flagsMem}
	w.flags = flags.NewService(h, nil)
	svc, err := canary.NewRolloutService(canary.RolloutServiceConfig{
		Rollouts: w.rollouts, Analyses: w.analyses, Flags: w.flags, FlagReader: w.flagsMem, Notifier: w.notes,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.svc = svc
	return h
}
