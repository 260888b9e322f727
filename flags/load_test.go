package flags

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const basicJSON = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "metadata": {"team": "checkout", "version": 3},
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "metadata": {"team": "payments", "ticket": 42}
    },
    "banner": {
      "state": "ENABLED",
      "variants": {"red": "#f00", "blue": "#00f"},
      "defaultVariant": "blue"
    },
    "limit": {
      "state": "ENABLED",
      "variants": {"small": 10, "pi": 3.14},
      "defaultVariant": "small"
    },
    "ratio": {
      "state": "ENABLED",
      "variants": {"pi": 3.14},
      "defaultVariant": "pi"
    },
    "config": {
      "state": "ENABLED",
      "variants": {"a": {"size": 1, "tags": ["x"]}},
      "defaultVariant": "a"
    },
    "no-default": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": null
    },
    "off-flag": {
      "state": "DISABLED",
      "variants": {"on": true},
      "defaultVariant": "on"
    }
  }
}`

const basicYAML = `
$schema: https://flagd.dev/schema/v0/flags.json
metadata:
  team: checkout
  version: 3
flags:
  new-checkout:
    state: ENABLED
    variants:
      on: true
      off: false
    defaultVariant: "off"
    metadata: {team: payments, ticket: 42}
  banner:
    state: ENABLED
    variants: {red: "#f00", blue: "#00f"}
    defaultVariant: blue
  limit:
    state: ENABLED
    variants: {small: 10, pi: 3.14}
    defaultVariant: small
  ratio:
    state: ENABLED
    variants: {pi: 3.14}
    defaultVariant: pi
  config:
    state: ENABLED
    variants:
      a: {size: 1, tags: [x]}
    defaultVariant: a
  no-default:
    state: ENABLED
    variants: {on: true, off: false}
    defaultVariant: null
  off-flag:
    state: DISABLED
    variants: {on: true}
    defaultVariant: on
`

func mustLoad(t testing.TB, src string) *Set {
	t.Helper()
	s, err := Load([]byte(src))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func TestLoadJSONAndYAMLAreEquivalent(t *testing.T) {
	j := mustLoad(t, basicJSON)
	y := mustLoad(t, basicYAML)
	if j.Hash() != y.Hash() {
		t.Errorf("hash differs: json %s yaml %s", j.Hash(), y.Hash())
	}
	if !reflect.DeepEqual(j.Document(), y.Document()) {
		jb, _ := json.Marshal(j.Document())
		yb, _ := json.Marshal(y.Document())
		t.Errorf("documents differ:\njson %s\nyaml %s", jb, yb)
	}
	want := []string{"banner", "config", "limit", "new-checkout", "no-default", "off-flag", "ratio"}
	if !slices.Equal(j.Keys(), want) {
		t.Errorf("Keys = %v, want %v", j.Keys(), want)
	}
}

func TestStaticResolution(t *testing.T) {
	s := mustLoad(t, basicJSON)
	tests := []struct {
		name     string
		key      string
		value    any
		variant  string
		reason   Reason
		code     ErrorCode
		metaTeam any
	}{
		{"default variant is STATIC", "new-checkout", false, "off", ReasonStatic, "", "payments"},
		{"string flag", "banner", "#00f", "blue", ReasonStatic, "", "checkout"},
		{"null default means code default", "no-default", nil, "", ReasonDefault, "", "checkout"},
		{"disabled flag has no value", "off-flag", nil, "", ReasonDisabled, "", "checkout"},
		{"unknown key", "nope", nil, "", ReasonError, ErrorFlagNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Evaluate(tt.key, map[string]any{"targetingKey": "u1"})
			if r.Value != tt.value || r.Variant != tt.variant || r.Reason != tt.reason || r.ErrorCode != tt.code {
				t.Errorf("got %+v", r)
			}
			if r.Key != tt.key {
				t.Errorf("Key = %q", r.Key)
			}
			if r.Metadata["team"] != tt.metaTeam {
				t.Errorf("metadata team = %v, want %v", r.Metadata["team"], tt.metaTeam)
			}
		})
	}
}

func TestMetadataMerge(t *testing.T) {
	s := mustLoad(t, basicJSON)
	r := s.Evaluate("new-checkout", nil)
	want := map[string]any{"team": "payments", "version": 3.0, "ticket": 42.0}
	if !reflect.DeepEqual(r.Metadata, want) {
		t.Errorf("merged metadata = %v, want %v", r.Metadata, want)
	}
	if got := s.Metadata(); !reflect.DeepEqual(got, map[string]any{"team": "checkout", "version": 3.0}) {
		t.Errorf("set metadata = %v", got)
	}
}

func TestTypedAccessors(t *testing.T) {
	s := mustLoad(t, basicJSON)
	t.Run("boolean", func(t *testing.T) {
		v, r := s.Boolean("new-checkout", true, nil)
		if v != false || r.Reason != ReasonStatic {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("boolean on string flag is TYPE_MISMATCH", func(t *testing.T) {
		v, r := s.Boolean("banner", true, nil)
		if v != true || r.Reason != ReasonError || r.ErrorCode != ErrorTypeMismatch || r.Value != nil {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("string", func(t *testing.T) {
		v, r := s.String("banner", "x", nil)
		if v != "#00f" || r.Variant != "blue" {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("int accepts a lossless float", func(t *testing.T) {
		v, r := s.Int("limit", 7, nil)
		if v != 10 || r.ErrorCode != "" {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("int rejects 3.14", func(t *testing.T) {
		v, r := s.Int("ratio", 7, nil)
		if v != 7 || r.ErrorCode != ErrorTypeMismatch || r.Reason != ReasonError {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("float", func(t *testing.T) {
		v, _ := s.Float("ratio", 0, nil)
		if v != 3.14 {
			t.Errorf("got %v", v)
		}
	})
	t.Run("object", func(t *testing.T) {
		v, r := s.Object("config", nil, nil)
		m, ok := v.(map[string]any)
		if !ok || m["size"] != 1.0 || r.Variant != "a" {
			t.Errorf("got %#v %+v", v, r)
		}
	})
	t.Run("code default returns def", func(t *testing.T) {
		v, r := s.Boolean("no-default", true, nil)
		if v != true || r.Reason != ReasonDefault {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("disabled returns def", func(t *testing.T) {
		v, r := s.Boolean("off-flag", false, nil)
		if v != false || r.Reason != ReasonDisabled {
			t.Errorf("got %v %+v", v, r)
		}
	})
	t.Run("unknown key returns def", func(t *testing.T) {
		v, r := s.String("nope", "d", nil)
		if v != "d" || r.ErrorCode != ErrorFlagNotFound {
			t.Errorf("got %v %+v", v, r)
		}
	})
}

func TestArrayForm(t *testing.T) {
	arr := `{"flags": [
	  {"key": "a", "state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
	  {"key": "b", "state": "DISABLED", "variants": {"x": "y"}}
	]}`
	mapped := `{"flags": {
	  "a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
	  "b": {"state": "DISABLED", "variants": {"x": "y"}}
	}}`
	a, m := mustLoad(t, arr), mustLoad(t, mapped)
	if a.Hash() != m.Hash() {
		t.Error("array form and map form hash differently")
	}
	if f := a.Document().Flags["a"]; f == nil || f.Key != "" {
		t.Errorf("canonical document keeps the array key: %+v", f)
	}
}

func TestValidationProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each must appear as a problem "path: message"
	}{
		{"default variant not a variant", `{"flags":{"new-checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"blue"}}}`,
			[]string{`flags.new-checkout.defaultVariant: "blue" is not a variant (have: off, on)`}},
		{"mixed variant types", `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":"false"},"defaultVariant":"on"}}}`,
			[]string{`flags.f.variants: all variants must have the same type, got boolean (on), string (off)`}},
		{"unknown state", `{"flags":{"f":{"state":"ON","variants":{"on":true}}}}`,
			[]string{`flags.f.state: unknown state "ON" (want ENABLED or DISABLED)`}},
		{"missing state", `{"flags":{"f":{"variants":{"on":true}}}}`,
			[]string{`flags.f.state: required (ENABLED or DISABLED)`}},
		{"empty variants", `{"flags":{"f":{"state":"ENABLED","variants":{}}}}`,
			[]string{`flags.f.variants: must have at least one variant`}},
		{"missing variants", `{"flags":{"f":{"state":"ENABLED"}}}`,
			[]string{`flags.f.variants: required (at least one variant)`}},
		{"array variant", `{"flags":{"f":{"state":"ENABLED","variants":{"a":[1]}}}}`,
			[]string{`flags.f.variants.a: a variant value must be a boolean, number, string or object, got an array`}},
		{"non-primitive flag metadata", `{"flags":{"f":{"state":"ENABLED","variants":{"a":1},"metadata":{"o":{"x":1}}}}}`,
			[]string{`flags.f.metadata.o: metadata values must be strings, numbers or booleans, got an object`}},
		{"non-primitive set metadata", `{"metadata":{"l":[1]},"flags":{}}`,
			[]string{`metadata.l: metadata values must be strings, numbers or booleans, got an array`}},
		{"duplicate flag key", `{"flags":{"f":{"state":"ENABLED","variants":{"a":1}},"f":{"state":"DISABLED","variants":{"a":1}}}}`,
			[]string{`flags.f: duplicate key "f"`}},
		{"duplicate variant", `{"flags":{"f":{"state":"ENABLED","variants":{"a":1,"a":2}}}}`,
			[]string{`flags.f.variants.a: duplicate key "a"`}},
		{"duplicate key in array form", `{"flags":[{"key":"f","state":"ENABLED","variants":{"a":1}},{"key":"f","state":"ENABLED","variants":{"a":1}}]}`,
			[]string{`flags[1].key: duplicate flag key "f" (first at flags[0])`}},
		{"array item without key", `{"flags":[{"state":"ENABLED","variants":{"a":1}}]}`,
			[]string{`flags[0].key: required in the array form of flags (a non-empty string)`}},
		{"unknown flag field", `{"flags":{"f":{"state":"ENABLED","variants":{"a":1},"targetting":{}}}}`,
			[]string{`flags.f.targetting: unknown field (want state, variants, defaultVariant, targeting or metadata)`}},
		{"unknown top-level field", `{"flag":{}}`,
			[]string{`flag: unknown field (want flags, $evaluators, metadata or $schema)`, `flags: required`}},
		{"flags wrong type", `{"flags":"x"}`,
			[]string{`flags: must be an object (or an array of flags with "key"), got a string`}},
		{"key with dots is quoted in paths", `{"flags":{"a.b":{"state":"X","variants":{"v":1}}}}`,
			[]string{`flags["a.b"].state: unknown state "X" (want ENABLED or DISABLED)`}},
		{"every problem at once", `{"flags":{"a":{"state":"X","variants":{"v":1}},"b":{"state":"ENABLED","variants":{"v":1},"defaultVariant":"w"}}}`,
			[]string{`flags.a.state: unknown state "X" (want ENABLED or DISABLED)`, `flags.b.defaultVariant: "w" is not a variant (have: v)`}},
		{"invalid JSON", `{"flags": {`, []string{`(root): invalid JSON: unexpected end of input`}},
		{"not an object", `[1,2]`, []string{`(root): a flag set must be an object with "flags", got an array`}},
		{"empty input", ``, []string{`(root): empty document`}},
		{"yaml duplicate key", "flags:\n  f:\n    state: ENABLED\n    state: DISABLED\n    variants: {a: 1}\n",
			[]string{`flags.f.state: duplicate key "state" (line 4)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.src))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.String())
			}
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing problem %q\ngot: %s", w, strings.Join(got, "\n     "))
				}
			}
		})
	}
}

func TestParseReportsOnlyStructure(t *testing.T) {
	doc, err := Parse([]byte(`{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"nope"}}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if _, err := Compile(doc); err == nil || !strings.Contains(err.Error(), `flags.f.defaultVariant: "nope" is not a variant (have: on)`) {
		t.Errorf("Compile err = %v", err)
	}
	if _, err := Parse([]byte(`{"flags":{"f":{"state":1}}}`)); err == nil || !strings.Contains(err.Error(), "flags.f.state") {
		t.Errorf("Parse of a wrong type: err = %v", err)
	}
}

func TestCompileDoesNotRetainOrModifyDocument(t *testing.T) {
	doc, err := Parse([]byte(basicJSON))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(doc)
	s, err := Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	doc.Flags["banner"].Variants["blue"] = "changed"
	doc.Metadata["team"] = "changed"
	if v, _ := s.String("banner", "", nil); v != "#00f" {
		t.Errorf("set sees caller's change: %q", v)
	}
	if s.Metadata()["team"] != "checkout" {
		t.Error("set metadata shares the caller's map")
	}
	doc.Flags["banner"].Variants["blue"] = "#00f"
	doc.Metadata["team"] = "checkout"
	after, _ := json.Marshal(doc)
	if string(before) != string(after) {
		t.Error("Compile modified the document")
	}
}

func TestDocumentIsADeepCopy(t *testing.T) {
	s := mustLoad(t, basicJSON)
	d := s.Document()
	d.Flags["config"].Variants["a"].(map[string]any)["size"] = 99.0
	d.Flags["config"].Variants["a"].(map[string]any)["tags"].([]any)[0] = "changed"
	d.Metadata["team"] = "x"
	delete(d.Flags, "banner")
	d2 := s.Document()
	if d2.Flags["config"].Variants["a"].(map[string]any)["size"] != 1.0 ||
		d2.Flags["config"].Variants["a"].(map[string]any)["tags"].([]any)[0] != "x" ||
		d2.Metadata["team"] != "checkout" || d2.Flags["banner"] == nil {
		t.Error("Document shares state with the set")
	}
	if v, _ := s.Object("config", nil, nil); v.(map[string]any)["size"] != 1.0 {
		t.Error("evaluation sees a change to a returned document")
	}
}

func TestRoundTrips(t *testing.T) {
	s := mustLoad(t, basicJSON)
	t.Run("json", func(t *testing.T) {
		b, err := json.Marshal(s.Document())
		if err != nil {
			t.Fatal(err)
		}
		s2 := mustLoad(t, string(b))
		if s2.Hash() != s.Hash() {
			t.Error("hash changed after a JSON round trip")
		}
	})
	t.Run("yaml", func(t *testing.T) {
		b, err := s.Document().YAML()
		if err != nil {
			t.Fatal(err)
		}
		s2 := mustLoad(t, string(b))
		if s2.Hash() != s.Hash() {
			t.Errorf("hash changed after a YAML round trip:\n%s", b)
		}
	})
	t.Run("compile of document", func(t *testing.T) {
		s2, err := Compile(s.Document())
		if err != nil {
			t.Fatal(err)
		}
		if s2.Hash() != s.Hash() {
			t.Error("hash changed after Compile(Document())")
		}
	})
}

func TestHashIgnoresFormatting(t *testing.T) {
	a := mustLoad(t, `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}`)
	b := mustLoad(t, "{\n \"flags\" : {\"f\": {\"defaultVariant\":\"on\", \"variants\":{\"off\":false, \"on\":true}, \"state\":\"ENABLED\"}}}")
	c := mustLoad(t, `{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`)
	if a.Hash() != b.Hash() {
		t.Error("formatting changed the hash")
	}
	if a.Hash() == c.Hash() {
		t.Error("a different default variant kept the hash")
	}
	if len(a.Hash()) != 64 {
		t.Errorf("hash %q is not hex SHA-256", a.Hash())
	}
}

func TestInfo(t *testing.T) {
	s := mustLoad(t, basicJSON)
	info, ok := s.Info("new-checkout")
	if !ok {
		t.Fatal("Info not found")
	}
	want := FlagInfo{Key: "new-checkout", State: Enabled, Type: TypeBoolean, Static: true,
		Variants: []string{"off", "on"}, DefaultVariant: "off",
		Metadata: map[string]any{"team": "payments", "version": 3.0, "ticket": 42.0}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("Info = %+v, want %+v", info, want)
	}
	if _, ok := s.Info("nope"); ok {
		t.Error("Info of an unknown key is ok")
	}
	if info, _ := s.Info("no-default"); info.DefaultVariant != "" {
		t.Errorf("no-default DefaultVariant = %q", info.DefaultVariant)
	}
}

func TestYAMLOnOffAreStrings(t *testing.T) {
	// YAML 1.1 would read on/off as booleans; flagd files use them as variant names.
	s := mustLoad(t, "flags:\n  f:\n    state: ENABLED\n    variants:\n      on: true\n      off: false\n    defaultVariant: on\n")
	info, _ := s.Info("f")
	if !slices.Equal(info.Variants, []string{"off", "on"}) || info.DefaultVariant != "on" {
		t.Errorf("info = %+v", info)
	}
}

func TestYAMLAliasBombIsRejected(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("flags: {}\n")
	_, err := Load([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases expand to more than") {
		t.Errorf("err = %v", err)
	}
}

func TestYAMLAnchorsWithinLimits(t *testing.T) {
	s := mustLoad(t, "flags:\n  a: &shared\n    state: ENABLED\n    variants: {on: true, off: false}\n    defaultVariant: \"off\"\n  b: *shared\n")
	if !slices.Equal(s.Keys(), []string{"a", "b"}) {
		t.Errorf("keys = %v", s.Keys())
	}
}

func TestFlowStyleJSONErrorsAreNotReadAsYAML(t *testing.T) {
	_, err := Load([]byte(`{"flags": {"a": {"state": "ENABLED", "variants": {"x": 1e400}}}}`))
	if err == nil || !strings.Contains(err.Error(), "flags.a.variants.x: number 1e400 is out of range") {
		t.Errorf("err = %v", err)
	}
}

func TestCompileGoBuiltDocument(t *testing.T) {
	on := "ten"
	doc := &Document{
		Flags: map[string]*Flag{
			"limit": {State: Enabled, Variants: map[string]any{"ten": 10, "big": int64(1) << 40}, DefaultVariant: &on},
			"cfg": {State: Enabled, Variants: map[string]any{"a": map[string]any{"tags": []string{"x", "y"}, "n": uint8(3)}},
				Targeting: json.RawMessage(`{"if": [{"in": ["@example.com", {"var": "email"}]}, "a"]}`)},
		},
		Metadata: map[string]any{"rev": 7},
	}
	s, err := Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if v, r := s.Int("limit", 0, nil); v != 10 || r.Variant != "ten" {
		t.Errorf("Int = %v %+v", v, r)
	}
	v, r := s.Object("cfg", nil, map[string]any{"email": "a@example.com"})
	want := map[string]any{"tags": []any{"x", "y"}, "n": 3.0}
	if !reflect.DeepEqual(v, want) || r.Reason != ReasonTargetingMatch {
		t.Errorf("Object = %#v %+v", v, r)
	}
	if s.Metadata()["rev"] != 7.0 {
		t.Errorf("metadata = %#v", s.Metadata())
	}
	bad := &Document{Flags: map[string]*Flag{"f": {State: Enabled, Variants: map[string]any{"a": func() {}}}}}
	if _, err := Compile(bad); err == nil || !strings.Contains(err.Error(), "flags.f.variants.a: value of type func() cannot be represented in JSON") {
		t.Errorf("err = %v", err)
	}
	if _, err := Compile(nil); err == nil {
		t.Error("Compile(nil) succeeded")
	}
}
