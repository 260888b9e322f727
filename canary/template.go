package canary

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Kind is how a metric is measured and judged.
type Kind string

// The metric kinds.
const (
	// KindThreshold bounds the canary's value absolutely (min and/or max),
	// without a baseline, as Flagger and Argo Rollouts do.
	KindThreshold Kind = "threshold"
	// KindRatio compares event rates (errors per request) from numerator and
	// denominator counters per arm, judged on the counts themselves.
	KindRatio Kind = "ratio"
	// KindHistogram compares latency-style distributions from Prometheus
	// histogram buckets per arm.
	KindHistogram Kind = "histogram"
	// KindSeries compares gauges (CPU, memory) as time-aligned
	// canary−baseline differences.
	KindSeries Kind = "series"
)

// Direction says which change of a metric is harmful.
type Direction string

// The directions; the zero value means DirectionIncrease.
const (
	DirectionIncrease Direction = "increase" // more is worse: errors, latency
	DirectionDecrease Direction = "decrease" // less is worse: throughput, success
	DirectionEither   Direction = "either"   // any change beyond the margin is harm
)

// NoDataPolicy says what a metric with no data from an arm is judged as.
type NoDataPolicy string

// The no-data policies; the zero value means NoDataInconclusive.
const (
	NoDataInconclusive NoDataPolicy = "inconclusive"
	NoDataFail         NoDataPolicy = "fail"
)

// LookbackMode says which data each measurement of a run looks at.
type LookbackMode string

// The lookback modes; the zero value means LookbackGrowing.
const (
	// LookbackGrowing measures from the end of warm-up to now, so evidence
	// accumulates and the sequential tests keep their guarantee across looks.
	LookbackGrowing LookbackMode = "growing"
	// LookbackSliding measures the last Lookback.Window only: quicker to
	// forget a transient, but each look is then a fresh test.
	LookbackSliding LookbackMode = "sliding"
)

// Outcome is how a run that ends without a decision is recorded.
type Outcome string

// The outcomes for undecided runs; the zero value means OutcomeInconclusive.
const (
	OutcomeInconclusive Outcome = "inconclusive"
	OutcomeFail         Outcome = "fail"
)

// Template is a named, versioned analysis: what to measure, how to judge it and
// on what schedule. Parse one with ParseTemplate, or build one and call
// Validate. The zero values of optional fields mean the documented defaults.
type Template struct {
	Name        string `json:"name"`
	Version     int    `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
	// Args declares the run arguments the queries may use as {{ .name }}.
	Args []Arg `json:"args,omitempty"`
	// Alpha is the family-wise false-fail rate across all decision metrics
	// and all looks (default 0.05).
	Alpha float64 `json:"alpha,omitempty"`
	// Power is the power at which the minimum detectable effect is computed
	// (default 0.8).
	Power       float64     `json:"power,omitempty"`
	Metrics     []Metric    `json:"metrics"`
	Schedule    Schedule    `json:"schedule"`
	Score       Scoring     `json:"score,omitzero"`
	SampleRatio SampleRatio `json:"sampleRatio,omitzero"`
}

// Arg declares one run argument. An argument without a default must be
// supplied when a run starts.
type Arg struct {
	Name        string  `json:"name"`
	Default     *string `json:"default,omitempty"`
	Description string  `json:"description,omitempty"`
}

// Metric is one measured quantity.
type Metric struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Query is the PromQL template for threshold, histogram and series
	// metrics. A histogram query returns cumulative bucket counts labelled
	// "le" (e.g. sum by (le) (increase(x_bucket{ {{.scope}} }[{{.window}}]))).
	Query string `json:"query,omitempty"`
	// Numerator and Denominator are a ratio metric's counter queries
	// (e.g. errors and requests over {{ .window }}).
	Numerator   string `json:"numerator,omitempty"`
	Denominator string `json:"denominator,omitempty"`
	// Step is a series metric's range-query resolution (default 1m).
	Step      Duration  `json:"step,omitempty"`
	Direction Direction `json:"direction,omitempty"`
	// Margin is the harm margin: how much worse than baseline the canary may
	// be and still pass. Exactly one of relative and absolute, for every
	// kind but threshold.
	Margin Margin `json:"margin,omitzero"`
	// Min and Max bound a threshold metric's canary value.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// Critical makes this metric's failure fail the whole analysis.
	Critical bool `json:"critical,omitempty"`
	// Weight within its group for the score (0 means 1).
	Weight float64 `json:"weight,omitempty"`
	// Group for the score (default "default").
	Group string `json:"group,omitempty"`
	// DryRun metrics are judged and reported but never decide.
	DryRun bool         `json:"dryRun,omitempty"`
	NoData NoDataPolicy `json:"noData,omitempty"`
	// MinSamples is the least sample per arm before any decision: requests
	// for ratio, observations for histogram, aligned points for series
	// (defaults 100, 30 and 20).
	MinSamples float64 `json:"minSamples,omitempty"`
}

// Margin is a harm margin; exactly one field is set. Relative is a fraction
// of the baseline (0.1 = 10 %); Absolute is in the metric's own unit.
type Margin struct {
	Relative float64 `json:"relative,omitempty"`
	Absolute float64 `json:"absolute,omitempty"`
}

// Schedule says when a run measures and when it stops.
type Schedule struct {
	// Interval between measurements (required).
	Interval Duration `json:"interval"`
	// Count of measurements; 0 runs until decided (and needs a Deadline).
	Count int `json:"count,omitempty"`
	// Warmup is the delay before the first data counts.
	Warmup   Duration `json:"warmup,omitempty"`
	Lookback Lookback `json:"lookback,omitzero"`
	// FailureLimit is how many failed measurements are tolerated; one more
	// fails the run (default 0: the first failure does).
	FailureLimit int `json:"failureLimit,omitempty"`
	// InconclusiveLimit, when set, ends the run as Inconclusive once that
	// many inconclusive measurements are exceeded (default: no limit).
	InconclusiveLimit *int `json:"inconclusiveLimit,omitempty"`
	// ConsecutiveErrorLimit is how many measurement errors in a row are
	// tolerated; one more ends the run as Error (default 4).
	ConsecutiveErrorLimit *int `json:"consecutiveErrorLimit,omitempty"`
	// Deadline, from the run's creation, after which a still-undecided run
	// ends as Undecided says.
	Deadline  Duration `json:"deadline,omitempty"`
	Undecided Outcome  `json:"undecided,omitempty"`
}

// Lookback is the data window of each measurement.
type Lookback struct {
	Mode LookbackMode `json:"mode,omitempty"`
	// Window is the sliding window's length.
	Window Duration `json:"window,omitempty"`
}

// Scoring configures the 0–100 score shown to humans. The score never
// decides a verdict.
type Scoring struct {
	// Pass and Marginal are score thresholds (defaults 95 and 75).
	Pass     float64 `json:"pass,omitempty"`
	Marginal float64 `json:"marginal,omitempty"`
	// Groups weighs metric groups (default: the sum of their metrics' weights).
	Groups map[string]float64 `json:"groups,omitempty"`
}

// SampleRatio configures the sample-ratio check of a run whose arguments
// give an expected split.
type SampleRatio struct {
	// Query counts each arm's traffic; without it the denominator of the first
	// decision ratio metric is used.
	Query string `json:"query,omitempty"`
	// Tolerance is the relative deviation of the canary's share tolerated
	// (0.1 = the share may be 10 % off the expected split).
	Tolerance float64 `json:"tolerance,omitempty"`
	// Alpha is the check's false-alarm rate across looks (default 0.001).
	Alpha float64 `json:"alpha,omitempty"`
}

// Defaults of optional settings.
const (
	DefaultAlpha                 = 0.05
	DefaultPower                 = 0.8
	DefaultScorePass             = 95
	DefaultScoreMarginal         = 75
	DefaultSampleRatioAlpha      = 0.001
	DefaultConsecutiveErrorLimit = 4
	DefaultStep                  = Duration(time.Minute)
	DefaultGroup                 = "default"
	maxTemplateBytes             = 1 << 20
)

// Placeholders every query may use besides the template's declared args:
// the arm's label scope, the arm's name, the lookback window and the
// schedule interval (both as Prometheus durations such as "300s").
var reservedPlaceholders = []string{"scope", "arm", "window", "interval"}

var (
	templateNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	metricNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.:-]{0,61}[A-Za-z0-9])?$`)
	argNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

// FieldError is one problem with one field, named by its path such as
// "metrics[2].margin.relative".
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// String returns "field: message", or the message alone for the whole document.
func (e FieldError) String() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError lists every problem found, in field order.
type ValidationError struct {
	Problems []FieldError `json:"problems"`
}

// Error lists every problem, separated by semicolons.
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid: " + strings.Join(parts, "; ")
}

type problems []FieldError

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}

// ParseTemplate decodes and validates a template written in YAML or JSON.
// On any problem it returns a *ValidationError naming every bad field (unknown
// fields, wrong types, bad values), never a partial template.
func ParseTemplate(data []byte) (*Template, error) {
	var p problems
	if len(data) > maxTemplateBytes {
		p.add("", "template is %d bytes; the limit is %d", len(data), maxTemplateBytes)
		return nil, p.err()
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		p.add("", "not valid YAML or JSON: %v", err)
		return nil, p.err()
	}
	var raw any
	if err := json.Unmarshal(j, &raw); err != nil {
		p.add("", "not valid YAML or JSON: %v", err)
		return nil, p.err()
	}
	if raw == nil {
		p.add("", "template is empty")
		return nil, p.err()
	}
	checkShape("", raw, reflect.TypeFor[Template](), &p)
	if len(p) > 0 {
		return nil, p.err()
	}
	var t Template
	if err := json.Unmarshal(j, &t); err != nil {
		p.add("", "%v", err)
		return nil, p.err()
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkShape compares decoded JSON against the Go type it will fill, reporting
// unknown fields and wrong types with their paths (encoding/json would stop at
// the first and name fields without list indices).
func checkShape(path string, v any, t reflect.Type, p *problems) {
	if v == nil {
		return
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		raw, _ := json.Marshal(v)
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			p.add(path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkShape(path, v, t.Elem(), p)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, "must be an object, not %s", describeJSON(v))
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				hint := ""
				for name := range fields {
					if strings.EqualFold(name, k) {
						hint = fmt.Sprintf(" (did you mean %q?)", name)
					}
				}
				p.add(joinPath(path, k), "unknown field%s", hint)
				continue
			}
			checkShape(joinPath(path, k), m[k], ft, p)
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			p.add(path, "must be a list, not %s", describeJSON(v))
			return
		}
		for i, e := range arr {
			checkShape(fmt.Sprintf("%s[%d]", path, i), e, t.Elem(), p)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, "must be an object, not %s", describeJSON(v))
			return
		}
		for _, k := range sortedKeys(m) {
			checkShape(joinPath(path, k), m[k], t.Elem(), p)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			p.add(path, "must be a string, not %s", describeJSON(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			p.add(path, "must be true or false, not %s", describeJSON(v))
		}
	case reflect.Float64:
		if _, ok := v.(float64); !ok {
			p.add(path, "must be a number, not %s", describeJSON(v))
		}
	case reflect.Int:
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			p.add(path, "must be a whole number, not %s", describeJSON(v))
		}
	}
}

func describeJSON(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "null"
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Validate checks the template's values and query templates. It returns a
// *ValidationError listing every problem with its field path, or nil.
func (t *Template) Validate() error {
	var p problems
	if t == nil {
		p.add("", "template is missing")
		return p.err()
	}
	switch {
	case t.Name == "":
		p.add("name", "required")
	case !templateNameRE.MatchString(t.Name):
		p.add("name", "%q must be lowercase letters, digits and '-', at most 63 characters", t.Name)
	}
	if t.Version < 0 {
		p.add("version", "must not be negative")
	}
	if t.Alpha != 0 && !(t.Alpha > 0 && t.Alpha <= 0.5) {
		p.add("alpha", "must be in (0, 0.5], e.g. 0.05")
	}
	if t.Power != 0 && !(t.Power > 0.5 && t.Power < 1) {
		p.add("power", "must be in (0.5, 1), e.g. 0.8")
	}
	declared := map[string]bool{}
	for i, a := range t.Args {
		path := fmt.Sprintf("args[%d].name", i)
		switch {
		case a.Name == "":
			p.add(path, "required")
		case !argNameRE.MatchString(a.Name):
			p.add(path, "%q must be a letter or '_' followed by letters, digits or '_'", a.Name)
		case slices.Contains(reservedPlaceholders, a.Name):
			p.add(path, "%q is reserved (the reserved placeholders are %s)", a.Name, strings.Join(reservedPlaceholders, ", "))
		case declared[a.Name]:
			p.add(path, "%q is declared twice", a.Name)
		}
		declared[a.Name] = true
	}
	if len(t.Metrics) == 0 {
		p.add("metrics", "at least one metric is required")
	}
	names := map[string]bool{}
	groups := map[string]bool{}
	decision := 0
	for i := range t.Metrics {
		m := &t.Metrics[i]
		m.validate(fmt.Sprintf("metrics[%d]", i), declared, names, &p)
		groups[m.group()] = true
		if !m.DryRun {
			decision++
		}
	}
	if len(t.Metrics) > 0 && decision == 0 {
		p.add("metrics", "every metric is dryRun; at least one must decide")
	}
	t.Schedule.validate("schedule", &p)
	s := t.Score
	for _, f := range []struct {
		name string
		v    float64
	}{{"score.pass", s.Pass}, {"score.marginal", s.Marginal}} {
		if !(f.v >= 0 && f.v <= 100) {
			p.add(f.name, "must be between 0 and 100")
		}
	}
	if t.scorePass() < t.scoreMarginal() {
		p.add("score.marginal", "%g is above the pass threshold %g", t.scoreMarginal(), t.scorePass())
	}
	for _, g := range sortedKeys(s.Groups) {
		if w := s.Groups[g]; !(w > 0) || !finite(w) {
			p.add("score.groups."+g, "weight must be a positive number")
		}
		if !groups[g] {
			p.add("score.groups."+g, "no metric is in group %q", g)
		}
	}
	sr := t.SampleRatio
	if !(sr.Tolerance >= 0 && sr.Tolerance < 1) {
		p.add("sampleRatio.tolerance", "must be in [0, 1), e.g. 0.1 for 10 %%")
	}
	if sr.Alpha != 0 && !(sr.Alpha > 0 && sr.Alpha <= 0.5) {
		p.add("sampleRatio.alpha", "must be in (0, 0.5], e.g. 0.001")
	}
	if sr.Query != "" {
		checkQuery("sampleRatio.query", sr.Query, declared, true, &p)
	}
	return p.err()
}

func (m *Metric) validate(path string, declared, names map[string]bool, p *problems) {
	at := func(f string) string { return path + "." + f }
	switch {
	case m.Name == "":
		p.add(at("name"), "required")
	case !metricNameRE.MatchString(m.Name):
		p.add(at("name"), "%q must be letters, digits, '_', '.', ':' or '-', at most 63 characters", m.Name)
	case names[m.Name]:
		p.add(at("name"), "%q is used by another metric", m.Name)
	}
	names[m.Name] = true
	threshold := m.Kind == KindThreshold
	switch m.Kind {
	case "":
		p.add(at("kind"), "required: threshold, ratio, histogram or series")
	case KindThreshold, KindHistogram, KindSeries:
		if m.Query == "" {
			p.add(at("query"), "required for a %s metric", m.Kind)
		} else {
			checkQuery(at("query"), m.Query, declared, !threshold, p)
		}
		if m.Numerator != "" {
			p.add(at("numerator"), "only ratio metrics have a numerator; use query")
		}
		if m.Denominator != "" {
			p.add(at("denominator"), "only ratio metrics have a denominator; use query")
		}
	case KindRatio:
		if m.Query != "" {
			p.add(at("query"), "a ratio metric uses numerator and denominator, not query")
		}
		for _, f := range []struct{ name, q string }{{"numerator", m.Numerator}, {"denominator", m.Denominator}} {
			if f.q == "" {
				p.add(at(f.name), "required for a ratio metric")
			} else {
				checkQuery(at(f.name), f.q, declared, true, p)
			}
		}
	default:
		p.add(at("kind"), "%q is not a kind: threshold, ratio, histogram or series", m.Kind)
	}
	if m.Step != 0 && m.Kind != KindSeries {
		p.add(at("step"), "only series metrics have a step")
	} else if m.Step != 0 && m.Step.D() < time.Second {
		p.add(at("step"), "must be at least 1s")
	}
	switch m.Direction {
	case "", DirectionIncrease, DirectionDecrease, DirectionEither:
		if threshold && m.Direction != "" {
			p.add(at("direction"), "a threshold metric uses min and max, not a direction")
		}
	default:
		p.add(at("direction"), "%q is not a direction: increase, decrease or either", m.Direction)
	}
	rel, abs := m.Margin.Relative, m.Margin.Absolute
	switch {
	case threshold:
		if rel != 0 || abs != 0 {
			p.add(at("margin"), "a threshold metric uses min and max, not a margin")
		}
		if m.Min == nil && m.Max == nil {
			p.add(at("max"), "a threshold metric needs min, max or both")
		}
		if m.Min != nil && !finite(*m.Min) {
			p.add(at("min"), "must be a finite number")
		}
		if m.Max != nil && !finite(*m.Max) {
			p.add(at("max"), "must be a finite number")
		}
		if m.Min != nil && m.Max != nil && *m.Min > *m.Max {
			p.add(at("min"), "%g is above max %g", *m.Min, *m.Max)
		}
	case m.Kind == "" || m.Kind == KindRatio || m.Kind == KindHistogram || m.Kind == KindSeries:
		if m.Min != nil {
			p.add(at("min"), "only threshold metrics have min; use margin")
		}
		if m.Max != nil {
			p.add(at("max"), "only threshold metrics have max; use margin")
		}
		switch {
		case rel != 0 && abs != 0:
			p.add(at("margin"), "set relative or absolute, not both")
		case rel == 0 && abs == 0:
			p.add(at("margin"), "required: relative (e.g. 0.1 for 10 %%) or absolute, in the metric's unit; a zero margin could never be shown")
		case rel != 0 && !(rel > 0 && finite(rel)):
			p.add(at("margin.relative"), "must be a positive fraction, e.g. 0.1 for 10 %%")
		case rel != 0 && m.Direction != "" && m.Direction != DirectionIncrease && rel >= 1:
			p.add(at("margin.relative"), "must be below 1 when a decrease is harmful (a fall of 100 %% or more is impossible)")
		case abs != 0 && !(abs > 0 && finite(abs)):
			p.add(at("margin.absolute"), "must be a positive number in the metric's unit")
		}
	}
	if m.Critical && m.DryRun {
		p.add(at("critical"), "a dryRun metric never decides, so it cannot be critical")
	}
	if !(m.Weight >= 0) || !finite(m.Weight) {
		p.add(at("weight"), "must be a non-negative number")
	}
	if m.Group != "" && !metricNameRE.MatchString(m.Group) {
		p.add(at("group"), "%q must be letters, digits, '_', '.', ':' or '-'", m.Group)
	}
	switch m.NoData {
	case "", NoDataInconclusive, NoDataFail:
	default:
		p.add(at("noData"), "%q is not a policy: inconclusive or fail", m.NoData)
	}
	if !(m.MinSamples >= 0) || !finite(m.MinSamples) {
		p.add(at("minSamples"), "must be a non-negative number")
	}
}

func (s *Schedule) validate(path string, p *problems) {
	at := func(f string) string { return path + "." + f }
	switch {
	case s.Interval == 0:
		p.add(at("interval"), `required, e.g. "1m"`)
	case s.Interval.D() < time.Second:
		p.add(at("interval"), "must be at least 1s")
	}
	if s.Count < 0 {
		p.add(at("count"), "must not be negative (0 runs until decided)")
	}
	if s.Warmup < 0 {
		p.add(at("warmup"), "must not be negative")
	}
	switch s.Lookback.Mode {
	case "", LookbackGrowing:
		if s.Lookback.Window != 0 {
			p.add(at("lookback.window"), "only a sliding lookback has a window")
		}
	case LookbackSliding:
		if s.Lookback.Window < s.Interval {
			p.add(at("lookback.window"), "a sliding lookback needs a window of at least the interval")
		}
	default:
		p.add(at("lookback.mode"), "%q is not a mode: growing or sliding", s.Lookback.Mode)
	}
	if s.FailureLimit < 0 {
		p.add(at("failureLimit"), "must not be negative")
	}
	if s.InconclusiveLimit != nil && *s.InconclusiveLimit < 0 {
		p.add(at("inconclusiveLimit"), "must not be negative")
	}
	if s.ConsecutiveErrorLimit != nil && *s.ConsecutiveErrorLimit < 0 {
		p.add(at("consecutiveErrorLimit"), "must not be negative")
	}
	switch {
	case s.Deadline < 0:
		p.add(at("deadline"), "must not be negative")
	case s.Deadline == 0 && s.Count == 0:
		p.add(at("deadline"), "required when count is 0 (run until decided), so a run always ends")
	case s.Deadline > 0 && s.Interval > 0 && s.Deadline <= s.Warmup+s.Interval:
		p.add(at("deadline"), "%v leaves no room for a measurement after warm-up %v and interval %v", s.Deadline.D(), s.Warmup.D(), s.Interval.D())
	}
	switch s.Undecided {
	case "", OutcomeInconclusive, OutcomeFail:
	default:
		p.add(at("undecided"), "%q is not an outcome: inconclusive or fail", s.Undecided)
	}
}

// Defaults, applied when reading rather than stored, so a template is kept as
// its author wrote it.

func (t *Template) alpha() float64 {
	if t.Alpha > 0 && t.Alpha <= 0.5 {
		return t.Alpha
	}
	return DefaultAlpha
}

func (t *Template) power() float64 {
	if t.Power > 0.5 && t.Power < 1 {
		return t.Power
	}
	return DefaultPower
}

func (t *Template) scorePass() float64 {
	if t.Score.Pass > 0 {
		return t.Score.Pass
	}
	return DefaultScorePass
}

func (t *Template) scoreMarginal() float64 {
	if t.Score.Marginal > 0 {
		return t.Score.Marginal
	}
	return DefaultScoreMarginal
}

func (t *Template) srmAlpha() float64 {
	if t.SampleRatio.Alpha > 0 && t.SampleRatio.Alpha <= 0.5 {
		return t.SampleRatio.Alpha
	}
	return DefaultSampleRatioAlpha
}

func (m *Metric) direction() Direction {
	if m.Direction == "" {
		return DirectionIncrease
	}
	return m.Direction
}

func (m *Metric) weight() float64 {
	if m.Weight > 0 && finite(m.Weight) {
		return m.Weight
	}
	return 1
}

func (m *Metric) group() string {
	if m.Group == "" {
		return DefaultGroup
	}
	return m.Group
}

func (m *Metric) step() time.Duration {
	if m.Step > 0 {
		return m.Step.D()
	}
	return DefaultStep.D()
}

func (m *Metric) minSamples() float64 {
	if m.MinSamples > 0 {
		return m.MinSamples
	}
	switch m.Kind {
	case KindRatio:
		return 100
	case KindHistogram:
		return 30
	case KindSeries:
		return 20
	}
	return 1
}

func (s *Schedule) consecutiveErrorLimit() int {
	if s.ConsecutiveErrorLimit != nil {
		return *s.ConsecutiveErrorLimit
	}
	return DefaultConsecutiveErrorLimit
}

func (s *Schedule) undecided() Outcome {
	if s.Undecided == OutcomeFail {
		return OutcomeFail
	}
	return OutcomeInconclusive
}
