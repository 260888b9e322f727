package flags

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestResolutionSemantics(t *testing.T) {
	src := `{"metadata": {"owner": "web"}, "flags": {
	  "color": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "blue",
	    "targeting": {"var": "pick"}},
	  "color-nodefault": {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"},
	    "targeting": {"var": "pick"}},
	  "boolnames": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"}, "defaultVariant": "false",
	    "targeting": {"var": "pick"}},
	  "numnames": {"state": "ENABLED", "variants": {"1": "one", "1.5": "one and a half", "1e+21": "huge"},
	    "defaultVariant": "1", "targeting": {"var": "pick"}},
	  "empty-targeting": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {}},
	  "disabled-targeted": {"state": "DISABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
	    "targeting": RUNAWAY},
	  "runaway": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": RUNAWAY}
	}}`
	// 300 × 300 × 300 steps: far past the work budget.
	arr := "[" + strings.Repeat("0,", 299) + "0]"
	runaway := `{"map": [{"var": "big"}, {"map": [` + arr + `, {"map": [` + arr + `, 1]}]}]}`
	s := mustLoad(t, strings.ReplaceAll(src, "RUNAWAY", runaway))
	big := make([]any, 300)
	tests := []struct {
		name    string
		key     string
		ctx     map[string]any
		value   any
		variant string
		reason  Reason
		code    ErrorCode
		msg     string // substring of ErrorMessage
	}{
		{"variant name is TARGETING_MATCH", "color", map[string]any{"pick": "red"}, "#f00", "red", ReasonTargetingMatch, "", ""},
		{"the default variant picked by targeting is TARGETING_MATCH", "color", map[string]any{"pick": "blue"}, "#00f", "blue", ReasonTargetingMatch, "", ""},
		{"null is the default variant, DEFAULT", "color", map[string]any{}, "#00f", "blue", ReasonDefault, "", ""},
		{"nil context", "color", nil, "#00f", "blue", ReasonDefault, "", ""},
		{"null without default is the code default", "color-nodefault", map[string]any{}, nil, "", ReasonDefault, "", ""},
		{"true looks up variant \"true\"", "boolnames", map[string]any{"pick": true}, "yes", "true", ReasonTargetingMatch, "", ""},
		{"false looks up variant \"false\"", "boolnames", map[string]any{"pick": false}, "no", "false", ReasonTargetingMatch, "", ""},
		{"integer is stringified", "numnames", map[string]any{"pick": 1}, "one", "1", ReasonTargetingMatch, "", ""},
		{"float is stringified", "numnames", map[string]any{"pick": 1.5}, "one and a half", "1.5", ReasonTargetingMatch, "", ""},
		{"large number is stringified as JavaScript does", "numnames", map[string]any{"pick": 1e21}, "huge", "1e+21", ReasonTargetingMatch, "", ""},
		{"unknown name is ERROR GENERAL", "color", map[string]any{"pick": "green"}, nil, "", ReasonError, ErrorGeneral, `targeting returned "green", which is not a variant (have: blue, red)`},
		{"array is ERROR GENERAL", "color", map[string]any{"pick": []any{"red"}}, nil, "", ReasonError, ErrorGeneral, "targeting returned an array"},
		{"object is ERROR GENERAL", "color", map[string]any{"pick": map[string]any{"a": 1}}, nil, "", ReasonError, ErrorGeneral, "targeting returned an object"},
		{"{} targeting is STATIC", "empty-targeting", map[string]any{"x": 1}, 1.0, "a", ReasonStatic, "", ""},
		{"disabled flag does not run targeting", "disabled-targeted", map[string]any{"big": big}, nil, "", ReasonDisabled, "", ""},
		{"runaway targeting is an error, not a hang", "runaway", map[string]any{"big": big}, nil, "", ReasonError, ErrorGeneral, msgWorkLimit},
		{"unknown flag", "nope", nil, nil, "", ReasonError, ErrorFlagNotFound, "flag not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Evaluate(tt.key, tt.ctx)
			if r.Key != tt.key || r.Value != tt.value || r.Variant != tt.variant || r.Reason != tt.reason || r.ErrorCode != tt.code {
				t.Errorf("got %+v", r)
			}
			if !strings.Contains(r.ErrorMessage, tt.msg) || (tt.msg == "" && r.ErrorMessage != "") {
				t.Errorf("ErrorMessage = %q, want %q", r.ErrorMessage, tt.msg)
			}
			if tt.code != ErrorFlagNotFound && r.Metadata["owner"] != "web" {
				t.Errorf("Metadata = %v", r.Metadata)
			}
		})
	}
}

func TestTypedAccessorsWithTargeting(t *testing.T) {
	s := mustLoad(t, `{"flags": {
	  "b": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	    "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on"]}},
	  "n": {"state": "ENABLED", "variants": {"int": 10, "frac": 2.5}, "defaultVariant": "int",
	    "targeting": {"if": [{"var": "frac"}, "frac"]}},
	  "d": {"state": "DISABLED", "variants": {"x": "y"}, "targeting": {"var": "v"}}
	}}`)
	if v, r := s.Boolean("b", false, map[string]any{"tier": "gold"}); !v || r.Reason != ReasonTargetingMatch {
		t.Errorf("Boolean = %v %+v", v, r)
	}
	if v, r := s.Boolean("b", true, map[string]any{"tier": "free"}); v || r.Reason != ReasonDefault || r.Variant != "off" {
		t.Errorf("Boolean default = %v %+v", v, r)
	}
	if v, r := s.Int("n", -1, map[string]any{}); v != 10 || r.Variant != "int" {
		t.Errorf("Int = %v %+v", v, r)
	}
	if v, r := s.Int("n", -1, map[string]any{"frac": true}); v != -1 || r.ErrorCode != ErrorTypeMismatch || r.Reason != ReasonError {
		t.Errorf("Int of 2.5 = %v %+v", v, r)
	}
	if v, r := s.Float("n", -1, map[string]any{"frac": true}); v != 2.5 || r.Reason != ReasonTargetingMatch {
		t.Errorf("Float = %v %+v", v, r)
	}
	if v, r := s.Int("d", 3, nil); v != 3 || r.ErrorCode != ErrorTypeMismatch {
		t.Errorf("Int of a disabled string flag = %v %+v, want TYPE_MISMATCH", v, r)
	}
	if v, r := s.String("d", "def", nil); v != "def" || r.Reason != ReasonDisabled {
		t.Errorf("String of a disabled flag = %v %+v", v, r)
	}
}

func TestContextIsNotModified(t *testing.T) {
	s := mustLoad(t, `{"flags": {"f": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
	  "targeting": {"if": [{"and": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, {"missing": ["x"]}, {"var": ""}]}, "b"]}}}}`)
	ctx := map[string]any{"targetingKey": "u", "$flagd": map[string]any{"flagKey": "other"}, "nested": map[string]any{"k": []any{1.0}}}
	before := fmt.Sprint(ctx)
	r := s.Evaluate("f", ctx)
	if r.Variant != "b" {
		t.Errorf("got %+v", r)
	}
	if fmt.Sprint(ctx) != before || len(ctx) != 3 {
		t.Errorf("context changed: %v", ctx)
	}
}

func TestTimestampUsesTheClock(t *testing.T) {
	s := mustLoad(t, `{"flags": {"promo": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	  "targeting": {"if": [{">=": [{"var": "$flagd.timestamp"}, 1767225600]}, "on"]}}}}`) // 2026-01-01
	before := s.WithClock(func() time.Time { return time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC) })
	after := s.WithClock(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) })
	if v, _ := before.Boolean("promo", false, nil); v {
		t.Error("promo on before its start")
	}
	if v, _ := after.Boolean("promo", false, nil); !v {
		t.Error("promo off after its start")
	}
	if v, _ := s.Boolean("promo", false, nil); !v {
		t.Error("the real clock is past 2026-01-01")
	}
}

func TestConcurrentEvaluationAndAtomicSwap(t *testing.T) {
	v1 := mustLoad(t, `{"metadata": {"v": 1}, "flags": {"f": {"state": "ENABLED", "variants": {"a": "one", "b": "uno"}, "defaultVariant": "a",
	  "targeting": {"fractional": [["a", 50], ["b", 50]]}}}}`)
	v2 := mustLoad(t, `{"metadata": {"v": 2}, "flags": {"f": {"state": "ENABLED", "variants": {"a": "two", "b": "dos"}, "defaultVariant": "a",
	  "targeting": {"fractional": [["a", 50], ["b", 50]]}}}}`)
	var cur atomic.Pointer[Set]
	cur.Store(v1)
	want := map[float64]map[string]bool{1: {"one": true, "uno": true}, 2: {"two": true, "dos": true}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := cur.Load()
				ctx := map[string]any{"targetingKey": fmt.Sprintf("g%d-u%d", g, i%100)}
				v, r := s.String("f", "", ctx)
				ver := s.Metadata()["v"].(float64)
				if !want[ver][v] || r.Metadata["v"] != ver {
					errs <- fmt.Sprintf("set v%v gave %q %+v", ver, v, r)
					return
				}
				// Deterministic: the same context always gives the same variant.
				if v2, _ := s.String("f", "", ctx); v2 != v {
					errs <- fmt.Sprintf("same context gave %q then %q", v, v2)
					return
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			cur.Store(v2)
		} else {
			cur.Store(v1)
		}
		time.Sleep(50 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestInfoForTargetedFlags(t *testing.T) {
	s := mustLoad(t, `{"flags": {
	  "t": {"state": "ENABLED", "variants": {"a": {"x": 1}}, "targeting": {"var": "v"}},
	  "d": {"state": "DISABLED", "variants": {"a": "x"}, "targeting": {"var": "v"}}
	}}`)
	ti, _ := s.Info("t")
	if ti.Static || ti.Type != TypeObject || ti.DefaultVariant != "" {
		t.Errorf("targeted flag info = %+v", ti)
	}
	di, _ := s.Info("d")
	if !di.Static || di.State != Disabled {
		t.Errorf("disabled flag info = %+v (a disabled flag's result does not depend on the context)", di)
	}
	if s.Len() != 2 || !reflect.DeepEqual(s.Keys(), []string{"d", "t"}) {
		t.Errorf("Len %d Keys %v", s.Len(), s.Keys())
	}
}
