package canary

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func readTemplate(t *testing.T) *Template {
	t.Helper()
	data, err := os.ReadFile("testdata/http-canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := ParseTemplate(data)
	if err != nil {
		t.Fatalf("ParseTemplate: %v", err)
	}
	return tpl
}

func TestParseTemplateYAMLAndJSON(t *testing.T) {
	tpl := readTemplate(t)
	if tpl.Name != "http-canary" || tpl.Version != 3 || len(tpl.Metrics) != 4 || len(tpl.Args) != 2 {
		t.Fatalf("parsed %+v", tpl)
	}
	m := tpl.Metrics[0]
	if m.Kind != KindRatio || m.Margin.Relative != 0.1 || !m.Critical || m.Weight != 2 || m.Group != "errors" {
		t.Errorf("error-rate metric = %+v", m)
	}
	if got := tpl.Metrics[2].Step.D(); got != 30*time.Second {
		t.Errorf("cpu step = %v, want 30s", got)
	}
	if tpl.Metrics[2].NoData != NoDataFail || !tpl.Metrics[3].DryRun || *tpl.Metrics[3].Max != 0.5 {
		t.Errorf("cpu/p99 = %+v / %+v", tpl.Metrics[2], tpl.Metrics[3])
	}
	s := tpl.Schedule
	if s.Interval.D() != time.Minute || s.Warmup.D() != 2*time.Minute || s.Deadline.D() != time.Hour || s.Undecided != OutcomeFail || *s.ConsecutiveErrorLimit != 3 {
		t.Errorf("schedule = %+v", s)
	}
	if tpl.Score.Groups["errors"] != 3 || tpl.SampleRatio.Tolerance != 0.2 {
		t.Errorf("score/sampleRatio = %+v / %+v", tpl.Score, tpl.SampleRatio)
	}
	// JSON written from the template parses back to the same template, and
	// so does YAML written from it.
	j, err := json.Marshal(tpl)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseTemplate(j)
	if err != nil {
		t.Fatalf("ParseTemplate(JSON): %v", err)
	}
	j2, _ := json.Marshal(again)
	if string(j) != string(j2) {
		t.Errorf("JSON round trip differs:\n%s\n%s", j, j2)
	}
	y, err := yaml.Marshal(tpl)
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := ParseTemplate(y)
	if err != nil {
		t.Fatalf("ParseTemplate(YAML): %v", err)
	}
	j3, _ := json.Marshal(fromYAML)
	if string(j) != string(j3) {
		t.Errorf("YAML round trip differs:\n%s\n%s", j, j3)
	}
}

// problemsOf returns the field paths and messages of a validation error.
func problemsOf(t *testing.T, err error) []FieldError {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *ValidationError", err)
	}
	return ve.Problems
}

func hasProblem(ps []FieldError, field, fragment string) bool {
	for _, p := range ps {
		if p.Field == field && strings.Contains(p.Message, fragment) {
			return true
		}
	}
	return false
}

const minimal = `
name: t
metrics:
  - name: errors
    kind: ratio
    numerator: errors{ {{.scope}} }
    denominator: requests{ {{.scope}} }
    margin: {relative: 0.1}
schedule: {interval: 1m, count: 5}
`

func TestParseTemplateMinimal(t *testing.T) {
	tpl, err := ParseTemplate([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if tpl.alpha() != DefaultAlpha || tpl.power() != DefaultPower || tpl.Metrics[0].weight() != 1 || tpl.Metrics[0].group() != DefaultGroup || tpl.Metrics[0].direction() != DirectionIncrease {
		t.Errorf("defaults not applied: %+v", tpl)
	}
}

func TestParseTemplateProblems(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		field string
		frag  string
	}{
		{"not YAML", "name: [unclosed", "", "not valid YAML or JSON"},
		{"empty", "", "", "empty"},
		{"not an object", "- a\n- b", "", "must be an object"},
		{"unknown field with hint", strings.Replace(minimal, "name: t", "name: t\nNAME: x", 1), "NAME", `did you mean "name"`},
		{"unknown field in a list element", strings.Replace(minimal, "kind: ratio", "kind: ratio\n    treshold: 3", 1), "metrics[0].treshold", "unknown field"},
		{"wrong type in a list element", strings.Replace(minimal, "kind: ratio", "kind: ratio\n    weight: heavy", 1), "metrics[0].weight", "must be a number"},
		{"bad duration", strings.Replace(minimal, "interval: 1m", "interval: 60", 1), "schedule.interval", "duration string"},
		{"malformed duration", strings.Replace(minimal, "interval: 1m", "interval: 1 minute", 1), "schedule.interval", "not a duration"},
		{"fractional count", strings.Replace(minimal, "count: 5", "count: 2.5", 1), "schedule.count", "whole number"},
		{"bool as string", strings.Replace(minimal, "kind: ratio", "kind: ratio\n    critical: yes please", 1), "metrics[0].critical", "true or false"},
		{"metrics not a list", "name: t\nmetrics: {a: 1}\nschedule: {interval: 1m, count: 1}", "metrics", "must be a list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := ParseTemplate([]byte(tc.doc))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", tpl)
			}
			if ps := problemsOf(t, err); !hasProblem(ps, tc.field, tc.frag) {
				t.Errorf("problems %v, want %s: …%s…", ps, tc.field, tc.frag)
			}
		})
	}
}

func TestParseTemplateTooLarge(t *testing.T) {
	big := minimal + "description: " + strings.Repeat("x", maxTemplateBytes) + "\n"
	_, err := ParseTemplate([]byte(big))
	if ps := problemsOf(t, err); !hasProblem(ps, "", "limit") {
		t.Errorf("problems %v", ps)
	}
}

// Validation reports every problem at once, each with its path.
func TestValidateReportsEveryProblem(t *testing.T) {
	doc := `
name: Bad_Name
alpha: 0.7
power: 0.3
args:
  - name: scope
  - name: svc
  - name: svc
  - name: "1x"
metrics:
  - name: a
    kind: ratio
    query: up
    margin: {relative: 0.1, absolute: 2}
  - name: a
    kind: histogram
    query: h{ {{ .nope }} }
    direction: sideways
    margin: {relative: -1}
    min: 3
  - name: t
    kind: threshold
    query: "q{ {{ .scope }"
    margin: {absolute: 1}
    direction: increase
    min: 5
    max: 1
  - name: s
    kind: series
    query: s{ {{.scope}} }
    numerator: x
    margin: {}
    critical: true
    dryRun: true
    weight: -1
    noData: maybe
    step: 10ms
  - name: k
    kind: gauge
  - name: d
    kind: series
    query: d{ {{.arm}} }
    direction: decrease
    margin: {relative: 1.5}
    group: "bad group"
schedule:
  interval: 500ms
  count: -1
  warmup: -1s
  lookback: {mode: sliding}
  failureLimit: -1
  inconclusiveLimit: -2
  consecutiveErrorLimit: -3
  deadline: -1s
  undecided: maybe
score:
  pass: 50
  marginal: 80
  groups: {ghosts: 1, default: 0}
sampleRatio:
  tolerance: 1
  alpha: 2
  query: requests
`
	_, err := ParseTemplate([]byte(doc))
	ps := problemsOf(t, err)
	want := []struct{ field, frag string }{
		{"name", "lowercase"},
		{"alpha", "(0, 0.5]"},
		{"power", "(0.5, 1)"},
		{"args[0].name", "reserved"},
		{"args[2].name", "declared twice"},
		{"args[3].name", "letter"},
		{"metrics[0].query", "numerator and denominator, not query"},
		{"metrics[0].numerator", "required"},
		{"metrics[0].denominator", "required"},
		{"metrics[0].margin", "not both"},
		{"metrics[1].name", "used by another metric"},
		{"metrics[1].query", "unknown placeholder {{ .nope }}"},
		{"metrics[1].query", "does not use {{ .scope }}"},
		{"metrics[1].direction", "not a direction"},
		{"metrics[1].margin.relative", "positive fraction"},
		{"metrics[1].min", "only threshold"},
		{"metrics[2].query", "template syntax"},
		{"metrics[2].margin", "min and max, not a margin"},
		{"metrics[2].direction", "not a direction"},
		{"metrics[2].min", "above max"},
		{"metrics[3].numerator", "only ratio"},
		{"metrics[3].margin", "required"},
		{"metrics[3].critical", "cannot be critical"},
		{"metrics[3].weight", "non-negative"},
		{"metrics[3].noData", "not a policy"},
		{"metrics[3].step", "at least 1s"},
		{"metrics[4].kind", "not a kind"},
		{"metrics[5].margin.relative", "below 1"},
		{"metrics[5].group", "must be letters"},
		{"schedule.interval", "at least 1s"},
		{"schedule.count", "negative"},
		{"schedule.warmup", "negative"},
		{"schedule.lookback.window", "at least the interval"},
		{"schedule.failureLimit", "negative"},
		{"schedule.inconclusiveLimit", "negative"},
		{"schedule.consecutiveErrorLimit", "negative"},
		{"schedule.deadline", "negative"},
		{"schedule.undecided", "not an outcome"},
		{"score.marginal", "above the pass threshold"},
		{"score.groups.ghosts", "no metric is in group"},
		{"score.groups.default", "positive"},
		{"sampleRatio.tolerance", "[0, 1)"},
		{"sampleRatio.alpha", "(0, 0.5]"},
		{"sampleRatio.query", "does not use {{ .scope }}"},
	}
	for _, w := range want {
		if !hasProblem(ps, w.field, w.frag) {
			t.Errorf("missing problem %s: …%s…", w.field, w.frag)
		}
	}
	if len(ps) < len(want) {
		t.Errorf("got %d problems, want at least %d: %v", len(ps), len(want), ps)
	}
}

func TestValidateSchedule(t *testing.T) {
	tests := []struct {
		name  string
		s     Schedule
		field string
		frag  string
	}{
		{"interval required", Schedule{Count: 1}, "schedule.interval", "required"},
		{"until decided needs a deadline", Schedule{Interval: Duration(time.Minute)}, "schedule.deadline", "required when count is 0"},
		{"deadline too short", Schedule{Interval: Duration(time.Minute), Warmup: Duration(time.Minute), Deadline: Duration(2 * time.Minute)}, "schedule.deadline", "no room"},
		{"growing with window", Schedule{Interval: Duration(time.Minute), Count: 1, Lookback: Lookback{Window: Duration(time.Hour)}}, "schedule.lookback.window", "only a sliding"},
		{"bad mode", Schedule{Interval: Duration(time.Minute), Count: 1, Lookback: Lookback{Mode: "rolling"}}, "schedule.lookback.mode", "not a mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl, _ := ParseTemplate([]byte(minimal))
			tpl.Schedule = tc.s
			if ps := problemsOf(t, tpl.Validate()); !hasProblem(ps, tc.field, tc.frag) {
				t.Errorf("problems %v, want %s: …%s…", ps, tc.field, tc.frag)
			}
		})
	}
	var nilTemplate *Template
	if err := nilTemplate.Validate(); err == nil {
		t.Error("nil template validated")
	}
}

func TestValidateOtherRules(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Template)
		field string
		frag  string
	}{
		{"no metrics", func(t *Template) { t.Metrics = nil }, "metrics", "at least one"},
		{"all dry run", func(t *Template) { t.Metrics[0].DryRun = true }, "metrics", "every metric is dryRun"},
		{"missing name", func(t *Template) { t.Name = "" }, "name", "required"},
		{"missing kind", func(t *Template) { t.Metrics[0].Kind = "" }, "metrics[0].kind", "required"},
		{"threshold without bounds", func(t *Template) {
			t.Metrics = append(t.Metrics, Metric{Name: "th", Kind: KindThreshold, Query: "x"})
		}, "metrics[1].max", "needs min, max or both"},
		{"NaN weight", func(t *Template) { t.Metrics[0].Weight = nan64() }, "metrics[0].weight", "non-negative"},
		{"infinite bound", func(t *Template) {
			t.Metrics = append(t.Metrics, Metric{Name: "th", Kind: KindThreshold, Query: "x", Max: ptr(inf)})
		}, "metrics[1].max", "finite"},
		{"histogram without query", func(t *Template) {
			t.Metrics = append(t.Metrics, Metric{Name: "h", Kind: KindHistogram, Margin: Margin{Absolute: 1}})
		}, "metrics[1].query", "required for a histogram"},
		{"negative absolute margin", func(t *Template) { t.Metrics[0].Margin = Margin{Absolute: -1} }, "metrics[0].margin.absolute", "positive"},
		{"step on a ratio", func(t *Template) { t.Metrics[0].Step = Duration(time.Second) }, "metrics[0].step", "only series"},
		{"negative version", func(t *Template) { t.Version = -1 }, "version", "negative"},
		{"bad metric name", func(t *Template) { t.Metrics[0].Name = "a b" }, "metrics[0].name", "letters"},
		{"negative minSamples", func(t *Template) { t.Metrics[0].MinSamples = -1 }, "metrics[0].minSamples", "non-negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl, _ := ParseTemplate([]byte(minimal))
			tc.edit(tpl)
			if ps := problemsOf(t, tpl.Validate()); !hasProblem(ps, tc.field, tc.frag) {
				t.Errorf("problems %v, want %s: …%s…", ps, tc.field, tc.frag)
			}
		})
	}
}

func nan64() float64 { return math.NaN() }

// FuzzParseTemplate: arbitrary input never panics, and whatever parses
// validates and survives a JSON round trip.
func FuzzParseTemplate(f *testing.F) {
	data, _ := os.ReadFile("testdata/http-canary.yaml")
	f.Add(data)
	f.Add([]byte(minimal))
	f.Add([]byte(`{"name":"x","metrics":[{"name":"a","kind":"series","query":"{{.scope}}","margin":{"absolute":1}}],"schedule":{"interval":"1s","count":1}}`))
	f.Add([]byte("metrics: [1, {kind: [2]}]\nschedule: 3"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tpl, err := ParseTemplate(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %v is not a non-empty *ValidationError", err)
			}
			return
		}
		if err := tpl.Validate(); err != nil {
			t.Fatalf("parsed template does not validate: %v", err)
		}
		j, err := json.Marshal(tpl)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := ParseTemplate(j); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
