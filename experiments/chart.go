package experiments

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Chart layout, in SVG user units (pixels at 100%).
const (
	chartWidth   = 980
	chartMargin  = 20
	labelRight   = 300 // the metric labels end here
	plotLeft     = 320 // the effect axis spans plotLeft..plotRight
	plotRight    = 680
	valueLeft    = 700 // the numbers and the verdict start here
	rowHeight    = 46
	axisMaxShare = 3.0  // the axis never extends beyond +300% …
	axisMinShare = -1.0 // … or below −100% (longer intervals end in an arrow)
	maxTextRunes = 140  // longer free text (reasons, problems) is cut
)

// Verdict colours: better, worse, inconclusive, insufficient data.
var verdictColours = map[Verdict]string{
	VerdictBetter:       "#1a7f37",
	VerdictWorse:        "#cf222e",
	VerdictInconclusive: "#57606a",
	VerdictNoData:       "#afb8c1",
}

func verdictColour(v Verdict) string {
	if c, ok := verdictColours[v]; ok {
		return c
	}
	return verdictColours[VerdictNoData]
}

// chartRow is one metric × treatment.
type chartRow struct {
	m *MetricResult
	c *Comparison
}

// EffectChart writes r as a standalone SVG image: one row per metric ×
// treatment with the relative effect (treatment/control − 1) as a point
// and its interval (confidence sequence, confidence interval or credible
// interval, as r.Mode says) as a bar, on one axis shared by every row with
// a zero line. Each row names the metric, its role (guardrails are drawn
// as diamonds and labelled), its direction and the treatment, and gives the
// effect with its interval, the p-value or chance to win and the verdict,
// coloured green (better), red (worse), grey (inconclusive) or light grey
// (insufficient data). A header carries the recommendation and a footer
// the health checks. The image holds no scripts and every text taken from
// r is escaped, so it can be served and embedded as is.
//
// Any Results can be drawn, including ones with no metrics, missing
// estimates or non-finite numbers. The only error is one returned by w; the
// image is written with a single Write.
func EffectChart(w io.Writer, r Results) error {
	var b bytes.Buffer
	ch := chart{b: &b}
	ch.draw(&r)
	_, err := w.Write(b.Bytes())
	return err
}

type chart struct {
	b      *bytes.Buffer
	lo, hi float64 // the axis range, as relative effects
}

func (ch *chart) printf(format string, args ...any) { fmt.Fprintf(ch.b, format, args...) }

// text writes a <text> element with escaped content.
func (ch *chart) text(x, y float64, attrs, s string) {
	ch.printf(`<text x="%s" y="%s"%s>`, svgNum(x), svgNum(y), attrs)
	ch.esc(s)
	ch.b.WriteString("</text>\n")
}

// esc writes s escaped for XML character data or attribute values, with
// characters XML cannot hold replaced and overlong text cut.
func (ch *chart) esc(s string) {
	_ = xml.EscapeText(ch.b, []byte(cutText(s, maxTextRunes)))
}

func (ch *chart) draw(r *Results) {
	var rows []chartRow
	for i := range r.Metrics {
		m := &r.Metrics[i]
		for j := range m.Comparisons {
			rows = append(rows, chartRow{m: m, c: &m.Comparisons[j]})
		}
	}
	ch.lo, ch.hi = axisRange(rows)

	headerLines := len(wrapText(describeAnalysis(r), 150, 2)) + len(wrapText(describeRecommendation(r.Recommendation), 125, 3))
	top := float64(86 + headerLines*17) // first row
	footerLines := 2 + min(len(r.Health.Problems), 5)
	height := int(top) + max(len(rows), 1)*rowHeight + 40 + footerLines*18 + 48

	ch.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" role="img">`+"\n",
		chartWidth, height, chartWidth, height)
	ch.b.WriteString("<title>")
	ch.esc("Experiment " + r.Experiment + ": effect of each treatment on each metric")
	ch.b.WriteString("</title>\n")
	ch.printf(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", chartWidth, height)

	// Header: title, analysis, recommendation.
	ch.text(chartMargin, 30, ` font-size="18" font-weight="600" fill="#1f2328"`, "Experiment "+r.Experiment)
	y := 50.0
	for _, line := range wrapText(describeAnalysis(r), 150, 2) {
		ch.text(chartMargin, y, ` font-size="12" fill="#57606a"`, line)
		y += 16
	}
	y += 6
	for _, line := range wrapText(describeRecommendation(r.Recommendation), 125, 3) {
		ch.text(chartMargin, y, ` font-size="13" font-weight="600" fill="`+actionColour(r.Recommendation.Action)+`"`, line)
		y += 18
	}

	// Column headings and the axis frame.
	ch.text(chartMargin, top-14, ` font-size="11" font-weight="600" fill="#57606a"`, "METRIC")
	ch.text((plotLeft+plotRight)/2, top-14, ` font-size="11" font-weight="600" fill="#57606a" text-anchor="middle"`, "RELATIVE EFFECT (treatment vs control)")
	ch.text(valueLeft, top-14, ` font-size="11" font-weight="600" fill="#57606a"`, "EFFECT [INTERVAL] AND VERDICT")
	bottom := top + float64(max(len(rows), 1)*rowHeight)
	ch.axis(top, bottom)

	if len(rows) == 0 {
		ch.text((plotLeft+plotRight)/2, top+rowHeight/2+4, ` font-size="13" fill="#57606a" text-anchor="middle"`, "No metric comparisons to show yet.")
	}
	for i, row := range rows {
		ch.row(top+float64(i*rowHeight), i, row)
	}

	// Footer: health and legend.
	y = bottom + 44
	ch.text(chartMargin, y, ` font-size="12" font-weight="600" fill="`+healthColour(r.Health.Status)+`"`, describeHealth(r))
	for i, p := range r.Health.Problems {
		if i == 5 {
			break
		}
		y += 18
		ch.text(chartMargin+12, y, ` font-size="11" fill="#57606a"`, "• "+p)
	}
	y += 28
	ch.legend(y)
	ch.b.WriteString("</svg>\n")
}

// axis draws the grid, the tick labels and the zero line between the rows
// at top and bottom.
func (ch *chart) axis(top, bottom float64) {
	for _, t := range axisTicks(ch.lo, ch.hi) {
		x := ch.x(t)
		stroke, width := "#eaeef2", "1"
		if t == 0 {
			continue
		}
		ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%s"/>`+"\n", svgNum(x), svgNum(top), svgNum(x), svgNum(bottom), stroke, width)
		ch.text(x, bottom+16, ` font-size="11" fill="#57606a" text-anchor="middle"`, fmtPct(t, false))
	}
	x0 := ch.x(0)
	ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#1f2328" stroke-width="1.5"/>`+"\n", svgNum(x0), svgNum(top-4), svgNum(x0), svgNum(bottom))
	ch.text(x0, bottom+16, ` font-size="11" font-weight="600" fill="#1f2328" text-anchor="middle"`, "0%")
	ch.printf(`<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#d0d7de"/>`+"\n", plotLeft, svgNum(bottom), plotRight, svgNum(bottom))
}

// row draws one metric × treatment at y (the row's top).
func (ch *chart) row(y float64, i int, row chartRow) {
	m, c := row.m, row.c
	colour := verdictColour(c.Verdict)
	if i%2 == 1 {
		ch.printf(`<rect x="%d" y="%s" width="%d" height="%d" fill="#f6f8fa"/>`+"\n", chartMargin/2, svgNum(y), chartWidth-chartMargin, rowHeight)
	}
	mid := y + rowHeight/2

	// Labels: metric, then role, direction and arms.
	ch.text(chartMargin, mid-4, ` font-size="13" font-weight="600" fill="#1f2328"`, cutText(m.Key, 36))
	sub := string(m.Kind) + " · " + directionText(m.Direction) + " · " + cutText(c.Treatment, 24) + " vs " + cutText(controlOf(m), 24)
	roleX := float64(chartMargin)
	if m.Role == RoleGuardrail {
		ch.printf(`<rect x="%d" y="%s" width="66" height="15" rx="3" fill="#fff8c5" stroke="#bf8700"/>`+"\n", chartMargin, svgNum(mid+3))
		ch.text(chartMargin+33, mid+14, ` font-size="10" font-weight="600" fill="#7d4e00" text-anchor="middle"`, "GUARDRAIL")
		roleX += 72
	} else {
		sub = roleText(m.Role) + " · " + sub
	}
	ch.text(roleX, mid+14, ` font-size="11" fill="#57606a"`, cutText(sub, 56))

	// The effect.
	est := c.Relative
	if est == nil || !isFinite(est.Value) {
		msg := "no estimate yet"
		if c.Verdict != VerdictNoData && c.Absolute != nil {
			msg = "no relative effect (control is 0)"
		}
		ch.text((plotLeft+plotRight)/2, mid+4, ` font-size="11" font-style="italic" fill="#8c959f" text-anchor="middle"`, msg)
	} else {
		ch.interval(mid, est, colour)
		ch.marker(ch.x(clampTo(est.Value, ch.lo, ch.hi)), mid, colour, m.Role == RoleGuardrail)
	}

	// Numbers and verdict.
	ch.text(valueLeft, mid-4, ` font-size="12" fill="#1f2328"`, effectText(c))
	vx := float64(valueLeft)
	ch.printf(`<circle cx="%s" cy="%s" r="4" fill="%s"/>`+"\n", svgNum(vx+4), svgNum(mid+10), colour)
	ch.text(vx+12, mid+14, ` font-size="11" font-weight="600" fill="`+colour+`"`, verdictText(c.Verdict))
	ch.text(vx+12+float64(len(verdictText(c.Verdict)))*7+8, mid+14, ` font-size="11" fill="#57606a"`, statText(m, c))
}

// interval draws est's interval at height y; ends beyond the axis (or
// infinite ones) become arrows.
func (ch *chart) interval(y float64, est *Estimate, colour string) {
	lo, hi := est.Lower, est.Upper
	if math.IsNaN(lo) {
		lo = est.Value
	}
	if math.IsNaN(hi) {
		hi = est.Value
	}
	if lo > hi {
		lo, hi = hi, lo
	}
	x1, x2 := ch.x(clampTo(lo, ch.lo, ch.hi)), ch.x(clampTo(hi, ch.lo, ch.hi))
	ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="4" stroke-opacity="0.45" stroke-linecap="round"/>`+"\n",
		svgNum(x1), svgNum(y), svgNum(x2), svgNum(y), colour)
	if lo < ch.lo {
		ch.printf(`<path d="M%s %sl8 -6v12z" fill="%s"/>`+"\n", svgNum(x1-2), svgNum(y), colour)
	} else {
		ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5"/>`+"\n", svgNum(x1), svgNum(y-6), svgNum(x1), svgNum(y+6), colour)
	}
	if hi > ch.hi {
		ch.printf(`<path d="M%s %sl-8 -6v12z" fill="%s"/>`+"\n", svgNum(x2+2), svgNum(y), colour)
	} else {
		ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5"/>`+"\n", svgNum(x2), svgNum(y-6), svgNum(x2), svgNum(y+6), colour)
	}
}

// marker draws the point estimate: a circle, or a diamond for guardrails.
func (ch *chart) marker(x, y float64, colour string, guardrail bool) {
	if guardrail {
		ch.printf(`<path d="M%s %sl6 6l-6 6l-6 -6z" fill="%s" stroke="#ffffff" stroke-width="1.5"/>`+"\n", svgNum(x), svgNum(y-6), colour)
		return
	}
	ch.printf(`<circle cx="%s" cy="%s" r="5.5" fill="%s" stroke="#ffffff" stroke-width="1.5"/>`+"\n", svgNum(x), svgNum(y), colour)
}

func (ch *chart) legend(y float64) {
	x := float64(chartMargin)
	for _, v := range []Verdict{VerdictBetter, VerdictWorse, VerdictInconclusive, VerdictNoData} {
		ch.printf(`<circle cx="%s" cy="%s" r="5" fill="%s"/>`+"\n", svgNum(x+5), svgNum(y-4), verdictColour(v))
		label := verdictText(v)
		ch.text(x+14, y, ` font-size="11" fill="#57606a"`, label)
		x += 14 + float64(len(label))*6.2 + 18
	}
	ch.printf(`<path d="M%s %sl5 5l-5 5l-5 -5z" fill="#57606a"/>`+"\n", svgNum(x+5), svgNum(y-9))
	ch.text(x+14, y, ` font-size="11" fill="#57606a"`, "guardrail (judged on harm alone, never corrected)")
	x += 14 + 290
	ch.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#57606a" stroke-width="4" stroke-opacity="0.45" stroke-linecap="round"/>`+"\n", svgNum(x), svgNum(y-4), svgNum(x+22), svgNum(y-4))
	ch.text(x+28, y, ` font-size="11" fill="#57606a"`, "interval; arrows run off the axis")
}

// x maps a relative effect onto the plot.
func (ch *chart) x(v float64) float64 {
	return plotLeft + (v-ch.lo)/(ch.hi-ch.lo)*(plotRight-plotLeft)
}

// axisRange is the shared axis: every finite point and interval end,
// zero, a margin, within [axisMinShare, axisMaxShare].
func axisRange(rows []chartRow) (lo, hi float64) {
	lo, hi = 0, 0
	for _, r := range rows {
		e := r.c.Relative
		if e == nil || !isFinite(e.Value) {
			continue
		}
		for _, v := range []float64{e.Value, e.Lower, e.Upper} {
			if isFinite(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	lo, hi = math.Max(lo, axisMinShare), math.Min(hi, axisMaxShare)
	span := hi - lo
	if span < 0.02 { // nothing, or tiny effects: show ±1% at least
		span = 0.02
		lo, hi = math.Min(lo, -0.01), math.Max(hi, 0.01)
	}
	pad := span * 0.08
	lo, hi = lo-pad, hi+pad
	if lo < 0 && hi > 0 { // keep the zero line off the plot's edge
		lo, hi = math.Min(lo, -span*0.1), math.Max(hi, span*0.1)
	}
	return lo, hi
}

// ticks returns round tick values within [lo, hi], four to seven of them.
func axisTicks(lo, hi float64) []float64 {
	raw := (hi - lo) / 7
	if !(raw > 0) || !isFinite(raw) {
		return nil
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*mag >= raw {
			step = f * mag
			break
		}
	}
	var out []float64
	for t := math.Ceil(lo/step) * step; t <= hi+step*1e-9 && len(out) < 20; t += step {
		if math.Abs(t) < step*1e-9 {
			t = 0
		}
		out = append(out, t)
	}
	return out
}

func clampTo(v, lo, hi float64) float64 {
	switch {
	case math.IsNaN(v):
		return 0
	case v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}

// num formats a coordinate compactly; non-finite values become 0 so the
// XML stays valid.
func svgNum(v float64) string {
	if !isFinite(v) {
		v = 0
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

// pct formats a relative effect as a percentage; signed adds a plus sign.
func fmtPct(v float64, signed bool) string {
	if !isFinite(v) {
		if math.IsInf(v, 1) {
			return "+∞"
		}
		if math.IsInf(v, -1) {
			return "−∞"
		}
		return "–"
	}
	p := v * 100
	digits := 1
	if a := math.Abs(p); a != 0 && a < 1 {
		digits = 2
	} else if a >= 100 {
		digits = 0
	}
	s := strconv.FormatFloat(p, 'f', digits, 64)
	if s == "-0" || strings.Trim(s, "-0.") == "" {
		s = "0"
	}
	if signed && p > 0 && s != "0" {
		s = "+" + s
	}
	return strings.Replace(s, "-", "−", 1) + "%"
}

// short formats an absolute number with four significant digits.
func fmtShort(v float64) string {
	if !isFinite(v) {
		return "–"
	}
	return strings.Replace(strconv.FormatFloat(v, 'g', 4, 64), "-", "−", 1)
}

func effectText(c *Comparison) string {
	switch {
	case c.Relative != nil && isFinite(c.Relative.Value):
		e := c.Relative
		return fmtPct(e.Value, true) + "  [" + fmtPct(e.Lower, true) + ", " + fmtPct(e.Upper, true) + "]"
	case c.Absolute != nil && isFinite(c.Absolute.Value):
		e := c.Absolute
		return "Δ " + fmtShort(e.Value) + "  [" + fmtShort(e.Lower) + ", " + fmtShort(e.Upper) + "]"
	}
	return "–"
}

func statText(m *MetricResult, c *Comparison) string {
	var parts []string
	if c.ChanceToWin != nil && isFinite(*c.ChanceToWin) {
		parts = append(parts, fmtPct(*c.ChanceToWin, false)+" chance to win")
	}
	switch {
	case m.Role == RoleGuardrail && c.HarmPValue != nil:
		parts = append(parts, "harm p "+fmtP(*c.HarmPValue))
	case c.AdjustedPValue != nil:
		parts = append(parts, "adjusted p "+fmtP(*c.AdjustedPValue))
	case c.PValue != nil:
		parts = append(parts, "p "+fmtP(*c.PValue))
	}
	return strings.Join(parts, " · ")
}

// fmtP formats a p-value with its relation: "= 0.031", "< 0.0001".
func fmtP(p float64) string {
	switch {
	case !isFinite(p):
		return "–"
	case p < 0.0001:
		return "< 0.0001"
	case p < 0.01:
		return "= " + strconv.FormatFloat(p, 'f', 4, 64)
	}
	return "= " + strconv.FormatFloat(p, 'f', 3, 64)
}

func verdictText(v Verdict) string {
	switch v {
	case VerdictBetter:
		return "better"
	case VerdictWorse:
		return "worse"
	case VerdictInconclusive:
		return "inconclusive"
	}
	return "insufficient data"
}

func roleText(r Role) string {
	if r == "" {
		return "metric"
	}
	return string(r)
}

func directionText(d Direction) string {
	if d == LowerIsBetter {
		return "lower is better"
	}
	return "higher is better"
}

// controlOf names the control arm of a metric's result (its first arm).
func controlOf(m *MetricResult) string {
	if len(m.Arms) > 0 {
		return m.Arms[0].Variant
	}
	return "control"
}

func intervalName(r *Results) string {
	level := "95%"
	if a := r.Alpha; isFinite(a) && a > 0 && a < 1 {
		level = strconv.FormatFloat((1-a)*100, 'f', -1, 64) + "%"
		if len(level) > 7 {
			level = strconv.FormatFloat((1-a)*100, 'f', 1, 64) + "%"
		}
	}
	switch r.Mode {
	case ModeBayesian:
		return level + " CREDIBLE INTERVAL"
	case ModeFixed:
		return level + " CONFIDENCE INTERVAL"
	}
	return level + " CONFIDENCE SEQUENCE"
}

func describeAnalysis(r *Results) string {
	mode := "sequential (anytime-valid)"
	switch r.Mode {
	case ModeFixed:
		mode = "fixed-horizon (Welch t-test)"
	case ModeBayesian:
		mode = "Bayesian"
	}
	parts := []string{mode + " analysis", strings.ToLower(intervalName(r)) + "s"}
	if r.Mode != ModeBayesian && r.Correction != "" {
		parts = append(parts, string(r.Correction)+" correction across goals")
	}
	parts = append(parts, fmtThousands(r.Users)+" users")
	for _, a := range r.Arms {
		parts = append(parts, cutText(a.Variant, 24)+" "+fmtThousands(a.Users))
	}
	return strings.Join(parts, " · ")
}

func describeRecommendation(rc Recommendation) string {
	if rc.Reason != "" { // a sentence that starts with the action
		return rc.Reason
	}
	switch rc.Action {
	case ActionShip:
		return "Ship " + rc.Variant + "."
	case ActionRollback:
		return "Roll back."
	case ActionUnhealthy:
		return "Unhealthy."
	case ActionKeepRunning:
		return "Keep running."
	}
	return "No recommendation."
}

func describeHealth(r *Results) string {
	h := r.Health
	status := "healthy"
	switch h.Status {
	case HealthUnhealthy:
		status = "UNHEALTHY"
	case HealthNoData:
		status = "no data yet"
	}
	parts := []string{"Health: " + status,
		"sample ratio p " + fmtP(h.SRM.PValue),
		"crossovers " + fmtThousands(r.Crossovers) + " (" + fmtPct(h.CrossoverRate, false) + ")"}
	if h.Underpowered {
		parts = append(parts, "underpowered")
	}
	return strings.Join(parts, " · ")
}

func actionColour(a Action) string {
	switch a {
	case ActionShip:
		return verdictColours[VerdictBetter]
	case ActionRollback, ActionUnhealthy:
		return verdictColours[VerdictWorse]
	}
	return "#1f2328"
}

func healthColour(s HealthStatus) string {
	if s == HealthUnhealthy {
		return verdictColours[VerdictWorse]
	}
	return "#1f2328"
}

// thousands formats n with thin separators: 20,000.
func fmtThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "−" + b.String()
	}
	return b.String()
}

// cut shortens s to n runes, ending in an ellipsis when it was longer.
func cutText(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos] + "…"
		}
		i++
	}
	return s
}

// wrapText breaks s into at most lines lines of about width runes, at
// spaces; the last line is cut if the text is longer.
func wrapText(s string, width, lines int) []string {
	var out []string
	for len(out) < lines-1 && utf8.RuneCountInString(s) > width {
		cutAt := -1
		n := 0
		for i, r := range s {
			if n > width {
				break
			}
			if r == ' ' {
				cutAt = i
			}
			n++
		}
		if cutAt <= 0 {
			break
		}
		out = append(out, s[:cutAt])
		s = strings.TrimLeft(s[cutAt:], " ")
	}
	return append(out, cutText(s, width))
}
