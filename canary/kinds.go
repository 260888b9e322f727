package canary

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/flagpole/flagpole/internal/stat"
)

// Tuning of the sequential tests. The mixing scales decide which effect sizes
// the tests are most sensitive to; any fixed choice keeps them valid.
const (
	// ratioPriorConcentration is k in the Beta(k·q₀, k·(1−q₀)) mixing prior
	// of the count test: a standard deviation of about 0.15 on the canary's
	// share of events, wide enough for 1.5×–5× regressions.
	ratioPriorConcentration = 10
	// histogramTau is the mixing scale on the probability scale.
	histogramTau = 0.1
	// histogramSmallEffect is the smallest shift in probability that the
	// power gate requires histograms to be able to detect: 0.56 − 0.5, the
	// "small" effect of Vargha & Delaney (2000) for the A measure.
	histogramSmallEffect = 0.06
	// maxHistogramBuckets bounds the quadratic bucket comparison.
	maxHistogramBuckets = 2000
)

// decisionTests evaluates the fail and non-inferiority tests of a normal
// effect estimate against the harm boundaries hi (increase) and lo (decrease).
func decisionTests(dir Direction, est, se, tau, hi, lo float64) (logEFail, pPass float64) {
	switch dir {
	case DirectionDecrease:
		return mixLogE(est, se, lo, tau, false), pFromLogE(mixLogE(est, se, lo, tau, true))
	case DirectionEither:
		f := stat.LogAddExp(mixLogE(est, se, hi, tau, true), mixLogE(est, se, lo, tau, false)) - math.Ln2
		p := max(pFromLogE(mixLogE(est, se, hi, tau, false)), pFromLogE(mixLogE(est, se, lo, tau, true)))
		return f, p
	}
	return mixLogE(est, se, hi, tau, true), pFromLogE(mixLogE(est, se, hi, tau, false))
}

// setTests stores the fail and pass evidence of an analysis.
func (a *analysis) setTests(logEFail, pPass float64) {
	a.statistical = true
	a.logEFail = logEFail
	a.pPass = pPass
	a.ev.EValue = Float(math.Exp(logEFail))
	a.ev.PValue = Float(pFromLogE(logEFail))
	a.ev.PassPValue = Float(pPass)
}

// setGates records the minimum-sample floor and the power gate. The MDE and
// target are on the test's scale; toMargin converts the MDE to the margin's
// scale for the evidence and show formats that.
func (a *analysis) setGates(m *Metric, have, n, se, tau, alpha, power, target float64, noun string, toMargin func(float64) float64, show func(float64) string) {
	a.have, a.need, a.sampleNoun = have, m.minSamples(), noun
	a.enough = have >= a.need
	mde := detectable(se, tau, alpha, power)
	a.powered = mde <= target
	factor := samplesNeeded(se, tau, alpha, power, target)
	a.ev.Needed = Float(math.Ceil(factor * n))
	shown := show(toMargin(mde))
	a.ev.MDE = Float(toMargin(mde))
	if a.powered {
		a.fmtMDE = fmt.Sprintf("minimum detectable effect %s", shown)
	} else {
		a.fmtMDE = fmt.Sprintf("minimum detectable effect %s exceeds the margin (≈ %s %s needed)", shown, fmtCount(float64(a.ev.Needed)), noun)
	}
}

func identity(x float64) float64 { return x }

func analyzeThreshold(m *Metric, ms *Measurement) analysis {
	ev := emptyEvidence(m)
	ev.Unit = UnitValue
	c := ms.Canary
	if c.Empty {
		return noDataAnalysis(m, ev, "the canary query returned no data")
	}
	v := c.Value
	if math.IsNaN(v) {
		return noDataAnalysis(m, ev, "the canary value is NaN")
	}
	ev.Canary = &ArmEstimate{Value: Float(v), N: 1}
	ev.Effect = Float(v)
	a := analysis{ev: ev}
	switch {
	case m.Max != nil && v > *m.Max:
		a.ev.Boundary = Float(*m.Max)
		a.final = VerdictFail
		a.summary = fmt.Sprintf("canary value %s is above the maximum %s", fmtNum(v, false), fmtNum(*m.Max, false))
	case m.Min != nil && v < *m.Min:
		a.ev.Boundary = Float(*m.Min)
		a.final = VerdictFail
		a.summary = fmt.Sprintf("canary value %s is below the minimum %s", fmtNum(v, false), fmtNum(*m.Min, false))
	default:
		a.final = VerdictPass
		var bounds []string
		if m.Min != nil {
			a.ev.Boundary = Float(*m.Min)
			bounds = append(bounds, "min "+fmtNum(*m.Min, false))
		}
		if m.Max != nil {
			a.ev.Boundary = Float(*m.Max)
			bounds = append(bounds, "max "+fmtNum(*m.Max, false))
		}
		a.summary = fmt.Sprintf("canary value %s is within %v", fmtNum(v, false), bounds)
	}
	return a
}

// analyzeRatio judges event rates. With a relative margin it uses the
// count test of Lindon et al.: given E events in both arms, the canary's
// count is binomial with share q = n_c·ρ/(n_c·ρ + n_b) where ρ is the rate
// ratio, so "ρ beyond 1+margin" is a one-sided hypothesis on q, tested with a
// beta-binomial mixture e-value. With an absolute margin it applies the normal
// mixture to the difference of rates (variances smoothed by adding one event
// and two requests per arm, so zero counts do not look certain).
func analyzeRatio(m *Metric, ms *Measurement, alpha, power float64) analysis {
	ev := emptyEvidence(m)
	b, c := ms.Baseline, ms.Canary
	switch {
	case c.Empty || c.Total == 0:
		return noDataAnalysis(m, ev, "no canary traffic (the denominator is empty or zero)")
	case b.Empty || b.Total == 0:
		return noDataAnalysis(m, ev, "no baseline traffic (the denominator is empty or zero)")
	}
	for _, v := range []float64{b.Count, b.Total, c.Count, c.Total} {
		if !finite(v) || v < 0 {
			return noDataAnalysis(m, ev, "a count is negative or not finite")
		}
	}
	eb, nb, ec, nc := b.Count, b.Total, c.Count, c.Total
	// increase() extrapolates, so a numerator may exceed its denominator by a
	// little; more than that is a misconfigured query.
	if ec > nc*1.01 || eb > nb*1.01 {
		return unusableAnalysis(ev, "the numerator exceeds the denominator; check the queries")
	}
	ec, eb = min(ec, nc), min(eb, nb)
	rb, rc := eb/nb, ec/nc
	ev.Baseline = &ArmEstimate{Value: Float(rb), N: Float(nb)}
	ev.Canary = &ArmEstimate{Value: Float(rc), N: Float(nc)}
	a := analysis{ev: ev, fmtMargin: fmtMarginOf(m)}
	dir := m.direction()
	have := min(nb, nc)
	counts := fmt.Sprintf("canary %s (%s/%s) vs baseline %s (%s/%s)", fmtPct(rc, false), fmtCount(ec), fmtCount(nc), fmtPct(rb, false), fmtCount(eb), fmtCount(nb))
	level := csLevel(alpha)

	if rel := m.Margin.Relative; rel != 0 {
		a.ev.Unit = UnitRelative
		n := ec + eb
		k := float64(ratioPriorConcentration)
		share := func(rho float64) float64 { return nc * rho / (nc*rho + nb) }
		qHi, qLo, q1 := share(1+rel), share(max(1-rel, 1e-9)), share(1)
		var logEFail, pPass float64
		switch dir {
		case DirectionDecrease:
			a.ev.Boundary = Float(-rel)
			logEFail = bbLogE(ec, n, qLo, k, false)
			pPass = pFromLogE(bbLogE(ec, n, qLo, k, true))
		case DirectionEither:
			a.ev.Boundary = Float(rel)
			logEFail = stat.LogAddExp(bbLogE(ec, n, qHi, k, true), bbLogE(ec, n, qLo, k, false)) - math.Ln2
			pPass = max(pFromLogE(bbLogE(ec, n, qHi, k, false)), pFromLogE(bbLogE(ec, n, qLo, k, true)))
		default:
			a.ev.Boundary = Float(rel)
			logEFail = bbLogE(ec, n, qHi, k, true)
			pPass = pFromLogE(bbLogE(ec, n, qHi, k, false))
		}
		a.setTests(logEFail, pPass)
		// Effect: the rate ratio minus one, with the beta-binomial confidence
		// sequence for the share mapped to the ratio.
		lo, hi := bbInterval(ec, n, k*q1, k*(1-q1), alpha)
		toRel := func(q float64) float64 {
			if q >= 1 {
				return math.Inf(1)
			}
			return q/(1-q)*nb/nc - 1
		}
		effect := math.NaN()
		switch {
		case eb > 0:
			effect = rc/rb - 1
		case ec > 0:
			effect = math.Inf(1)
		}
		a.ev.Effect, a.ev.Lower, a.ev.Upper = Float(effect), Float(toRel(lo)), Float(toRel(hi))
		// Power: the log rate ratio has standard error √(1/e_c + 1/e_b)
		// (half an event added so that zero counts stay finite).
		se := math.Sqrt(1/(ec+0.5) + 1/(eb+0.5))
		// The mixing scale matching the beta prior: its standard deviation on
		// the share, carried to the log ratio (dq/dlogρ = q(1−q)).
		tau := 1 / math.Sqrt((k+1)*q1*(1-q1))
		target := math.Log1p(rel)
		if dir != DirectionIncrease {
			target = -math.Log(max(1-rel, 1e-9))
			if dir == DirectionEither {
				target = min(target, math.Log1p(rel))
			}
		}
		a.setGates(m, have, nc, se, tau, alpha, power, target, "requests", math.Expm1, func(x float64) string { return fmtPct(x, true) })
		a.summary = fmt.Sprintf("%s: %s [%s %s … %s]", counts, fmtPct(effect, true), level, fmtPct(float64(a.ev.Lower), true), fmtPct(float64(a.ev.Upper), true))
		if n == 0 {
			a.summary = counts + ": no events in either arm yet"
		}
		return a
	}

	d := m.Margin.Absolute
	a.ev.Unit = UnitAbsolute
	a.ev.Boundary = Float(d)
	if dir == DirectionDecrease {
		a.ev.Boundary = Float(-d)
	}
	sb, sc := (eb+1)/(nb+2), (ec+1)/(nc+2)
	se := math.Sqrt(sb*(1-sb)/nb + sc*(1-sc)/nc)
	est := rc - rb
	a.setTests(decisionTests(dir, est, se, d, d, -d))
	r := mixRadius(se, d, alpha)
	a.ev.Effect, a.ev.Lower, a.ev.Upper = Float(est), Float(est-r), Float(est+r)
	a.setGates(m, have, nc, se, d, alpha, power, d, "requests", identity, func(x float64) string { return fmtNum(x, true) })
	a.summary = fmt.Sprintf("%s: %s [%s %s … %s]", counts, fmtNum(est, true), level, fmtNum(est-r, true), fmtNum(est+r, true))
	return a
}

// span is one histogram bucket as a range with its count; lo == hi is a point
// mass (the +Inf bucket is a point at +Inf).
type span struct{ lo, hi, w float64 }

// histogramSpans turns cumulative Prometheus buckets into spans: duplicates
// summed, sorted by bound, counts made monotone (as histogram_quantile does),
// non-finite entries dropped. The first bucket starts at 0 when its bound is
// positive; observations are taken as uniform within a bucket, the
// assumption histogram_quantile makes too.
func histogramSpans(bs []Bucket) (spans []span, total float64, dropped int) {
	byBound := map[float64]float64{}
	for _, b := range bs {
		if math.IsNaN(b.UpperBound) || math.IsInf(b.UpperBound, -1) || !finite(b.Count) || b.Count < 0 {
			dropped++
			continue
		}
		byBound[b.UpperBound] += b.Count
	}
	bounds := make([]float64, 0, len(byBound))
	for ub := range byBound {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	prevBound, prevCum := 0.0, 0.0
	for i, ub := range bounds {
		cum := max(byBound[ub], prevCum)
		w := cum - prevCum
		lo := prevBound
		switch {
		case math.IsInf(ub, 1):
			lo = ub
		case i == 0 && ub <= 0:
			lo = ub
		case i == 0:
			lo = 0
		}
		if w > 0 {
			spans = append(spans, span{lo: lo, hi: ub, w: w})
		}
		prevBound, prevCum = ub, cum
	}
	return spans, prevCum, dropped
}

// above returns P(X > Y) + ½·P(X = Y) for X uniform on x and Y uniform on y
// (point masses where lo == hi).
func above(x, y span) float64 {
	xp, yp := x.lo == x.hi, y.lo == y.hi
	switch {
	case xp && yp:
		switch {
		case x.lo > y.lo:
			return 1
		case x.lo < y.lo:
			return 0
		}
		return 0.5
	case x.lo >= y.hi:
		return 1
	case x.hi <= y.lo:
		return 0
	case xp: // a point inside y's range
		return (x.lo - y.lo) / (y.hi - y.lo)
	case yp: // y a point inside x's range
		return (x.hi - y.lo) / (x.hi - x.lo)
	}
	// Both continuous and overlapping: the mean over x of Y's distribution
	// function, through its integral H.
	h := func(t float64) float64 {
		switch {
		case t <= y.lo:
			return 0
		case t >= y.hi:
			return (y.hi-y.lo)/2 + (t - y.hi)
		}
		return (t - y.lo) * (t - y.lo) / (2 * (y.hi - y.lo))
	}
	return (h(x.hi) - h(x.lo)) / (x.hi - x.lo)
}

// probabilisticIndex returns θ = P(C > B) + ½·P(C = B) for canary and
// baseline spans — the Mann–Whitney U statistic divided by n_c·n_b, exact on
// bucket counts with observations in a shared bucket tied — and its DeLong
// standard error from the variances of the placement values.
func probabilisticIndex(cs, bs []span, nc, nb float64, rowBuf, colBuf []float64) (theta, se float64) {
	rows := rowBuf[:len(cs)]
	cols := colBuf[:len(bs)]
	clear(rows)
	clear(cols)
	var u float64
	for i, x := range cs {
		// Spans are sorted: baseline spans wholly below x count 1, wholly
		// above count 0; only the overlapping ones need the formula.
		var row float64
		for j, y := range bs {
			var p float64
			switch {
			case y.hi < x.lo || (y.hi == x.lo && !(y.lo == y.hi && x.lo == x.hi)):
				p = 1
			case y.lo > x.hi || (y.lo == x.hi && !(y.lo == y.hi && x.lo == x.hi)):
				p = 0
			default:
				p = above(x, y)
			}
			if p == 0 {
				continue
			}
			row += y.w * p
			cols[j] += x.w * p
		}
		rows[i] = row
		u += x.w * row
	}
	theta = u / (nc * nb)
	if nc < 2 || nb < 2 {
		return theta, math.Inf(1)
	}
	var s10, s01 float64
	for i, x := range cs {
		d := rows[i]/nb - theta
		s10 += x.w * d * d
	}
	for j, y := range bs {
		d := cols[j]/nc - theta
		s01 += y.w * d * d
	}
	v := s10/(nc-1)/nc + s01/(nb-1)/nb
	// A floor of one pair's weight keeps perfectly separated small samples
	// from looking certain.
	v = max(v, 1/(nc*nb))
	return theta, math.Sqrt(v)
}

// shiftSpans moves baseline spans by the margin: scaled by factor, then
// offset by add. Points at +Inf stay there.
func shiftSpans(dst, bs []span, factor, add float64) []span {
	dst = dst[:0]
	for _, s := range bs {
		lo, hi := s.lo*factor+add, s.hi*factor+add
		if math.IsInf(s.lo, 1) {
			lo, hi = s.lo, s.hi
		}
		dst = append(dst, span{lo: lo, hi: hi, w: s.w})
	}
	return dst
}

// histogramQuantile returns the q quantile by linear interpolation within a
// bucket; a quantile in the +Inf bucket is the largest finite bound.
func histogramQuantile(spans []span, total, q float64) float64 {
	if total <= 0 || len(spans) == 0 {
		return math.NaN()
	}
	rank := q * total
	cum := 0.0
	lastFinite := math.NaN()
	for _, s := range spans {
		if !math.IsInf(s.hi, 1) {
			lastFinite = s.hi
		}
		if cum+s.w >= rank {
			if math.IsInf(s.hi, 1) {
				return lastFinite
			}
			if s.lo == s.hi {
				return s.hi
			}
			return s.lo + (s.hi-s.lo)*(rank-cum)/s.w
		}
		cum += s.w
	}
	return lastFinite
}

// analyzeHistogram compares latency-style distributions. Harm beyond a margin
// means the canary is stochastically larger than the baseline moved by the
// margin (scaled by 1+relative, or shifted by absolute): θ, the probability
// that a canary request is slower than a margin-moved baseline request,
// exceeds ½. θ is the Mann–Whitney statistic, exact on bucket counts with
// ties counted half; the normal mixture tests it against ½ with DeLong's
// standard error. Moving the baseline assumes observations uniform within a
// bucket, so coarse buckets blur the margin a little: with Prometheus's
// default buckets a 10 % relative margin acts like about 11 %.
func analyzeHistogram(m *Metric, ms *Measurement, alpha, power float64) analysis {
	ev := emptyEvidence(m)
	ev.Unit = UnitProbability
	ev.Boundary = 0.5
	if ms.Canary.Empty || ms.Baseline.Empty {
		arm := "canary"
		if !ms.Canary.Empty {
			arm = "baseline"
		}
		return noDataAnalysis(m, ev, "the "+arm+" histogram query returned no data")
	}
	cs, nc, dc := histogramSpans(ms.Canary.Buckets)
	bs, nb, db := histogramSpans(ms.Baseline.Buckets)
	ev.Dropped = dc + db
	switch {
	case nc <= 0:
		return noDataAnalysis(m, ev, "no canary observations in the histogram")
	case nb <= 0:
		return noDataAnalysis(m, ev, "no baseline observations in the histogram")
	}
	if len(cs) > maxHistogramBuckets || len(bs) > maxHistogramBuckets {
		return unusableAnalysis(ev, fmt.Sprintf("more than %d histogram buckets; aggregate the query by le", maxHistogramBuckets))
	}
	rel, abs := m.Margin.Relative, m.Margin.Absolute
	if rel != 0 && (bs[0].lo < 0 || cs[0].lo < 0) {
		return unusableAnalysis(ev, "a relative margin needs non-negative bucket bounds; use an absolute margin")
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		qb, qc := histogramQuantile(bs, nb, q), histogramQuantile(cs, nc, q)
		relShift := math.NaN()
		if qb > 0 {
			relShift = qc/qb - 1
		}
		ev.Quantiles = append(ev.Quantiles, QuantileShift{Quantile: Float(q), Baseline: Float(qb), Canary: Float(qc), Relative: Float(relShift)})
	}
	ev.Baseline = &ArmEstimate{Value: ev.Quantiles[0].Baseline, N: Float(nb)}
	ev.Canary = &ArmEstimate{Value: ev.Quantiles[0].Canary, N: Float(nc)}

	dir := m.direction()
	rows := make([]float64, len(cs))
	cols := make([]float64, len(bs))
	shifted := make([]span, 0, len(bs))
	var thHi, seHi, thLo, seLo float64
	if dir != DirectionDecrease {
		shifted = shiftSpans(shifted, bs, 1+rel, abs)
		thHi, seHi = probabilisticIndex(cs, shifted, nc, nb, rows, cols)
	}
	if dir != DirectionIncrease {
		shifted = shiftSpans(shifted, bs, 1-rel, -abs)
		thLo, seLo = probabilisticIndex(cs, shifted, nc, nb, rows, cols)
	}
	a := analysis{ev: ev, fmtMargin: fmtMarginOf(m)}
	tau := float64(histogramTau)
	var theta, se float64
	var logEFail, pPass float64
	switch dir {
	case DirectionDecrease:
		theta, se = thLo, seLo
		logEFail = mixLogE(thLo, seLo, 0.5, tau, false)
		pPass = pFromLogE(mixLogE(thLo, seLo, 0.5, tau, true))
	case DirectionEither:
		theta, se = thHi, seHi
		logEFail = stat.LogAddExp(mixLogE(thHi, seHi, 0.5, tau, true), mixLogE(thLo, seLo, 0.5, tau, false)) - math.Ln2
		pPass = max(pFromLogE(mixLogE(thHi, seHi, 0.5, tau, false)), pFromLogE(mixLogE(thLo, seLo, 0.5, tau, true)))
		se = max(seHi, seLo)
	default:
		theta, se = thHi, seHi
		logEFail = mixLogE(thHi, seHi, 0.5, tau, true)
		pPass = pFromLogE(mixLogE(thHi, seHi, 0.5, tau, false))
	}
	a.setTests(logEFail, pPass)
	r := mixRadius(se, tau, alpha)
	a.ev.Effect, a.ev.Lower, a.ev.Upper = Float(theta), Float(max(theta-r, 0)), Float(min(theta+r, 1))
	a.setGates(m, min(nb, nc), nc, se, tau, alpha, power, histogramSmallEffect, "observations", identity, func(x float64) string { return fmt.Sprintf("%.3f in probability", x) })
	q50, q99 := ev.Quantiles[0], ev.Quantiles[2]
	moved := "baseline" + a.fmtMargin
	if dir == DirectionEither {
		moved = "baseline" + fmtMarginOf(&Metric{Margin: m.Margin})
	}
	a.summary = fmt.Sprintf("p50 %s vs %s (%s), p99 %s vs %s (%s); P(canary above %s) = %.3f [%s %.3f … %.3f]",
		fmtNum(float64(q50.Canary), false), fmtNum(float64(q50.Baseline), false), fmtPct(float64(q50.Relative), true),
		fmtNum(float64(q99.Canary), false), fmtNum(float64(q99.Baseline), false), fmtPct(float64(q99.Relative), true),
		moved, theta, csLevel(alpha), float64(a.ev.Lower), float64(a.ev.Upper))
	return a
}

// seriesScratch holds buffers reused across the series metrics of one
// judgement, so long series do not allocate per metric.
type seriesScratch struct {
	tc, tb []int64
	pairs  [][2]float64
	xs     []float64
}

// millis returns the timestamps of ps in Unix milliseconds (Prometheus's
// resolution) and whether they are ascending.
func millis(dst []int64, ps []Point) ([]int64, bool) {
	dst = dst[:0]
	sorted := true
	for i, p := range ps {
		ms := p.T.UnixMilli()
		if i > 0 && ms < dst[i-1] {
			sorted = false
		}
		dst = append(dst, ms)
	}
	return dst, sorted
}

func sortedPoints(ps []Point) []Point {
	cp := slices.Clone(ps)
	slices.SortStableFunc(cp, func(a, b Point) int { return a.T.Compare(b.T) })
	return cp
}

// alignPoints pairs canary and baseline samples whose timestamps agree to
// the millisecond, dropping non-finite values, as (canary, baseline) pairs.
// The result aliases s's buffers.
func alignPoints(cp, bp []Point, s *seriesScratch) (pairs [][2]float64, dropped int) {
	if cap(s.pairs) < min(len(cp), len(bp)) {
		s.pairs = make([][2]float64, 0, max(len(cp), len(bp)))
	}
	// Fast path: range queries over the same window and step give both arms
	// identical timestamps, which pair by position whatever their order.
	if len(cp) == len(bp) {
		pairs = s.pairs[:0]
		same := true
		for i := range cp {
			if cp[i].T != bp[i].T {
				same = false
				break
			}
			cv, bv := cp[i].V, bp[i].V
			if finite(cv) && finite(bv) {
				pairs = append(pairs, [2]float64{cv, bv})
			} else {
				dropped++
			}
		}
		if same {
			s.pairs = pairs
			return pairs, dropped
		}
		dropped = 0
	}
	s.tc = slices.Grow(s.tc[:0], len(cp))
	s.tb = slices.Grow(s.tb[:0], len(bp))
	var okC, okB bool
	if s.tc, okC = millis(s.tc, cp); !okC {
		cp = sortedPoints(cp)
		s.tc, _ = millis(s.tc, cp)
	}
	if s.tb, okB = millis(s.tb, bp); !okB {
		bp = sortedPoints(bp)
		s.tb, _ = millis(s.tb, bp)
	}
	tc, tb := s.tc, s.tb
	pairs = s.pairs[:0]
	i, j := 0, 0
	for i < len(tc) && j < len(tb) {
		switch {
		case tc[i] < tb[j]:
			i++
			dropped++
		case tc[i] > tb[j]:
			j++
			dropped++
		default:
			cv, bv := cp[i].V, bp[j].V
			if finite(cv) && finite(bv) {
				pairs = append(pairs, [2]float64{cv, bv})
			} else {
				dropped++
			}
			i++
			j++
		}
	}
	dropped += len(tc) - i + len(tb) - j
	s.pairs = pairs
	return pairs, dropped
}

// serialMeanSE returns the mean of xs and a standard error that allows for
// autocorrelation, with its degrees of freedom. Gauges wander slowly, so
// neighbouring points are not independent and the plain standard error
// would be far too small. Two corrections are computed and the larger is
// kept: the AR(1) variance inflation (1+ρ)/(1−ρ), with the lag-1
// autocorrelation ρ bias-corrected for short series (Kendall's
// (1+4ρ)/n), and, beyond 20 points, non-overlapping batch means (⌊√n⌋
// batches) whose spread reflects correlation of any shape.
func serialMeanSE(xs []float64) (mean, se, df float64) {
	n := len(xs)
	fn := float64(n)
	for _, x := range xs {
		mean += x
	}
	mean /= fn
	var ss, lag float64
	for i, x := range xs {
		ss += (x - mean) * (x - mean)
		if i > 0 {
			lag += (x - mean) * (xs[i-1] - mean)
		}
	}
	if ss == 0 {
		return mean, 0, fn - 1
	}
	rho := lag / ss
	rho = min(max(rho+(1+4*max(rho, 0))/fn, 0), 0.95)
	inflate := (1 + rho) / (1 - rho)
	v := ss / (fn - 1) / fn * inflate
	df = max(fn/inflate-1, 1)
	if n >= 20 {
		b := int(math.Sqrt(fn))
		size := n / b
		var bss float64
		for k := range b {
			var bm float64
			for _, x := range xs[k*size : (k+1)*size] {
				bm += x
			}
			bm /= float64(size)
			bss += (bm - mean) * (bm - mean)
		}
		if bv := bss / float64(b-1) / float64(b); bv > v {
			v = bv
			df = min(df, float64(b-1))
		}
	}
	return mean, math.Sqrt(v), df
}

// analyzeSeries compares gauges through time-aligned differences. With an
// absolute margin the effect is the mean of canary−baseline; with a relative
// margin it is the log of the ratio of means, whose standard error comes from
// the per-point influence c/c̄ − b/b̄. Standard errors allow for
// autocorrelation (serialMeanSE) and are widened by the ratio of t to normal
// quantiles for their few degrees of freedom.
func analyzeSeries(m *Metric, ms *Measurement, alpha, power float64, s *seriesScratch) analysis {
	ev := emptyEvidence(m)
	if ms.Canary.Empty || ms.Baseline.Empty {
		arm := "canary"
		if !ms.Canary.Empty {
			arm = "baseline"
		}
		return noDataAnalysis(m, ev, "the "+arm+" series query returned no data")
	}
	pairs, dropped := alignPoints(ms.Canary.Points, ms.Baseline.Points, s)
	ev.Dropped = dropped
	n := len(pairs)
	if n < 2 {
		return noDataAnalysis(m, ev, fmt.Sprintf("%d time-aligned points with finite values in both arms", n))
	}
	var cm, bm float64
	for _, p := range pairs {
		cm += p[0]
		bm += p[1]
	}
	cm /= float64(n)
	bm /= float64(n)
	ev.Baseline = &ArmEstimate{Value: Float(bm), N: Float(n)}
	ev.Canary = &ArmEstimate{Value: Float(cm), N: Float(n)}
	dir := m.direction()
	a := analysis{ev: ev, fmtMargin: fmtMarginOf(m)}
	level := csLevel(alpha)
	widen := func(se, df float64) float64 {
		z := stat.NormalQuantile(1 - alpha/2)
		return se * stat.StudentTQuantile(1-alpha/2, df) / z
	}
	xs := slices.Grow(s.xs[:0], n)[:n]
	s.xs = xs
	if rel := m.Margin.Relative; rel != 0 {
		if !(cm > 0 && bm > 0) {
			return unusableAnalysis(ev, "a relative margin needs positive means in both arms; use an absolute margin")
		}
		a.ev.Unit = UnitRelative
		for i, p := range pairs {
			xs[i] = p[0]/cm - p[1]/bm
		}
		_, se, df := serialMeanSE(xs)
		se = max(widen(se, df), 1e-12)
		est := math.Log(cm / bm)
		hi, lo := math.Log1p(rel), math.Log(max(1-rel, 1e-9))
		tau := math.Log1p(rel)
		a.ev.Boundary = Float(rel)
		if dir == DirectionDecrease {
			a.ev.Boundary = Float(-rel)
		}
		a.setTests(decisionTests(dir, est, se, tau, hi, lo))
		r := mixRadius(se, tau, alpha)
		a.ev.Effect, a.ev.Lower, a.ev.Upper = Float(math.Expm1(est)), Float(math.Expm1(est-r)), Float(math.Expm1(est+r))
		target := hi
		if dir == DirectionDecrease {
			target = -lo
		} else if dir == DirectionEither {
			target = min(hi, -lo)
		}
		a.setGates(m, float64(n), float64(n), se, tau, alpha, power, target, "points", math.Expm1, func(x float64) string { return fmtPct(x, true) })
		a.summary = fmt.Sprintf("mean %s vs %s over %d aligned points: %s [%s %s … %s]", fmtNum(cm, false), fmtNum(bm, false), n,
			fmtPct(math.Expm1(est), true), level, fmtPct(math.Expm1(est-r), true), fmtPct(math.Expm1(est+r), true))
		return a
	}
	d := m.Margin.Absolute
	a.ev.Unit = UnitAbsolute
	for i, p := range pairs {
		xs[i] = p[0] - p[1]
	}
	est, se, df := serialMeanSE(xs)
	se = max(widen(se, df), 1e-12*max(math.Abs(cm), math.Abs(bm), d))
	a.ev.Boundary = Float(d)
	if dir == DirectionDecrease {
		a.ev.Boundary = Float(-d)
	}
	a.setTests(decisionTests(dir, est, se, d, d, -d))
	r := mixRadius(se, d, alpha)
	a.ev.Effect, a.ev.Lower, a.ev.Upper = Float(est), Float(est-r), Float(est+r)
	a.setGates(m, float64(n), float64(n), se, d, alpha, power, d, "points", identity, func(x float64) string { return fmtNum(x, true) })
	a.summary = fmt.Sprintf("mean %s vs %s over %d aligned points: %s [%s %s … %s]", fmtNum(cm, false), fmtNum(bm, false), n,
		fmtNum(est, true), level, fmtNum(est-r, true), fmtNum(est+r, true))
	return a
}

// csLevel names a confidence sequence's level for reasons: "95% CS" at
// alpha 0.05, "99.9% CS" at 0.001 (never rounded up to 100%).
func csLevel(alpha float64) string {
	return strconv.FormatFloat(math.Round(1e6*100*(1-alpha))/1e6, 'f', -1, 64) + "% CS"
}
