package flags

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

var fuzzRuleSeeds = []string{
	`{"if": [{"in": ["@example.com", {"var": "email"}]}, "on", "off"]}`,
	`{"fractional": [{"var": "email"}, ["on", 50], ["off", 50]]}`,
	`{"fractional": [["on", {"var": "w"}], {"var": "entry"}]}`,
	`{"sem_ver": [{"var": "version"}, {"var": "op"}, "1.2.3"]}`,
	`{"map": [{"var": "list"}, {"cat": [{"var": ""}, "x"]}]}`,
	`{"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}`,
	`{"missing_some": [1, {"merge": [["a"], {"var": "keys"}]}]}`,
	`{"substr": [{"var": "s"}, {"var": "n"}, {"-": [{"var": "n"}]}]}`,
	`{"<": [{"var": "a"}, {"var": "b"}, {"var": "c"}]}`,
	`{"and": [{"!": {"var": "x"}}, {"or": [{"===": [1, {"var": "y"}]}, {"starts_with": [{"var": "s"}, "a"]}]}]}`,
	`{"$ref": "shared"}`,
	`{"all": [{"var": "list"}, {"some": [{"var": "list"}, {"none": [[1], false]}]}]}`,
}

var fuzzContextSeeds = []string{
	`{"email": "a@example.com", "targetingKey": "u1"}`,
	`{"list": [1, "2", [3], {"x": 4}, null], "s": "héllo", "n": -2}`,
	`{"version": "1.2.3-rc.1+b", "op": "~", "w": 3, "entry": ["off", 1]}`,
	`{"a": "10", "b": 9, "c": [], "x": 0, "y": "1", "keys": ["b", "a"]}`,
	`{"$flagd": {"flagKey": 1}, "targetingKey": ""}`,
}

// FuzzEvaluate compiles random targeting and evaluates it with random
// contexts: no input may panic, hang, or modify the context.
func FuzzEvaluate(f *testing.F) {
	for i, r := range fuzzRuleSeeds {
		f.Add(r, fuzzContextSeeds[i%len(fuzzContextSeeds)])
	}
	f.Fuzz(func(t *testing.T, rule, ctxJSON string) {
		doc := `{"$evaluators": {"shared": {"var": "email"}}, "flags": {"f": {"state": "ENABLED",
			"variants": {"on": "on", "off": "off", "true": "t", "1": "one"}, "defaultVariant": "off", "targeting": ` + rule + `}}}`
		s, err := Load([]byte(doc))
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Load error is not a *ValidationError with problems: %v", err)
			}
			return
		}
		s = s.WithClock(fixedNow)
		var ctx map[string]any
		if json.Unmarshal([]byte(ctxJSON), &ctx) != nil {
			ctx = map[string]any{"targetingKey": ctxJSON}
		}
		before, _ := json.Marshal(ctx)
		tm := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("Evaluate did not finish in 10s: %q %q", rule, ctxJSON)) })
		defer tm.Stop()
		r := s.Evaluate("f", ctx)
		switch r.Reason {
		case ReasonTargetingMatch, ReasonDefault:
			if r.Value == nil || r.ErrorCode != "" {
				t.Fatalf("resolution without a value: %+v", r)
			}
		case ReasonError:
			if r.ErrorCode != ErrorGeneral || r.ErrorMessage == "" {
				t.Fatalf("error without code or message: %+v", r)
			}
		default:
			t.Fatalf("unexpected reason: %+v", r)
		}
		after, _ := json.Marshal(ctx)
		if string(before) != string(after) {
			t.Fatalf("context modified: %s -> %s", before, after)
		}
		// Deterministic: with a fixed clock the same context gives the same result.
		if r2 := s.Evaluate("f", ctx); r2.Variant != r.Variant || r2.Reason != r.Reason || r2.ErrorMessage != r.ErrorMessage {
			t.Fatalf("not repeatable: %+v then %+v", r, r2)
		}
	})
}

// FuzzLoad feeds arbitrary documents (JSON or YAML) to Load and Parse:
// errors must be *ValidationError, and a loaded set must survive a round
// trip through its canonical document with the same hash.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(basicJSON))
	f.Add([]byte(basicYAML))
	f.Add([]byte(`{"flags": [{"key": "a", "state": "ENABLED", "variants": {"x": 1}}]}`))
	f.Add([]byte("flags:\n  a: &x\n    state: ENABLED\n    variants: {v: 1}\n  b: *x\n"))
	f.Add([]byte(`{"flags": {"a": {"state": "ENABLED", "variants": {"x": 1e400}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang shows up as a crash that names the input.
		tm := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("Load did not finish in 10s: %q", data)) })
		defer tm.Stop()
		s, err := Load(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error is not a *ValidationError with problems: %v", err)
			}
			return
		}
		if _, err := Parse(data); err != nil {
			t.Fatalf("Load accepted what Parse rejects: %v", err)
		}
		canon, err := json.Marshal(s.Document())
		if err != nil {
			t.Fatalf("marshal canonical document: %v", err)
		}
		s2, err := Load(canon)
		if err != nil {
			t.Fatalf("canonical document does not load: %v\n%s", err, canon)
		}
		if s2.Hash() != s.Hash() {
			t.Fatalf("hash changed through the canonical document:\n%s", canon)
		}
		for _, k := range s.Keys() {
			s.Evaluate(k, map[string]any{"targetingKey": "u"})
		}
	})
}
