package canary

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/flagpole/flagpole/internal/stat"
)

// Verdict is a judgement of one metric or of a whole measurement.
type Verdict string

// The verdicts.
const (
	// VerdictPass: the evidence shows the canary within the harm margin.
	VerdictPass Verdict = "pass"
	// VerdictFail: the evidence shows harm beyond the margin (or a threshold
	// crossed, or no data under a fail policy).
	VerdictFail Verdict = "fail"
	// VerdictInconclusive: not enough evidence either way yet.
	VerdictInconclusive Verdict = "inconclusive"
	// VerdictError: the metric could not be measured. Never a pass.
	VerdictError Verdict = "error"
)

// Window is the time range a measurement covers.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Bucket is one cumulative histogram bucket: Count observations were at most
// UpperBound (+Inf for the last).
type Bucket struct {
	UpperBound float64 `json:"le"`
	Count      float64 `json:"count"`
}

// ArmData is what one arm's queries answered for one metric.
type ArmData struct {
	// Value is a threshold metric's canary value.
	Value float64 `json:"value,omitempty"`
	// Count and Total are a ratio metric's numerator and denominator.
	Count float64 `json:"count,omitempty"`
	Total float64 `json:"total,omitempty"`
	// Buckets are a histogram metric's cumulative buckets.
	Buckets []Bucket `json:"buckets,omitempty"`
	// Points are a series metric's samples.
	Points []Point `json:"points,omitempty"`
	// Empty reports that the query returned no data at all.
	Empty bool `json:"empty,omitempty"`
}

// Measurement is one metric's data for both arms at one look. Err, when set,
// makes the metric's verdict VerdictError whatever the data say.
type Measurement struct {
	Metric   string  `json:"metric"`
	Baseline ArmData `json:"baseline"`
	Canary   ArmData `json:"canary"`
	Err      error   `json:"-"`
}

// Traffic is each arm's request count over the window, for the sample-ratio
// check. Source says where it came from.
type Traffic struct {
	Baseline float64 `json:"baseline"`
	Canary   float64 `json:"canary"`
	Source   string  `json:"source"`
	Err      error   `json:"-"`
}

// Observation is everything measured at one look.
type Observation struct {
	Window       Window        `json:"window"`
	Measurements []Measurement `json:"measurements"`
	// Traffic, when nil, is taken from the first decision ratio metric's
	// denominators.
	Traffic *Traffic `json:"traffic,omitempty"`
	// ExpectedSplit is the canary's expected share of traffic; 0 skips the
	// sample-ratio check.
	ExpectedSplit float64 `json:"expectedSplit,omitempty"`
}

// Report is the judge's answer for one look.
type Report struct {
	Verdict Verdict `json:"verdict"`
	Reason  string  `json:"reason"`
	// Score is the Kayenta-style 0–100 score for humans (null when no metric
	// has data); ScoreClass is "pass", "marginal" or "fail" against the
	// template's thresholds. Neither decides the verdict.
	Score       Float              `json:"score"`
	ScoreClass  string             `json:"scoreClass,omitempty"`
	Groups      []GroupScore       `json:"groups,omitempty"`
	Metrics     []MetricResult     `json:"metrics"`
	SampleRatio *SampleRatioResult `json:"sampleRatio,omitempty"`
	Alpha       Float              `json:"alpha"`
}

// GroupScore is one group's share of passing metric weight, 0–100.
type GroupScore struct {
	Group  string `json:"group"`
	Score  Float  `json:"score"`
	Weight Float  `json:"weight"`
}

// MetricResult is one metric's verdict with its evidence.
type MetricResult struct {
	Metric   string  `json:"metric"`
	Kind     Kind    `json:"kind"`
	Verdict  Verdict `json:"verdict"`
	Critical bool    `json:"critical,omitempty"`
	DryRun   bool    `json:"dryRun,omitempty"`
	Group    string  `json:"group"`
	Weight   Float   `json:"weight"`
	// NoData reports that an arm had no usable data.
	NoData bool `json:"noData,omitempty"`
	// Reason is one line a human understands.
	Reason   string   `json:"reason"`
	Evidence Evidence `json:"evidence"`
}

// EffectUnit names the scale of an effect.
type EffectUnit string

// The effect units.
const (
	// UnitRelative: canary/baseline − 1 (0.1 = 10 % higher).
	UnitRelative EffectUnit = "relative"
	// UnitAbsolute: canary − baseline in the metric's unit.
	UnitAbsolute EffectUnit = "absolute"
	// UnitProbability: the probability that a canary observation exceeds a
	// baseline observation shifted by the margin (ties count half); harm
	// starts above 0.5 (below, when a decrease is harmful).
	UnitProbability EffectUnit = "probability"
	// UnitValue: the canary's own value (threshold metrics).
	UnitValue EffectUnit = "value"
)

// ArmEstimate is one arm's estimate: the rate, mean or median, and the sample
// size it rests on (requests, observations or aligned points).
type ArmEstimate struct {
	Value Float `json:"value"`
	N     Float `json:"n"`
}

// QuantileShift compares one quantile of two histograms.
type QuantileShift struct {
	Quantile Float `json:"quantile"`
	Baseline Float `json:"baseline"`
	Canary   Float `json:"canary"`
	Relative Float `json:"relative"`
}

// Evidence is what a metric's verdict rests on. Statistics that do not apply
// are NaN (null in JSON).
type Evidence struct {
	Baseline *ArmEstimate `json:"baseline,omitempty"`
	Canary   *ArmEstimate `json:"canary,omitempty"`
	// Effect with its confidence-sequence interval [Lower, Upper] at level
	// 1−alpha, valid across all looks.
	Effect Float      `json:"effect"`
	Lower  Float      `json:"lower"`
	Upper  Float      `json:"upper"`
	Unit   EffectUnit `json:"unit"`
	// Margin is the configured harm margin; Boundary is where harm starts on
	// the effect's scale (for threshold metrics, the crossed or nearest bound).
	Margin   Margin `json:"margin,omitzero"`
	Boundary Float  `json:"boundary"`
	// EValue and PValue (= min(1, 1/EValue)) are the anytime-valid evidence of
	// harm beyond the margin; PAdjusted is PValue after Holm's correction
	// across the decision metrics. PassPValue is the anytime-valid p-value
	// of the non-inferiority test (harm at least the margin).
	EValue     Float `json:"evalue"`
	PValue     Float `json:"pvalue"`
	PAdjusted  Float `json:"padjusted"`
	PassPValue Float `json:"passPvalue"`
	// MDE is the current minimum detectable effect on the margin's scale
	// (relative or absolute; probability for histograms) at the template's
	// power, and Needed the sample per arm (canary side) at which it would
	// reach the margin.
	MDE    Float `json:"mde"`
	Needed Float `json:"needed"`
	// Quantiles compare histogram quantiles.
	Quantiles []QuantileShift `json:"quantiles,omitempty"`
	// Dropped counts non-finite or unaligned samples left out.
	Dropped int `json:"dropped,omitempty"`
}

// SampleRatioResult is the outcome of the sample-ratio check.
type SampleRatioResult struct {
	Checked  bool   `json:"checked"`
	Mismatch bool   `json:"mismatch"`
	Expected Float  `json:"expected"`
	Observed Float  `json:"observed"`
	Baseline Float  `json:"baseline"`
	Canary   Float  `json:"canary"`
	Source   string `json:"source,omitempty"`
	EValue   Float  `json:"evalue"`
	// ChiSquare and ChiSquareP are Pearson's fixed-sample test against the
	// exact expected split, reported for reference only: the decision uses
	// the anytime-valid EValue against the tolerance band.
	ChiSquare  Float  `json:"chiSquare"`
	ChiSquareP Float  `json:"chiSquareP"`
	Reason     string `json:"reason"`
	err        bool
}

// nan is the "does not apply" value of evidence fields.
var nan = Float(math.NaN())

// emptyEvidence returns evidence with every statistic marked not applicable.
func emptyEvidence(m *Metric) Evidence {
	return Evidence{
		Effect: nan, Lower: nan, Upper: nan, Boundary: nan,
		EValue: nan, PValue: nan, PAdjusted: nan, PassPValue: nan,
		MDE: nan, Needed: nan, Margin: m.Margin,
	}
}

// analysis is a metric's result before multiplicity correction.
type analysis struct {
	ev Evidence
	// final, when set, is the verdict regardless of the tests (errors, no
	// data, threshold metrics).
	final   Verdict
	noData  bool
	summary string // what was measured, for the reason
	// The sequential tests (statistical metrics only).
	statistical bool
	logEFail    float64 // log e-value for harm beyond the margin
	pPass       float64 // anytime p-value of the non-inferiority test
	enough      bool    // minimum sample reached
	powered     bool    // MDE within the margin
	have, need  float64 // sample per arm (smaller arm) and the minimum
	sampleNoun  string
	fmtMDE      string // the MDE and its target, for reasons
	fmtMargin   string
}

// Judge turns one look's measurements into a verdict with evidence. It is a
// pure function: same template and observation, same report. It never fails
// and never panics: a measurement error makes that metric VerdictError, a
// missing measurement too, and malformed data (NaN, negative counts, one arm
// empty) makes it inconclusive or a no-data result, never a pass. The template
// is expected to have passed Validate; unknown values in an unvalidated
// template are judged as errors or replaced by defaults.
//
// Per metric: fail when the anytime-valid test shows harm beyond the margin
// after Holm's correction across decision metrics (the family-wise false-fail
// rate stays at alpha across every look), pass when the non-inferiority test
// shows the canary within the margin and the minimum-sample and power gates
// are met, inconclusive otherwise. Requiring every decision metric to pass is
// an intersection–union test, which needs no correction. Overall: any critical
// fail fails; else any decision metric in error is an error; else a
// sample-ratio mismatch is inconclusive; else all decision metrics passing
// passes; else inconclusive.
func Judge(t *Template, obs Observation) Report {
	if t == nil {
		return Report{Verdict: VerdictError, Reason: "no template", Score: nan, Alpha: nan}
	}
	alpha, power := t.alpha(), t.power()
	byName := make(map[string]*Measurement, len(obs.Measurements))
	for i := range obs.Measurements {
		byName[obs.Measurements[i].Metric] = &obs.Measurements[i]
	}
	as := make([]analysis, len(t.Metrics))
	var scratch seriesScratch
	for i := range t.Metrics {
		m := &t.Metrics[i]
		ms := byName[m.Name]
		switch {
		case ms == nil:
			as[i] = errorAnalysis(m, "not measured")
		case ms.Err != nil:
			as[i] = errorAnalysis(m, ms.Err.Error())
		default:
			as[i] = analyze(m, ms, alpha, power, &scratch)
		}
	}

	// Holm across the statistical decision metrics.
	var family []int
	for i := range as {
		if as[i].statistical && !t.Metrics[i].DryRun {
			family = append(family, i)
		}
	}
	pf := make([]float64, len(family))
	for k, i := range family {
		pf[k] = pFromLogE(as[i].logEFail)
	}
	adj := stat.Holm(pf)
	for k, i := range family {
		as[i].ev.PAdjusted = Float(adj[k])
	}
	for i := range as {
		if as[i].statistical && t.Metrics[i].DryRun {
			as[i].ev.PAdjusted = as[i].ev.PValue
		}
	}

	rep := Report{Alpha: Float(alpha), Metrics: make([]MetricResult, len(t.Metrics))}
	for i := range t.Metrics {
		rep.Metrics[i] = decide(&t.Metrics[i], &as[i], alpha)
	}
	rep.SampleRatio = sampleRatio(t, obs)
	rep.Score, rep.ScoreClass, rep.Groups = score(t, rep.Metrics)
	rep.Verdict, rep.Reason = overall(t, rep.Metrics, rep.SampleRatio)
	return rep
}

func pFromLogE(logE float64) float64 {
	if math.IsNaN(logE) {
		return 1
	}
	return min(1, math.Exp(-logE))
}

func errorAnalysis(m *Metric, msg string) analysis {
	return analysis{ev: emptyEvidence(m), final: VerdictError, summary: "measurement error: " + msg}
}

func noDataAnalysis(m *Metric, ev Evidence, why string) analysis {
	v := VerdictInconclusive
	if m.NoData == NoDataFail {
		v = VerdictFail
	}
	return analysis{ev: ev, final: v, noData: true, summary: why}
}

// unusableAnalysis is data that cannot be judged as it stands: inconclusive,
// whatever the no-data policy, and left out of the score.
func unusableAnalysis(ev Evidence, why string) analysis {
	return analysis{ev: ev, final: VerdictInconclusive, noData: true, summary: why + "; unusable data is never a pass"}
}

func analyze(m *Metric, ms *Measurement, alpha, power float64, s *seriesScratch) analysis {
	switch m.Kind {
	case KindThreshold:
		return analyzeThreshold(m, ms)
	case KindRatio:
		return analyzeRatio(m, ms, alpha, power)
	case KindHistogram:
		return analyzeHistogram(m, ms, alpha, power)
	case KindSeries:
		return analyzeSeries(m, ms, alpha, power, s)
	}
	return errorAnalysis(m, fmt.Sprintf("unknown kind %q", m.Kind))
}

// decide applies the corrected tests and gates to one metric.
func decide(m *Metric, a *analysis, alpha float64) MetricResult {
	r := MetricResult{
		Metric: m.Name, Kind: m.Kind, Critical: m.Critical, DryRun: m.DryRun,
		Group: m.group(), Weight: Float(m.weight()), NoData: a.noData, Evidence: a.ev,
	}
	if a.final != "" {
		r.Verdict = a.final
		r.Reason = a.summary
		switch {
		case a.noData && a.final == VerdictFail:
			r.Reason += "; no data fails this metric (noData: fail)"
		case a.noData && !strings.HasSuffix(r.Reason, "never a pass"):
			r.Reason += "; no data is never a pass"
		}
		return r
	}
	pAdj := float64(a.ev.PAdjusted)
	switch {
	case pAdj <= alpha && a.enough:
		r.Verdict = VerdictFail
		r.Reason = fmt.Sprintf("%s: harm beyond the %s margin (%s, Holm-adjusted)", a.summary, a.fmtMargin, fmtP(pAdj))
	case a.pPass <= alpha && a.enough && a.powered:
		r.Verdict = VerdictPass
		r.Reason = fmt.Sprintf("%s: within the %s margin (%s)", a.summary, a.fmtMargin, fmtP(a.pPass))
	default:
		r.Verdict = VerdictInconclusive
		switch {
		case !a.enough:
			r.Reason = fmt.Sprintf("%s: %s of %s %s per arm needed before deciding", a.summary, fmtCount(a.have), fmtCount(a.need), a.sampleNoun)
		case !a.powered && a.pPass <= alpha:
			r.Reason = fmt.Sprintf("%s: too little data to pass yet, %s", a.summary, a.fmtMDE)
		default:
			r.Reason = fmt.Sprintf("%s: not enough evidence yet for the %s margin, %s", a.summary, a.fmtMargin, a.fmtMDE)
		}
	}
	if m.DryRun {
		r.Reason += " (dry run: never decides)"
	}
	return r
}

// sampleRatio checks the canary's share of traffic against the expected split
// with an anytime-valid normal-mixture test against the tolerance band.
func sampleRatio(t *Template, obs Observation) *SampleRatioResult {
	pi := obs.ExpectedSplit
	if !(pi > 0 && pi < 1) {
		return nil
	}
	res := &SampleRatioResult{Expected: Float(pi), Observed: nan, Baseline: nan, Canary: nan, EValue: nan, ChiSquare: nan, ChiSquareP: nan}
	tr := obs.Traffic
	if tr == nil {
		for i := range t.Metrics {
			m := &t.Metrics[i]
			if m.Kind != KindRatio || m.DryRun {
				continue
			}
			for j := range obs.Measurements {
				ms := &obs.Measurements[j]
				if ms.Metric == m.Name {
					tr = &Traffic{Baseline: ms.Baseline.Total, Canary: ms.Canary.Total, Source: m.Name + " denominator", Err: ms.Err}
				}
			}
			break
		}
	}
	if tr == nil {
		res.Reason = "sample ratio not checked: no traffic query and no ratio metric"
		return res
	}
	res.Source = tr.Source
	if tr.Err != nil {
		res.err = true
		res.Reason = "sample ratio not checked: traffic query failed: " + tr.Err.Error()
		return res
	}
	nb, nc := tr.Baseline, tr.Canary
	if !(nb >= 0 && nc >= 0) || !finite(nb) || !finite(nc) || nb+nc <= 0 {
		res.Reason = "sample ratio not checked: no traffic yet"
		return res
	}
	n := nb + nc
	share := nc / n
	res.Checked = true
	res.Baseline, res.Canary, res.Observed = Float(nb), Float(nc), Float(share)
	chi := (nc-n*pi)*(nc-n*pi)/(n*pi) + (nb-n*(1-pi))*(nb-n*(1-pi))/(n*(1-pi))
	res.ChiSquare, res.ChiSquareP = Float(chi), Float(stat.ChiSquareSF(chi, 1))
	tol := t.SampleRatio.Tolerance
	lo, hi := pi*(1-tol), min(pi*(1+tol), 1-1e-9)
	tau := 0.1 * min(pi, 1-pi)
	eHi := mixLogE(share, math.Sqrt(hi*(1-hi)/n), hi, tau, true)
	eLo := mixLogE(share, math.Sqrt(lo*(1-lo)/n), lo, tau, false)
	logE := stat.LogAddExp(eHi, eLo) - math.Ln2
	res.EValue = Float(math.Exp(logE))
	band := fmtPct(pi, false)
	if tol > 0 {
		band = fmt.Sprintf("%s–%s", fmtPct(lo, false), fmtPct(hi, false))
	}
	if logE >= math.Log(1/t.srmAlpha()) {
		res.Mismatch = true
		res.Reason = fmt.Sprintf("sample ratio mismatch: canary got %s of traffic (%s of %s requests), expected %s (e=%s)", fmtPct(share, false), fmtCount(nc), fmtCount(n), band, fmtE(logE))
	} else {
		res.Reason = fmt.Sprintf("sample ratio ok: canary got %s of traffic, expected %s", fmtPct(share, false), band)
	}
	return res
}

// score is the Kayenta-style score: within a group, the share of metric weight
// that passed; across groups, the weighted mean of group scores. Dry-run
// metrics, metrics without data and metrics in error are left out, as Kayenta
// leaves out NODATA.
func score(t *Template, rs []MetricResult) (Float, string, []GroupScore) {
	type acc struct{ pass, total float64 }
	groups := map[string]*acc{}
	var order []string
	for _, r := range rs {
		if r.DryRun || r.NoData || r.Verdict == VerdictError {
			continue
		}
		g := groups[r.Group]
		if g == nil {
			g = &acc{}
			groups[r.Group] = g
			order = append(order, r.Group)
		}
		g.total += float64(r.Weight)
		if r.Verdict == VerdictPass {
			g.pass += float64(r.Weight)
		}
	}
	if len(order) == 0 {
		return nan, "", nil
	}
	var out []GroupScore
	var sum, wsum float64
	for _, name := range order {
		g := groups[name]
		w := g.total
		if gw, ok := t.Score.Groups[name]; ok && gw > 0 {
			w = gw
		}
		s := 100 * g.pass / g.total
		out = append(out, GroupScore{Group: name, Score: Float(s), Weight: Float(w)})
		sum += w * s
		wsum += w
	}
	total := sum / wsum
	class := "fail"
	switch {
	case total >= t.scorePass():
		class = "pass"
	case total >= t.scoreMarginal():
		class = "marginal"
	}
	return Float(total), class, out
}

// overall combines metric verdicts into the look's verdict and reason.
func overall(t *Template, rs []MetricResult, srm *SampleRatioResult) (Verdict, string) {
	var failed, errored, open []string
	decision, passed := 0, 0
	for _, r := range rs {
		if r.DryRun {
			continue
		}
		decision++
		switch r.Verdict {
		case VerdictFail:
			if r.Critical {
				failed = append(failed, r.Metric+": "+r.Reason)
			} else {
				open = append(open, r.Metric+" (failed, not critical)")
			}
		case VerdictError:
			errored = append(errored, r.Metric+": "+r.Reason)
		case VerdictPass:
			passed++
		default:
			open = append(open, r.Metric)
		}
	}
	switch {
	case len(failed) > 0:
		return VerdictFail, "failed: " + strings.Join(failed, "; ")
	case len(errored) > 0:
		return VerdictError, "could not measure " + strings.Join(errored, "; ")
	case srm != nil && srm.err:
		return VerdictError, srm.Reason
	case srm != nil && srm.Mismatch:
		return VerdictInconclusive, srm.Reason + "; the comparison cannot be trusted"
	case decision == 0:
		return VerdictInconclusive, "no decision metrics"
	case passed == decision:
		return VerdictPass, fmt.Sprintf("all %d decision metrics passed", decision)
	}
	return VerdictInconclusive, fmt.Sprintf("%d of %d decision metrics passed; undecided: %s", passed, decision, strings.Join(open, ", "))
}

// Formatting for reasons.

// fmtP formats a p-value as "p=0.0123", "p=1.2e-07" or "p≤1e-300".
func fmtP(p float64) string {
	switch {
	case p <= 1e-300:
		return "p≤1e-300"
	case p < 1e-4:
		return fmt.Sprintf("p=%.1e", p)
	}
	return fmt.Sprintf("p=%.4f", p)
}

func fmtE(logE float64) string {
	if logE > math.Log(1e6) {
		return fmt.Sprintf("%.1e", math.Exp(logE))
	}
	return fmt.Sprintf("%.3g", math.Exp(logE))
}

func fmtCount(n float64) string {
	switch {
	case math.IsInf(n, 1):
		return "∞"
	case n >= 1e6:
		return fmt.Sprintf("%.3gM", n/1e6)
	case n == math.Trunc(n):
		return fmt.Sprintf("%.0f", n)
	}
	return fmt.Sprintf("%.1f", n)
}

// fmtPct formats a fraction as a percentage, signed when asked.
func fmtPct(x float64, signed bool) string {
	switch {
	case math.IsNaN(x):
		return "n/a"
	case math.IsInf(x, 1):
		return "+∞"
	case math.IsInf(x, -1):
		return "−∞"
	}
	if signed {
		return fmt.Sprintf("%+.1f%%", 100*x)
	}
	return fmt.Sprintf("%.2f%%", 100*x)
}

func fmtNum(x float64, signed bool) string {
	switch {
	case math.IsNaN(x):
		return "n/a"
	case math.IsInf(x, 1):
		return "+∞"
	case math.IsInf(x, -1):
		return "−∞"
	}
	if signed {
		return fmt.Sprintf("%+.4g", x)
	}
	return fmt.Sprintf("%.4g", x)
}

// fmtMarginOf describes a metric's harm margin, e.g. "+10%", "±0.5".
func fmtMarginOf(m *Metric) string {
	sign := "+"
	switch m.direction() {
	case DirectionDecrease:
		sign = "−"
	case DirectionEither:
		sign = "±"
	}
	if m.Margin.Relative != 0 {
		return sign + strings.TrimPrefix(fmtPct(m.Margin.Relative, true), "+")
	}
	return sign + fmtNum(m.Margin.Absolute, false)
}
