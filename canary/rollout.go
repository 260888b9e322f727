package canary

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// Progressive flag rollouts.
//
// A Rollout ramps one flag of one environment from its old variant (From)
// to a new one (Variant) through Steps of rising percentages. While it is
// active it owns the flag's targeting: every step writes
//
//	{"fractional":[["<variant>",W],["<from>",10000-W]]}
//
// with W the step's percentage in basis points (percent × 100, a whole
// number as flagd requires), and defaultVariant = From. flagd's fractional
// gives the first entry the start of the hash range, so raising W only moves
// users from From to Variant, never back. A step at 100 % writes the final
// form (defaultVariant = Variant, no targeting); so does a success or a
// promotion. A rollback (a failed gate with OnFail rollback, or an abort)
// writes defaultVariant = From without targeting. The kill switch writes its
// safe variant the same way.
//
// The Rollout value is the whole state machine: a plain JSON value a store
// keeps under a version, changed only through its methods, which take the
// time from the caller and do no I/O. Every change that has side effects
// (a flag write, a notification) sets Pending; whoever changed it then
// performs the effects and clears Pending in a second, fenced write. A
// replica that dies in between leaves Pending set, and the next one
// performs the same effects again: the flag write is identical, which
// flags.Service turns into a no-op, and notification IDs derive from the
// rollout and the event's number (HistoryOffset plus its index), which the
// outbox deduplicates.
//
// Analysis gates compare users by the variant they were served, so apps
// label their metrics with the evaluated flag and variant, as
// OpenTelemetry's feature-flag conventions name them: feature_flag_key and
// feature_flag_variant. A step's run gets CanaryScope
// `feature_flag_key="KEY",feature_flag_variant="VARIANT"` and BaselineScope
// the same with From, ExpectedSplit = percent/100 (none at 100 %, and none
// unless the template sets sampleRatio.tolerance: users, not requests, are
// split), and the
// values flag, variant, from and env for the template args so named. With
// client_golang:
//
//	requests := promauto.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total"},
//		[]string{"feature_flag_key", "feature_flag_variant", "code"})
//	variant := details.Variant // from client.BooleanValueDetails(ctx, "new-checkout", false, evalCtx)
//	requests.WithLabelValues("new-checkout", variant, strconv.Itoa(status)).Inc()
//
// and the template's queries select an arm with {{ .scope }}, e.g.
// sum(increase(http_requests_total{code=~"5..", {{ .scope }}}[{{ .window }}])).
//
// Decisions where a gate cannot decide: an analysis that ends
// Inconclusive, Error or Cancelled, or disappears, pauses the rollout with
// the reason (retry or resume restarts the step, abort rolls back); only a
// Failed analysis applies OnFail.

// RolloutState is where a rollout is in its life.
type RolloutState string

// The rollout states. Scheduled, Running and Paused are active; the others
// are terminal.
const (
	RolloutScheduled RolloutState = "scheduled"
	RolloutRunning   RolloutState = "running"
	RolloutPaused    RolloutState = "paused"
	RolloutSucceeded RolloutState = "succeeded"
	RolloutFailed    RolloutState = "failed"
	RolloutAborted   RolloutState = "aborted"
)

// Active reports whether a rollout in state s still owns its flag.
func (s RolloutState) Active() bool {
	return s == RolloutScheduled || s == RolloutRunning || s == RolloutPaused
}

// Terminal reports whether a rollout in state s has ended.
func (s RolloutState) Terminal() bool {
	return s == RolloutSucceeded || s == RolloutFailed || s == RolloutAborted
}

// OnFail is what a failed analysis gate does to a rollout.
type OnFail string

// The failure policies; the zero value means OnFailRollback.
const (
	// OnFailRollback turns the flag back to From for everyone and ends the
	// rollout as failed.
	OnFailRollback OnFail = "rollback"
	// OnFailPause keeps the current split and pauses the rollout; retry or
	// resume restarts the step, abort rolls back.
	OnFailPause OnFail = "pause"
)

// RolloutStep is one step of a rollout: the percentage of users served the
// new variant, how long at least to stay, and an optional analysis gate.
type RolloutStep struct {
	// Percent is in (0, 100], with at most two decimals.
	Percent float64 `json:"percent"`
	// MinDuration is a Go duration string such as "5m"; empty means none.
	MinDuration string `json:"minDuration,omitempty"`
	// Analysis, when set, gates the step on a canary analysis.
	Analysis *StepAnalysis `json:"analysis,omitempty"`
}

// StepAnalysis is a step's analysis gate: a template and its extra values.
type StepAnalysis struct {
	Template string            `json:"template"`
	Values   map[string]string `json:"values,omitempty"`
}

// minDuration returns the step's minimum duration (validated at creation;
// a malformed one counts as none).
func (s *RolloutStep) minDuration() time.Duration {
	d, _ := time.ParseDuration(s.MinDuration)
	return d
}

// gated reports whether the step waits for anything.
func (s *RolloutStep) gated() bool { return s.MinDuration != "" || s.Analysis != nil }

// RolloutEvent is one entry of a rollout's history.
type RolloutEvent struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	Actor   string    `json:"actor,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// The history events.
const (
	EventCreated   = "created"
	EventScheduled = "scheduled"
	EventStarted   = "started"
	EventStep      = "step"
	EventVerdict   = "analysis"
	EventHolding   = "holding"
	EventPaused    = "paused"
	EventResumed   = "resumed"
	EventPromoted  = "promoted"
	EventSucceeded = "succeeded"
	EventFailed    = "failed"
	EventAborted   = "aborted"
	EventRetried   = "retried"
	EventKilled    = "killed"
)

// RolloutEvidence is the analysis that failed (or could not decide) a gate.
type RolloutEvidence struct {
	AnalysisID string  `json:"analysisId"`
	Template   string  `json:"template"`
	Phase      Phase   `json:"phase"`
	Message    string  `json:"message,omitempty"`
	Report     *Report `json:"report,omitempty"`
}

// Rollout is a progressive flag rollout and its whole state.
type Rollout struct {
	ID       string        `json:"id"`
	Env      string        `json:"env"`
	Flag     string        `json:"flag"`
	Variant  string        `json:"variant"`
	From     string        `json:"from"`
	Steps    []RolloutStep `json:"steps"`
	OnFail   OnFail        `json:"onFail"`
	BucketBy string        `json:"bucketBy,omitempty"`

	State RolloutState `json:"state"`
	// Step is the index of the current step; Percent what the flag serves
	// the new variant now (0 before the first step and after a rollback).
	Step          int       `json:"step"`
	Percent       float64   `json:"percent"`
	StepStartedAt time.Time `json:"stepStartedAt,omitzero"`
	StartAt       time.Time `json:"startAt,omitzero"`
	// AnalysisID is the current step's analysis run; Attempt counts the
	// runs started for the current step (a resume or retry starts another),
	// so that each gets its own ID.
	AnalysisID string           `json:"analysisId,omitempty"`
	Attempt    int              `json:"attempt,omitempty"`
	Verdict    Verdict          `json:"verdict,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	Evidence   *RolloutEvidence `json:"evidence,omitempty"`
	History    []RolloutEvent   `json:"history"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	EndedAt   time.Time `json:"endedAt,omitzero"`

	// Holding: the last step's gate passed and it is below 100 %; the
	// rollout stays there until promoted.
	Holding bool `json:"holding,omitempty"`
	// PausedOnFail: paused by a failed or undecided gate (retry allowed).
	PausedOnFail bool `json:"pausedOnFail,omitempty"`
	// FinalVariant is what an ended rollout left the flag serving ("" when
	// it never touched the flag).
	FinalVariant string `json:"finalVariant,omitempty"`
	// Pending: the flag write and notifications of the latest change are
	// not confirmed yet. Notified counts the history events notified.
	Pending  bool `json:"pending,omitempty"`
	Notified int  `json:"notified,omitempty"`
	// HistoryOffset counts the oldest history events dropped to keep
	// History at most 1000 long: History[i] is the rollout's event number
	// HistoryOffset+i, which names its notification.
	HistoryOffset int `json:"historyOffset,omitempty"`
}

// Errors of the rollout state machine and service.
var (
	// ErrRolloutState: the action is not allowed in the rollout's state.
	ErrRolloutState = errors.New("canary: not allowed in the rollout's state")
	// ErrRolloutActive: the flag already has an active rollout in the
	// environment.
	ErrRolloutActive = errors.New("canary: the flag already has an active rollout")
)

// BasisPoints is the fractional weight of the new variant at percent p.
func BasisPoints(p float64) int { return int(math.Round(p * 100)) }

// FormatPercent writes p as "5%", "0.5%" or "0.25%": rounded to the two
// decimals a rollout's percentages have, so that arithmetic noise
// (33.330000000000005) does not show.
func FormatPercent(p float64) string {
	return strconv.FormatFloat(math.Round(p*100)/100, 'f', -1, 64) + "%"
}

// NewRolloutID returns a fresh rollout ID: "ro_" and 16 hexadecimal digits.
func NewRolloutID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "ro_" + hex.EncodeToString(b[:])
}

var rolloutIDRE = regexp.MustCompile(`^ro_[A-Za-z0-9_-]{1,64}$`)

// CheckRolloutID reports whether id can name a rollout ("ro_" and up to 64
// letters, digits, '_' or '-'). It returns a *ValidationError naming "id",
// or nil. An ID that fails it can never be found.
func CheckRolloutID(id string) error {
	if !rolloutIDRE.MatchString(id) {
		return fieldError("id", "%q is not a rollout ID", id)
	}
	return nil
}

// Limits of a rollout definition.
const (
	MaxRolloutSteps  = 100
	maxRolloutReason = 1024
	maxHistory       = 1000
)

// ValidateSteps checks steps and onFail: 1 to MaxRolloutSteps steps with
// percentages in (0, 100], strictly increasing, at most two decimals; each
// step below 100 % with a minDuration (a positive Go duration) and/or an
// analysis naming a template. It returns a *ValidationError naming each
// problem ("steps[1].percent"), or nil.
func ValidateSteps(steps []RolloutStep, onFail OnFail) error {
	var p problems
	if len(steps) == 0 || len(steps) > MaxRolloutSteps {
		p.add("steps", "must list 1 to %d steps", MaxRolloutSteps)
	}
	prev := 0.0
	for i, s := range steps {
		at := fmt.Sprintf("steps[%d]", i)
		switch {
		case !finite(s.Percent) || s.Percent <= 0 || s.Percent > 100:
			p.add(at+".percent", "%v: must be above 0 and at most 100", s.Percent)
		case math.Abs(s.Percent*100-math.Round(s.Percent*100)) > 1e-6:
			p.add(at+".percent", "%v: at most two decimals", s.Percent)
		case s.Percent <= prev:
			p.add(at+".percent", "%v: must be above the previous step's %v", s.Percent, prev)
		}
		if s.Percent > prev {
			prev = s.Percent
		}
		if s.MinDuration != "" {
			if d, err := time.ParseDuration(s.MinDuration); err != nil || d <= 0 {
				p.add(at+".minDuration", "%q: must be a positive Go duration such as \"5m\"", s.MinDuration)
			}
		}
		switch {
		case s.Analysis != nil && s.Analysis.Template == "":
			p.add(at+".analysis.template", "required")
		case s.Analysis != nil && s.Percent >= 100:
			// Everyone is on the new variant: no baseline is left to compare
			// with, so such an analysis could only end inconclusive.
			p.add(at+".analysis", "a 100%% step has no baseline users to compare with; gate the step before it")
		}
		if !s.gated() && s.Percent < 100 {
			p.add(at, "needs a minDuration and/or an analysis (only a final 100%% step may have neither)")
		}
	}
	switch onFail {
	case "", OnFailRollback, OnFailPause:
	default:
		p.add("onFail", "%q: must be rollback or pause", onFail)
	}
	return p.err()
}

// NewRollout returns a rollout in state scheduled (startAt after now) or
// running at its first step with Pending set (the first flag write is
// due). Steps must have passed ValidateSteps.
func NewRollout(id, env, flag, variant, from string, steps []RolloutStep, onFail OnFail, bucketBy string, startAt, now time.Time, actor, reason string) *Rollout {
	if onFail == "" {
		onFail = OnFailRollback
	}
	r := &Rollout{
		ID: id, Env: env, Flag: flag, Variant: variant, From: from, Steps: steps, OnFail: onFail, BucketBy: bucketBy,
		State: RolloutScheduled, CreatedAt: now, UpdatedAt: now, History: []RolloutEvent{},
	}
	r.event(now, EventCreated, actor, reason)
	if startAt.After(now) {
		r.StartAt = startAt
		r.event(now, EventScheduled, actor, "starts at "+startAt.UTC().Format(time.RFC3339))
		return r
	}
	r.begin(now, actor)
	return r
}

// event appends a history entry at the rollout's current step and percent.
func (r *Rollout) event(now time.Time, ev, actor, reason string) {
	if len(reason) > maxRolloutReason {
		reason = reason[:maxRolloutReason]
	}
	r.History = append(r.History, RolloutEvent{Time: now, Event: ev, Step: r.Step, Percent: r.Percent, Actor: actor, Reason: reason})
	if len(r.History) > maxHistory {
		drop := len(r.History) - maxHistory
		r.History = append(r.History[:0], r.History[drop:]...)
		r.Notified = max(0, r.Notified-drop)
		r.HistoryOffset += drop
	}
	r.UpdatedAt = now
}

// begin starts the first step.
func (r *Rollout) begin(now time.Time, actor string) {
	r.State = RolloutRunning
	r.enter(now, 0, actor, EventStarted)
}

// enter moves to step i and makes its flag write due.
func (r *Rollout) enter(now time.Time, i int, actor, ev string) {
	r.Step = i
	r.Percent = r.Steps[i].Percent
	r.StepStartedAt = now
	r.AnalysisID = ""
	r.Attempt = 0
	r.Holding = false
	r.PausedOnFail = false
	r.Reason = ""
	r.Pending = true
	r.event(now, ev, actor, fmt.Sprintf("step %d/%d: %s", i+1, len(r.Steps), FormatPercent(r.Percent)))
	if r.Percent >= 100 && !r.Steps[i].gated() {
		r.succeed(now, actor, "reached 100%")
	}
}

// succeed ends the rollout with the new variant served to everyone.
func (r *Rollout) succeed(now time.Time, actor, reason string) {
	r.end(now, RolloutSucceeded, r.Variant)
	r.Percent = 100
	r.event(now, EventSucceeded, actor, reason)
}

// end moves to a terminal state that leaves the flag serving final.
func (r *Rollout) end(now time.Time, s RolloutState, final string) {
	r.State = s
	r.FinalVariant = final
	r.EndedAt = now
	r.Holding = false
	r.PausedOnFail = false
	r.Pending = true
}

// actionError is ErrRolloutState with the action and state.
func (r *Rollout) actionError(action string) error {
	return fmt.Errorf("rollout %s is %s; %s is not allowed: %w", r.ID, r.State, action, ErrRolloutState)
}

// Start begins a scheduled rollout now (the controller calls it at
// StartAt). Errors: ErrRolloutState unless scheduled.
func (r *Rollout) Start(now time.Time, actor string) error {
	if r.State != RolloutScheduled {
		return r.actionError("start")
	}
	r.begin(now, actor)
	return nil
}

// Pause holds a running rollout at its current split; the step's analysis
// is cancelled and restarts on resume. Errors: ErrRolloutState unless
// running.
func (r *Rollout) Pause(now time.Time, actor, reason string) error {
	if r.State != RolloutRunning {
		return r.actionError("pause")
	}
	r.State = RolloutPaused
	r.Reason = reason
	r.Pending = true
	r.event(now, EventPaused, actor, reason)
	return nil
}

// Resume restarts a paused rollout's current step: its minimum duration
// counts from now and its analysis starts afresh. Errors: ErrRolloutState
// unless paused.
func (r *Rollout) Resume(now time.Time, actor, reason string) error {
	if r.State != RolloutPaused {
		return r.actionError("resume")
	}
	r.State = RolloutRunning
	r.restart(now, actor, EventResumed, reason)
	return nil
}

// Retry restarts a failed or paused rollout at its current step (the one
// that failed, for a rollout failed or paused by its gate): the flag goes
// back to that step's split, the evidence is cleared and a new analysis
// starts. On a rollout someone paused it does what Resume does, recorded
// as a retry. Errors: ErrRolloutState unless failed or paused.
func (r *Rollout) Retry(now time.Time, actor, reason string) error {
	if r.State != RolloutFailed && r.State != RolloutPaused {
		return r.actionError("retry")
	}
	r.State = RolloutRunning
	r.EndedAt = time.Time{}
	r.FinalVariant = ""
	r.Evidence = nil
	r.restart(now, actor, EventRetried, reason)
	return nil
}

func (r *Rollout) restart(now time.Time, actor, ev, reason string) {
	r.Percent = r.Steps[r.Step].Percent
	r.StepStartedAt = now
	r.AnalysisID = ""
	// A controller may have created the run NextRunID named before the
	// pause or failure without recording it (its write lost the race):
	// the restarted step's run gets an ID of its own, never that one.
	r.Attempt++
	r.Holding = false
	r.PausedOnFail = false
	r.Reason = ""
	r.Pending = true
	r.event(now, ev, actor, reason)
}

// Promote skips to 100 %: the rollout succeeds and the flag serves Variant
// to everyone. Errors: ErrRolloutState unless active.
func (r *Rollout) Promote(now time.Time, actor, reason string) error {
	if !r.State.Active() {
		return r.actionError("promote")
	}
	r.event(now, EventPromoted, actor, reason)
	r.Step = len(r.Steps) - 1 // done: its status reads as at the last step
	r.succeed(now, actor, "promoted")
	return nil
}

// Abort ends an active rollout and rolls the flag back to From (a
// scheduled rollout never touched the flag and leaves it alone). Errors:
// ErrRolloutState unless active.
func (r *Rollout) Abort(now time.Time, actor, reason string) error {
	return r.abortTo(now, actor, reason, r.From, EventAborted)
}

// Kill ends an active rollout for the kill switch: the flag is turned to
// variant. Errors: ErrRolloutState unless active.
func (r *Rollout) Kill(now time.Time, actor, reason, variant string) error {
	return r.abortTo(now, actor, reason, variant, EventKilled)
}

func (r *Rollout) abortTo(now time.Time, actor, reason, variant, ev string) error {
	if !r.State.Active() {
		return r.actionError("abort")
	}
	final := variant
	if r.State == RolloutScheduled && ev == EventAborted {
		final = ""
	}
	r.end(now, RolloutAborted, final)
	r.Reason = reason
	r.Percent = 0
	if variant == r.Variant {
		r.Percent = 100
	}
	r.event(now, ev, actor, reason)
	return nil
}

// Evaluate applies what the current step's gate decides at now, given its
// analysis run (nil when the step has none or it has not started): a
// failed analysis fails the step at once (OnFail decides: rollback or
// pause); an undecided one (Inconclusive, Error, Cancelled, or a run that
// is gone) pauses the rollout with the reason; a passed analysis, or none,
// passes the step once its minimum duration has elapsed, which moves to
// the next step, holds at the last one below 100 %, or succeeds at 100 %.
// It reports whether the rollout changed. Only a running rollout without
// pending effects is evaluated.
func (r *Rollout) Evaluate(now time.Time, run *Run, actor string) bool {
	if r.State != RolloutRunning || r.Pending || r.Holding {
		return false
	}
	step := &r.Steps[r.Step]
	changed := false
	if step.Analysis != nil {
		switch {
		case r.AnalysisID == "":
			return false // the run is not started yet
		case run == nil:
			r.pauseOnGate(now, actor, fmt.Sprintf("step %d analysis %s no longer exists", r.Step+1, r.AnalysisID), nil)
			return true
		}
		switch run.Phase {
		case PhaseSuccessful:
			if r.Verdict != VerdictPass {
				r.Verdict = VerdictPass
				r.event(now, EventVerdict, actor, fmt.Sprintf("analysis %s passed: %s", run.ID, run.Message))
				changed = true
			}
		case PhaseFailed:
			r.Verdict = VerdictFail
			r.fail(now, actor, run)
			return true
		case PhaseInconclusive, PhaseError, PhaseCancelled:
			r.Verdict = VerdictInconclusive
			r.pauseOnGate(now, actor, fmt.Sprintf("step %d analysis %s ended %s without a pass: %s", r.Step+1, run.ID, run.Phase, run.Message), run)
			return true
		default:
			return false // still measuring
		}
	}
	if now.Before(r.StepStartedAt.Add(step.minDuration())) {
		return changed
	}
	if r.Step+1 < len(r.Steps) {
		r.enter(now, r.Step+1, actor, EventStep)
		return true
	}
	if r.Percent >= 100 {
		r.succeed(now, actor, fmt.Sprintf("step %d/%d passed at 100%%", r.Step+1, len(r.Steps)))
		return true
	}
	r.Holding = true
	r.event(now, EventHolding, actor, fmt.Sprintf("last step passed; holding at %s until promoted", FormatPercent(r.Percent)))
	return true
}

// fail applies OnFail to a failed analysis.
func (r *Rollout) fail(now time.Time, actor string, run *Run) {
	r.Evidence = evidenceOf(run)
	reason := fmt.Sprintf("step %d/%d (%s) analysis %s failed: %s", r.Step+1, len(r.Steps), FormatPercent(r.Percent), run.ID, run.Message)
	if r.OnFail == OnFailPause {
		r.State = RolloutPaused
		r.PausedOnFail = true
		r.Reason = reason
		r.Pending = true
		r.event(now, EventPaused, actor, reason)
		return
	}
	r.end(now, RolloutFailed, r.From)
	r.Reason = reason
	r.Percent = 0
	r.event(now, EventFailed, actor, reason)
}

// pauseOnGate pauses a rollout whose gate could not decide.
func (r *Rollout) pauseOnGate(now time.Time, actor, reason string, run *Run) {
	if run != nil {
		r.Evidence = evidenceOf(run)
	}
	r.State = RolloutPaused
	r.PausedOnFail = true
	r.Reason = reason
	r.Pending = true
	r.event(now, EventPaused, actor, reason)
}

// PauseOnFlagProblem pauses a running rollout whose flag cannot be written
// (deleted, variant removed, targeting changed by someone else), or notes
// the problem on one that has ended. It clears Pending: nothing more can
// be done until someone acts.
func (r *Rollout) PauseOnFlagProblem(now time.Time, actor, problem string) {
	reason := "the flag cannot be written: " + problem
	if r.State == RolloutRunning {
		r.State = RolloutPaused
		r.PausedOnFail = true
		r.Reason = reason
		r.event(now, EventPaused, actor, reason)
	} else if r.Reason == "" {
		r.Reason = reason
	} else {
		r.Reason += "; " + reason
	}
	r.Pending = false
}

func evidenceOf(run *Run) *RolloutEvidence {
	e := &RolloutEvidence{AnalysisID: run.ID, Template: run.Template.Name, Phase: run.Phase, Message: run.Message}
	if last := run.Last(); last != nil {
		rep := *last
		e.Report = &rep
	}
	return e
}

// AnalysisStarted records the current step's analysis run.
func (r *Rollout) AnalysisStarted(now time.Time, runID, actor string) {
	r.AnalysisID = runID
	r.Verdict = ""
	r.Attempt++
	r.event(now, EventVerdict, actor, "analysis "+runID+" started")
}

// NeedsAnalysis reports whether the current step waits for an analysis run
// that is not started yet.
func (r *Rollout) NeedsAnalysis() bool {
	return r.State == RolloutRunning && !r.Pending && !r.Holding && r.Steps[r.Step].Analysis != nil && r.AnalysisID == ""
}

// NextRunID is the ID the current step's next analysis run gets: the
// rollout ID, the step and the attempt within the step ("ro_x-s2-a1"), so
// that a replica that repeats the start after a crash finds the run already
// created. A resume or retry moves it on, so a restarted step never adopts
// a run created before it.
func (r *Rollout) NextRunID() string {
	return fmt.Sprintf("%s-s%d-a%d", r.ID, r.Step+1, r.Attempt+1)
}

// FlagWrite is the flag state a rollout wants: DefaultVariant and Targeting
// (nil: none). Write is false when the rollout leaves the flag alone.
type FlagWrite struct {
	Write          bool
	DefaultVariant string
	Targeting      json.RawMessage
}

// DesiredFlag returns the flag state the rollout's current state implies.
func (r *Rollout) DesiredFlag() FlagWrite {
	switch {
	case r.State == RolloutScheduled:
		return FlagWrite{}
	case r.State.Terminal():
		if r.FinalVariant == "" {
			return FlagWrite{}
		}
		return FlagWrite{Write: true, DefaultVariant: r.FinalVariant}
	case r.Percent >= 100:
		return FlagWrite{Write: true, DefaultVariant: r.Variant}
	}
	return FlagWrite{Write: true, DefaultVariant: r.From, Targeting: FractionalTargeting(r.Variant, r.From, r.BucketBy, r.Percent)}
}

// FractionalTargeting is the targeting rule serving variant to percent of
// users and from to the rest, bucketed by the flag key and the targeting
// key, or the context attribute bucketBy: a user without it (or with an
// empty one) is bucketed by the targeting key instead, so such users are
// still spread over the split rather than all hashed alike.
func FractionalTargeting(variant, from, bucketBy string, percent float64) json.RawMessage {
	w := BasisPoints(percent)
	args := []any{}
	if bucketBy != "" {
		by := map[string]any{"or": []any{map[string]any{"var": bucketBy}, map[string]any{"var": "targetingKey"}}}
		args = append(args, map[string]any{"cat": []any{map[string]any{"var": "$flagd.flagKey"}, by}})
	}
	args = append(args, []any{variant, w}, []any{from, 10000 - w})
	b, _ := json.Marshal(map[string]any{"fractional": args}) // plain values: never fails
	return b
}

// OwnsTargeting reports whether targeting is absent or a fractional split
// between variant and from as a rollout writes it (any weights, any
// bucketing expression): what a rollout may overwrite.
func OwnsTargeting(targeting json.RawMessage, variant, from string) bool {
	t := string(targeting)
	if len(targeting) == 0 || t == "null" || t == "{}" {
		return true
	}
	var m map[string][]json.RawMessage
	if json.Unmarshal(targeting, &m) != nil || len(m) != 1 {
		return false
	}
	args, ok := m["fractional"]
	if !ok {
		return false
	}
	if len(args) == 3 {
		args = args[1:] // a bucketing expression
	}
	if len(args) != 2 {
		return false
	}
	for i, want := range []string{variant, from} {
		var entry []any
		if json.Unmarshal(args[i], &entry) != nil || len(entry) != 2 {
			return false
		}
		if name, ok := entry[0].(string); !ok || name != want {
			return false
		}
		if _, ok := entry[1].(float64); !ok {
			return false
		}
	}
	return true
}

// WakeAt is when a controller should next look at the rollout: now for
// pending effects and analysis gates (polled), the start time of a
// scheduled one, the end of a step's minimum duration, and the zero time
// when nothing will happen by itself (paused, holding, ended).
func (r *Rollout) WakeAt() time.Time {
	switch {
	case r.Pending:
		return r.UpdatedAt
	case r.State == RolloutScheduled:
		return r.StartAt
	case r.State != RolloutRunning || r.Holding:
		return time.Time{}
	case r.Steps[r.Step].Analysis != nil:
		return r.UpdatedAt // polled until the run ends
	}
	return r.StepStartedAt.Add(r.Steps[r.Step].minDuration())
}
