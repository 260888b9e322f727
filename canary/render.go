package canary

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// Arm is one side of the comparison.
type Arm string

// The two arms.
const (
	ArmBaseline Arm = "baseline"
	ArmCanary   Arm = "canary"
)

// Args are what a run supplies to its template's queries.
type Args struct {
	// BaselineScope and CanaryScope fill {{ .scope }} for each arm, typically
	// label matchers such as `app="checkout",track="stable"`.
	BaselineScope string `json:"baselineScope"`
	CanaryScope   string `json:"canaryScope"`
	// ExpectedSplit is the canary's expected share of the two arms' traffic,
	// in (0, 1); 0 skips the sample-ratio check.
	ExpectedSplit float64 `json:"expectedSplit,omitempty"`
	// Values fill the template's declared args.
	Values map[string]string `json:"values,omitempty"`
}

// Queries are one metric's queries for one arm with every placeholder filled.
// Query is set for threshold, histogram and series metrics; Numerator and
// Denominator for ratio metrics.
type Queries struct {
	Query       string `json:"query,omitempty"`
	Numerator   string `json:"numerator,omitempty"`
	Denominator string `json:"denominator,omitempty"`
}

// promDuration formats d for PromQL as whole seconds, at least 1s.
func promDuration(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	return fmt.Sprintf("%ds", max(s, 1))
}

// checkQuery parses a query template and reports syntax errors and
// placeholders that are neither reserved nor declared. perArm asks that the
// query depend on the arm ({{ .scope }} or {{ .arm }}), since a query that
// reads the same data for both arms compares a thing with itself.
func checkQuery(path, text string, declared map[string]bool, perArm bool, p *problems) {
	names, err := placeholders(text)
	if err != nil {
		p.add(path, "template syntax: %v", err)
		return
	}
	armed := false
	for _, n := range names {
		switch {
		case n == "scope" || n == "arm":
			armed = true
		case slices.Contains(reservedPlaceholders, n) || declared[n]:
		default:
			p.add(path, "unknown placeholder {{ .%s }}: declare it under args, or use one of %s", n, strings.Join(reservedPlaceholders, ", "))
		}
	}
	if perArm && !armed {
		p.add(path, "does not use {{ .scope }} or {{ .arm }}, so both arms would read the same data")
	}
}

// placeholders returns the top-level names a query template refers to, in
// order of first use.
func placeholders(text string) ([]string, error) {
	t, err := template.New("q").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	var names []string
	seen := map[string]bool{}
	note := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			note(n.Ident[0])
		case *parse.VariableNode:
			if n.Ident[0] == "$" && len(n.Ident) > 1 {
				note(n.Ident[1])
			}
		case *parse.ChainNode:
			walk(n.Node)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return names, nil
}

// CheckArgs checks run arguments against the template: scopes present and
// distinct, every declared arg without a default supplied, no undeclared
// values, a sensible split, and every query rendering for both arms. It
// returns a *ValidationError naming each problem ("values.service",
// "metrics[0].numerator"), or nil.
func (t *Template) CheckArgs(args Args) error {
	var p problems
	needBaseline := false
	for _, m := range t.Metrics {
		if m.Kind != KindThreshold {
			needBaseline = true
		}
	}
	if args.CanaryScope == "" {
		p.add("canaryScope", "required")
	}
	if needBaseline && args.BaselineScope == "" {
		p.add("baselineScope", "required: the template compares the canary with a baseline")
	}
	if needBaseline && args.CanaryScope != "" && args.CanaryScope == args.BaselineScope {
		p.add("canaryScope", "is the same as baselineScope; the canary would be compared with itself")
	}
	if args.ExpectedSplit != 0 && !(args.ExpectedSplit > 0 && args.ExpectedSplit < 1) {
		p.add("expectedSplit", "must be the canary's share of traffic, in (0, 1), or 0 to skip the sample-ratio check")
	}
	declared := map[string]bool{}
	for _, a := range t.Args {
		declared[a.Name] = true
		if _, ok := args.Values[a.Name]; !ok && a.Default == nil {
			p.add("values."+a.Name, "required by template %q but not supplied", t.Name)
		}
	}
	for _, k := range sortedKeys(args.Values) {
		if !declared[k] {
			p.add("values."+k, "template %q declares no argument %q", t.Name, k)
		}
	}
	if len(p) > 0 {
		return p.err()
	}
	for i := range t.Metrics {
		for _, arm := range []Arm{ArmBaseline, ArmCanary} {
			if arm == ArmBaseline && t.Metrics[i].Kind == KindThreshold {
				continue
			}
			if _, err := t.RenderMetric(i, args, arm, time.Minute); err != nil {
				if ve, ok := err.(*ValidationError); ok {
					p = append(p, ve.Problems...)
				}
			}
		}
	}
	if t.SampleRatio.Query != "" {
		if _, err := t.RenderSampleRatio(args, ArmCanary, time.Minute); err != nil {
			if ve, ok := err.(*ValidationError); ok {
				p = append(p, ve.Problems...)
			}
		}
	}
	return p.err()
}

// data returns the placeholder values of one arm.
func (t *Template) data(args Args, arm Arm, window time.Duration) map[string]any {
	d := make(map[string]any, len(t.Args)+len(reservedPlaceholders))
	for _, a := range t.Args {
		if a.Default != nil {
			d[a.Name] = *a.Default
		}
	}
	for k, v := range args.Values {
		d[k] = v
	}
	scope := args.BaselineScope
	if arm == ArmCanary {
		scope = args.CanaryScope
	}
	d["scope"] = scope
	d["arm"] = string(arm)
	d["window"] = promDuration(window)
	d["interval"] = promDuration(t.Schedule.Interval.D())
	return d
}

// render fills one query template; a missing argument or an execution error
// is a *ValidationError naming field.
func render(field, text string, data map[string]any) (string, error) {
	var p problems
	names, err := placeholders(text)
	if err != nil {
		p.add(field, "template syntax: %v", err)
		return "", p.err()
	}
	for _, n := range names {
		if _, ok := data[n]; !ok {
			p.add(field, "argument %q is used by the query but was not supplied", n)
		}
	}
	if len(p) > 0 {
		return "", p.err()
	}
	tt, _ := template.New(field).Option("missingkey=error").Parse(text)
	var b strings.Builder
	if err := tt.Execute(&b, data); err != nil {
		p.add(field, "filling the query: %v", err)
		return "", p.err()
	}
	q := strings.TrimSpace(b.String())
	if q == "" {
		p.add(field, "the query is empty once filled")
		return "", p.err()
	}
	return q, nil
}

// RenderMetric fills the queries of metric i for one arm, with window as the
// lookback ({{ .window }}). A missing argument or an index out of range is a
// *ValidationError naming the field, e.g. `metrics[0].numerator: argument
// "service" is used by the query but was not supplied`.
func (t *Template) RenderMetric(i int, args Args, arm Arm, window time.Duration) (Queries, error) {
	if i < 0 || i >= len(t.Metrics) {
		var p problems
		p.add("metrics", "no metric %d (the template has %d)", i, len(t.Metrics))
		return Queries{}, p.err()
	}
	m := &t.Metrics[i]
	data := t.data(args, arm, window)
	path := fmt.Sprintf("metrics[%d]", i)
	var (
		q   Queries
		err error
	)
	if m.Kind == KindRatio {
		if q.Numerator, err = render(path+".numerator", m.Numerator, data); err != nil {
			return Queries{}, err
		}
		q.Denominator, err = render(path+".denominator", m.Denominator, data)
	} else {
		q.Query, err = render(path+".query", m.Query, data)
	}
	if err != nil {
		return Queries{}, err
	}
	return q, nil
}

// RenderSampleRatio fills the sample-ratio traffic query for one arm. It
// returns "" without error when the template has none, and a
// *ValidationError when an argument is missing.
func (t *Template) RenderSampleRatio(args Args, arm Arm, window time.Duration) (string, error) {
	if t.SampleRatio.Query == "" {
		return "", nil
	}
	return render("sampleRatio.query", t.SampleRatio.Query, t.data(args, arm, window))
}
