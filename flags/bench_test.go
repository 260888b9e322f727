package flags

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const benchFlags = `{"flags": {
  "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "three-rules": {"state": "ENABLED",
    "variants": {"staff": "staff-ui", "enterprise": "enterprise-ui", "modern": "modern-ui", "classic": "classic-ui"},
    "defaultVariant": "classic",
    "targeting": {"if": [
      {"in": ["@example.com", {"var": "email"}]}, "staff",
      {"==": [{"var": "plan"}, "enterprise"]}, "enterprise",
      {"sem_ver": [{"var": "appVersion"}, ">=", "2.4.0"]}, "modern",
      null]}},
  "fractional": {"state": "ENABLED",
    "variants": {"red": "#f00", "green": "#0f0", "blue": "#00f", "yellow": "#ff0"},
    "defaultVariant": "red",
    "targeting": {"fractional": [["red", 25], ["green", 25], ["blue", 25], ["yellow", 25]]}}
}}`

// The static flag through the typed API: the target is ≤ 50 ns, 0 allocs.
func BenchmarkStaticFlag(b *testing.B) {
	s := mustLoad(b, benchFlags)
	ctx := map[string]any{"targetingKey": "user-1", "email": "ann@corp.test"}
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := s.Boolean("static", false, ctx); !v {
			b.Fatal("wrong value")
		}
	}
}

// A flag with three rules (in on an email domain, ==, sem_ver), for a
// context that falls through the first two and matches the third: the
// target is ≤ 300 ns, ≤ 1 alloc.
func BenchmarkThreeRuleFlag(b *testing.B) {
	s := mustLoad(b, benchFlags)
	ctx := map[string]any{"targetingKey": "user-1", "email": "ann@corp.test", "plan": "team", "appVersion": "2.5.1"}
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := s.String("three-rules", "", ctx); v != "modern-ui" {
			b.Fatal("wrong value", v)
		}
	}
}

// fractional over 4 variants, bucketing on flag key + targeting key: the
// target is ≤ 250 ns, 0 allocs.
func BenchmarkFractional4(b *testing.B) {
	s := mustLoad(b, benchFlags)
	ctxs := make([]map[string]any, 1024)
	for i := range ctxs {
		ctxs[i] = map[string]any{"targetingKey": fmt.Sprintf("user-%d@example.com", i)}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, r := s.String("fractional", "", ctxs[i&1023]); r.Reason != ReasonTargetingMatch {
			b.Fatal(r)
		}
		i++
	}
}

// realisticSet builds n flags shaped like a production flag set: mostly
// static kill switches and settings, some rules on user attributes, some
// percentage rollouts, a few shared evaluators.
func realisticSet(n int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	b.WriteString(`{"$schema": "https://flagd.dev/schema/v0/flags.json",
  "metadata": {"flagSetId": "web", "version": "42"},
  "$evaluators": {
    "staff": {"ends_with": [{"var": "email"}, "@example.com"]},
    "beta": {"in": [{"var": "targetingKey"}, ["user-1", "user-2", "user-3", "user-5", "user-8"]]},
    "mobile": {"in": [{"var": "platform"}, ["ios", "android"]]}
  },
  "flags": {`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		key := fmt.Sprintf("flag-%04d", i)
		switch k := r.IntN(20); {
		case k < 10: // static boolean
			fmt.Fprintf(&b, `%q: {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": %q, "metadata": {"owner": "team-%d"}}`,
				key, []string{"on", "off"}[r.IntN(2)], r.IntN(9))
		case k < 12: // static setting
			fmt.Fprintf(&b, `%q: {"state": "ENABLED", "variants": {"low": %d, "high": %d}, "defaultVariant": "low"}`, key, r.IntN(100), 100+r.IntN(900))
		case k < 13: // disabled
			fmt.Fprintf(&b, `%q: {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`, key)
		case k < 16: // rules
			fmt.Fprintf(&b, `%q: {"state": "ENABLED", "variants": {"a": "variant-a", "b": "variant-b", "c": "variant-c"}, "defaultVariant": "c",
  "targeting": {"if": [{"$ref": "staff"}, "a",
    {"and": [{"$ref": "mobile"}, {"sem_ver": [{"var": "appVersion"}, ">=", "%d.%d.0"]}]}, "b",
    {"in": [{"var": "country"}, ["DE", "FR", "NL", "SE"]]}, "b", null]}}`, key, 1+r.IntN(3), r.IntN(10))
		case k < 19: // rollout
			p := 5 + r.IntN(90)
			fmt.Fprintf(&b, `%q: {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
  "targeting": {"if": [{"$ref": "beta"}, "on", {"fractional": [["on", %d], ["off", %d]]}]}}`, key, p, 100-p)
		default: // experiment with an object payload
			fmt.Fprintf(&b, `%q: {"state": "ENABLED", "variants": {"control": {"layout": "list", "size": 10}, "treatment": {"layout": "grid", "size": 20}},
  "defaultVariant": "control",
  "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "accountId"}]}, ["control", 50], ["treatment", 50]]}}`, key)
		}
	}
	b.WriteString("\n}}")
	return b.String()
}

func realisticContexts(n int) []map[string]any {
	r := rand.New(rand.NewPCG(11, 13))
	platforms := []string{"web", "ios", "android"}
	countries := []string{"US", "DE", "FR", "BR", "IN", "JP", "NL"}
	domains := []string{"example.com", "gmail.com", "corp.test", "mail.io"}
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{
			"targetingKey": fmt.Sprintf("user-%d", i),
			"email":        fmt.Sprintf("u%d@%s", i, domains[r.IntN(len(domains))]),
			"platform":     platforms[r.IntN(len(platforms))],
			"country":      countries[r.IntN(len(countries))],
			"appVersion":   fmt.Sprintf("%d.%d.%d", 1+r.IntN(3), r.IntN(10), r.IntN(20)),
			"accountId":    fmt.Sprintf("acct-%d", r.IntN(500)),
			"plan":         []string{"free", "team", "enterprise"}[r.IntN(3)],
		}
	}
	return out
}

// A realistic 100-flag set evaluated for 10,000 different contexts: each
// op evaluates every flag once for one context (as a server does for an
// OFREP bulk request); ns/eval is the cost of one flag evaluation.
func BenchmarkRealistic100Flags(b *testing.B) {
	s := mustLoad(b, realisticSet(100, 1))
	ctxs := realisticContexts(10_000)
	keys := s.Keys()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ctx := ctxs[i%len(ctxs)]
		for _, k := range keys {
			if r := s.Evaluate(k, ctx); r.Reason == ReasonError {
				b.Fatal(r)
			}
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/eval")
}

// Compiling a 10,000-flag set from JSON: the target is ≤ 1 s and ≤ 200 MB.
func BenchmarkCompile10kFlags(b *testing.B) {
	src := []byte(realisticSet(10_000, 2))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := Load(src)
		if err != nil || s.Len() != 10_000 {
			b.Fatal(err)
		}
	}
}

func TestRealisticSetLoads(t *testing.T) {
	s := mustLoad(t, realisticSet(100, 1))
	seen := map[Reason]int{}
	for _, ctx := range realisticContexts(200) {
		for _, k := range s.Keys() {
			r := s.Evaluate(k, ctx)
			if r.Reason == ReasonError {
				t.Fatalf("%s: %+v", k, r)
			}
			seen[r.Reason]++
		}
	}
	for _, want := range []Reason{ReasonStatic, ReasonTargetingMatch, ReasonDefault, ReasonDisabled} {
		if seen[want] == 0 {
			t.Errorf("no %s resolutions in the realistic set: %v", want, seen)
		}
	}
}

// toggleState flips the state of flag key in a realisticSet document.
func toggleState(doc, key string) string {
	for _, from := range []string{"ENABLED", "DISABLED"} {
		to := map[string]string{"ENABLED": "DISABLED", "DISABLED": "ENABLED"}[from]
		old := fmt.Sprintf(`"%s": {"state": "%s"`, key, from)
		if strings.Contains(doc, old) {
			return strings.Replace(doc, old, fmt.Sprintf(`"%s": {"state": "%s"`, key, to), 1)
		}
	}
	panic("no flag " + key)
}

// Loading a flag set after one flag changed: a fresh Load against
// Recompile from the previous set, which reuses the 99 or 9,999 flags
// whose bytes did not change, and CompileFrom, which compares Documents.
// "formatted" is the realistic set as a person writes it (indented);
// "canonical" is the same set as the server stores and streams it
// (json.Marshal of the Document).
func BenchmarkRecompile(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		for _, form := range []string{"formatted", "canonical"} {
			before := realisticSet(n, 2)
			after := toggleState(before, fmt.Sprintf("flag-%04d", n/2))
			if form == "canonical" {
				before, after = canonicalJSON(b, before), canonicalJSON(b, after)
			}
			prev := mustLoad(b, before)
			name := fmt.Sprintf("%d-flags/%s", n, form)
			b.Run(name+"/load", func(b *testing.B) {
				data := []byte(after)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Load(data); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/recompile-1-changed", func(b *testing.B) {
				data := []byte(after)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := prev.Recompile(data); err != nil {
						b.Fatal(err)
					}
				}
			})
			if form == "canonical" {
				continue
			}
			b.Run(fmt.Sprintf("%d-flags/compile-from-1-changed", n), func(b *testing.B) {
				doc, err := Parse([]byte(after))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := CompileFrom(prev, doc); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// canonicalJSON is doc as json.Marshal writes its Document.
func canonicalJSON(tb testing.TB, doc string) string {
	d, err := Parse([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	out, err := json.Marshal(d)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}
