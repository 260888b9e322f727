package experiments

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Errors the lifecycle methods return, to be matched with errors.Is.
var (
	// ErrInvalidTransition: the action is not allowed in the experiment's
	// current status (a *TransitionError says which and what to do instead).
	ErrInvalidTransition = errors.New("invalid experiment lifecycle transition")
	// ErrRestartRequired: the change would bias a running experiment and is
	// refused unless a restart is requested (a *RestartRequiredError names the fields).
	ErrRestartRequired = errors.New("change requires restarting the experiment")
)

// TransitionError is an action attempted in a status that does not allow it.
type TransitionError struct {
	Key    string
	From   Status
	Action string
	Hint   string
}

// Error says which action the status refused and, when known, what to do instead.
func (e *TransitionError) Error() string {
	s := fmt.Sprintf("experiment %q is %s: cannot %s", e.Key, e.From, e.Action)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// RestartRequiredError lists the fields whose change would bias a running experiment.
type RestartRequiredError struct {
	Key    string
	Fields []string
}

// Error names the refused fields and says that a restart would allow them.
func (e *RestartRequiredError) Error() string {
	return fmt.Sprintf("experiment %q is running: changing %s would bias its results; restart the experiment to change it (results start over)",
		e.Key, strings.Join(e.Fields, ", "))
}

// Unwrap makes errors.Is(err, ErrRestartRequired) true.
func (e *RestartRequiredError) Unwrap() error { return ErrRestartRequired }

// clone returns a copy of e that shares no slices or pointers with it.
func (e *Experiment) clone() Experiment {
	c := *e
	c.Treatments = slices.Clone(e.Treatments)
	c.Weights = slices.Clone(e.Weights)
	c.Metrics = slices.Clone(e.Metrics)
	for i := range c.Metrics {
		if p := c.Metrics[i].Numerator; p != nil {
			q := *p
			c.Metrics[i].Numerator = &q
		}
		if p := c.Metrics[i].Denominator; p != nil {
			q := *p
			c.Metrics[i].Denominator = &q
		}
	}
	if e.Decision != nil {
		d := *e.Decision
		c.Decision = &d
	}
	return c
}

func (e *Experiment) status() Status {
	if e.Status == "" {
		return StatusDraft
	}
	return e.Status
}

// Start moves a draft to running at now, after filling defaults and
// validating. Errors: *TransitionError if not a draft, *ValidationError if
// the experiment is invalid (then e is unchanged).
func (e *Experiment) Start(now time.Time) error {
	if s := e.status(); s != StatusDraft {
		hint := ""
		if s == StatusRunning {
			hint = "it is already running (use restart to start over)"
		}
		return &TransitionError{Key: e.Key, From: s, Action: "start", Hint: hint}
	}
	c := e.clone()
	c.Defaults()
	c.Status = StatusDraft
	if err := c.Validate(); err != nil {
		return err
	}
	c.Status = StatusRunning
	c.StartedAt = &now
	*e = c
	return nil
}

// Stop ends a running experiment at now with decision d. Errors:
// *TransitionError if not running, *ValidationError naming "decision.outcome"
// or "decision.variant" if d is invalid (then e is unchanged).
func (e *Experiment) Stop(now time.Time, d StopDecision) error {
	if s := e.status(); s != StatusRunning {
		return &TransitionError{Key: e.Key, From: s, Action: "stop", Hint: "only a running experiment can be stopped"}
	}
	var ps problems
	d.validate(&ps, "decision", e)
	if err := ps.err(); err != nil {
		return err
	}
	e.Status = StatusStopped
	e.Decision = &d
	e.StoppedAt = &now
	return nil
}

// Restart starts a running experiment over at now with a new salt, so that
// users are re-randomised and earlier exposures no longer count (the caller
// discards the old statistics). An empty salt derives "<key>.r<n>" from the
// restart count. Errors: *TransitionError if not running, *ValidationError
// naming "salt" if the salt is unchanged or too long.
func (e *Experiment) Restart(now time.Time, salt string) error {
	if s := e.status(); s != StatusRunning {
		return &TransitionError{Key: e.Key, From: s, Action: "restart", Hint: "only a running experiment can be restarted"}
	}
	return e.restart(now, salt)
}

func (e *Experiment) restart(now time.Time, salt string) error {
	if salt == "" {
		salt = fmt.Sprintf("%s.r%d", e.Key, e.Restarts+1)
	}
	var ps problems
	switch {
	case salt == e.Salt:
		ps.add("salt", "must differ from the current salt, or users would keep their assignment")
	case len(salt) > maxNameLen:
		ps.add("salt", "must be at most %d bytes", maxNameLen)
	}
	if err := ps.err(); err != nil {
		return err
	}
	e.Salt = salt
	e.Restarts++
	e.StartedAt = &now
	return nil
}

// Archive files away a draft or stopped experiment at now. Errors:
// *TransitionError when running (stop it first) or already archived.
func (e *Experiment) Archive(now time.Time) error {
	switch s := e.status(); s {
	case StatusDraft, StatusStopped:
		e.Status = StatusArchived
		e.ArchivedAt = &now
		return nil
	case StatusRunning:
		return &TransitionError{Key: e.Key, From: s, Action: "archive", Hint: "stop it first"}
	default:
		return &TransitionError{Key: e.Key, From: s, Action: "archive"}
	}
}

// Update replaces the editable definition (flag, hypothesis, arms, weights,
// traffic, metrics and analysis) with next's; next's lifecycle fields
// (status, decision, salt, restarts, times) are ignored.
//
// A draft accepts any valid change. A running experiment accepts changes to
// the hypothesis, the metrics, the planning settings (analysis.power and
// analysis.minimumEffect) and an increase of traffic (users already in the
// experiment stay in their arm). Changing the arms, the weights or the other
// analysis settings, or lowering traffic, biases the results: it is refused
// with a *RestartRequiredError unless restart is true, in which case the
// change is applied and the experiment restarts at now with a new salt. The
// flag of a running experiment never changes. A stopped experiment accepts only a
// new hypothesis; an archived one accepts nothing.
//
// Errors: *ValidationError (invalid result, or "key"/"flagKey" changed),
// *RestartRequiredError, *TransitionError. On error e is unchanged.
func (e *Experiment) Update(next Experiment, now time.Time, restart bool) error {
	status := e.status()
	if status == StatusArchived {
		return &TransitionError{Key: e.Key, From: status, Action: "change it"}
	}
	var ps problems
	if next.Key != e.Key {
		ps.add("key", "cannot be changed (was %q)", e.Key)
	}
	old := e.clone()
	old.Defaults()
	c := old.clone()
	c.FlagKey = next.FlagKey
	c.Hypothesis = next.Hypothesis
	c.Control = next.Control
	c.Treatments = slices.Clone(next.Treatments)
	c.Weights = slices.Clone(next.Weights)
	c.Traffic = next.Traffic
	n := next.clone()
	c.Metrics = n.Metrics
	c.Analysis = next.Analysis
	c.Defaults()

	changed := diff(&old, &c)
	switch status {
	case StatusStopped:
		if i := slices.Index(changed, "hypothesis"); i >= 0 {
			changed = slices.Delete(changed, i, i+1)
		}
		if len(changed) > 0 {
			return &TransitionError{Key: e.Key, From: status, Action: "change " + strings.Join(changed, ", "),
				Hint: "only the hypothesis of a stopped experiment can change"}
		}
	case StatusRunning:
		if slices.Contains(changed, "flagKey") {
			ps.add("flagKey", "cannot change while the experiment runs; stop it and create a new experiment")
		}
		var biased []string
		for _, f := range changed {
			switch f {
			case "control", "treatments", "weights", "analysis":
				biased = append(biased, f)
			case "traffic":
				if c.trafficBP() < old.trafficBP() {
					biased = append(biased, "traffic (lowering it)")
				}
			}
		}
		if len(biased) > 0 && !restart && len(ps) == 0 {
			return &RestartRequiredError{Key: e.Key, Fields: biased}
		}
	}
	if err := ps.err(); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if status == StatusRunning && restart {
		if err := c.restart(now, ""); err != nil {
			return err
		}
	}
	*e = c
	return nil
}

// diff names the definition fields that differ between a and b (both with defaults filled).
func diff(a, b *Experiment) []string {
	var out []string
	if a.FlagKey != b.FlagKey {
		out = append(out, "flagKey")
	}
	if a.Hypothesis != b.Hypothesis {
		out = append(out, "hypothesis")
	}
	if a.Control != b.Control {
		out = append(out, "control")
	}
	if !slices.Equal(a.Treatments, b.Treatments) {
		out = append(out, "treatments")
	}
	if wa, wb := a.SplitWeights(), b.SplitWeights(); len(wa) == len(wb) && !slices.Equal(wa, wb) { // else treatments changed
		out = append(out, "weights")
	}
	if a.trafficBP() != b.trafficBP() {
		out = append(out, "traffic")
	}
	if !reflect.DeepEqual(a.Metrics, b.Metrics) {
		out = append(out, "metrics")
	}
	pa, pb := a.Analysis, b.Analysis
	if pa.Power != pb.Power || pa.MinimumEffect != pb.MinimumEffect {
		out = append(out, "planning")
	}
	pa.Power, pa.MinimumEffect, pb.Power, pb.MinimumEffect = 0, 0, 0, 0
	if pa != pb {
		out = append(out, "analysis")
	}
	return out
}
