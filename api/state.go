package api

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/flags"
)

// envState is one environment as this replica serves it: the compiled flag
// set and everything derived from it once per version, so that evaluation
// does no work that does not depend on the context. It is immutable.
type envState struct {
	name    string
	version int64
	updated time.Time
	doc     []byte // the stored canonical JSON document
	set     *flags.Set
	hash    string
	keys    []string
	flags   map[string]*flagEntry
	ordered []*flagEntry // in key order, for bulk evaluation
	// bulkTail is `],"eventStreams":[...],"metadata":{...}}`, the end of
	// every bulk body.
	bulkTail []byte
	// superseded is closed when another version replaces this one or the
	// environment is removed: a cheap broadcast for anything that follows
	// an environment (such as change streams), which then re-reads it.
	superseded chan struct{}
}

// snapshot returns the flags.Snapshot the state was built from.
func (e *envState) snapshot() flags.Snapshot {
	return flags.Snapshot{Env: e.name, Version: e.version, Document: e.doc, UpdatedAt: e.updated}
}

// flagEntry is one flag's precomputed OFREP bodies and metric series.
type flagEntry struct {
	key      string
	static   bool
	meta     []byte // the metadata object, primitives only
	keyField []byte // `{"key":"…"`
	// disabled and codeDefault are the bodies when no variant applies.
	disabled, codeDefault []byte
	disabledN, defaultN   counterSlot
	errorN                counterSlot
	variants              map[string]*variantEntry
	// staticRes and staticBody are the result of a static flag, whose value
	// never depends on the context.
	staticRes  flags.Resolution
	staticBody []byte
	staticN    *counterSlot
}

// Reasons with a precomputed body per variant.
const (
	rStatic = iota
	rDefault
	rTargeting
	nReasons
)

var reasonNames = [nReasons]flags.Reason{flags.ReasonStatic, flags.ReasonDefault, flags.ReasonTargetingMatch}

func reasonIndex(r flags.Reason) int {
	switch r {
	case flags.ReasonStatic:
		return rStatic
	case flags.ReasonDefault:
		return rDefault
	case flags.ReasonTargetingMatch:
		return rTargeting
	}
	return -1
}

type variantEntry struct {
	bodies [nReasons][]byte
	counts [nReasons]counterSlot
}

// counterSlot lazily binds one evaluations series, so that only the
// combinations that happen appear in /metrics.
type counterSlot struct {
	c      atomic.Pointer[prometheus.Counter]
	labels [4]string
}

func (s *counterSlot) inc(vec *prometheus.CounterVec) {
	c := s.c.Load()
	if c == nil {
		ctr := vec.WithLabelValues(s.labels[:]...)
		c = &ctr
		s.c.Store(c)
	}
	(*c).Inc()
}

// buildEnvState compiles a snapshot and precomputes its OFREP bodies,
// reusing the compiled flags of prev (the set served before, or nil) that
// did not change. Errors are those of flags.Load (a *flags.ValidationError
// for an invalid set).
func buildEnvState(snap flags.Snapshot, prev *flags.Set) (*envState, error) {
	set, err := prev.Recompile(snap.Document)
	if err != nil {
		return nil, err
	}
	st := &envState{
		name:    snap.Env,
		version: snap.Version,
		updated: snap.UpdatedAt,
		doc:     snap.Document,
		set:     set,
		hash:    set.Hash(),
		keys:    set.Keys(),

		superseded: make(chan struct{}),
	}
	doc := set.Document()
	setMeta := set.Metadata()
	st.flags = make(map[string]*flagEntry, len(st.keys))
	st.ordered = make([]*flagEntry, 0, len(st.keys))
	for _, key := range st.keys {
		info, ok := set.Info(key)
		if !ok {
			continue
		}
		var def *flags.Flag
		if doc != nil {
			def = doc.Flags[key]
		}
		fe := newFlagEntry(snap.Env, key, info, def, setMeta)
		if info.Static {
			fe.staticRes = set.Evaluate(key, nil)
			fe.staticBody, fe.staticN = fe.lookup(fe.staticRes)
		}
		st.flags[key] = fe
		st.ordered = append(st.ordered, fe)
	}
	tail := appendEventStreams([]byte(`]`), snap.Env)
	tail = appendMetadata(append(tail, `,"metadata":`...), setMeta)
	st.bulkTail = append(tail, '}')
	return st, nil
}

func newFlagEntry(env, key string, info flags.FlagInfo, def *flags.Flag, setMeta map[string]any) *flagEntry {
	meta := make(map[string]any, len(setMeta)+len(info.Metadata))
	maps.Copy(meta, setMeta)
	maps.Copy(meta, info.Metadata)
	fe := &flagEntry{key: key, static: info.Static, meta: appendMetadata(nil, meta)}
	fe.keyField = appendString([]byte(`{"key":`), key)
	end := func(b []byte) []byte {
		b = append(b, `,"metadata":`...)
		b = append(b, fe.meta...)
		return append(b, '}')
	}
	fe.disabled = end(append(bytes.Clone(fe.keyField), `,"reason":"DISABLED"`...))
	fe.codeDefault = end(append(bytes.Clone(fe.keyField), `,"reason":"DEFAULT"`...))
	fe.disabledN.labels = [4]string{env, key, "", string(flags.ReasonDisabled)}
	fe.defaultN.labels = [4]string{env, key, "", string(flags.ReasonDefault)}
	fe.errorN.labels = [4]string{env, key, "", string(flags.ReasonError)}
	fe.variants = make(map[string]*variantEntry, len(info.Variants))
	for _, v := range info.Variants {
		var value any
		if def != nil {
			value = def.Variants[v]
		}
		ve := &variantEntry{}
		for ri, reason := range reasonNames {
			b := bytes.Clone(fe.keyField)
			b = append(b, `,"value":`...)
			b = appendValue(b, value)
			b = append(b, `,"reason":`...)
			b = appendString(b, string(reason))
			b = append(b, `,"variant":`...)
			b = appendString(b, v)
			ve.bodies[ri] = end(b)
			ve.counts[ri].labels = [4]string{env, key, v, string(reason)}
		}
		fe.variants[v] = ve
	}
	return fe
}

// lookup returns the precomputed body and metric series for a resolution,
// or nil when it must be encoded (errors and unusual reasons).
func (fe *flagEntry) lookup(res flags.Resolution) ([]byte, *counterSlot) {
	switch res.Reason {
	case flags.ReasonError:
		return nil, &fe.errorN
	case flags.ReasonDisabled:
		return fe.disabled, &fe.disabledN
	}
	if res.Variant == "" {
		if res.Reason == flags.ReasonDefault {
			return fe.codeDefault, &fe.defaultN
		}
		return nil, nil
	}
	ve := fe.variants[res.Variant]
	ri := reasonIndex(res.Reason)
	if ve == nil || ri < 0 {
		return nil, nil
	}
	return ve.bodies[ri], &ve.counts[ri]
}

// appendResolution encodes a resolution that has no precomputed body: an
// error ({key, errorCode, errorDetails, metadata}) or a success with an
// unusual reason.
func (fe *flagEntry) appendResolution(b []byte, res flags.Resolution) []byte {
	b = append(b, fe.keyField...)
	if res.Reason == flags.ReasonError || res.ErrorCode != "" {
		b = append(b, `,"errorCode":`...)
		b = appendString(b, string(ofrepCode(res.ErrorCode)))
		if res.ErrorMessage != "" {
			b = append(b, `,"errorDetails":`...)
			b = appendString(b, res.ErrorMessage)
		}
	} else {
		if res.Variant != "" {
			b = append(b, `,"value":`...)
			b = appendValue(b, res.Value)
		}
		b = append(b, `,"reason":`...)
		b = appendString(b, string(res.Reason))
		if res.Variant != "" {
			b = append(b, `,"variant":`...)
			b = appendString(b, res.Variant)
		}
	}
	b = append(b, `,"metadata":`...)
	b = append(b, fe.meta...)
	return append(b, '}')
}

// ofrepCode maps an engine error code to one OFREP allows for a flag.
func ofrepCode(c flags.ErrorCode) flags.ErrorCode {
	switch c {
	case flags.ErrorFlagNotFound, flags.ErrorParse, flags.ErrorTargetingKeyMissing, flags.ErrorInvalidContext, flags.ErrorTypeMismatch, flags.ErrorGeneral:
		return c
	}
	return flags.ErrorGeneral
}

// envMap is the set of environments served, replaced whole on every change.
type envMap map[string]*envState

func (s *Server) env(name string) *envState {
	if m := s.envs.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

// loadSnapshot compiles snap and serves it, unless it is what is served
// already or older than it. It and removeEnv are the only places the served
// sets change; the replaced state's superseded channel announces it. An invalid set keeps the last good one, is
// logged once per version and counted. It returns the error of the compile.
func (s *Server) loadSnapshot(snap flags.Snapshot) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	cur := s.env(snap.Env)
	if cur != nil {
		if cur.version == snap.Version && bytes.Equal(cur.doc, snap.Document) {
			return nil
		}
		// A lower version is stale unless the environment was re-created since.
		if snap.Version < cur.version && !snap.UpdatedAt.After(cur.updated) {
			return nil
		}
	}
	if bad, ok := s.badVersion[snap.Env]; ok && bad.version == snap.Version && bad.updated.Equal(snap.UpdatedAt) {
		return bad.err
	}
	var prev *flags.Set
	if cur != nil {
		prev = cur.set
	}
	st, err := buildEnvState(snap, prev)
	if err != nil {
		s.badVersion[snap.Env] = badSet{version: snap.Version, updated: snap.UpdatedAt, err: err}
		s.m.reloads.WithLabelValues("invalid").Inc()
		served := int64(0)
		if cur != nil {
			served = cur.version
		}
		s.log.Error("stored flag set does not compile; keeping the last good version",
			"environment", snap.Env, "version", snap.Version, "served_version", served, "error", err)
		return err
	}
	delete(s.badVersion, snap.Env)
	s.m.reloads.WithLabelValues("ok").Inc()
	next := envMap{}
	if m := s.envs.Load(); m != nil {
		maps.Copy(next, *m)
	}
	next[st.name] = st
	s.envs.Store(&next)
	if cur != nil {
		close(cur.superseded)
	}
	s.streamChanged(st.name)
	s.m.setVersion.WithLabelValues(st.name).Set(float64(st.version))
	s.m.setFlags.WithLabelValues(st.name).Set(float64(len(st.keys)))
	if cur != nil {
		for key := range cur.flags {
			if _, ok := st.flags[key]; !ok {
				s.m.evaluations.DeletePartialMatch(prometheus.Labels{"environment": st.name, "flag": key})
			}
		}
	}
	s.log.Debug("serving flag set", "environment", st.name, "version", st.version, "flags", len(st.keys))
	return nil
}

// removeEnv stops serving an environment that no longer exists.
func (s *Server) removeEnv(name string) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	m := s.envs.Load()
	if m == nil {
		return
	}
	if _, ok := (*m)[name]; !ok {
		return
	}
	next := maps.Clone(*m)
	cur := next[name]
	delete(next, name)
	s.envs.Store(&next)
	close(cur.superseded)
	s.streamChanged(name)
	delete(s.badVersion, name)
	s.m.setVersion.DeleteLabelValues(name)
	s.m.setFlags.DeleteLabelValues(name)
	s.m.evaluations.DeletePartialMatch(prometheus.Labels{"environment": name})
	s.log.Info("environment removed; no longer served", "environment", name)
}

type badSet struct {
	version int64
	updated time.Time
	err     error
}

// loadAll reads every flag set at once (the initial load).
func (s *Server) loadAll(ctx context.Context) error {
	snaps, err := s.store.Snapshots(ctx)
	if err != nil {
		s.storeFailed(err)
		return err
	}
	s.storeOK()
	seen := make(map[string]bool, len(snaps))
	for _, snap := range snaps {
		seen[snap.Env] = true
		_ = s.loadSnapshot(snap) // logged and counted; the last good set stays
	}
	s.dropMissing(seen)
	return nil
}

// resync compares every environment's version with what is served and
// reloads those that differ; environments that are gone are dropped.
func (s *Server) resync(ctx context.Context) error {
	envs, err := s.store.Environments(ctx)
	if err != nil {
		s.storeFailed(err)
		return err
	}
	s.storeOK()
	seen := make(map[string]bool, len(envs))
	var firstErr error
	for _, e := range envs {
		seen[e.Name] = true
		if cur := s.env(e.Name); cur != nil && cur.version == e.Version && cur.updated.Equal(e.UpdatedAt) {
			continue
		}
		if err := s.reloadEnv(ctx, e.Name); err != nil && firstErr == nil && !isValidation(err) {
			firstErr = err
		}
	}
	s.dropMissing(seen)
	return firstErr
}

func isValidation(err error) bool {
	var ve *flags.ValidationError
	return errors.As(err, &ve)
}

// reloadEnv reads one environment and serves it.
func (s *Server) reloadEnv(ctx context.Context, name string) error {
	snap, err := s.store.Snapshot(ctx, name)
	switch {
	case errors.Is(err, flags.ErrNotFound):
		s.storeOK()
		s.removeEnv(name)
		return nil
	case err != nil:
		s.storeFailed(err)
		return err
	}
	s.storeOK()
	return s.loadSnapshot(snap)
}

func (s *Server) dropMissing(seen map[string]bool) {
	m := s.envs.Load()
	if m == nil {
		return
	}
	for name := range *m {
		if !seen[name] {
			s.removeEnv(name)
		}
	}
}

// storeStatus is what the sync loop last learned about the store.
type storeStatus struct {
	err   string
	since time.Time
}

func (s *Server) storeFailed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.m.reloads.WithLabelValues("error").Inc()
	if cur := s.storeState.Load(); cur != nil && cur.err != "" {
		return
	}
	s.storeState.Store(&storeStatus{err: err.Error(), since: s.now()})
	s.m.storeDegraded.Set(1)
	s.log.Warn("flag store unreachable; serving the last loaded flag sets", "error", err)
}

func (s *Server) storeOK() {
	if cur := s.storeState.Load(); cur != nil && cur.err != "" {
		s.log.Info("flag store reachable again", "down_for", s.now().Sub(cur.since).Round(time.Millisecond).String())
		s.storeState.Store(&storeStatus{since: s.now()})
		s.m.storeDegraded.Set(0)
	}
}

// Run loads every environment's flag set, then keeps the compiled sets
// current until ctx ends: it applies each change the store publishes
// (reloading only that environment), re-reads everything the store marks
// for resync, and polls every SyncInterval as a safety net. While the store
// is unreachable it keeps serving what it has and retries. Ready reports
// true once the first load succeeded. It publishes every change to the
// change streams, and ends them when ctx ends. Run returns nil when ctx
// ends; it must be called once.
func (s *Server) Run(ctx context.Context) error {
	stopStreams := s.startStreams(ctx)
	defer stopStreams()
	backoff := 100 * time.Millisecond
	for {
		err := s.loadAll(ctx)
		if err == nil {
			break
		}
		s.log.Warn("initial flag load failed; retrying", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	s.ready.Store(true)
	s.log.Info("flag sets loaded; ready", "environments", len(*s.envs.Load()))

	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		if err := s.store.Subscribe(ctx, s.onChange); err != nil && ctx.Err() == nil {
			s.log.Error("change subscription ended", "error", err)
		}
	}()
	tick := time.NewTicker(s.syncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-subDone
			return nil
		case <-s.changed:
			s.applyPending(ctx)
		case <-tick.C:
			if err := s.resync(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("periodic resync failed", "error", err)
			}
		}
	}
}

// onChange records a published change for the sync loop; it never blocks
// the subscriber.
func (s *Server) onChange(c flags.Change) {
	s.pendingMu.Lock()
	if c.Resync {
		s.pendingAll = true
	} else {
		if s.pending == nil {
			s.pending = map[string]int64{}
		}
		s.pending[c.Env] = max(s.pending[c.Env], c.Version)
	}
	s.pendingMu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Server) applyPending(ctx context.Context) {
	s.pendingMu.Lock()
	all, envs := s.pendingAll, s.pending
	s.pendingAll, s.pending = false, nil
	s.pendingMu.Unlock()
	if all {
		_ = s.resync(ctx)
		return
	}
	for name, version := range envs {
		if cur := s.env(name); cur != nil && cur.version == version {
			continue // already served (a write on this replica)
		}
		_ = s.reloadEnv(ctx, name)
	}
}
