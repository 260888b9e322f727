package experiments

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/flagpole/flagpole/flags"
)

// Status is where an experiment is in its lifecycle:
// draft → running → stopped → archived (a draft may also be archived).
type Status string

// Lifecycle states.
const (
	StatusDraft    Status = "draft"
	StatusRunning  Status = "running"
	StatusStopped  Status = "stopped"
	StatusArchived Status = "archived"
)

// Outcome is what was decided when an experiment was stopped.
type Outcome string

// Stop outcomes.
const (
	// OutcomeShip serves [StopDecision.Variant] to everyone.
	OutcomeShip Outcome = "ship"
	// OutcomeRollback serves the control to everyone.
	OutcomeRollback Outcome = "rollback"
	// OutcomeNone records that no decision was taken.
	OutcomeNone Outcome = "none"
)

// StopDecision is the decision recorded when an experiment stops.
type StopDecision struct {
	Outcome Outcome `json:"outcome"`
	// Variant is the shipped variant; set only, and required, for OutcomeShip.
	Variant string `json:"variant,omitempty"`
	// Note is free text explaining the decision.
	Note string `json:"note,omitempty"`
}

// Mode is the statistical framework used to judge an experiment.
type Mode string

// Analysis modes.
const (
	// ModeSequential (the default) uses anytime-valid confidence sequences, so
	// results may be looked at as often as wanted without inflating false positives.
	ModeSequential Mode = "sequential"
	// ModeFixed is the classical fixed-horizon Welch t-test: valid only when
	// the result is read once, at a sample size fixed in advance.
	ModeFixed Mode = "fixed"
	// ModeBayesian puts a normal prior on the relative lift and reports the
	// chance to win and a credible interval.
	ModeBayesian Mode = "bayesian"
)

// Correction is the multiple-testing correction applied across goal metrics × treatments.
type Correction string

// Multiple-testing corrections.
const (
	// CorrectionHolm controls the family-wise error rate (Holm–Bonferroni); the default.
	CorrectionHolm Correction = "holm"
	// CorrectionBH controls the false discovery rate (Benjamini–Hochberg).
	CorrectionBH Correction = "benjamini-hochberg"
	// CorrectionNone applies no correction.
	CorrectionNone Correction = "none"
)

// Analysis holds how an experiment is judged. Zero fields take the defaults
// documented on each field (see [Experiment.Defaults]).
type Analysis struct {
	// Mode defaults to ModeSequential.
	Mode Mode `json:"mode,omitempty"`
	// Alpha is the significance level, in (0, 0.5]; default 0.05.
	Alpha float64 `json:"alpha,omitempty"`
	// Power is the target power for the minimum detectable effect and the
	// remaining-time estimate, in (0, 1); default 0.8.
	Power float64 `json:"power,omitempty"`
	// Correction across goal metrics × treatments; default CorrectionHolm.
	Correction Correction `json:"correction,omitempty"`
	// MinimumEffect is the smallest relative lift worth detecting (0.05 = 5%);
	// default 0.05. It drives the power warning and the remaining-time estimate.
	MinimumEffect float64 `json:"minimumEffect,omitempty"`
	// TuningUsers (sequential mode) is the number of users in a comparison
	// (both arms together) at which the confidence sequence is tightest;
	// default 10,000. Set it near the expected final sample size.
	TuningUsers int64 `json:"tuningUsers,omitempty"`
	// PriorMean and PriorStdDev (Bayesian mode) describe the normal prior on
	// the relative lift; defaults 0 and 0.3. A very large PriorStdDev
	// approximates a flat prior.
	PriorMean   float64 `json:"priorMean,omitempty"`
	PriorStdDev float64 `json:"priorStdDev,omitempty"`
}

// Analysis defaults.
const (
	DefaultAlpha         = 0.05
	DefaultPower         = 0.8
	DefaultMinimumEffect = 0.05
	DefaultTuningUsers   = 10000
	DefaultPriorStdDev   = 0.3
)

// Experiment is an A/B test on the variants of one flag.
//
// The arms are the control variant followed by the treatment variants; Weights
// (in the same order) split the users in the experiment between them.
// Traffic is the percentage of all users who enter the experiment; the others
// are served the control and are not counted. Status, Decision, Salt, Restarts
// and the timestamps are managed by the lifecycle methods ([Experiment.Start],
// [Experiment.Stop], [Experiment.Restart], [Experiment.Archive], [Experiment.Update]).
type Experiment struct {
	Key        string   `json:"key"`
	FlagKey    string   `json:"flagKey"`
	Hypothesis string   `json:"hypothesis,omitempty"`
	Control    string   `json:"control"`
	Treatments []string `json:"treatments"`
	// Weights are positive integers, control first; empty means an equal split.
	Weights []int `json:"weights,omitempty"`
	// Traffic is the percentage of users in the experiment, in (0, 100] with at
	// most two decimals; 0 means 100.
	Traffic  float64  `json:"traffic,omitempty"`
	Metrics  []Metric `json:"metrics"`
	Analysis Analysis `json:"analysis"`

	Status   Status        `json:"status"`
	Decision *StopDecision `json:"decision,omitempty"`
	// Salt seeds assignment; it defaults to the key and changes on every restart,
	// so two experiments (or two runs of one) never assign users alike.
	Salt     string `json:"salt"`
	Restarts int    `json:"restarts,omitempty"`

	StartedAt  *time.Time `json:"startedAt,omitempty"`
	StoppedAt  *time.Time `json:"stoppedAt,omitempty"`
	ArchivedAt *time.Time `json:"archivedAt,omitempty"`
}

// Limits on an experiment's size.
const (
	MaxArms       = 10
	MaxMetrics    = 50
	MaxWeight     = 1_000_000
	maxKeyLen     = 128
	maxNameLen    = 256
	maxTextLen    = 10_000
	trafficScale  = 10_000 // traffic is applied in basis points
	fullTrafficBP = trafficScale
)

// Problem is one thing wrong with an experiment: Path is the dotted JSON path
// of the field (such as "metrics[1].event") and Message says what is wrong.
type Problem struct {
	Path    string `json:"field"`
	Message string `json:"problem"`
}

// String renders the problem as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError lists every problem found in an experiment at once.
type ValidationError struct {
	Problems []Problem
}

// Error lists every problem, separated by semicolons.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid experiment"
	}
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid experiment: " + strings.Join(parts, "; ")
}

// problems collects validation problems.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// Arms returns the variants of the experiment, control first.
func (e *Experiment) Arms() []string {
	arms := make([]string, 0, 1+len(e.Treatments))
	arms = append(arms, e.Control)
	return append(arms, e.Treatments...)
}

// SplitWeights returns the effective integer weights, control first: Weights,
// or 1 for every arm when Weights is empty.
func (e *Experiment) SplitWeights() []int {
	if len(e.Weights) > 0 {
		return slices.Clone(e.Weights)
	}
	w := make([]int, 1+len(e.Treatments))
	for i := range w {
		w[i] = 1
	}
	return w
}

// trafficBP is the traffic in basis points (0 means 100%).
func (e *Experiment) trafficBP() int {
	if e.Traffic == 0 {
		return fullTrafficBP
	}
	return int(math.Round(e.Traffic * 100))
}

// Defaults fills the zero fields that have defaults: Traffic (100), Salt (the
// key), Status (draft) and every [Analysis] default. It never fails.
func (e *Experiment) Defaults() {
	if e.Traffic == 0 {
		e.Traffic = 100
	}
	if e.Salt == "" {
		e.Salt = e.Key
	}
	if e.Status == "" {
		e.Status = StatusDraft
	}
	for i := range e.Metrics {
		if e.Metrics[i].Direction == "" {
			e.Metrics[i].Direction = HigherIsBetter
		}
	}
	e.Analysis.Defaults()
}

// Defaults fills the zero fields of a with their documented defaults.
func (a *Analysis) Defaults() {
	if a.Mode == "" {
		a.Mode = ModeSequential
	}
	if a.Alpha == 0 {
		a.Alpha = DefaultAlpha
	}
	if a.Power == 0 {
		a.Power = DefaultPower
	}
	if a.Correction == "" {
		a.Correction = CorrectionHolm
	}
	if a.MinimumEffect == 0 {
		a.MinimumEffect = DefaultMinimumEffect
	}
	if a.TuningUsers == 0 {
		a.TuningUsers = DefaultTuningUsers
	}
	if a.PriorStdDev == 0 {
		a.PriorStdDev = DefaultPriorStdDev
	}
}

// Validate checks the whole experiment and returns a *ValidationError listing
// every problem with its field path, or nil. Zero fields that have defaults
// are accepted (Validate does not modify e).
func (e *Experiment) Validate() error {
	var ps problems
	checkKey(&ps, "key", e.Key)
	checkName(&ps, "flagKey", e.FlagKey)
	if len(e.Hypothesis) > maxTextLen {
		ps.add("hypothesis", "must be at most %d bytes", maxTextLen)
	}

	// Arms.
	checkName(&ps, "control", e.Control)
	seen := map[string]string{}
	if e.Control != "" {
		seen[e.Control] = "control"
	}
	switch {
	case len(e.Treatments) == 0:
		ps.add("treatments", "at least one treatment variant is required")
	case 1+len(e.Treatments) > MaxArms:
		ps.add("treatments", "at most %d treatments", MaxArms-1)
	}
	for i, t := range e.Treatments {
		path := fmt.Sprintf("treatments[%d]", i)
		checkName(&ps, path, t)
		if t == "" {
			continue
		}
		if prev, dup := seen[t]; dup {
			ps.add(path, "variant %q is already used by %s", t, prev)
			continue
		}
		seen[t] = path
	}

	// Split.
	if len(e.Weights) > 0 {
		if len(e.Weights) != 1+len(e.Treatments) {
			ps.add("weights", "has %d entries; want %d (control first, then each treatment)", len(e.Weights), 1+len(e.Treatments))
		}
		for i, w := range e.Weights {
			if w < 1 || w > MaxWeight {
				ps.add(fmt.Sprintf("weights[%d]", i), "must be an integer from 1 to %d", MaxWeight)
			}
		}
	}
	if t := e.Traffic; t != 0 {
		switch {
		case math.IsNaN(t) || t < 0.01 || t > 100:
			ps.add("traffic", "must be a percentage from 0.01 to 100")
		case math.Abs(t*100-math.Round(t*100)) > 1e-6:
			ps.add("traffic", "at most two decimals (it is applied in steps of 0.01%%)")
		}
	}

	// Metrics.
	switch {
	case len(e.Metrics) == 0:
		ps.add("metrics", "at least one metric is required")
	case len(e.Metrics) > MaxMetrics:
		ps.add("metrics", "at most %d metrics", MaxMetrics)
	}
	goals := 0
	keys := map[string]int{}
	for i := range e.Metrics {
		m := &e.Metrics[i]
		path := fmt.Sprintf("metrics[%d]", i)
		m.validate(&ps, path)
		if m.Role == RoleGoal {
			goals++
		}
		if m.Key != "" {
			if j, dup := keys[m.Key]; dup {
				ps.add(path+".key", "duplicates metrics[%d].key %q", j, m.Key)
			} else {
				keys[m.Key] = i
			}
		}
	}
	if len(e.Metrics) > 0 && goals == 0 {
		ps.add("metrics", "at least one metric must have the role %q", RoleGoal)
	}

	e.Analysis.validate(&ps)

	// Lifecycle fields.
	switch e.Status {
	case "", StatusDraft, StatusRunning:
		if e.Decision != nil {
			ps.add("decision", "only a stopped or archived experiment has a decision")
		}
	case StatusStopped, StatusArchived:
		if e.Decision != nil {
			e.Decision.validate(&ps, "decision", e)
		}
	default:
		ps.add("status", "unknown status %q; want draft, running, stopped or archived", e.Status)
	}
	if len(e.Salt) > maxNameLen {
		ps.add("salt", "must be at most %d bytes", maxNameLen)
	}
	if e.Restarts < 0 {
		ps.add("restarts", "must not be negative")
	}
	return ps.err()
}

func (a *Analysis) validate(ps *problems) {
	switch a.Mode {
	case "", ModeSequential, ModeFixed, ModeBayesian:
	default:
		ps.add("analysis.mode", "unknown mode %q; want sequential, fixed or bayesian", a.Mode)
	}
	if a.Alpha != 0 && !(a.Alpha > 0 && a.Alpha <= 0.5) {
		ps.add("analysis.alpha", "must be in (0, 0.5]")
	}
	if a.Power != 0 && !(a.Power > 0 && a.Power < 1) {
		ps.add("analysis.power", "must be in (0, 1)")
	}
	switch a.Correction {
	case "", CorrectionHolm, CorrectionBH, CorrectionNone:
	default:
		ps.add("analysis.correction", "unknown correction %q; want holm, benjamini-hochberg or none", a.Correction)
	}
	if a.MinimumEffect != 0 && !(a.MinimumEffect > 0 && a.MinimumEffect <= 10) {
		ps.add("analysis.minimumEffect", "must be a relative effect in (0, 10] (0.05 = 5%%)")
	}
	if a.TuningUsers < 0 {
		ps.add("analysis.tuningUsers", "must not be negative")
	}
	if math.IsNaN(a.PriorMean) || math.IsInf(a.PriorMean, 0) {
		ps.add("analysis.priorMean", "must be a finite number")
	}
	if !(a.PriorStdDev >= 0) || math.IsInf(a.PriorStdDev, 0) {
		ps.add("analysis.priorStdDev", "must be a finite number ≥ 0")
	}
}

func (d *StopDecision) validate(ps *problems, path string, e *Experiment) {
	switch d.Outcome {
	case OutcomeShip:
		if d.Variant == "" {
			ps.add(path+".variant", "is required to ship")
		} else if !slices.Contains(e.Arms(), d.Variant) {
			ps.add(path+".variant", "%q is not an arm of the experiment", d.Variant)
		}
	case OutcomeRollback, OutcomeNone:
		if d.Variant != "" {
			ps.add(path+".variant", "only a ship decision names a variant")
		}
	default:
		ps.add(path+".outcome", "unknown outcome %q; want ship, rollback or none", d.Outcome)
	}
	if len(d.Note) > maxTextLen {
		ps.add(path+".note", "must be at most %d bytes", maxTextLen)
	}
}

// checkKey accepts 1–128 characters of letters, digits, '-', '_' and '.',
// starting with a letter or digit.
func checkKey(ps *problems, path, key string) {
	if key == "" {
		ps.add(path, "is required")
		return
	}
	if len(key) > maxKeyLen {
		ps.add(path, "must be at most %d characters", maxKeyLen)
		return
	}
	for i, r := range key {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			(i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			ps.add(path, "%q: use letters, digits, '-', '_' and '.', starting with a letter or digit", key)
			return
		}
	}
}

// checkName accepts any non-empty printable string of at most 256 bytes.
func checkName(ps *problems, path, name string) {
	if name == "" {
		ps.add(path, "is required")
		return
	}
	if len(name) > maxNameLen {
		ps.add(path, "must be at most %d bytes", maxNameLen)
		return
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			ps.add(path, "%q contains a control character or invalid UTF-8", name)
			return
		}
	}
}

// CheckFlag reports whether the experiment can run on flag f: f must be
// enabled and define every arm as a variant. The error is a *ValidationError
// naming "flagKey", "control" or "treatments[i]".
func (e *Experiment) CheckFlag(f *flags.Flag) error {
	var ps problems
	if f == nil {
		ps.add("flagKey", "flag %q does not exist", e.FlagKey)
		return ps.err()
	}
	if f.State != flags.Enabled {
		ps.add("flagKey", "flag %q is %s; enable it before experimenting on it", e.FlagKey, f.State)
	}
	if _, ok := f.Variants[e.Control]; !ok && e.Control != "" {
		ps.add("control", "%q is not a variant of flag %q", e.Control, e.FlagKey)
	}
	for i, t := range e.Treatments {
		if _, ok := f.Variants[t]; !ok && t != "" {
			ps.add(fmt.Sprintf("treatments[%d]", i), "%q is not a variant of flag %q", t, e.FlagKey)
		}
	}
	return ps.err()
}
