package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
)

// More rollout errors, for the API to map.
var (
	// ErrUnknownEnvironment: the rollout's environment does not exist.
	ErrUnknownEnvironment = errors.New("canary: no such environment")
	// ErrUnknownFlag: the flag does not exist (in the environment, or for
	// the kill switch in any environment the caller may write).
	ErrUnknownFlag = errors.New("canary: no such flag")
	// ErrFlagTargeted: the flag has targeting rules a rollout would
	// overwrite; the message names them.
	ErrFlagTargeted = errors.New("canary: the flag has targeting rules of its own")
	// ErrNoSafeVariant: the kill switch was given no variant, and no
	// environment's flag names a safeVariant or has an active rollout.
	ErrNoSafeVariant = errors.New("canary: no safe variant to turn the flag to")
)

// The notifications of rollout events besides those in notify.go.
const (
	// EventRolloutPaused: a rollout was paused (by someone, or by a gate
	// that failed under onFail pause or could not decide).
	EventRolloutPaused EventType = "rollout.paused"
	// EventRolloutAborted: a rollout was aborted (or killed) and its flag
	// rolled back.
	EventRolloutAborted EventType = "rollout.aborted"
)

// FlagReader reads environments' flag sets; flags.Store satisfies it.
type FlagReader interface {
	Snapshot(ctx context.Context, env string) (flags.Snapshot, error)
	Environments(ctx context.Context) ([]flags.Environment, error)
}

// Notifier enqueues a notification for delivery (deploy.Sender satisfies
// it): enqueuing an ID already enqueued does nothing and is not an error.
type Notifier interface {
	Notify(ctx context.Context, n Notification) (Notification, []string, error)
}

// RolloutServiceConfig configures a RolloutService; Rollouts, Analyses,
// Flags and FlagReader are required.
type RolloutServiceConfig struct {
	Rollouts RolloutStore
	// Analyses holds the templates and the steps' analysis runs.
	Analyses Store
	// Flags performs every flag write (validated and audited).
	Flags *flags.Service
	// FlagReader reads flag sets (the flag store).
	FlagReader FlagReader
	// Notifier, when set, receives rollout.* notifications.
	Notifier Notifier
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives problems; nil discards them.
	Logger *slog.Logger
	// Metrics, when set, receives the steps applied, the rollouts ended
	// and rolled back (and the controller's counts of active rollouts).
	Metrics RolloutMetrics
}

// RolloutService creates rollouts, applies people's actions and the kill
// switch, and performs every rollout's side effects (flag writes,
// analysis starts and cancellations, notifications). The RolloutController
// drives rollouts through it. It is safe for concurrent use.
type RolloutService struct {
	store    RolloutStore
	analyses Store
	runs     *Service
	flags    *flags.Service
	reader   FlagReader
	notifier Notifier
	now      func() time.Time
	log      *slog.Logger
	met      RolloutMetrics

	seenMu sync.Mutex
	seen   map[string]seenRollout // rollouts' last seen states, for metrics
}

// NewRolloutService checks cfg. Errors name the missing field.
func NewRolloutService(cfg RolloutServiceConfig) (*RolloutService, error) {
	switch {
	case cfg.Rollouts == nil:
		return nil, errors.New("canary: RolloutServiceConfig.Rollouts is required")
	case cfg.Analyses == nil:
		return nil, errors.New("canary: RolloutServiceConfig.Analyses is required")
	case cfg.Flags == nil:
		return nil, errors.New("canary: RolloutServiceConfig.Flags is required")
	case cfg.FlagReader == nil:
		return nil, errors.New("canary: RolloutServiceConfig.FlagReader is required")
	}
	s := &RolloutService{store: cfg.Rollouts, analyses: cfg.Analyses, flags: cfg.Flags, reader: cfg.FlagReader,
		notifier: cfg.Notifier, now: cfg.Now, log: cfg.Logger, met: cfg.Metrics,
		seen: map[string]seenRollout{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.runs = NewService(cfg.Analyses, func() time.Time { return s.now() })
	return s, nil
}

// Store returns the rollout store.
func (s *RolloutService) Store() RolloutStore { return s.store }

// RolloutRequest is what starting a rollout takes.
type RolloutRequest struct {
	Env, Flag, Variant, From string
	Steps                    []RolloutStep
	OnFail                   OnFail
	// BucketBy, when set, is the evaluation-context attribute users are
	// bucketed by instead of the targeting key.
	BucketBy string
	// StartAt, when after now, schedules the rollout.
	StartAt time.Time
}

var bucketByRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_.$-]{0,127}$`)

// maxActionAttempts bounds the retries of an action racing a controller.
const maxActionAttempts = 10

// Create validates req against the environment's flag and the analysis
// templates, stores the rollout and, unless it is scheduled, applies its
// first step at once. Errors: a *ValidationError naming each bad field
// ("variant", "steps[0].percent", "steps[1].analysis.values.service"),
// ErrUnknownEnvironment, ErrUnknownFlag, ErrFlagTargeted,
// ErrRolloutActive, the stores' errors. A first step that cannot be
// applied at once is left to the controller (the rollout is returned with
// Pending set).
func (s *RolloutService) Create(ctx context.Context, req RolloutRequest, actor, reason string) (StoredRollout, error) {
	var p problems
	if req.Flag == "" {
		p.add("flag", "required")
	}
	if req.Variant == "" {
		p.add("variant", "required")
	}
	if req.From == "" {
		p.add("from", "required")
	}
	if req.Variant != "" && req.Variant == req.From {
		p.add("from", "%q is the variant being rolled out; name the variant it replaces", req.From)
	}
	if req.BucketBy != "" && !bucketByRE.MatchString(req.BucketBy) {
		p.add("bucketBy", "%q is not an evaluation context attribute name", req.BucketBy)
	}
	if err := ValidateSteps(req.Steps, req.OnFail); err != nil {
		p = append(p, err.(*ValidationError).Problems...)
	}
	if len(p) > 0 {
		return StoredRollout{}, p.err()
	}
	snap, err := s.reader.Snapshot(ctx, req.Env)
	if errors.Is(err, flags.ErrNotFound) {
		return StoredRollout{}, fmt.Errorf("environment %q: %w", req.Env, ErrUnknownEnvironment)
	}
	if err != nil {
		return StoredRollout{}, err
	}
	doc, err := flags.Parse(snap.Document)
	if err != nil {
		return StoredRollout{}, fmt.Errorf("environment %q holds an unreadable flag set: %w", req.Env, err)
	}
	f, ok := doc.Flags[req.Flag]
	if !ok {
		return StoredRollout{}, fmt.Errorf("flag %q in environment %q: %w", req.Flag, req.Env, ErrUnknownFlag)
	}
	for field, v := range map[string]string{"variant": req.Variant, "from": req.From} {
		if _, ok := f.Variants[v]; !ok {
			p.add(field, "flag %q has no variant %q (it has %s)", req.Flag, v, strings.Join(sortedKeys(f.Variants), ", "))
		}
	}
	if f.State == flags.Disabled {
		p.add("flag", "flag %q is DISABLED in %q; enable it before rolling it out", req.Flag, req.Env)
	}
	now := s.now().UTC()
	for i, st := range req.Steps {
		if st.Analysis == nil {
			continue
		}
		at := fmt.Sprintf("steps[%d].analysis.", i)
		tpl, err := s.analyses.Template(ctx, st.Analysis.Template)
		if errors.Is(err, ErrNotFound) {
			p.add(at+"template", "no analysis template is named %q", st.Analysis.Template)
			continue
		}
		if err != nil {
			return StoredRollout{}, err
		}
		probe := &Rollout{Env: req.Env, Flag: req.Flag, Variant: req.Variant, From: req.From, Steps: req.Steps, Step: i, Percent: st.Percent}
		if err := tpl.CheckArgs(analysisArgs(probe, &tpl.Template)); err != nil {
			for _, fe := range err.(*ValidationError).Problems {
				p.add(at+fe.Field, "%s", fe.Message)
			}
		}
	}
	if len(p) > 0 {
		return StoredRollout{}, p.err()
	}
	if !OwnsTargeting(f.Targeting, req.Variant, req.From) {
		return StoredRollout{}, fmt.Errorf("flag %q in %q has targeting rules (flag.targeting: %s); a rollout owns the flag's targeting while it runs: remove them first: %w",
			req.Flag, req.Env, oneLineJSON(f.Targeting), ErrFlagTargeted)
	}
	r := NewRollout(NewRolloutID(), req.Env, req.Flag, req.Variant, req.From, req.Steps, req.OnFail, req.BucketBy, req.StartAt.UTC(), now, actor, reason)
	sr, err := s.store.CreateRollout(ctx, r)
	if err != nil {
		return StoredRollout{}, err
	}
	s.log.Info("rollout created", "rollout", sr.ID, "env", sr.Env, "flag", sr.Flag, "variant", sr.Variant, "from", sr.From, "state", sr.State, "actor", actor)
	return s.settle(ctx, sr), nil
}

// settle performs a fresh change's effects now, leaving them to the
// controller when that fails; it returns the latest state it knows.
func (s *RolloutService) settle(ctx context.Context, sr StoredRollout) (out StoredRollout) {
	defer func() { s.seeRollout(out.ID, out.State, out.Version) }()
	if !sr.Pending {
		return sr
	}
	out, err := s.sync(ctx, sr, 0)
	if err != nil {
		s.log.Warn("rollout change stored; its effects are left to the controller", "rollout", sr.ID, "error", err)
		if cur, rerr := s.store.Rollout(ctx, sr.ID); rerr == nil {
			return cur
		}
		return sr
	}
	return out
}

func oneLineJSON(b json.RawMessage) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Get returns rollout id of env. Errors: ErrNotFound (also for a rollout
// of another environment), the store's.
func (s *RolloutService) Get(ctx context.Context, env, id string) (StoredRollout, error) {
	sr, err := s.store.Rollout(ctx, id)
	if err != nil {
		return sr, err
	}
	if sr.Env != env {
		return StoredRollout{}, fmt.Errorf("rollout %q in environment %q: %w", id, env, ErrNotFound)
	}
	return sr, nil
}

// The actions people take on a rollout.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionPromote = "promote"
	ActionAbort   = "abort"
	ActionRetry   = "retry"
)

// Actions lists the actions Act knows.
var Actions = []string{ActionPause, ActionResume, ActionPromote, ActionAbort, ActionRetry}

// Act applies action to rollout id of env and performs its effects (flag
// write, analysis cancellation, notification) at once. Errors: a
// *ValidationError naming "action" for an unknown one, ErrNotFound,
// ErrRolloutState (wrapped, naming the state) when the state does not
// allow it, ErrRolloutActive (a retry while another rollout took the
// flag), the stores' errors.
func (s *RolloutService) Act(ctx context.Context, env, id, action, actor, reason string) (StoredRollout, error) {
	for attempt := 1; ; attempt++ {
		sr, err := s.Get(ctx, env, id)
		if err != nil {
			return sr, err
		}
		now := s.now().UTC()
		r := &sr.Rollout
		switch action {
		case ActionPause:
			err = r.Pause(now, actor, reason)
		case ActionResume:
			err = r.Resume(now, actor, reason)
		case ActionPromote:
			err = r.Promote(now, actor, reason)
		case ActionAbort:
			err = r.Abort(now, actor, reason)
		case ActionRetry:
			err = r.Retry(now, actor, reason)
		default:
			return sr, fieldError("action", "%q is not one of %s", action, strings.Join(Actions, ", "))
		}
		if err != nil {
			return sr, err
		}
		out, err := s.store.UpdateRollout(ctx, RolloutUpdate{Rollout: r, IfVersion: sr.Version})
		if errors.Is(err, ErrConflict) && attempt < maxActionAttempts {
			continue // a controller wrote in between: apply the action to its result
		}
		if err != nil {
			return out, err
		}
		s.log.Info("rollout "+action, "rollout", id, "env", env, "flag", out.Flag, "state", out.State, "actor", actor, "reason", reason)
		return s.settle(ctx, out), nil
	}
}

// analysisArgs are the arguments of the current step's analysis: canary
// users are those evaluated to Variant, baseline users those evaluated to
// From, by the OpenTelemetry feature-flag labels apps put on their
// metrics; the values flag, variant, from and env are filled in for the
// template args so named, and the step's own values override them.
func analysisArgs(r *Rollout, tpl *Template) Args {
	scope := func(v string) string {
		return fmt.Sprintf(`feature_flag_key=%q,feature_flag_variant=%q`, r.Flag, v)
	}
	args := Args{CanaryScope: scope(r.Variant), BaselineScope: scope(r.From), Values: map[string]string{}}
	// The flag splits users, not requests: a heavy user or two moves the
	// requests' share off the users' share, so an exact sample-ratio test on
	// requests would call healthy steps inconclusive. The check runs only
	// when the template tolerates a deviation (sampleRatio.tolerance).
	if p := r.Steps[r.Step].Percent; p < 100 && tpl.SampleRatio.Tolerance > 0 {
		args.ExpectedSplit = p / 100
	}
	auto := map[string]string{"flag": r.Flag, "variant": r.Variant, "from": r.From, "env": r.Env}
	for _, a := range tpl.Args {
		if v, ok := auto[a.Name]; ok {
			args.Values[a.Name] = v
		}
	}
	if a := r.Steps[r.Step].Analysis; a != nil {
		maps.Copy(args.Values, a.Values)
	}
	return args
}

// startAnalysis creates the current step's analysis run under the ID
// NextRunID gives, so that a start repeated after a crash finds the run
// created the first time. Errors: a *ValidationError when the template is
// gone or no longer takes the arguments, the store's.
func (s *RolloutService) startAnalysis(ctx context.Context, r *Rollout) (string, error) {
	a := r.Steps[r.Step].Analysis
	id := r.NextRunID()
	st, err := s.analyses.Template(ctx, a.Template)
	if errors.Is(err, ErrNotFound) {
		return "", fieldError("template", "no analysis template is named %q", a.Template)
	}
	if err != nil {
		return "", err
	}
	run, err := NewRun(id, &st.Template, analysisArgs(r, &st.Template), s.now().UTC())
	if err != nil {
		return "", err
	}
	if _, err := s.analyses.CreateRun(ctx, run); err != nil && !errors.Is(err, ErrExists) {
		return "", err
	}
	return id, nil
}

// errSuperseded: the rollout changed since the state being applied was
// read; its effects are someone else's to perform.
var errSuperseded = errors.New("canary: the rollout changed meanwhile")

// flagProblem is a flag write that cannot succeed until someone acts.
type flagProblem struct{ msg string }

func (e *flagProblem) Error() string { return e.msg }

// sync performs the effects of a pending change — the flag write, the
// cancellation of an analysis the rollout no longer waits for, the
// notifications of new history events — and then clears Pending in a write
// fenced by token (0: by the version only). A flag that cannot be written
// pauses a running rollout (PauseOnFlagProblem). Errors: ErrConflict when
// the rollout changed meanwhile, ErrLeaseLost, the stores' and the
// notifier's errors (the effects are then retried by the controller).
func (s *RolloutService) sync(ctx context.Context, sr StoredRollout, token int64) (StoredRollout, error) {
	r := sr.Rollout
	if !r.Pending {
		return sr, nil
	}
	now := s.now().UTC()
	fresh := append([]RolloutEvent(nil), r.History[min(r.Notified, len(r.History)):]...)
	wrote, wroteAt := false, time.Time{}
	if fw := r.DesiredFlag(); fw.Write {
		err := s.writeFlag(ctx, sr, fw)
		var fp *flagProblem
		switch {
		case err == nil:
			wrote, wroteAt = true, s.now()
		case errors.Is(err, errSuperseded):
			return sr, fmt.Errorf("rollout %s: %w", r.ID, ErrConflict)
		case errors.As(err, &fp):
			s.log.Warn("rollout cannot write its flag", "rollout", r.ID, "env", r.Env, "flag", r.Flag, "problem", fp.msg)
			r.PauseOnFlagProblem(now, controllerActor, fp.msg)
		case err != nil:
			return sr, err
		}
	}
	if r.State != RolloutRunning {
		// The step's run, and the one NextRunID names: a controller may
		// have created it and lost the race to record it against this
		// change, and nobody else would ever stop it.
		for _, id := range []string{r.AnalysisID, r.NextRunID()} {
			if err := s.cancelRun(ctx, id, fmt.Sprintf("rollout %s is %s", r.ID, r.State)); err != nil {
				return sr, err
			}
		}
	}
	if err := s.notify(ctx, &r); err != nil {
		return sr, err
	}
	r.Pending = false
	r.Notified = len(r.History)
	out, err := s.store.UpdateRollout(ctx, RolloutUpdate{Rollout: &r, IfVersion: sr.Version, Token: token})
	if err == nil {
		s.recordSynced(ctx, &out.Rollout, fresh, wrote, wroteAt)
	}
	return out, err
}

// cancelRun cancels analysis run id ("" none) that no rollout waits for;
// a run that ended or never existed is no error.
func (s *RolloutService) cancelRun(ctx context.Context, id, reason string) error {
	if id == "" {
		return nil
	}
	_, err := s.runs.Cancel(ctx, id, reason)
	if errors.Is(err, ErrRunEnded) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// controllerActor is the history actor of the controller's decisions.
const controllerActor = "rollout-controller"

// flagActor is the audit actor of a rollout's flag writes.
func flagActor(id string) string { return "rollout:" + id }

// flagReason is the audit reason of a rollout's flag write.
func flagReason(r *Rollout) string {
	last := ""
	if n := len(r.History); n > 0 && r.History[n-1].Reason != "" {
		last = ": " + r.History[n-1].Reason
	}
	switch r.State {
	case RolloutSucceeded:
		return fmt.Sprintf("rollout %s succeeded: %q for everyone", r.ID, r.Variant)
	case RolloutFailed:
		return fmt.Sprintf("rollout %s rolled back to %q%s", r.ID, r.FinalVariant, last)
	case RolloutAborted:
		return fmt.Sprintf("rollout %s aborted, flag turned to %q%s", r.ID, r.FinalVariant, last)
	}
	return fmt.Sprintf("rollout %s step %d/%d: %s", r.ID, r.Step+1, len(r.Steps), FormatPercent(r.Percent))
}

// maxFlagReasserts bounds how often writeFlag puts back a newer state's
// flag after a stale write landed (each needs yet another rollout change).
const maxFlagReasserts = 10

// writeFlag writes the flag state fw through flags.Service, unless the
// rollout changed since sr was read (errSuperseded). Writing what the flag
// already holds changes nothing (no new version, no audit entry).
//
// The version check runs inside the flag mutation, not atomically with the
// flag's save: a newer state may be stored, and its own flag write find
// nothing to change, between the two, so that this stale write lands
// after it. So once the write is saved the rollout is read again; if it
// moved on, the newest state's flag is written over it and the result is
// errSuperseded. Errors: *flagProblem when the flag, a variant or the
// environment is gone or an active rollout finds targeting it does not
// own; the flag store's; the rollout store's.
func (s *RolloutService) writeFlag(ctx context.Context, sr StoredRollout, fw FlagWrite) error {
	if err := s.writeFlagOnce(ctx, sr, fw); err != nil {
		return err
	}
	var stale error // errSuperseded once a newer state was found
	for range maxFlagReasserts {
		cur, err := s.store.Rollout(ctx, sr.ID)
		if err != nil {
			return err
		}
		if cur.Version == sr.Version {
			return stale
		}
		stale = errSuperseded
		next := cur.DesiredFlag()
		if !next.Write {
			return errSuperseded
		}
		err = s.writeFlagOnce(ctx, cur, next)
		var fp *flagProblem
		switch {
		case errors.As(err, &fp):
			s.log.Warn("rollout cannot put back its newer flag state over a stale write", "rollout", sr.ID, "version", cur.Version, "problem", fp.msg)
			return errSuperseded
		case err != nil && !errors.Is(err, errSuperseded):
			return err
		}
		s.log.Info("rollout flag write superseded; the newer state's flag is written again", "rollout", sr.ID, "stale", sr.Version, "version", cur.Version)
		sr = cur // and check that this one was not stale in turn
	}
	return errSuperseded
}

// writeFlagOnce is writeFlag without the check after the save.
func (s *RolloutService) writeFlagOnce(ctx context.Context, sr StoredRollout, fw FlagWrite) error {
	r := &sr.Rollout
	o := flags.WriteOptions{Actor: flagActor(r.ID), Reason: flagReason(r)}
	_, err := s.flags.Update(ctx, r.Env, "flag.update", o, func(d *flags.Document) error {
		f, ok := d.Flags[r.Flag]
		if !ok {
			return &flagProblem{fmt.Sprintf("flag %q no longer exists in %q", r.Flag, r.Env)}
		}
		need := []string{fw.DefaultVariant}
		if fw.Targeting != nil {
			need = append(need, r.Variant)
		}
		for _, v := range need {
			if _, ok := f.Variants[v]; !ok {
				return &flagProblem{fmt.Sprintf("flag %q no longer has variant %q", r.Flag, v)}
			}
		}
		if r.State.Active() && !OwnsTargeting(f.Targeting, r.Variant, r.From) {
			return &flagProblem{fmt.Sprintf("flag %q's targeting was changed outside the rollout (%s)", r.Flag, oneLineJSON(f.Targeting))}
		}
		cur, err := s.store.Rollout(ctx, r.ID)
		if err != nil {
			return err
		}
		if cur.Version != sr.Version {
			return errSuperseded
		}
		def := fw.DefaultVariant
		f.DefaultVariant = &def
		f.Targeting = fw.Targeting
		return nil
	})
	if errors.Is(err, flags.ErrNotFound) {
		return &flagProblem{fmt.Sprintf("environment %q no longer exists", r.Env)}
	}
	var ve *flags.ValidationError
	if errors.As(err, &ve) {
		return &flagProblem{"the flag set would be invalid: " + ve.Error()}
	}
	return err
}

// notificationEvent maps history events onto notifications; others are
// not notified.
func notificationEvent(ev string) (EventType, bool) {
	switch ev {
	case EventStarted, EventStep:
		return EventRolloutStep, true
	case EventSucceeded:
		return EventRolloutSucceeded, true
	case EventFailed:
		return EventRolloutFailed, true
	case EventPaused:
		return EventRolloutPaused, true
	case EventAborted, EventKilled:
		return EventRolloutAborted, true
	}
	return "", false
}

// rolloutPayload is the payload of rollout.* notifications.
type rolloutPayload struct {
	Rollout    string           `json:"rollout"`
	Env        string           `json:"env"`
	Flag       string           `json:"flag"`
	Variant    string           `json:"variant"`
	From       string           `json:"from"`
	Event      string           `json:"event"`
	Phase      RolloutState     `json:"phase"`
	Step       int              `json:"step"`
	Steps      int              `json:"steps"`
	Percent    float64          `json:"percent"`
	Actor      string           `json:"actor,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	Verdict    Verdict          `json:"verdict,omitempty"`
	AnalysisID string           `json:"analysisId,omitempty"`
	Evidence   *RolloutEvidence `json:"evidence,omitempty"`
}

// notify enqueues the notifications of the history events after
// r.Notified; their IDs derive from the rollout and the event's number
// (HistoryOffset plus its index, which stays unique when old events are
// dropped), so a repeat is dropped by the outbox.
func (s *RolloutService) notify(ctx context.Context, r *Rollout) error {
	if s.notifier == nil {
		return nil
	}
	for i := r.Notified; i < len(r.History); i++ {
		ev := r.History[i]
		et, ok := notificationEvent(ev.Event)
		if !ok {
			continue
		}
		p := rolloutPayload{Rollout: r.ID, Env: r.Env, Flag: r.Flag, Variant: r.Variant, From: r.From, Event: ev.Event,
			Phase: r.State, Step: ev.Step, Steps: len(r.Steps), Percent: ev.Percent, Actor: ev.Actor, Reason: ev.Reason}
		if i == len(r.History)-1 {
			p.Verdict, p.AnalysisID, p.Evidence = r.Verdict, r.AnalysisID, r.Evidence
		}
		body, err := json.Marshal(p)
		if err != nil {
			return err
		}
		n := Notification{ID: fmt.Sprintf("rollout-%s-%d", r.ID, r.HistoryOffset+i), Event: et, Subject: r.Env + "/" + r.Flag, Payload: body, Time: ev.Time}
		if _, _, err := s.notifier.Notify(ctx, n); err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) {
				s.log.Warn("rollout notification refused", "rollout", r.ID, "error", err)
				continue
			}
			return err
		}
	}
	return nil
}

// KillResult is the kill switch's answer.
type KillResult struct {
	Flag         string    `json:"flag"`
	Environments []KillEnv `json:"environments"`
}

// KillEnv is what the kill switch did in one environment.
type KillEnv struct {
	Name            string   `json:"name"`
	Variant         string   `json:"variant,omitempty"`
	Version         int64    `json:"version,omitempty"`
	AbortedRollouts []string `json:"abortedRollouts"`
	// Error says why the environment was left unchanged.
	Error string `json:"error,omitempty"`
	// Experiment is the experiment the flag still serves here (its
	// experiments.FlagMetadataKey metadata), which the kill switch does not
	// stop: it goes on recording exposures, now of the safe variant.
	// Warning says so and what to do.
	Experiment string `json:"experiment,omitempty"`
	Warning    string `json:"warning,omitempty"`
}

// SafeVariantKey is the flag metadata key naming the kill switch's
// variant.
const SafeVariantKey = "safeVariant"

// Kill turns flag to its safe variant in every environment may allows
// that has it: defaultVariant = the variant, targeting removed, its active
// rollout aborted. The safe variant is variant if given, else the flag's
// metadata safeVariant, else the from of its active rollout. Environments
// without a safe variant, or whose flag lacks it, are reported with an
// Error and left unchanged, as are those whose write failed. An
// environment whose flag still serves an experiment is killed and
// reported with the experiment and a Warning (the experiment is not
// stopped here). Errors:
// ErrUnknownFlag when no environment allowed has the flag,
// ErrNoSafeVariant when none of them has a safe variant, the flag store's
// when environments cannot be listed.
func (s *RolloutService) Kill(ctx context.Context, flag, variant, actor, reason string, may func(env string) bool) (KillResult, error) {
	res := KillResult{Flag: flag, Environments: []KillEnv{}}
	envs, err := s.reader.Environments(ctx)
	if err != nil {
		return res, err
	}
	type target struct {
		env    string
		safe   string
		active *StoredRollout
		f      *flags.Flag
	}
	var targets []target
	resolved := false
	for _, e := range envs {
		if !may(e.Name) {
			continue
		}
		snap, err := s.reader.Snapshot(ctx, e.Name)
		if errors.Is(err, flags.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			res.Environments = append(res.Environments, KillEnv{Name: e.Name, AbortedRollouts: []string{}, Error: "cannot read the flag set: " + err.Error()})
			continue
		}
		doc, err := flags.Parse(snap.Document)
		if err != nil {
			continue
		}
		f, ok := doc.Flags[flag]
		if !ok {
			continue
		}
		t := target{env: e.Name, safe: variant, f: f}
		if act, err := s.store.ActiveRollout(ctx, e.Name, flag); err == nil {
			t.active = &act
		} else if !errors.Is(err, ErrNotFound) {
			return res, err
		}
		if t.safe == "" {
			if v, ok := f.Metadata[SafeVariantKey].(string); ok && v != "" {
				t.safe = v
			} else if t.active != nil {
				t.safe = t.active.From
			}
		}
		resolved = resolved || t.safe != ""
		targets = append(targets, t)
	}
	if len(targets) == 0 && len(res.Environments) == 0 {
		return res, fmt.Errorf("flag %q: %w", flag, ErrUnknownFlag)
	}
	if len(targets) > 0 && !resolved {
		return res, fmt.Errorf("flag %q: give a variant, or name one in the flag's metadata %q: %w", flag, SafeVariantKey, ErrNoSafeVariant)
	}
	for _, t := range targets {
		out := KillEnv{Name: t.env, Variant: t.safe, AbortedRollouts: []string{}}
		switch _, has := t.f.Variants[t.safe]; {
		case t.safe == "":
			out.Error = fmt.Sprintf("no safe variant: the flag names no %s in its metadata and has no active rollout", SafeVariantKey)
		case !has:
			out.Error = fmt.Sprintf("flag %q has no variant %q here; left unchanged", flag, t.safe)
		default:
			out.Version, out.AbortedRollouts, err = s.killIn(ctx, t.env, flag, t.safe, actor, reason)
			if err != nil {
				out.Error = err.Error()
			} else if xp, ok := t.f.Metadata[experiments.FlagMetadataKey].(string); ok && xp != "" {
				out.Experiment = xp
				out.Warning = fmt.Sprintf("experiment %q still runs on this flag and now records exposures of %q for every user; stop it, or its results mix in the kill", xp, t.safe)
				s.log.Warn("kill switch: the flag still serves an experiment", "env", t.env, "flag", flag, "experiment", xp)
			}
		}
		res.Environments = append(res.Environments, out)
	}
	return res, nil
}

// killIn aborts env's active rollout of flag (first, so that no controller
// writes a step after), writes the safe variant and settles the rollout.
func (s *RolloutService) killIn(ctx context.Context, env, flag, safe, actor, reason string) (int64, []string, error) {
	aborted := []string{}
	var killed *StoredRollout
	for attempt := 1; ; attempt++ {
		act, err := s.store.ActiveRollout(ctx, env, flag)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return 0, aborted, err
		}
		if err := act.Kill(s.now().UTC(), actor, "kill switch: "+reason, safe); err != nil {
			return 0, aborted, err
		}
		out, err := s.store.UpdateRollout(ctx, RolloutUpdate{Rollout: &act.Rollout, IfVersion: act.Version})
		if errors.Is(err, ErrConflict) && attempt < maxActionAttempts {
			continue
		}
		if err != nil {
			return 0, aborted, err
		}
		aborted = append(aborted, out.ID)
		killed = &out
		break
	}
	why := "kill switch"
	if reason != "" {
		why += ": " + reason
	}
	def, _ := json.Marshal(safe)
	snap, err := s.flags.PatchFlag(ctx, env, flag, flags.FlagPatch{DefaultVariant: def, Targeting: json.RawMessage("null")},
		flags.WriteOptions{Actor: actor, Reason: why})
	if err != nil {
		return 0, aborted, err
	}
	if killed != nil {
		s.settle(ctx, *killed)
	}
	s.log.Warn("kill switch", "env", env, "flag", flag, "variant", safe, "aborted", aborted, "actor", actor, "reason", reason)
	return snap.Version, aborted, nil
}
