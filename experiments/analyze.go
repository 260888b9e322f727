package experiments

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/flagpole/flagpole/internal/stat"
)

// Observations are an experiment's folded data: everything [Analyze] needs,
// none of it raw events.
type Observations struct {
	// Users is the number of users exposed to each variant, deduplicated and
	// without crossovers.
	Users map[string]int64 `json:"users"`
	// Crossovers is the number of users exposed to more than one arm; they
	// are excluded from Users and from every metric.
	Crossovers int64 `json:"crossovers"`
	// Metrics holds each metric's statistics by metric key, then by variant.
	// A metric's Stats.Users below the arm's Users is padded with zeros.
	Metrics map[string]map[string]Stats `json:"metrics"`
}

// HealthStatus summarises whether an experiment's data can be trusted.
type HealthStatus string

// Health statuses.
const (
	HealthOK        HealthStatus = "healthy"
	HealthUnhealthy HealthStatus = "unhealthy"
	HealthNoData    HealthStatus = "no_data"
)

// MaxCrossoverRate is the share of exposed users seen in more than one arm
// above which an experiment is unhealthy.
const MaxCrossoverRate = 0.05

// Health reports the checks that decide whether results can be trusted.
type Health struct {
	Status HealthStatus `json:"status"`
	SRM    SRM          `json:"srm"`
	// CrossoverRate is Crossovers / (Users + Crossovers).
	CrossoverRate float64 `json:"crossoverRate"`
	// Underpowered is true while the primary goal metric cannot yet detect
	// the analysis's minimum effect.
	Underpowered bool `json:"underpowered"`
	// Problems has one sentence per failed or warning check.
	Problems []string `json:"problems,omitempty"`
}

// ArmTraffic is how many users an arm got against its configured share.
type ArmTraffic struct {
	Variant       string  `json:"variant"`
	Users         int64   `json:"users"`
	Share         float64 `json:"share"`
	ExpectedShare float64 `json:"expectedShare"`
}

// ArmSummary is one metric in one arm.
type ArmSummary struct {
	Variant     string `json:"variant"`
	Conversions int64  `json:"conversions"`
	Summary
	// Estimable is false with fewer than two users (or a zero ratio denominator).
	Estimable bool `json:"estimable"`
}

// Verdict is the judgement of one treatment on one metric.
type Verdict string

// Verdicts, from the point of view of the metric's direction.
const (
	VerdictBetter       Verdict = "better"
	VerdictWorse        Verdict = "worse"
	VerdictInconclusive Verdict = "inconclusive"
	VerdictNoData       Verdict = "insufficient_data"
)

// Comparison is one treatment against the control on one metric. Optional
// numbers are nil where they do not apply.
type Comparison struct {
	Treatment string `json:"treatment"`
	// Absolute is treatment − control with its interval.
	Absolute *Estimate `json:"absolute,omitempty"`
	// Relative is the lift treatment/control − 1 (delta method) with its
	// interval; in Bayesian mode, the posterior mean and credible interval.
	Relative *Estimate `json:"relative,omitempty"`
	// PValue is two-sided (anytime-valid in sequential mode); not in Bayesian mode.
	PValue *float64 `json:"pValue,omitempty"`
	// AdjustedPValue is PValue after the multiple-testing correction (goal metrics).
	AdjustedPValue *float64 `json:"adjustedPValue,omitempty"`
	// HarmPValue is the one-sided, uncorrected p-value of harm (guardrails).
	HarmPValue *float64 `json:"harmPValue,omitempty"`
	// ChanceToWin is the posterior probability of improvement (Bayesian mode).
	ChanceToWin *float64 `json:"chanceToWin,omitempty"`
	// MDE is the minimum detectable absolute effect at the current sample
	// size and RelativeMDE the same relative to the control.
	MDE         *float64 `json:"mde,omitempty"`
	RelativeMDE *float64 `json:"relativeMde,omitempty"`
	Verdict     Verdict  `json:"verdict"`

	users    float64 // users in the comparison (both arms)
	variance float64 // variance of the absolute effect
	control  float64 // control value
}

// MetricResult is one metric's results.
type MetricResult struct {
	Key         string       `json:"key"`
	Kind        MetricKind   `json:"kind"`
	Role        Role         `json:"role"`
	Direction   Direction    `json:"direction"`
	Arms        []ArmSummary `json:"arms"`
	Comparisons []Comparison `json:"comparisons"`
}

// Action is what the analysis recommends.
type Action string

// Actions.
const (
	ActionShip        Action = "ship"
	ActionRollback    Action = "rollback"
	ActionKeepRunning Action = "keep_running"
	ActionUnhealthy   Action = "unhealthy"
)

// Recommendation is the decision summary: an action and one sentence why.
type Recommendation struct {
	Action Action `json:"action"`
	// Variant is the treatment to ship (ActionShip only).
	Variant string `json:"variant,omitempty"`
	Reason  string `json:"reason"`
	// RemainingUsers and RemainingSeconds estimate how much longer to run
	// (ActionKeepRunning, when an estimate exists).
	RemainingUsers   int64   `json:"remainingUsers,omitempty"`
	RemainingSeconds float64 `json:"remainingSeconds,omitempty"`
}

// Results is everything [Analyze] computes about an experiment.
type Results struct {
	Experiment     string         `json:"experiment"`
	Mode           Mode           `json:"mode"`
	Alpha          float64        `json:"alpha"`
	Correction     Correction     `json:"correction"`
	Users          int64          `json:"users"`
	Crossovers     int64          `json:"crossovers"`
	Arms           []ArmTraffic   `json:"arms"`
	Health         Health         `json:"health"`
	Metrics        []MetricResult `json:"metrics"`
	Recommendation Recommendation `json:"recommendation"`
}

// analyzer carries the settings of one Analyze call.
type analyzer struct {
	a       Analysis
	arms    []string
	weights []int
}

// Analyze computes an experiment's results from its observations at time
// now (used with StartedAt to estimate the remaining time). It is a pure
// function, never fails and never returns a NaN or infinite number: missing
// data shows as HealthNoData or VerdictNoData. Zero analysis settings take
// their defaults.
//
// Decision rules, in order: no users → keep running; a sample ratio
// mismatch (p < 0.001) or more than 5% crossover users → unhealthy; a
// treatment that improves at least one goal metric (after the
// multiple-testing correction) while no goal metric is worse and no
// guardrail is harmed (one-sided, uncorrected) → ship the one with the
// largest lift on the first goal it improves; every treatment worse on a
// goal or harming a guardrail → roll back; otherwise keep running, with the
// users and time needed for the primary (first) goal metric to detect the
// minimum effect.
func Analyze(e *Experiment, obs Observations, now time.Time) Results {
	an := analyzer{a: e.Analysis, arms: e.Arms(), weights: e.SplitWeights()}
	an.a.Defaults()
	if len(an.weights) != len(an.arms) { // invalid experiment: analyse an equal split
		an.weights = make([]int, len(an.arms))
		for i := range an.weights {
			an.weights[i] = 1
		}
	}
	res := Results{
		Experiment: e.Key,
		Mode:       an.a.Mode,
		Alpha:      an.a.Alpha,
		Correction: an.a.Correction,
		Crossovers: max(obs.Crossovers, 0),
	}

	users := make([]int64, len(an.arms))
	wsum := 0
	for i, arm := range an.arms {
		users[i] = max(obs.Users[arm], 0)
		res.Users += users[i]
		wsum += an.weights[i]
	}
	for i, arm := range an.arms {
		at := ArmTraffic{Variant: arm, Users: users[i], ExpectedShare: float64(an.weights[i]) / float64(max(wsum, 1))}
		if res.Users > 0 {
			at.Share = float64(users[i]) / float64(res.Users)
		}
		res.Arms = append(res.Arms, at)
	}

	// Metrics and comparisons.
	var goals []*Comparison
	for i := range e.Metrics {
		m := &e.Metrics[i]
		mr := MetricResult{Key: m.Key, Kind: m.Kind, Role: m.Role, Direction: direction(m)}
		byArm := obs.Metrics[m.Key]
		sums := make([]Summary, len(an.arms))
		oks := make([]bool, len(an.arms))
		for j, arm := range an.arms {
			s := byArm[arm]
			s.Users = max(s.Users, users[j])
			sums[j], oks[j] = s.Summarize(m.IsRatio())
			mr.Arms = append(mr.Arms, ArmSummary{Variant: arm, Conversions: s.Conversions, Summary: sums[j], Estimable: oks[j]})
		}
		for j := 1; j < len(an.arms); j++ {
			mr.Comparisons = append(mr.Comparisons, an.compare(m, an.arms[j], sums[0], sums[j], oks[0] && oks[j]))
		}
		res.Metrics = append(res.Metrics, mr)
	}
	// Collect goal comparisons only once the slices stop growing.
	for i := range res.Metrics {
		if res.Metrics[i].Role != RoleGoal {
			continue
		}
		for j := range res.Metrics[i].Comparisons {
			if c := &res.Metrics[i].Comparisons[j]; c.PValue != nil {
				goals = append(goals, c)
			}
		}
	}
	an.correct(goals)
	for i := range res.Metrics {
		m := &e.Metrics[i]
		for j := range res.Metrics[i].Comparisons {
			an.judge(m, &res.Metrics[i].Comparisons[j])
		}
	}

	res.Health = an.health(&res, users)
	res.Recommendation = an.recommend(e, &res, now)
	return res
}

func direction(m *Metric) Direction {
	if m.Direction == LowerIsBetter {
		return LowerIsBetter
	}
	return HigherIsBetter
}

func sign(m *Metric) float64 {
	if direction(m) == LowerIsBetter {
		return -1
	}
	return 1
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// planningAlpha is the per-comparison level used for the MDE and the
// remaining-time estimate: Holm's worst case alpha/m across goal comparisons.
func (an *analyzer) planningAlpha() float64 {
	if an.a.Correction == CorrectionHolm && an.a.Mode != ModeBayesian {
		return an.a.Alpha / float64(max(1, len(an.arms)-1))
	}
	return an.a.Alpha
}

func (an *analyzer) compare(m *Metric, treatment string, c, t Summary, ok bool) Comparison {
	cmp := Comparison{Treatment: treatment, Verdict: VerdictNoData}
	if !ok {
		return cmp
	}
	a := an.a
	d, v := AbsoluteEffect(c, t)
	lift, vl, okLift := RelativeEffect(c, t)
	if !isFinite(d) || !isFinite(v) {
		return cmp
	}
	okLift = okLift && isFinite(lift) && isFinite(vl)
	n := float64(c.Users + t.Users)
	cmp.users, cmp.variance, cmp.control = n, v, c.Value
	se := sqrtPos(v)
	s := sign(m)
	tuning := float64(a.TuningUsers)

	var q float64 // critical multiplier of the interval
	switch a.Mode {
	case ModeFixed:
		df := WelchDF(c, t)
		if m.IsRatio() {
			df = math.Max(1, n-2)
		}
		q = stat.StudentTQuantile(1-a.Alpha/2, df)
		cmp.PValue = ptr(welchP(d, v, df))
		if m.Role == RoleGuardrail {
			cmp.HarmPValue = ptr(welchHarmP(d, v, df, s))
		}
	case ModeBayesian:
		q = stat.NormalQuantile(1 - a.Alpha/2)
	default:
		q = SequentialMultiplier(n, tuning, a.Alpha)
		cmp.PValue = ptr(sequentialP(d, v, n, tuning, a.Alpha))
		if m.Role == RoleGuardrail {
			hp := 0.0
			switch {
			case se > 0:
				hp = SequentialOneSidedPValue(-s*d/se, n, tuning, a.Alpha)
			case s*d >= 0:
				hp = 1
			}
			cmp.HarmPValue = ptr(hp)
		}
	}
	abs := interval(d, v, q)
	cmp.Absolute = &abs
	if a.Mode == ModeBayesian {
		var post Posterior
		if okLift {
			post = BayesianLift(lift, vl, a.PriorMean, a.PriorStdDev, a.Alpha, direction(m))
			cmp.Relative = &Estimate{Value: post.Mean, StdErr: post.StdDev, Lower: post.Lower, Upper: post.Upper}
		} else { // no lift without a control value: flat prior on the absolute effect
			post = BayesianLift(d, v, 0, 0, a.Alpha, direction(m))
		}
		cmp.ChanceToWin = ptr(post.ChanceToWin)
	} else if okLift {
		rel := interval(lift, vl, q)
		cmp.Relative = &rel
	}

	// Minimum detectable effect at the current size.
	pa := an.planningAlpha()
	qp := stat.NormalQuantile(1 - pa/2)
	if a.Mode == ModeSequential {
		qp = SequentialMultiplier(n, tuning, pa)
	}
	// Without variation (no conversions yet, every value equal) there is
	// no standard error to plan with: the MDE is unknown, not zero.
	if se > 0 && isFinite(se) {
		mde := MinimumDetectableEffect(se, qp, a.Power)
		cmp.MDE = ptr(mde)
		if c.Value != 0 {
			cmp.RelativeMDE = ptr(mde / math.Abs(c.Value))
		}
	}
	cmp.Verdict = VerdictInconclusive
	return cmp
}

// correct fills AdjustedPValue on the goal comparisons.
func (an *analyzer) correct(goals []*Comparison) {
	p := make([]float64, len(goals))
	for i, c := range goals {
		p[i] = *c.PValue
	}
	var adj []float64
	switch an.a.Correction {
	case CorrectionBH:
		adj = stat.BenjaminiHochberg(p)
	case CorrectionNone:
		adj = p
	default:
		adj = stat.Holm(p)
	}
	for i, c := range goals {
		c.AdjustedPValue = ptr(adj[i])
	}
}

// judge sets the verdict of one comparison.
func (an *analyzer) judge(m *Metric, c *Comparison) {
	if c.Verdict == VerdictNoData {
		return
	}
	alpha := an.a.Alpha
	good := sign(m)*c.Absolute.Value > 0
	significant := false
	switch {
	case c.ChanceToWin != nil:
		significant = *c.ChanceToWin >= 1-alpha || *c.ChanceToWin <= alpha
		good = *c.ChanceToWin >= 1-alpha
	case c.AdjustedPValue != nil:
		significant = *c.AdjustedPValue < alpha
	case c.PValue != nil:
		significant = *c.PValue < alpha
	}
	if m.Role == RoleGuardrail {
		harm := false
		if c.HarmPValue != nil {
			harm = *c.HarmPValue < alpha
		} else if c.ChanceToWin != nil {
			harm = *c.ChanceToWin <= alpha
		}
		switch {
		case harm:
			c.Verdict = VerdictWorse
		case significant && good:
			c.Verdict = VerdictBetter
		}
		return
	}
	if significant {
		if good {
			c.Verdict = VerdictBetter
		} else {
			c.Verdict = VerdictWorse
		}
	}
}

func (an *analyzer) health(res *Results, users []int64) Health {
	h := Health{Status: HealthOK}
	h.SRM = SampleRatioMismatch(users, an.weights)
	if res.Users+res.Crossovers > 0 {
		h.CrossoverRate = float64(res.Crossovers) / float64(res.Users+res.Crossovers)
	}
	if res.Users == 0 {
		h.Status = HealthNoData
		h.Problems = append(h.Problems, "No users have been exposed to the experiment yet.")
		return h
	}
	if h.SRM.Mismatch {
		h.Status = HealthUnhealthy
		h.Problems = append(h.Problems, fmt.Sprintf(
			"Sample ratio mismatch: the arms got %s of users against a configured %s (chi-square p = %.2g), so assignment or exposure logging is broken.",
			shares(res.Arms, false), shares(res.Arms, true), h.SRM.PValue))
	}
	if h.CrossoverRate > MaxCrossoverRate {
		h.Status = HealthUnhealthy
		h.Problems = append(h.Problems, fmt.Sprintf(
			"%.1f%% of exposed users saw more than one arm (at most %.0f%% is tolerated), so assignment is not sticky.",
			100*h.CrossoverRate, 100*MaxCrossoverRate))
	} else if res.Crossovers > 0 {
		h.Problems = append(h.Problems, fmt.Sprintf(
			"%d users (%.2f%%) saw more than one arm and were excluded.", res.Crossovers, 100*h.CrossoverRate))
	}
	if pm := primaryGoal(res); pm != nil {
		for _, c := range pm.Comparisons {
			if c.Verdict == VerdictInconclusive && (c.RelativeMDE == nil || *c.RelativeMDE > an.a.MinimumEffect) {
				h.Underpowered = true
			}
		}
		if h.Underpowered {
			h.Problems = append(h.Problems, fmt.Sprintf(
				"Too little power: %s cannot yet detect a %s change at the current sample size.", pm.Key, pct(an.a.MinimumEffect)))
		}
	}
	return h
}

func primaryGoal(res *Results) *MetricResult {
	for i := range res.Metrics {
		if res.Metrics[i].Role == RoleGoal {
			return &res.Metrics[i]
		}
	}
	return nil
}

func shares(arms []ArmTraffic, expected bool) string {
	parts := make([]string, len(arms))
	for i, a := range arms {
		v := a.Share
		if expected {
			v = a.ExpectedShare
		}
		parts[i] = fmt.Sprintf("%.1f%%", 100*v)
	}
	return strings.Join(parts, " / ")
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

func signedPct(v float64) string { return fmt.Sprintf("%+.1f%%", 100*v) }

// treatmentCall is what the metrics say about one treatment.
type treatmentCall struct {
	better, worse, harmed []string // metric keys
	firstWin              *Comparison
	firstWinMetric        string
	firstLoss             *Comparison
	firstLossMetric       string
	firstLossGuardrail    bool
}

func (an *analyzer) recommend(e *Experiment, res *Results, now time.Time) Recommendation {
	if res.Health.Status == HealthNoData {
		return Recommendation{Action: ActionKeepRunning, Reason: "Keep running: no users have been exposed yet."}
	}
	if res.Health.Status == HealthUnhealthy {
		return Recommendation{Action: ActionUnhealthy, Reason: "Unhealthy: " + res.Health.Problems[0]}
	}

	if len(an.arms) < 2 {
		return Recommendation{Action: ActionKeepRunning, Reason: "Keep running: the experiment has no treatment to compare."}
	}
	calls := make([]treatmentCall, len(an.arms)-1)
	for _, mr := range res.Metrics {
		for j := range mr.Comparisons {
			c := &mr.Comparisons[j]
			tc := &calls[j]
			switch {
			case mr.Role == RoleGuardrail && c.Verdict == VerdictWorse:
				tc.harmed = append(tc.harmed, mr.Key)
				if tc.firstLoss == nil || !tc.firstLossGuardrail {
					tc.firstLoss, tc.firstLossMetric, tc.firstLossGuardrail = c, mr.Key, true
				}
			case mr.Role == RoleGoal && c.Verdict == VerdictWorse:
				tc.worse = append(tc.worse, mr.Key)
				if tc.firstLoss == nil {
					tc.firstLoss, tc.firstLossMetric = c, mr.Key
				}
			case mr.Role == RoleGoal && c.Verdict == VerdictBetter:
				tc.better = append(tc.better, mr.Key)
				if tc.firstWin == nil {
					tc.firstWin, tc.firstWinMetric = c, mr.Key
				}
			}
		}
	}

	best := -1
	allLose := true
	for j, tc := range calls {
		losing := len(tc.harmed) > 0 || len(tc.worse) > 0
		if !losing {
			allLose = false
		}
		if losing || len(tc.better) == 0 {
			continue
		}
		if best < 0 || effectSize(tc.firstWin) > effectSize(calls[best].firstWin) {
			best = j
		}
	}
	if best >= 0 {
		tc := calls[best]
		return Recommendation{
			Action:  ActionShip,
			Variant: an.arms[best+1],
			Reason: fmt.Sprintf("Ship %s: it moved %s the right way by %s (%s to %s) with no goal metric worse and no guardrail harmed.",
				an.arms[best+1], tc.firstWinMetric, describe(tc.firstWin), lowerOf(tc.firstWin), upperOf(tc.firstWin)),
		}
	}
	if allLose {
		tc := calls[0]
		what := "goal metric"
		if tc.firstLossGuardrail {
			what = "guardrail"
		}
		lead := ""
		if len(calls) > 1 {
			lead = "every treatment is worse; "
		}
		return Recommendation{
			Action: ActionRollback,
			Reason: fmt.Sprintf("Roll back: %s%s made %s %s worse (%s, interval %s to %s).",
				lead, an.arms[1], what, tc.firstLossMetric, describe(tc.firstLoss), lowerOf(tc.firstLoss), upperOf(tc.firstLoss)),
		}
	}
	return an.keepRunning(e, res, now)
}

func effectSize(c *Comparison) float64 {
	if c.Relative != nil {
		return math.Abs(c.Relative.Value)
	}
	return math.Abs(c.Absolute.Value)
}

// describe renders an effect as a signed relative change when it exists,
// otherwise as an absolute one.
func describe(c *Comparison) string {
	if c.Relative != nil {
		return signedPct(c.Relative.Value)
	}
	return fmt.Sprintf("%+.4g", c.Absolute.Value)
}

func lowerOf(c *Comparison) string {
	if c.Relative != nil {
		return signedPct(c.Relative.Lower)
	}
	return fmt.Sprintf("%+.4g", c.Absolute.Lower)
}

func upperOf(c *Comparison) string {
	if c.Relative != nil {
		return signedPct(c.Relative.Upper)
	}
	return fmt.Sprintf("%+.4g", c.Absolute.Upper)
}

// keepRunning estimates how many more users the primary goal metric needs
// to detect the minimum effect in every still-inconclusive comparison, and
// how long that takes at the rate observed since the start.
func (an *analyzer) keepRunning(e *Experiment, res *Results, now time.Time) Recommendation {
	rec := Recommendation{Action: ActionKeepRunning}
	pm := primaryGoal(res)
	if pm == nil {
		rec.Reason = "Keep running: the experiment has no goal metric to decide on."
		return rec
	}
	needTotal := 0.0
	estimable := false
	for _, c := range pm.Comparisons {
		if c.Verdict == VerdictNoData {
			rec.Reason = fmt.Sprintf("Keep running: %s has too little data in %s to estimate an effect yet.", pm.Key, c.Treatment)
			return rec
		}
		if c.Verdict != VerdictInconclusive || c.control == 0 {
			continue
		}
		target := an.a.MinimumEffect * math.Abs(c.control)
		need := requiredUsers(c.users, c.variance, target, an.a.Power, an.planningAlpha(), an.a.Mode, float64(an.a.TuningUsers))
		if math.IsInf(need, 1) {
			continue
		}
		estimable = true
		// The comparison's arms get c.users/res.Users of all users.
		needTotal = math.Max(needTotal, need*float64(res.Users)/c.users)
	}
	if !estimable {
		rec.Reason = fmt.Sprintf("Keep running: no goal metric has moved significantly yet, and the time needed to detect a %s change in %s cannot be estimated.",
			pct(an.a.MinimumEffect), pm.Key)
		return rec
	}
	remaining := math.Ceil(needTotal) - float64(res.Users)
	if remaining <= 0 {
		rec.Reason = fmt.Sprintf("Keep running or stop with no decision: %s has not moved by %s or more even though the test can now detect that, so any effect is likely smaller.",
			pm.Key, pct(an.a.MinimumEffect))
		return rec
	}
	rec.RemainingUsers = int64(math.Min(remaining, math.MaxInt64/2))
	when := ""
	if e.StartedAt != nil && now.After(*e.StartedAt) {
		rate := float64(res.Users) / now.Sub(*e.StartedAt).Seconds()
		if secs := remaining / rate; rate > 0 && secs < 100*365*86400 {
			rec.RemainingSeconds = math.Round(secs)
			when = " (about " + humanDuration(secs) + " at the current rate)"
		}
	}
	rec.Reason = fmt.Sprintf("Keep running: no goal metric has moved significantly yet; about %d more users%s are needed to detect a %s change in %s.",
		rec.RemainingUsers, when, pct(an.a.MinimumEffect), pm.Key)
	return rec
}

func humanDuration(secs float64) string {
	switch {
	case secs < 2*3600:
		return fmt.Sprintf("%.0f minutes", math.Max(1, math.Ceil(secs/60)))
	case secs < 48*3600:
		return fmt.Sprintf("%.0f hours", math.Ceil(secs/3600))
	default:
		return fmt.Sprintf("%.0f days", math.Ceil(secs/86400))
	}
}
