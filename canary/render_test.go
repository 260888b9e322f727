package canary

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func httpArgs() Args {
	return Args{
		BaselineScope: `track="stable"`,
		CanaryScope:   `track="canary"`,
		ExpectedSplit: 0.5,
		Values:        map[string]string{"service": "checkout"},
	}
}

func TestRenderMetric(t *testing.T) {
	tpl := readTemplate(t)
	tests := []struct {
		name   string
		metric int
		arm    Arm
		window time.Duration
		want   Queries
	}{
		{"ratio canary, default namespace", 0, ArmCanary, 5 * time.Minute, Queries{
			Numerator:   `sum(increase(http_requests_total{job="checkout", namespace="prod", track="canary", code=~"5.."}[300s]))`,
			Denominator: `sum(increase(http_requests_total{job="checkout", namespace="prod", track="canary"}[300s]))`,
		}},
		{"histogram baseline, window rounded up to seconds", 1, ArmBaseline, 90*time.Second + time.Millisecond, Queries{
			Query: `sum by (le) (increase(http_request_duration_seconds_bucket{job="checkout", track="stable"}[91s]))`,
		}},
		{"threshold uses the interval", 3, ArmCanary, time.Minute, Queries{
			Query: `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="checkout", track="canary"}[60s])))`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tpl.RenderMetric(tc.metric, httpArgs(), tc.arm, tc.window)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// A supplied value overrides the default.
	args := httpArgs()
	args.Values["namespace"] = "staging"
	got, err := tpl.RenderMetric(0, args, ArmBaseline, time.Minute)
	if err != nil || !strings.Contains(got.Numerator, `namespace="staging"`) || !strings.Contains(got.Numerator, `track="stable"`) {
		t.Errorf("got %+v, %v", got, err)
	}
	if _, err := tpl.RenderMetric(9, args, ArmBaseline, time.Minute); err == nil {
		t.Error("metric 9 rendered")
	}
}

func TestRenderMissingArgument(t *testing.T) {
	tpl := readTemplate(t)
	args := httpArgs()
	delete(args.Values, "service")
	_, err := tpl.RenderMetric(0, args, ArmCanary, time.Minute)
	ps := problemsOf(t, err)
	if !hasProblem(ps, "metrics[0].numerator", `argument "service" is used by the query but was not supplied`) {
		t.Errorf("problems %v", ps)
	}
}

func TestRenderEmptyQuery(t *testing.T) {
	tpl := &Template{Schedule: Schedule{Interval: Duration(time.Minute)}, Metrics: []Metric{{Name: "x", Kind: KindSeries, Query: "{{ if eq .arm \"none\" }}{{ .scope }}{{ end }}"}}}
	_, err := tpl.RenderMetric(0, Args{CanaryScope: "a"}, ArmCanary, time.Minute)
	if ps := problemsOf(t, err); !hasProblem(ps, "metrics[0].query", "empty once filled") {
		t.Errorf("problems %v", ps)
	}
}

func TestCheckArgs(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Args)
		field string
		frag  string
	}{
		{"missing required arg", func(a *Args) { delete(a.Values, "service") }, "values.service", `required by template "http-canary"`},
		{"undeclared value", func(a *Args) { a.Values["servce"] = "x" }, "values.servce", `declares no argument "servce"`},
		{"no canary scope", func(a *Args) { a.CanaryScope = "" }, "canaryScope", "required"},
		{"no baseline scope", func(a *Args) { a.BaselineScope = "" }, "baselineScope", "required"},
		{"same scopes", func(a *Args) { a.BaselineScope = a.CanaryScope }, "canaryScope", "compared with itself"},
		{"split out of range", func(a *Args) { a.ExpectedSplit = 1.5 }, "expectedSplit", "(0, 1)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := readTemplate(t)
			args := httpArgs()
			tc.edit(&args)
			if ps := problemsOf(t, tpl.CheckArgs(args)); !hasProblem(ps, tc.field, tc.frag) {
				t.Errorf("problems %v, want %s: …%s…", ps, tc.field, tc.frag)
			}
		})
	}
	tpl := readTemplate(t)
	if err := tpl.CheckArgs(httpArgs()); err != nil {
		t.Errorf("good args rejected: %v", err)
	}
	// A threshold-only template needs no baseline.
	th := &Template{Name: "th", Schedule: Schedule{Interval: Duration(time.Minute), Count: 1}, Metrics: []Metric{{Name: "p99", Kind: KindThreshold, Query: "q{ {{.scope}} }", Max: ptr(1.0)}}}
	if err := th.CheckArgs(Args{CanaryScope: "c"}); err != nil {
		t.Errorf("threshold-only template wants a baseline: %v", err)
	}
}

func TestRenderSampleRatio(t *testing.T) {
	tpl := readTemplate(t)
	q, err := tpl.RenderSampleRatio(httpArgs(), ArmBaseline, 2*time.Minute)
	if err != nil || q != `sum(increase(http_requests_total{job="checkout", track="stable"}[120s]))` {
		t.Errorf("got %q, %v", q, err)
	}
	tpl.SampleRatio.Query = ""
	if q, err := tpl.RenderSampleRatio(httpArgs(), ArmBaseline, time.Minute); q != "" || err != nil {
		t.Errorf("no query gives %q, %v", q, err)
	}
	var ve *ValidationError
	tpl.SampleRatio.Query = "{{ .missing }} {{ .scope }}"
	if _, err := tpl.RenderSampleRatio(httpArgs(), ArmBaseline, time.Minute); !errors.As(err, &ve) {
		t.Errorf("missing argument gives %v", err)
	}
}

func TestPlaceholders(t *testing.T) {
	got, err := placeholders(`{{ .a }} {{ if .b }}{{ $.c }}{{ else }}{{ .d.e }}{{ end }} {{ range .f }}{{ . }}{{ end }} {{ with .g }}x{{ end }} {{ printf "%s" .h }} {{ (.i).j }}`)
	if err != nil {
		t.Fatal(err)
	}
	want := "a b c d f g h i"
	if strings.Join(got, " ") != want {
		t.Errorf("placeholders = %v, want %s", got, want)
	}
	if _, err := placeholders("{{ .a "); err == nil {
		t.Error("bad syntax accepted")
	}
}
