package sdk

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

// parityFlags covers every reason the engine produces (STATIC,
// TARGETING_MATCH, DEFAULT with and without a variant, DISABLED, ERROR)
// and every error code an evaluation can end in (FLAG_NOT_FOUND,
// TYPE_MISMATCH, GENERAL), with flag and flag-set metadata.
const parityFlags = `{
  "metadata": {"team": "web"},
  "flags": {
    "static-bool": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
      "metadata": {"owner": "checkout", "weight": 3}},
    "targeted": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", null]}},
    "code-default": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}},
    "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "dynamic-variant": {"state": "ENABLED", "variants": {"x": "X"}, "defaultVariant": "x",
      "targeting": {"var": "pick"}},
    "number": {"state": "ENABLED", "variants": {"ten": 10, "pi": 3.14}, "defaultVariant": "ten",
      "targeting": {"if": [{"==": [{"var": "plan"}, "pi"]}, "pi", null]}},
    "object": {"state": "ENABLED", "variants": {"cfg": {"limit": 5, "tags": ["a", "b"]}}, "defaultVariant": "cfg"},
    "rollout": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red",
      "targeting": {"fractional": [["red", 50], ["blue", 50]]}}
  }
}`

// call is one OpenFeature client call and what it must resolve to.
type call struct {
	name       string
	kind       string // bool, string, int, float, object
	flag       string
	ctx        openfeature.EvaluationContext
	wantReason openfeature.Reason
	wantCode   openfeature.ErrorCode
}

var parityCalls = []call{
	{name: "static", kind: "bool", flag: "static-bool", wantReason: openfeature.StaticReason},
	{name: "targeting match", kind: "string", flag: "targeted", ctx: openfeature.NewEvaluationContext("u1", map[string]any{"plan": "pro"}), wantReason: openfeature.TargetingMatchReason},
	{name: "default variant", kind: "string", flag: "targeted", ctx: openfeature.NewEvaluationContext("u1", map[string]any{"plan": "free"}), wantReason: openfeature.DefaultReason},
	{name: "code default", kind: "bool", flag: "code-default", wantReason: openfeature.DefaultReason},
	{name: "disabled", kind: "bool", flag: "disabled", wantReason: openfeature.DisabledReason},
	{name: "rule names no variant", kind: "string", flag: "dynamic-variant", ctx: openfeature.NewTargetlessEvaluationContext(map[string]any{"pick": "nope"}), wantReason: openfeature.ErrorReason, wantCode: openfeature.GeneralCode},
	{name: "rule names a variant", kind: "string", flag: "dynamic-variant", ctx: openfeature.NewTargetlessEvaluationContext(map[string]any{"pick": "x"}), wantReason: openfeature.TargetingMatchReason},
	{name: "unknown flag", kind: "bool", flag: "missing", wantReason: openfeature.ErrorReason, wantCode: openfeature.FlagNotFoundCode},
	{name: "wrong type", kind: "string", flag: "static-bool", wantReason: openfeature.ErrorReason, wantCode: openfeature.TypeMismatchCode},
	{name: "object as bool", kind: "bool", flag: "object", wantReason: openfeature.ErrorReason, wantCode: openfeature.TypeMismatchCode},
	{name: "int", kind: "int", flag: "number", wantReason: openfeature.DefaultReason},
	{name: "int, not whole", kind: "int", flag: "number", ctx: openfeature.NewTargetlessEvaluationContext(map[string]any{"plan": "pi"}), wantReason: openfeature.ErrorReason, wantCode: openfeature.TypeMismatchCode},
	{name: "float", kind: "float", flag: "number", ctx: openfeature.NewTargetlessEvaluationContext(map[string]any{"plan": "pi"}), wantReason: openfeature.TargetingMatchReason},
	{name: "object", kind: "object", flag: "object", wantReason: openfeature.StaticReason},
	{name: "fractional", kind: "string", flag: "rollout", ctx: openfeature.NewEvaluationContext("user-42", nil), wantReason: openfeature.TargetingMatchReason},
}

// do makes the call through the client and returns the details as
// InterfaceEvaluationDetails, plus whether the client reported an error.
func (c call) do(cl *openfeature.Client) (openfeature.InterfaceEvaluationDetails, bool) {
	var d openfeature.InterfaceEvaluationDetails
	var err error
	switch c.kind {
	case "bool":
		var r openfeature.BooleanEvaluationDetails
		r, err = cl.BooleanValueDetails(bg, c.flag, true, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "string":
		var r openfeature.StringEvaluationDetails
		r, err = cl.StringValueDetails(bg, c.flag, "dflt", c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "int":
		var r openfeature.IntEvaluationDetails
		r, err = cl.IntValueDetails(bg, c.flag, -1, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "float":
		var r openfeature.FloatEvaluationDetails
		r, err = cl.FloatValueDetails(bg, c.flag, -1, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "object":
		d, err = cl.ObjectValueDetails(bg, c.flag, "dflt", c.ctx)
	}
	return d, err != nil
}

func TestSameResultsInBothModes(t *testing.T) {
	s := newFlagServer(t, parityFlags)
	local, remote := newApp(t), newApp(t)
	if err := local.start(fastOptions(s)...); err != nil {
		t.Fatal(err)
	}
	if err := remote.start(fastOptions(s, WithRemoteEvaluation())...); err != nil {
		t.Fatal(err)
	}
	for _, c := range parityCalls {
		t.Run(c.name, func(t *testing.T) {
			ld, lerr := c.do(local.client)
			rd, rerr := c.do(remote.client)
			if ld.Reason != c.wantReason || ld.ErrorCode != c.wantCode {
				t.Errorf("in-process: reason %s code %q, want %s %q (%+v)", ld.Reason, ld.ErrorCode, c.wantReason, c.wantCode, ld)
			}
			if lerr != (c.wantCode != "") {
				t.Errorf("in-process: client error %v, want %v", lerr, c.wantCode != "")
			}
			if !reflect.DeepEqual(ld, rd) || lerr != rerr {
				t.Errorf("results differ:\n in-process %+v (error %v)\n remote     %+v (error %v)", ld, lerr, rd, rerr)
			}
		})
	}
	// Metadata: flag metadata over the set's, primitives only, in both.
	d, _ := local.client.BooleanValueDetails(bg, "static-bool", false, openfeature.EvaluationContext{})
	want := openfeature.FlagMetadata{"team": "web", "owner": "checkout", "weight": float64(3)}
	if !reflect.DeepEqual(d.FlagMetadata, want) {
		t.Errorf("metadata %v, want %v", d.FlagMetadata, want)
	}
	// Caller's defaults for DISABLED and code defaults.
	if d, _ := local.client.BooleanValueDetails(bg, "disabled", false, openfeature.EvaluationContext{}); d.Value || d.Variant != "" {
		t.Errorf("disabled: %+v, want the caller's default false and no variant", d)
	}
}

// scripted makes the OFREP endpoint answer with a fixed response.
func scripted(s *flagServer, status int, header map[string]string, body string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
	s.ofrepOverride.Store(&h)
}

func TestRemoteStatusMapping(t *testing.T) {
	s := newFlagServer(t, parityFlags)
	a := newApp(t)
	if err := a.start(fastOptions(s, WithRemoteEvaluation())...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode openfeature.ErrorCode
		wantMsg  string
	}{
		{"400 PARSE_ERROR", 400, `{"key":"f","errorCode":"PARSE_ERROR","errorDetails":"bad json"}`, openfeature.ParseErrorCode, "bad json"},
		{"400 TARGETING_KEY_MISSING", 400, `{"key":"f","errorCode":"TARGETING_KEY_MISSING","errorDetails":"need tk"}`, openfeature.TargetingKeyMissingCode, "need tk"},
		{"400 INVALID_CONTEXT", 400, `{"key":"f","errorCode":"INVALID_CONTEXT","errorDetails":"bad ctx"}`, openfeature.InvalidContextCode, "bad ctx"},
		{"400 GENERAL", 400, `{"key":"f","errorCode":"GENERAL","errorDetails":"rule failed"}`, openfeature.GeneralCode, "rule failed"},
		{"400 TYPE_MISMATCH", 400, `{"key":"f","errorCode":"TYPE_MISMATCH","errorDetails":"types"}`, openfeature.TypeMismatchCode, "types"},
		{"400 unknown code", 400, `{"key":"f","errorCode":"SOMETHING_NEW","errorDetails":"?"}`, openfeature.GeneralCode, "?"},
		{"400 without a body", 400, ``, openfeature.GeneralCode, "400"},
		{"404 FLAG_NOT_FOUND", 404, `{"key":"f","errorCode":"FLAG_NOT_FOUND","errorDetails":"no f"}`, openfeature.FlagNotFoundCode, "no f"},
		{"404 from a proxy", 404, `<html>not here</html>`, openfeature.FlagNotFoundCode, "404"},
		{"500 with details", 500, `{"errorDetails":"boom"}`, openfeature.GeneralCode, "boom"},
		{"503 without a body", 503, ``, openfeature.GeneralCode, "503"},
		{"200 undecodable", 200, `{"value":`, openfeature.ParseErrorCode, "undecodable"},
		{"unexpected status", 418, `teapot`, openfeature.GeneralCode, "418"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scripted(s, tc.status, map[string]string{"Content-Type": "application/json"}, tc.body)
			d, err := a.client.BooleanValueDetails(bg, "f", true, openfeature.EvaluationContext{})
			if err == nil || !d.Value || d.Reason != openfeature.ErrorReason || d.ErrorCode != tc.wantCode || !strings.Contains(d.ErrorMessage, tc.wantMsg) {
				t.Errorf("got %+v (err %v), want the default with ERROR %s mentioning %q", d, err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestRemoteRetryAfter(t *testing.T) {
	s := newFlagServer(t, parityFlags)
	p := NewProvider(fastOptions(s, WithRemoteEvaluation())...)
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p.remote.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	a := newApp(t)
	a.provider = p
	if err := a.api.SetProviderAndWait(bg, p); err != nil {
		t.Fatal(err)
	}
	a.expect(openfeature.ProviderReady)

	scripted(s, http.StatusTooManyRequests, map[string]string{"Retry-After": "2"}, `{"errorDetails":"slow down"}`)
	before := s.ofrepRequests.Load()
	d, err := a.client.BooleanValueDetails(bg, "static-bool", false, openfeature.EvaluationContext{})
	if err == nil || d.ErrorCode != openfeature.GeneralCode || !strings.Contains(d.ErrorMessage, "429") {
		t.Fatalf("429: %+v, %v", d, err)
	}
	s.ofrepOverride.Store(nil) // the server would now answer, but the client must wait
	for _, step := range []time.Duration{0, time.Second, 999 * time.Millisecond} {
		advance(step)
		d, _ := a.client.BooleanValueDetails(bg, "static-bool", false, openfeature.EvaluationContext{})
		if d.ErrorCode != openfeature.GeneralCode || !strings.Contains(d.ErrorMessage, "rate limited") {
			t.Errorf("within Retry-After: %+v, want GENERAL rate limited", d)
		}
	}
	if n := s.ofrepRequests.Load() - before; n != 1 {
		t.Errorf("requests during Retry-After = %d, want only the first", n)
	}
	advance(time.Millisecond)
	if on, err := a.client.BooleanValue(bg, "static-bool", false, openfeature.EvaluationContext{}); !on || err != nil {
		t.Errorf("after Retry-After: %v, %v; want the flag's true", on, err)
	}
	a.quiet() // rate limiting is not a change of state
}

func TestRemoteHealthEvents(t *testing.T) {
	s := newFlagServer(t, parityFlags)
	a := newApp(t)
	if err := a.start(fastOptions(s, WithRemoteEvaluation(), WithRequestTimeout(time.Second))...); err != nil {
		t.Fatal(err)
	}
	a.expect(openfeature.ProviderReady)
	s.stop()
	if _, err := a.client.BooleanValue(bg, "static-bool", false, openfeature.EvaluationContext{}); err == nil {
		t.Fatal("evaluation with the server down succeeded")
	}
	a.expect(openfeature.ProviderError)
	if a.client.State() != openfeature.ErrorState {
		t.Errorf("state %s, want ERROR", a.client.State())
	}
	_, _ = a.client.BooleanValue(bg, "static-bool", false, openfeature.EvaluationContext{})
	a.quiet() // announced once
	s.start()
	if on, err := a.client.BooleanValue(bg, "static-bool", false, openfeature.EvaluationContext{}); !on || err != nil {
		t.Fatalf("after restart: %v, %v", on, err)
	}
	a.expect(openfeature.ProviderReady)

	s.refuse.Store(true)
	d, err := a.client.BooleanValueDetails(bg, "static-bool", false, openfeature.EvaluationContext{})
	if err == nil || d.ErrorCode != openfeature.ProviderFatalCode {
		t.Errorf("401: %+v, %v; want PROVIDER_FATAL", d, err)
	}
	a.expect(openfeature.ProviderError)
	if a.client.State() != openfeature.FatalState {
		t.Errorf("state %s, want FATAL", a.client.State())
	}
}

func TestRemoteInitRefused(t *testing.T) {
	s := newFlagServer(t, parityFlags)
	s.refuse.Store(true)
	a := newApp(t)
	err := a.start(fastOptions(s, WithRemoteEvaluation())...)
	var ie *openfeature.ProviderInitError
	if !errors.As(err, &ie) || ie.ErrorCode != openfeature.ProviderFatalCode {
		t.Fatalf("init error %v, want fatal", err)
	}
}
