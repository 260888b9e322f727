package experiments

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/flagpole/flagpole/flags"
)

// FlagMetadataKey is the flag metadata entry that marks a flag as serving an
// experiment while it runs; its value is the experiment's key.
const FlagMetadataKey = "experiment"

// ErrFlagTargeted: the flag has targeting rules that no experiment wrote
// (a rollout's split, a hand-written rule) and that starting would
// overwrite; the message names the flag and its targeting.
var ErrFlagTargeted = errors.New("experiments: the flag has targeting rules of its own")

// ErrUnknownEnvironment: the environment does not exist. It wraps
// ErrNotFound, so errors.Is(err, ErrNotFound) holds for it too.
var ErrUnknownEnvironment = fmt.Errorf("experiments: no such environment (%w)", ErrNotFound)

// FlagReader reads an environment's current flag set (a flags.Store does).
type FlagReader interface {
	Snapshot(ctx context.Context, env string) (flags.Snapshot, error)
}

// ServiceConfig configures a [Service]. Store, Flags and FlagSets are required.
type ServiceConfig struct {
	// Store keeps the experiments and their statistics.
	Store Store
	// Flags performs every flag write (validated and audited).
	Flags *flags.Service
	// FlagSets reads flag sets, to check an experiment against its flag.
	FlagSets FlagReader
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AfterFlagWrite, when set, is called with every flag set version the
	// service wrote (a server serves it at once).
	AfterFlagWrite func(flags.Snapshot)
}

// WriteOptions say who changes an experiment, why, and on which version.
type WriteOptions struct {
	// Actor is who asks (an API key's name); flag writes are recorded in
	// the audit log as "experiment:<key>" with the actor in the reason.
	Actor string
	// Reason is optional free text for the audit log.
	Reason string
	// IfMatch, when not 0, is the version the writer saw; the write fails
	// with ErrConflict if the experiment has moved on.
	IfMatch int64
}

// Service manages experiments: their lifecycle over a [Store], the flag
// writes that serve them (through flags.Service, so every change is
// validated and audited) and their results. It is safe for concurrent use.
//
// Errors of every method: *flags.InputError naming "env" for a bad
// environment name; ErrNotFound; ErrConflict (If-Match, or a concurrent
// write); *ValidationError naming the field; *TransitionError;
// *RestartRequiredError; *FlagInUseError; a wrapped ErrUnavailable or
// flags.ErrUnavailable when a store cannot be reached.
type Service struct {
	store    Store
	flags    *flags.Service
	flagSets FlagReader
	now      func() time.Time
	after    func(flags.Snapshot)
}

// NewService returns a Service. It fails when a required field is missing.
func NewService(c ServiceConfig) (*Service, error) {
	switch {
	case c.Store == nil:
		return nil, errors.New("experiments: ServiceConfig.Store is required")
	case c.Flags == nil:
		return nil, errors.New("experiments: ServiceConfig.Flags is required")
	case c.FlagSets == nil:
		return nil, errors.New("experiments: ServiceConfig.FlagSets is required")
	}
	s := &Service{store: c.Store, flags: c.Flags, flagSets: c.FlagSets, now: c.Now, after: c.AfterFlagWrite}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

func checkEnv(env string) error {
	if err := flags.CheckEnvName(env); err != nil {
		var ie *flags.InputError
		if errors.As(err, &ie) {
			return &flags.InputError{Field: "env", Problem: ie.Problem}
		}
		return err
	}
	return nil
}

func invalid(path, format string, args ...any) error {
	var ps problems
	ps.add(path, format, args...)
	return ps.err()
}

// Create stores e as a new draft in env. Lifecycle fields of e (status,
// decision, salt, restarts, times) are ignored. The flag must exist and
// define every arm as a variant (it need not be enabled yet).
func (s *Service) Create(ctx context.Context, env string, e Experiment, o WriteOptions) (Stored, error) {
	if err := checkEnv(env); err != nil {
		return Stored{}, err
	}
	e = e.clone()
	e.Status, e.Decision, e.Salt, e.Restarts = "", nil, "", 0
	e.StartedAt, e.StoppedAt, e.ArchivedAt = nil, nil, nil
	e.Defaults()
	if err := e.Validate(); err != nil {
		return Stored{}, err
	}
	if err := s.checkDraftFlag(ctx, env, &e); err != nil {
		return Stored{}, err
	}
	return s.store.CreateExperiment(ctx, env, &e, s.now().UTC())
}

// checkDraftFlag checks that e's flag exists and has e's arms as variants.
func (s *Service) checkDraftFlag(ctx context.Context, env string, e *Experiment) error {
	snap, err := s.flagSets.Snapshot(ctx, env)
	if err != nil {
		if errors.Is(err, flags.ErrNotFound) {
			return fmt.Errorf("environment %q: %w", env, ErrUnknownEnvironment)
		}
		return err
	}
	doc, err := flags.Parse(snap.Document)
	if err != nil {
		return fmt.Errorf("environment %q holds an unreadable flag set: %w", env, err)
	}
	f := doc.Flags[e.FlagKey]
	if f == nil {
		return e.CheckFlag(nil)
	}
	c := *f
	c.State = flags.Enabled // a draft may wait for its flag to be enabled
	return e.CheckFlag(&c)
}

// Get returns env's experiment key.
func (s *Service) Get(ctx context.Context, env, key string) (Stored, error) {
	if err := checkEnv(env); err != nil {
		return Stored{}, err
	}
	return s.store.Experiment(ctx, env, key)
}

// List returns env's experiments sorted by key, only those in status when
// it is not empty (a *ValidationError naming "status" for an unknown one).
func (s *Service) List(ctx context.Context, env string, status Status) ([]Stored, error) {
	if err := checkEnv(env); err != nil {
		return nil, err
	}
	switch status {
	case "", StatusDraft, StatusRunning, StatusStopped, StatusArchived:
	default:
		return nil, invalid("status", "unknown status %q; want draft, running, stopped or archived", status)
	}
	all, err := s.store.Experiments(ctx, env)
	if err != nil {
		return nil, err
	}
	if status == "" {
		return all, nil
	}
	out := all[:0:0]
	for _, st := range all {
		if st.Status == status {
			out = append(out, st)
		}
	}
	return out, nil
}

// current reads the experiment and checks o.IfMatch.
func (s *Service) current(ctx context.Context, env, key string, o WriteOptions) (Stored, error) {
	if err := checkEnv(env); err != nil {
		return Stored{}, err
	}
	cur, err := s.store.Experiment(ctx, env, key)
	if err != nil {
		return Stored{}, err
	}
	if o.IfMatch != 0 && o.IfMatch != cur.Version {
		return Stored{}, fmt.Errorf("experiment %q is at version %d, not %d: %w", key, cur.Version, o.IfMatch, ErrConflict)
	}
	return cur, nil
}

// Update replaces the definition of env's experiment key with next's (see
// [Experiment.Update]; next.Key must be key or empty). A running experiment
// refuses changes that would bias it unless restart is true, which starts it
// over (new salt, statistics discarded); this includes changing the
// definition of an existing metric, which would mix two definitions in its
// statistics. When the targeting of a running experiment changes, the flag
// is rewritten.
func (s *Service) Update(ctx context.Context, env, key string, next Experiment, restart bool, o WriteOptions) (Stored, error) {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return Stored{}, err
	}
	if next.Key == "" {
		next.Key = key
	}
	e := cur.Experiment.clone()
	if err := e.Update(next, s.now().UTC(), restart); err != nil {
		return Stored{}, err
	}
	switch e.Status {
	case StatusDraft:
		if err := s.checkDraftFlag(ctx, env, &e); err != nil {
			return Stored{}, err
		}
	case StatusRunning:
		if !restart {
			if fields := changedMetrics(&cur.Experiment, &e); len(fields) > 0 {
				return Stored{}, &RestartRequiredError{Key: key, Fields: fields}
			}
		}
		oldT, err := cur.Experiment.Targeting()
		if err != nil {
			return Stored{}, err
		}
		newT, err := e.Targeting()
		if err != nil {
			return Stored{}, err
		}
		if string(oldT) != string(newT) {
			return s.runningWrite(ctx, env, cur, &e, "experiment.update", "updated", o, newT)
		}
	}
	return s.store.UpdateExperiment(ctx, env, &e, Write{IfVersion: cur.Version, At: s.now().UTC()})
}

// changedMetrics names the metrics of a whose definition differs in b
// (metrics added or removed are not changes).
func changedMetrics(a, b *Experiment) []string {
	var out []string
	for i := range b.Metrics {
		nm := b.Metrics[i]
		for j := range a.Metrics {
			om := a.Metrics[j]
			if om.Key != nm.Key {
				continue
			}
			if om.Direction == "" {
				om.Direction = HigherIsBetter
			}
			if nm.Direction == "" {
				nm.Direction = HigherIsBetter
			}
			// Role and direction only change the judgement, not the data.
			om.Role, nm.Role, om.Direction, nm.Direction = "", "", "", ""
			if !reflect.DeepEqual(om, nm) {
				out = append(out, fmt.Sprintf("metrics[%d]", i))
			}
		}
	}
	return out
}

// Start starts env's draft experiment key: its flag (enabled, with every
// arm as a variant and no other experiment on it) gets the experiment's
// targeting and the metadata "experiment": key, then the experiment is
// stored as running. Should the second write fail, the flag is put back.
func (s *Service) Start(ctx context.Context, env, key string, o WriteOptions) (Stored, error) {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return Stored{}, err
	}
	e := cur.Experiment.clone()
	if err := e.Start(s.now().UTC()); err != nil {
		return Stored{}, err
	}
	t, err := e.Targeting()
	if err != nil {
		return Stored{}, err
	}
	return s.runningWrite(ctx, env, cur, &e, "experiment.start", "started", o, t)
}

// runningWrite writes targeting t and the experiment marker on e's flag,
// then stores e; on a store failure the flag is restored.
//
// The flag must carry no targeting but what an experiment wrote: none, t,
// the current run's (cur, when running) or, under a stale marker, that of
// the experiment it names. A marker naming another experiment that is not
// running, or no longer exists, is stale (a start that crashed between the
// flag write and storing the experiment): it is taken over after fencing
// that experiment (its version is bumped, so a start of it still in flight
// fails with ErrConflict instead of running on a flag it lost).
func (s *Service) runningWrite(ctx context.Context, env string, cur Stored, e *Experiment, action, verb string, o WriteOptions, t json.RawMessage) (Stored, error) {
	owned := []json.RawMessage{t}
	if cur.status() == StatusRunning {
		if ct, err := cur.Experiment.Targeting(); err == nil {
			owned = append(owned, ct)
		}
	}
	// The flag write retries its change on a conflict: a stale marker's
	// experiment is fenced once, not once per attempt.
	fenced := map[string][]json.RawMessage{}
	prev, wrote, err := s.writeFlag(ctx, env, e, action, verb, o, func(f *flags.Flag) error {
		if err := e.CheckFlag(f); err != nil {
			return err
		}
		mine := owned
		if other, ok := f.Metadata[FlagMetadataKey].(string); ok && other != e.Key {
			ot, done := fenced[other]
			if !done {
				var err error
				if ot, err = s.takeStaleMarker(ctx, env, e.FlagKey, other); err != nil {
					return err
				}
				fenced[other] = ot
			}
			mine = append(slices.Clip(owned), ot...)
		}
		if !emptyTargeting(f.Targeting) && !slices.ContainsFunc(mine, func(m json.RawMessage) bool { return sameJSON(m, f.Targeting) }) {
			return fmt.Errorf("flag %q has targeting rules no experiment wrote (targeting: %s); an experiment owns the flag's targeting while it runs: remove them first: %w",
				e.FlagKey, oneLine(f.Targeting), ErrFlagTargeted)
		}
		f.Targeting = slices.Clone(t)
		if f.Metadata == nil {
			f.Metadata = map[string]any{}
		}
		f.Metadata[FlagMetadataKey] = e.Key
		return nil
	})
	if err != nil {
		return Stored{}, err
	}
	st, err := s.store.UpdateExperiment(ctx, env, e, Write{IfVersion: cur.Version, At: s.now().UTC()})
	if err != nil {
		return Stored{}, s.restoreFlag(ctx, env, e, prev, wrote, err)
	}
	return st, nil
}

// takeStaleMarker checks that experiment other, named by flag's marker, is
// not running and fences it (see runningWrite). It returns the targeting
// other would have written (none when it no longer exists). Errors:
// *FlagInUseError when other runs; ErrConflict when it changed meanwhile.
func (s *Service) takeStaleMarker(ctx context.Context, env, flag, other string) ([]json.RawMessage, error) {
	x, err := s.store.Experiment(ctx, env, other)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if x.status() == StatusRunning {
		return nil, &FlagInUseError{Flag: flag, Experiment: other}
	}
	if _, err := s.store.UpdateExperiment(ctx, env, &x.Experiment, Write{IfVersion: x.Version, At: s.now().UTC()}); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("flag %q is marked by experiment %q, which changed meanwhile: %w", flag, other, err)
	}
	if xt, err := x.Experiment.Targeting(); err == nil {
		return []json.RawMessage{xt}, nil
	}
	return nil, nil
}

// emptyTargeting reports whether a flag's targeting has no rules.
func emptyTargeting(t json.RawMessage) bool {
	s := string(bytes.TrimSpace(t))
	return s == "" || s == "null" || s == "{}"
}

// sameJSON reports whether a and b are the same JSON value (whitespace and
// object member order aside).
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// sameFlag reports whether a and b are the same flag.
func sameFlag(a, b *flags.Flag) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, errA := json.Marshal(a)
	y, errB := json.Marshal(b)
	return errA == nil && errB == nil && sameJSON(x, y)
}

// oneLine shortens targeting for an error message.
func oneLine(b json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		buf.Reset()
		buf.Write(b)
	}
	s := buf.String()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// writeFlag changes e's flag with change through the flag service and
// returns the flag as it was (nil when it did not exist and change
// accepted that) and as it was stored (nil when unknown).
func (s *Service) writeFlag(ctx context.Context, env string, e *Experiment, action, verb string, o WriteOptions, change func(*flags.Flag) error) (prev, wrote *flags.Flag, err error) {
	reason := fmt.Sprintf("experiment %q %s", e.Key, verb)
	if o.Actor != "" {
		reason += " by " + o.Actor
	}
	if o.Reason != "" {
		reason += ": " + o.Reason
	}
	snap, err := s.flags.Update(ctx, env, action, flags.WriteOptions{Actor: "experiment:" + e.Key, Reason: reason}, func(d *flags.Document) error {
		f := d.Flags[e.FlagKey]
		if f == nil {
			return e.CheckFlag(nil)
		}
		prev = f.Clone()
		return change(f)
	})
	if err != nil {
		if errors.Is(err, flags.ErrNotFound) {
			return nil, nil, fmt.Errorf("environment %q: %w", env, ErrUnknownEnvironment)
		}
		return nil, nil, err
	}
	if s.after != nil {
		s.after(snap)
	}
	if doc, err := flags.Parse(snap.Document); err == nil {
		wrote = doc.Flags[e.FlagKey]
	}
	return prev, wrote, nil
}

// restoreFlag puts e's flag back to prev after the experiment write failed
// with cause, and returns cause (joined with the restore's own failure).
// The flag is restored only if it is still what this call wrote (wrote),
// and not when the failure was a conflict with a write that stored the same
// intent for the flag (a concurrent identical start, stop or restart):
// anything else written since, by a concurrent experiment write or by
// someone else, is left as it is.
func (s *Service) restoreFlag(ctx context.Context, env string, e *Experiment, prev, wrote *flags.Flag, cause error) error {
	if prev == nil || wrote == nil {
		return cause
	}
	ctx = context.WithoutCancel(ctx)
	if errors.Is(cause, ErrConflict) {
		if now, err := s.store.Experiment(ctx, env, e.Key); err == nil && flagIntent(&now.Experiment) == flagIntent(e) {
			return cause
		}
	}
	_, _, err := s.writeFlag(ctx, env, e, "experiment.revert", "could not be stored; flag restored", WriteOptions{}, func(f *flags.Flag) error {
		if !sameFlag(f, wrote) {
			return errFlagMoved
		}
		*f = *prev.Clone()
		return nil
	})
	if err != nil && !errors.Is(err, errFlagMoved) {
		return errors.Join(cause, fmt.Errorf("restoring flag %q after the failed write: %w", e.FlagKey, err))
	}
	return cause
}

// errFlagMoved stops a restore of a flag changed since it was written.
var errFlagMoved = errors.New("experiments: the flag changed since")

// flagIntent is what x, as stored, wants of its flag: its status, its
// targeting and, once stopped, the decision.
func flagIntent(x *Experiment) string {
	t, _ := x.Targeting()
	s := string(x.status()) + "\x00" + string(t)
	if x.Decision != nil {
		s += "\x00" + string(x.Decision.Outcome) + "\x00" + x.Decision.Variant
	}
	return s
}

// Stop stops env's running experiment key with decision d and takes the
// flag out of the experiment, removing only what the experiment wrote: its
// targeting (left alone if someone has replaced it since) and the
// "experiment" metadata; the default variant is set to d.Variant (ship) or
// the control (rollback, none). A flag that no longer exists, or that
// another experiment has taken over, is left alone.
func (s *Service) Stop(ctx context.Context, env, key string, d StopDecision, o WriteOptions) (Stored, error) {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return Stored{}, err
	}
	e := cur.Experiment.clone()
	if err := e.Stop(s.now().UTC(), d); err != nil {
		return Stored{}, err
	}
	serve := e.Control
	if d.Outcome == OutcomeShip {
		serve = d.Variant
	}
	ours, err := cur.Experiment.Targeting()
	if err != nil {
		return Stored{}, err
	}
	prev, wrote, err := s.writeFlag(ctx, env, &e, "experiment.stop", "stopped ("+string(d.Outcome)+")", o, func(f *flags.Flag) error {
		if other, ok := f.Metadata[FlagMetadataKey].(string); ok && other != e.Key {
			return nil // taken over: not ours to change
		}
		if _, ok := f.Variants[serve]; !ok {
			return invalid("decision.variant", "%q is no longer a variant of flag %q", serve, e.FlagKey)
		}
		v := serve
		f.DefaultVariant = &v
		unmark(f, e.Key, ours)
		return nil
	})
	var ve *ValidationError
	if err != nil && !errors.As(err, &ve) {
		return Stored{}, err
	}
	if err != nil && !isMissingFlag(ve) {
		return Stored{}, err
	}
	st, err := s.store.UpdateExperiment(ctx, env, &e, Write{IfVersion: cur.Version, At: s.now().UTC()})
	if err != nil {
		return Stored{}, s.restoreFlag(ctx, env, &e, prev, wrote, err)
	}
	return st, nil
}

// unmark removes from f what experiment key wrote: the marker naming key,
// and the targeting when it is still ours.
func unmark(f *flags.Flag, key string, ours json.RawMessage) {
	if sameJSON(f.Targeting, ours) {
		f.Targeting = nil
	}
	if m, ok := f.Metadata[FlagMetadataKey].(string); ok && m == key {
		delete(f.Metadata, FlagMetadataKey)
	}
	if len(f.Metadata) == 0 {
		f.Metadata = nil
	}
}

// isMissingFlag reports whether ve is CheckFlag's "flag does not exist".
func isMissingFlag(ve *ValidationError) bool {
	return len(ve.Problems) == 1 && ve.Problems[0].Path == "flagKey"
}

// Restart starts env's running experiment key over with a new salt (""
// derives one): users are re-randomised, the flag's targeting is rewritten
// and the statistics start from nothing.
func (s *Service) Restart(ctx context.Context, env, key, salt string, o WriteOptions) (Stored, error) {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return Stored{}, err
	}
	e := cur.Experiment.clone()
	if err := e.Restart(s.now().UTC(), salt); err != nil {
		return Stored{}, err
	}
	t, err := e.Targeting()
	if err != nil {
		return Stored{}, err
	}
	return s.runningWrite(ctx, env, cur, &e, "experiment.restart", "restarted", o, t)
}

// Archive files away env's draft or stopped experiment key.
func (s *Service) Archive(ctx context.Context, env, key string, o WriteOptions) (Stored, error) {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return Stored{}, err
	}
	e := cur.Experiment.clone()
	if err := e.Archive(s.now().UTC()); err != nil {
		return Stored{}, err
	}
	return s.store.UpdateExperiment(ctx, env, &e, Write{IfVersion: cur.Version, At: s.now().UTC()})
}

// Delete removes env's experiment key and its statistics; only a draft or
// an archived experiment may be deleted (a *TransitionError otherwise).
func (s *Service) Delete(ctx context.Context, env, key string, o WriteOptions) error {
	cur, err := s.current(ctx, env, key, o)
	if err != nil {
		return err
	}
	switch st := cur.status(); st {
	case StatusDraft, StatusArchived:
	default:
		return &TransitionError{Key: key, From: st, Action: "delete", Hint: "only a draft or archived experiment can be deleted; stop and archive it first"}
	}
	if err := s.store.DeleteExperiment(ctx, env, key, cur.Version); err != nil {
		return err
	}
	// A start that crashed after its flag write left the marker (and the
	// targeting) of this experiment on the flag: clear them. The deletion
	// stands if this fails; a marker naming no experiment is stale and
	// does not stop another experiment from starting.
	ours, _ := cur.Experiment.Targeting()
	_, _, _ = s.writeFlag(context.WithoutCancel(ctx), env, &cur.Experiment, "experiment.delete", "deleted; its marker cleared", o, func(f *flags.Flag) error {
		if m, ok := f.Metadata[FlagMetadataKey].(string); !ok || m != key {
			return nil
		}
		unmark(f, key, ours)
		return nil
	})
	return nil
}

// Results analyses env's experiment key from its folded statistics at the
// current time (a stopped experiment at the time it stopped).
func (s *Service) Results(ctx context.Context, env, key string) (Results, Stored, error) {
	st, err := s.Get(ctx, env, key)
	if err != nil {
		return Results{}, Stored{}, err
	}
	obs, err := s.store.Observations(ctx, env, &st.Experiment)
	if err != nil {
		return Results{}, Stored{}, err
	}
	at := s.now().UTC()
	if st.StoppedAt != nil {
		at = *st.StoppedAt
	}
	return Analyze(&st.Experiment, obs, at), st, nil
}
