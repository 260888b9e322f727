package api

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/flags"
)

// stdContext decodes an OFREP body with encoding/json, the reference.
func stdContext(data []byte) (map[string]any, bool) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	c, ok := m["context"].(map[string]any)
	if !ok {
		return nil, m["context"] == nil
	}
	return c, true
}

func TestParseEvalRequest(t *testing.T) {
	tests := []struct {
		name string
		body string
		want map[string]any
		code string // "" for success
	}{
		{name: "empty", body: "", want: nil},
		{name: "spaces", body: " \n\t", want: nil},
		{name: "empty object", body: "{}", want: nil},
		{name: "null context", body: `{"context":null}`, want: nil},
		{name: "flat", body: `{"context":{"targetingKey":"u","email":"a@b.c","age":42,"vip":true,"x":null}}`,
			want: map[string]any{"targetingKey": "u", "email": "a@b.c", "age": 42.0, "vip": true, "x": nil}},
		{name: "nested and arrays", body: `{"context":{"a":{"b":[1,"two",{"c":false}],"e":[]},"f":{}}}`,
			want: map[string]any{"a": map[string]any{"b": []any{1.0, "two", map[string]any{"c": false}}, "e": []any{}}, "f": map[string]any{}}},
		{name: "escapes", body: `{"context":{"s":"q\"b\\s\/n\n\tt\u00e9\ud83d\ude00","lone":"\ud800x"}}`, want: map[string]any{"s": "q\"b\\s/n\n\tté😀", "lone": "\ufffdx"}},
		{name: "numbers", body: `{"context":{"a":-0,"b":1.5e3,"c":-2.25E-2,"d":0.5}}`, want: map[string]any{"a": math.Copysign(0, -1), "b": 1500.0, "c": -0.0225, "d": 0.5}},
		{name: "other members ignored", body: `{"x":[1,{"y":2}],"context":{"a":1},"z":"w"}`, want: map[string]any{"a": 1.0}},
		{name: "last context wins", body: `{"context":{"a":1},"context":{"b":2}}`, want: map[string]any{"b": 2.0}},
		{name: "not an object", body: `[]`, code: "PARSE_ERROR"},
		{name: "truncated", body: `{"context":{"a":1}`, code: "PARSE_ERROR"},
		{name: "trailing comma", body: `{"context":{"a":1,}}`, code: "PARSE_ERROR"},
		{name: "trailing data", body: `{} x`, code: "PARSE_ERROR"},
		{name: "bad literal", body: `{"context":{"a":tru}}`, code: "PARSE_ERROR"},
		{name: "leading zero", body: `{"context":{"a":01}}`, code: "PARSE_ERROR"},
		{name: "bare dot", body: `{"context":{"a":1.}}`, code: "PARSE_ERROR"},
		{name: "huge number", body: `{"context":{"a":1e999}}`, code: "PARSE_ERROR"},
		{name: "control char", body: "{\"context\":{\"a\":\"x\x01\"}}", code: "PARSE_ERROR"},
		{name: "bad escape", body: `{"context":{"a":"\q"}}`, code: "PARSE_ERROR"},
		{name: "short unicode", body: `{"context":{"a":"\u12"}}`, code: "PARSE_ERROR"},
		{name: "unquoted key", body: `{context:{}}`, code: "PARSE_ERROR"},
		{name: "too deep", body: `{"context":{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`, code: "PARSE_ERROR"},
		{name: "context string", body: `{"context":"u"}`, code: "INVALID_CONTEXT"},
		{name: "context array", body: `{"context":[1]}`, code: "INVALID_CONTEXT"},
		{name: "targetingKey number", body: `{"context":{"targetingKey":1}}`, code: "INVALID_CONTEXT"},
		{name: "targetingKey null", body: `{"context":{"targetingKey":null}}`, code: "INVALID_CONTEXT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEvalRequest([]byte(tc.body))
			if tc.code != "" {
				if err == nil || err.code != tc.code || err.message == "" {
					t.Fatalf("got %v, %v; want error %s", got, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

// FuzzParseEvalRequest checks the hand-written parser against encoding/json:
// it accepts exactly the bodies encoding/json accepts (within the depth
// limit) and yields the same context.
func FuzzParseEvalRequest(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"context":{"a":[1,2,{"b":"c"}],"targetingKey":"k"}}`, `{"context":{"s":"\u00e9\ud83d\ude00\n"}}`,
		`{"context":1}`, `[`, `{"context":{"n":-1.5e-3}}`, `{"a":{"b":[true,false,null]}}`, "{\"context\":{\"x\":\"\xff\"}}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, perr := parseEvalRequest(data)
		want, ok := stdContext(data)
		if len(strings.Trim(string(data), " \t\r\n")) == 0 { // JSON whitespace only
			if perr != nil || got != nil {
				t.Fatalf("empty body: %v %v", got, perr)
			}
			return
		}
		var any1 any
		stdValid := json.Unmarshal(data, &any1) == nil
		if perr == nil && !stdValid {
			t.Fatalf("accepted what encoding/json rejects: %q", data)
		}
		if perr != nil && perr.code == "PARSE_ERROR" && stdValid && !strings.Contains(perr.message, "nesting") {
			if _, isObj := any1.(map[string]any); isObj {
				t.Fatalf("rejected valid JSON %q: %v", data, perr)
			}
		}
		if perr == nil {
			if tk, has := want["targetingKey"]; has {
				if _, isStr := tk.(string); !isStr {
					t.Fatalf("accepted a non-string targetingKey: %q", data)
				}
			}
			if ok && !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("context differs for %q:\n got %#v\nwant %#v", data, got, want)
			}
		}
	})
}

func TestAppendersMatchEncodingJSON(t *testing.T) {
	values := []any{nil, true, false, "", "plain", "quote\" back\\ nl\n tab\t ctl\x01 é 😀 <>&", "bad\xffutf8",
		0.0, math.Copysign(0, -1), 1.0, -1.5, 1e20, 1e21, 1.5e-7, 123456789.125, 1e-6, float64(math.MaxInt64), 42, int64(-7),
		json.Number("12.50"), map[string]any{"b": 1.0, "a": []any{"x", nil}}, []any{}}
	for _, v := range values {
		got := appendValue(nil, v)
		var sb strings.Builder
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false) // the appenders leave <, > and & as they are
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(sb.String(), "\n")
		if string(got) != want {
			t.Errorf("appendValue(%#v) = %s, encoding/json %s", v, got, want)
		}
		var back any
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("appendValue(%#v) = %s is not JSON: %v", v, got, err)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1)} {
		if got := string(appendValue(nil, v)); got != "null" {
			t.Errorf("appendValue(%v) = %s, want null", v, got)
		}
	}
	meta := map[string]any{"z": 1, "a": "x", "obj": map[string]any{"no": 1}, "list": []any{1}, "b": true, "nan": math.NaN()}
	if got := string(appendMetadata(nil, meta)); got != `{"a":"x","b":true,"z":1}` {
		t.Errorf("appendMetadata keeps only primitives, sorted: %s", got)
	}
}

// TestResolutionBodies checks every resolution shape the encoder produces,
// including error codes the engine reports rarely, against the wire types.
func TestResolutionBodies(t *testing.T) {
	fe := newFlagEntry("env", "k\"ey", flags.FlagInfo{Variants: []string{"on"}}, &flags.Flag{Variants: map[string]any{"on": true}}, map[string]any{"m": 1.0})
	tests := []struct {
		name string
		res  flags.Resolution
		want string
	}{
		{"targeting key missing", flags.Resolution{Reason: flags.ReasonError, ErrorCode: flags.ErrorTargetingKeyMissing, ErrorMessage: "no key"},
			`{"key":"k\"ey","errorCode":"TARGETING_KEY_MISSING","errorDetails":"no key","metadata":{"m":1}}`},
		{"invalid context", flags.Resolution{Reason: flags.ReasonError, ErrorCode: flags.ErrorInvalidContext},
			`{"key":"k\"ey","errorCode":"INVALID_CONTEXT","metadata":{"m":1}}`},
		{"unknown code becomes GENERAL", flags.Resolution{Reason: flags.ReasonError, ErrorCode: "WEIRD", ErrorMessage: "x"},
			`{"key":"k\"ey","errorCode":"GENERAL","errorDetails":"x","metadata":{"m":1}}`},
		{"unusual reason", flags.Resolution{Reason: "SPLIT", Variant: "on", Value: true},
			`{"key":"k\"ey","value":true,"reason":"SPLIT","variant":"on","metadata":{"m":1}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if b, _ := fe.lookup(tc.res); b != nil && tc.res.Reason == flags.ReasonError {
				t.Fatalf("an error has a precomputed body")
			}
			got := string(fe.appendResolution(nil, tc.res))
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	b, _ := fe.lookup(flags.Resolution{Reason: flags.ReasonTargetingMatch, Variant: "on", Value: true})
	if string(b) != `{"key":"k\"ey","value":true,"reason":"TARGETING_MATCH","variant":"on","metadata":{"m":1}}` {
		t.Errorf("precomputed body %s", b)
	}
}
