package experiments

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// chartResults analyses a three-arm shop experiment: treatment "on" lifts
// conversion, "beta" harms latency.
func chartResults(mode Mode) Results {
	e := &Experiment{
		Key: "checkout-v2", FlagKey: "new-checkout", Control: "off", Treatments: []string{"on", "beta"},
		Metrics: []Metric{
			{Key: "purchase", Kind: KindConversion, Event: "purchase", Role: RoleGoal},
			{Key: "revenue", Kind: KindSum, Event: "purchase", Role: RoleSecondary, Cap: 500},
			{Key: "latency", Kind: KindMean, Event: "page_load", Role: RoleGuardrail, Direction: LowerIsBetter},
		},
		Analysis: Analysis{Mode: mode, TuningUsers: 60000},
	}
	if err := e.Start(t0); err != nil {
		panic(err)
	}
	s := newSim(7)
	s.users("off", 20000, shopUser(0.10, 0, 300))
	s.users("on", 20000, shopUser(0.12, 0.05, 300))
	s.users("beta", 20000, shopUser(0.10, 0, 330))
	return Analyze(e, s.obs, t0.Add(72*time.Hour))
}

// svgElements parses an SVG and counts its elements by name, failing on
// anything that is not well-formed XML or that could run code.
func svgElements(t testing.TB, svg []byte) (map[string]int, string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	d.Strict = true
	counts := map[string]int{}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v\n%s", err, svg)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			counts[el.Name.Local]++
			if el.Name.Local == "script" || el.Name.Local == "foreignObject" {
				t.Fatalf("the chart holds a <%s>", el.Name.Local)
			}
			for _, a := range el.Attr {
				if strings.HasPrefix(strings.ToLower(a.Name.Local), "on") || strings.Contains(a.Value, "NaN") || strings.Contains(a.Value, "Inf") {
					t.Fatalf("attribute %s=%q", a.Name.Local, a.Value)
				}
			}
		case xml.CharData:
			text.Write(el)
			text.WriteByte('\n')
		}
	}
	if counts["svg"] != 1 {
		t.Fatalf("%d <svg> elements", counts["svg"])
	}
	return counts, text.String()
}

func render(t testing.TB, r Results) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := EffectChart(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestEffectChart(t *testing.T) {
	for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
		t.Run(string(mode), func(t *testing.T) {
			r := chartResults(mode)
			svg := render(t, r)
			if dir := os.Getenv("FLAGPOLE_CHART_DIR"); dir != "" { // to look at it
				_ = os.WriteFile(dir+"/effects-"+string(mode)+".svg", svg, 0o644)
			}
			counts, text := svgElements(t, svg)
			for _, want := range []string{
				"Experiment checkout-v2",
				"purchase", "revenue", "latency", "GUARDRAIL", "on vs off", "beta vs off",
				"Health: healthy", "Ship on: it moved purchase", "better", "worse", "inconclusive",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("the chart's text lacks %q:\n%s", want, text)
				}
			}
			// One point per metric × treatment: circles for goal and
			// secondary rows, diamonds (paths) for the two guardrail rows.
			if got := strings.Count(string(svg), `r="5.5"`); got != 4 {
				t.Errorf("%d point markers, want 4", got)
			}
			if counts["title"] != 1 {
				t.Errorf("%d <title> elements, want 1", counts["title"])
			}
			lat := comparison(t, r, "latency", 1)
			if lat.Verdict != VerdictWorse {
				t.Fatalf("test data: beta's latency verdict %q", lat.Verdict)
			}
			if !strings.Contains(string(svg), verdictColours[VerdictWorse]) || !strings.Contains(string(svg), verdictColours[VerdictBetter]) {
				t.Error("the verdict colours are missing")
			}
			if rc := r.Recommendation; !strings.Contains(text, describeRecommendation(rc)) {
				t.Errorf("the recommendation %q is not shown", rc.Reason)
			}
		})
	}
}

func TestEffectChartEdgeCases(t *testing.T) {
	one := 1.0
	nan := math.NaN()
	tests := []struct {
		name     string
		r        Results
		wantText []string
	}{
		{name: "zero results", r: Results{}, wantText: []string{"No metric comparisons to show yet."}},
		{
			name: "no data",
			r: Analyze(&Experiment{Key: "empty", FlagKey: "f", Control: "a", Treatments: []string{"b"},
				Metrics: []Metric{{Key: "m", Kind: KindConversion, Event: "e", Role: RoleGoal}}}, Observations{}, t0),
			wantText: []string{"m", "no estimate yet", "insufficient data", "no data yet"},
		},
		{
			name: "non-finite and one-sided intervals",
			r: Results{Experiment: "x", Alpha: nan, Metrics: []MetricResult{{
				Key: "m", Role: RoleGuardrail,
				Comparisons: []Comparison{
					{Treatment: "inf-upper", Relative: &Estimate{Value: 0.1, Lower: 0.01, Upper: math.Inf(1)}, PValue: &nan, Verdict: VerdictBetter},
					{Treatment: "inf-lower", Relative: &Estimate{Value: -0.1, Lower: math.Inf(-1), Upper: -0.02}, HarmPValue: &one, Verdict: VerdictWorse},
					{Treatment: "nan", Relative: &Estimate{Value: nan, Lower: nan, Upper: nan}, Verdict: "bogus"},
					{Treatment: "huge", Relative: &Estimate{Value: 50, Lower: -40, Upper: 1e300}, Verdict: VerdictInconclusive},
					{Treatment: "absolute only", Absolute: &Estimate{Value: 2, Lower: 1, Upper: 3}, Verdict: VerdictInconclusive},
				},
			}}},
			wantText: []string{"inf-upper", "+∞", "−∞", "no estimate yet", "no relative effect (control is 0)", "Δ 2  [1, 3]"},
		},
		{
			name: "hostile text",
			r: Results{Experiment: "<script>alert(1)</script>\x00\x1b", Recommendation: Recommendation{Action: "x", Reason: strings.Repeat("long ", 100)},
				Health:  Health{Problems: []string{"</text><script>", "\ufffe"}},
				Metrics: []MetricResult{{Key: "]]>&amp;", Arms: []ArmSummary{{Variant: "<c>"}}, Comparisons: []Comparison{{Treatment: "'t'"}}}}},
			wantText: []string{"<script>alert(1)</script>", "]]>&amp;", "'t' vs <c>", "…"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svg := render(t, tc.r)
			_, text := svgElements(t, svg)
			for _, want := range tc.wantText {
				if !strings.Contains(text, want) {
					t.Errorf("the chart's text lacks %q:\n%s", want, text)
				}
			}
		})
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestEffectChartWriteError(t *testing.T) {
	boom := errors.New("disk full")
	if err := EffectChart(failingWriter{boom}, chartResults(ModeSequential)); !errors.Is(err, boom) {
		t.Fatalf("error %v, want the writer's", err)
	}
}

func TestAxisTicks(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float64
		want   []float64
	}{
		{name: "percent range", lo: -0.031, hi: 0.12, want: []float64{-0.025, 0, 0.025, 0.05, 0.075, 0.1}},
		{name: "empty range", lo: 1, hi: 1, want: nil},
		{name: "reversed", lo: 1, hi: 0, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := axisTicks(tc.lo, tc.hi)
			if len(got) != len(tc.want) {
				t.Fatalf("ticks %v, want %v", got, tc.want)
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-12 {
					t.Fatalf("ticks %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"lift", fmtPct(0.1234, true), "+12.3%"},
		{"drop", fmtPct(-0.0042, true), "−0.42%"},
		{"zero", fmtPct(-0.00001, true), "0%"},
		{"big", fmtPct(2.5, true), "+250%"},
		{"thousands", fmtThousands(1234567), "1,234,567"},
		{"small", fmtThousands(999), "999"},
		{"p tiny", fmtP(1e-9), "< 0.0001"},
		{"p", fmtP(0.0312), "= 0.031"},
		{"p small", fmtP(0.0042), "= 0.0042"},
		{"cut", cutText("héllo wörld", 5), "héllo…"},
		{"no cut", cutText("héllo", 5), "héllo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// randomResults builds arbitrary Results, with the odd numbers Analyze
// never produces but a hand-built or decoded value might hold.
func randomResults(r *rand.Rand) Results {
	odd := []float64{0, 1, -1, 1e-300, 1e300, -1e300, math.NaN(), math.Inf(1), math.Inf(-1), 0.05, -0.5}
	f := func() float64 {
		if r.IntN(3) == 0 {
			return odd[r.IntN(len(odd))]
		}
		return r.NormFloat64() * math.Pow(10, float64(r.IntN(6)-3))
	}
	fp := func() *float64 {
		if r.IntN(3) == 0 {
			return nil
		}
		v := f()
		return &v
	}
	est := func() *Estimate {
		if r.IntN(4) == 0 {
			return nil
		}
		return &Estimate{Value: f(), StdErr: f(), Lower: f(), Upper: f()}
	}
	str := func() string {
		const alphabet = "ab<>&\"'\x00\x7f\u00e9\ufffe\U0001F600 ]]>"
		rs := []rune(alphabet)
		n := r.IntN(12)
		out := make([]rune, n)
		for i := range out {
			out[i] = rs[r.IntN(len(rs))]
		}
		return string(out)
	}
	res := Results{Experiment: str(), Mode: []Mode{ModeSequential, ModeFixed, ModeBayesian, "x"}[r.IntN(4)], Alpha: f(),
		Users: r.Int64N(1e9) - 5, Crossovers: r.Int64N(100) - 5,
		Health:         Health{Status: HealthStatus(str()), CrossoverRate: f(), SRM: SRM{PValue: f()}, Problems: []string{str()}},
		Recommendation: Recommendation{Action: []Action{ActionShip, ActionRollback, ActionKeepRunning, ActionUnhealthy}[r.IntN(4)], Variant: str(), Reason: str()}}
	for range r.IntN(4) {
		res.Arms = append(res.Arms, ArmTraffic{Variant: str(), Users: r.Int64N(1000)})
	}
	for range r.IntN(5) {
		m := MetricResult{Key: str(), Role: []Role{RoleGoal, RoleSecondary, RoleGuardrail, ""}[r.IntN(4)], Direction: Direction(str())}
		for range r.IntN(3) {
			m.Arms = append(m.Arms, ArmSummary{Variant: str()})
		}
		for range r.IntN(4) {
			m.Comparisons = append(m.Comparisons, Comparison{Treatment: str(), Absolute: est(), Relative: est(),
				PValue: fp(), AdjustedPValue: fp(), HarmPValue: fp(), ChanceToWin: fp(),
				Verdict: []Verdict{VerdictBetter, VerdictWorse, VerdictInconclusive, VerdictNoData, Verdict(str())}[r.IntN(5)]})
		}
		res.Metrics = append(res.Metrics, m)
	}
	return res
}

// FuzzEffectChart draws arbitrary Results: never a panic, always
// well-formed XML without scripts or non-finite coordinates.
func FuzzEffectChart(f *testing.F) {
	for _, seed := range []uint64{1, 2, 3, 42, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		r := randomResults(rand.New(rand.NewPCG(seed, seed*31+7)))
		svgElements(t, render(t, r))
	})
}

func TestEffectChartRandomResults(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	for range 300 {
		svgElements(t, render(t, randomResults(rng)))
	}
}
