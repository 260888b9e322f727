package flags

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// ---- canonical JSON ----

// The set's canonical bytes (whose SHA-256 is the Hash) are exactly what
// encoding/json writes for its Document.
func TestCanonicalIsMarshal(t *testing.T) {
	docs := map[string]string{
		"realistic": realisticSet(200, 5),
		"escapes and unicode": `{"$schema": "s<&>", "metadata": {"a<b": "x&y", "é": "\u2028\u2029", "n": 1e-7, "m": 1e21, "z": -0},
		  "$evaluators": {"e&": {"in": ["<script>", {"var": "s"}]}},
		  "flags": {"f\"q": {"state": "ENABLED", "variants": {"a": "\u0001\t\n", "b": "\ud83d\ude00"}, "defaultVariant": "a",
		    "targeting": {"if": [{"$ref": "e&"}, "b", null]}, "metadata": {"k": 0.000001, "big": 123456789012345678901234}}}}`,
		"numbers": `{"flags": {"n": {"state": "DISABLED", "variants": {"a": 1.0, "b": 1e300, "c": -2.5e-9, "d": 0, "e": 100000000000000000000}}}}`,
		"objects": `{"flags": {"o": {"state": "ENABLED", "variants": {"a": {"z": [1, {"y": null}], "a": {}}, "b": {}}, "defaultVariant": null, "targeting": {}}}}`,
		"empty":   `{"flags": {}}`,
		"array form": `{"flags": [{"key": "b", "state": "ENABLED", "variants": {"on": true}}, {"key": "a", "state": "ENABLED", "variants": {"on": true}, "metadata": {}}],
		  "metadata": {}, "$evaluators": {}}`,
		"yaml": "flags:\n  y:\n    state: ENABLED\n    variants: {a: 0x10, b: 1_000}\n    defaultVariant: a\n    targeting: {\"==\": [{var: n}, 017]}\n",
	}
	for name, src := range docs {
		t.Run(name, func(t *testing.T) {
			s := mustLoad(t, src)
			want, err := json.Marshal(s.Document())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.src.canon, want) {
				t.Fatalf("canonical bytes differ from json.Marshal:\n got %s\nwant %s", s.src.canon, want)
			}
		})
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "<&>", "\u2028\u2029", "\x00\x1f\x7f", "\xff\xfe", "é😀", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}

func FuzzJSONFloat(f *testing.F) {
	for _, v := range []float64{0, math.Copysign(0, -1), 1, -1.5, 1e-6, 9.99e-7, 1e21, 9.99e20, 1e-300, 5e-324, math.MaxFloat64, 123456789.125} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		want, _ := json.Marshal(v)
		if got := appendJSONFloat(nil, v); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONFloat(%v) = %s, want %s", v, got, want)
		}
	})
}

// ---- Recompile: targeted cases ----

const recompileBase = `{"metadata": {"team": "web"},
 "$evaluators": {
   "staff": {"ends_with": [{"var": "email"}, "@example.com"]},
   "beta": {"or": [{"$ref": "staff"}, {"in": [{"var": "targetingKey"}, ["u1", "u2"]]}]},
   "mobile": {"in": [{"var": "platform"}, ["ios", "android"]]}
 },
 "flags": {
   "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"owner": "a"}},
   "uses-staff": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
     "targeting": {"if": [{"$ref": "staff"}, "on", null]}},
   "uses-beta": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
     "targeting": {"if": [{"$ref": "beta"}, "on", null]}},
   "uses-mobile": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
     "targeting": {"if": [{"$ref": "mobile"}, "on", null]}},
   "rollout": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a",
     "targeting": {"fractional": [["a", 50], ["b", 50]]}}
 }}`

func TestRecompile(t *testing.T) {
	edit := func(from, to string) string {
		if !strings.Contains(recompileBase, from) {
			panic("no " + from)
		}
		return strings.Replace(recompileBase, from, to, 1)
	}
	all := []string{"rollout", "static", "uses-beta", "uses-mobile", "uses-staff"}
	cases := []struct {
		name     string
		next     string
		reused   []string // compiled flags that must be kept
		rebuilt  []string // flags that must not be (compiled again or metadata merged again)
		wantErrs []string // substrings of the error, when the new set is invalid
	}{
		{name: "same bytes", next: recompileBase, reused: all},
		{name: "reformatted", next: strings.Join(strings.Fields(recompileBase), "  \n"), reused: all},
		{name: "one flag changed", next: edit(`"defaultVariant": "on", "metadata"`, `"defaultVariant": "off", "metadata"`),
			reused: []string{"rollout", "uses-beta", "uses-mobile", "uses-staff"}, rebuilt: []string{"static"}},
		{name: "targeting respelled", next: edit(`["a", 50], ["b", 50]`, `["a", 50.0], ["b", 5e1]`),
			reused: []string{"static", "uses-beta", "uses-mobile", "uses-staff"}, rebuilt: []string{"rollout"}},
		{name: "keys reordered", next: edit(`"variants": {"a": "A", "b": "B"}`, `"variants": {"b": "B", "a": "A"}`), reused: all},
		{name: "flag added and one removed", next: edit(`"rollout": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a",`,
			`"zzz": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a",`),
			reused: []string{"static", "uses-beta", "uses-mobile", "uses-staff"}},
		{name: "evaluator changed: its users and their users", next: edit(`"@example.com"`, `"@corp.example"`),
			reused: []string{"rollout", "static", "uses-mobile"}, rebuilt: []string{"uses-staff", "uses-beta"}},
		{name: "unused evaluator added", next: edit(`"mobile": {`, `"unused": {"var": "x"}, "mobile": {`), reused: all},
		{name: "set metadata changed", next: edit(`{"team": "web"}`, `{"team": "api"}`), rebuilt: all},
		{name: "set metadata removed", next: edit(`"metadata": {"team": "web"},`, ``), rebuilt: all},
		{name: "flag metadata emptied", next: edit(`, "metadata": {"owner": "a"}`, `, "metadata": {}`),
			reused: []string{"rollout", "uses-beta", "uses-mobile", "uses-staff"}, rebuilt: []string{"static"}},
		{name: "evaluator removed", next: edit(`"mobile": {"in": [{"var": "platform"}, ["ios", "android"]]}`, `"mobile2": {"var": "x"}`),
			wantErrs: []string{`flags.uses-mobile.targeting.if[0].$ref: no evaluator named "mobile"`}},
		{name: "evaluator becomes invalid", next: edit(`"ends_with": [{"var": "email"}, "@example.com"]`, `"ends_with": [{"var": "email"}]`),
			wantErrs: []string{"$evaluators.staff.ends_with: ends_with takes 2 arguments, got 1", `flags.uses-staff.targeting.if[0].$ref: evaluator "staff" is invalid`,
				`flags.uses-beta.targeting.if[0].$ref: evaluator "beta" is invalid`}},
		{name: "syntax error", next: recompileBase[:100], wantErrs: []string{"invalid JSON"}},
		{name: "duplicate flag key", next: edit(`"rollout": {`, `"static": {"state": "ENABLED", "variants": {"x": 1}}, "rollout": {`),
			wantErrs: []string{`flags.static: duplicate key "static"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prev := mustLoad(t, recompileBase)
			before := snapshotOf(t, prev)
			got, err := prev.Recompile([]byte(tc.next))
			want, wantErr := Load([]byte(tc.next))
			// prev is untouched either way.
			if after := snapshotOf(t, prev); !reflect.DeepEqual(before, after) {
				t.Fatal("Recompile modified the previous set")
			}
			if tc.wantErrs != nil {
				if err == nil {
					t.Fatal("Recompile accepted an invalid set")
				}
				if wantErr == nil || err.Error() != wantErr.Error() {
					t.Fatalf("Recompile's error differs from Load's:\n got %v\nwant %v", err, wantErr)
				}
				for _, s := range tc.wantErrs {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil || wantErr != nil {
				t.Fatalf("Recompile: %v; Load: %v", err, wantErr)
			}
			assertSameSet(t, got, want)
			assertSameInput(t, got, want)
			for _, k := range tc.reused {
				if got.flags[k] != prev.flags[k] {
					t.Errorf("flag %s was compiled again", k)
				}
			}
			for _, k := range tc.rebuilt {
				if got.flags[k] == prev.flags[k] {
					t.Errorf("flag %s was kept, but it depends on what changed", k)
				}
			}
		})
	}
}

// A chain of recompiles keeps only the newest input: every flag's bytes
// point into the set's own copy, whichever set they were first read in.
func TestRecompileKeepsOnlyItsOwnInput(t *testing.T) {
	s := mustLoad(t, recompileBase)
	for i := range 5 {
		next := strings.Replace(recompileBase, `"A"`, fmt.Sprintf(`"A%d"`, i), 1)
		var err error
		if s, err = s.Recompile([]byte(next)); err != nil {
			t.Fatal(err)
		}
		for _, r := range s.src.recs {
			raw := s.src.raw(&r)
			if !bytes.HasPrefix(raw, []byte("{")) || !bytes.HasSuffix(raw, []byte("}")) {
				t.Fatalf("step %d: flag %s's bytes are not a flag: %q", i, r.f.key, raw)
			}
			if !bytes.Equal(s.src.seg(&r), mustMarshal(t, r.def)) {
				t.Fatalf("step %d: flag %s's canonical bytes are wrong", i, r.f.key)
			}
		}
	}
	// The input is a copy: changing the caller's buffer changes nothing.
	buf := []byte(recompileBase)
	s2, err := s.Recompile(buf)
	if err != nil {
		t.Fatal(err)
	}
	clear(buf)
	s3, err := s2.Recompile([]byte(recompileBase))
	if err != nil || s3.Hash() != s2.Hash() || s3.flags["static"] != s2.flags["static"] {
		t.Fatalf("recompiling after the caller reused its buffer: %v", err)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A nil set recompiles like Load; a set's clock is not carried over.
func TestRecompileNilAndClock(t *testing.T) {
	var none *Set
	s, err := none.Recompile([]byte(recompileBase))
	if err != nil {
		t.Fatal(err)
	}
	assertSameSet(t, s, mustLoad(t, recompileBase))
	clocked := s.WithClock(fixedNow)
	again, err := clocked.Recompile([]byte(recompileBase))
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(again.now).Pointer() != reflect.ValueOf(time.Now).Pointer() {
		t.Error("Recompile kept the previous set's test clock")
	}
	if _, err := CompileFrom(s, nil); err == nil {
		t.Error("CompileFrom(nil document) succeeded")
	}
}

// ---- Recompile: random edits ----

// TestRecompileRandomEdits applies random edits to random flag sets and
// checks that Recompile and CompileFrom give exactly what Load and
// Compile give, and that flags whose definition (and evaluators and set
// metadata) did not change keep their compiled form.
func TestRecompileRandomEdits(t *testing.T) {
	steps := 150
	if testing.Short() {
		steps = 40
	}
	var st recompileStats
	for seed := range uint64(6) {
		st.add(runRecompileChain(t, seed, steps))
	}
	t.Logf("%+v", st)
	if st.reused == 0 || st.compiled == 0 || st.invalid == 0 || st.skipped == 0 {
		t.Fatalf("the random edits did not exercise every path: %+v", st)
	}
}

func FuzzRecompile(f *testing.F) {
	f.Add(uint64(1), uint8(20))
	f.Add(uint64(99), uint8(60))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8) {
		runRecompileChain(t, seed, int(steps)%80)
	})
}

type recompileStats struct {
	steps, invalid, reused, compiled, skipped int
}

func (s *recompileStats) add(o recompileStats) {
	s.steps += o.steps
	s.invalid += o.invalid
	s.reused += o.reused
	s.compiled += o.compiled
	s.skipped += o.skipped
}

func runRecompileChain(t *testing.T, seed uint64, steps int) recompileStats {
	t.Helper()
	g := &docGen{r: rand.New(rand.NewPCG(seed, 0x5eed))}
	doc := g.doc()
	var st recompileStats
	var prev *Set
	var prevDoc map[string]any
	for step := range steps {
		data := g.render(doc)
		got, err := prev.Recompile(data)
		want, wantErr := Load(data)
		st.steps++
		switch {
		case (err == nil) != (wantErr == nil):
			t.Fatalf("seed %d step %d: Recompile error %v, Load error %v\n%s", seed, step, err, wantErr, data)
		case err != nil:
			if err.Error() != wantErr.Error() {
				t.Fatalf("seed %d step %d: errors differ:\n got %v\nwant %v\n%s", seed, step, err, wantErr, data)
			}
			st.invalid++
		default:
			assertSameSet(t, got, want)
			assertSameInput(t, got, want)
			if prev != nil {
				countReuse(t, &st, prev, got, prevDoc, doc)
			}
			// CompileFrom from the Document, against Compile.
			parsed, perr := Parse(data)
			if perr != nil {
				t.Fatalf("Parse failed where Load succeeded: %v", perr)
			}
			fromDoc, err1 := CompileFrom(prev, parsed)
			plain, err2 := Compile(parsed)
			if err1 != nil || err2 != nil {
				t.Fatalf("seed %d step %d: CompileFrom %v, Compile %v", seed, step, err1, err2)
			}
			assertSameSet(t, fromDoc, plain)
			assertSameSet(t, fromDoc, want)
			prev, prevDoc = got, cloneDoc(doc)
		}
		doc = g.edit(doc)
	}
	return st
}

// countReuse checks that flags which cannot have changed kept their
// compiled form, and counts what was reused.
func countReuse(t *testing.T, st *recompileStats, prev, next *Set, prevDoc, nextDoc map[string]any) {
	t.Helper()
	// Evaluators compare as the set holds them (numbers keep their spelling).
	sameContext := jsonEq(prev.doc.Evaluators, next.doc.Evaluators) && canonMeta(prevDoc["metadata"]) == canonMeta(nextDoc["metadata"])
	for _, k := range next.Keys() {
		old, ok := prev.flags[k]
		if !ok {
			continue
		}
		if next.flags[k] == old {
			st.reused++
		} else {
			st.compiled++
		}
		pd, nd := prev.Document().Flags[k], next.Document().Flags[k]
		unchanged := jsonEq(pd, nd) && (pd.Metadata == nil) == (nd.Metadata == nil)
		if unchanged && sameContext && next.flags[k] != old {
			t.Fatalf("flag %s is unchanged (and so are evaluators and metadata) but was compiled again\nprev %s\nnext %s", k, prev.src.canon, next.src.canon)
		}
		if !jsonEq(pd, nd) && next.flags[k] == old {
			t.Fatalf("flag %s changed but kept its compiled form", k)
		}
	}
	// Flags whose bytes are the same as before (the parser skips them).
	for j, k := range next.Keys() {
		if i := prev.index(k, -1); i >= 0 && prev.src.recs[i].raw1 > 0 && next.src.recs[j].raw1 > 0 &&
			bytes.Equal(prev.src.raw(&prev.src.recs[i]), next.src.raw(&next.src.recs[j])) {
			st.skipped++
		}
	}
}

func canonMeta(v any) string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func jsonEq(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// setSnapshot is everything observable about a Set.
type setSnapshot struct {
	Hash     string
	Keys     []string
	Len      int
	Metadata map[string]any
	Document *Document
	Canon    string
	Infos    []FlagInfo
	Results  []Resolution
	Typed    []any
}

var recompileContexts = []map[string]any{
	nil,
	{"targetingKey": "u1", "email": "ann@example.com", "platform": "ios", "n": 3.0, "version": "2.1.0"},
	{"targetingKey": "u7", "email": "bob@corp.test", "platform": "web", "n": "x", "version": "1.0"},
	{"targetingKey": "", "email": 5},
}

func snapshotOf(t *testing.T, s *Set) setSnapshot {
	t.Helper()
	s = s.WithClock(fixedNow)
	snap := setSnapshot{Hash: s.Hash(), Keys: slices.Clone(s.Keys()), Len: s.Len(), Metadata: s.Metadata(),
		Document: s.Document(), Canon: string(s.src.canon)}
	for _, k := range append(slices.Clone(s.Keys()), "no-such-flag") {
		info, ok := s.Info(k)
		if ok != (k != "no-such-flag") {
			t.Fatalf("Info(%q) ok=%v", k, ok)
		}
		snap.Infos = append(snap.Infos, info)
		for _, ctx := range recompileContexts {
			snap.Results = append(snap.Results, s.Evaluate(k, ctx))
			b, r1 := s.Boolean(k, false, ctx)
			str, r2 := s.String(k, "d", ctx)
			i, r3 := s.Int(k, -1, ctx)
			o, r4 := s.Object(k, nil, ctx)
			snap.Typed = append(snap.Typed, b, r1, str, r2, i, r3, o, r4)
		}
	}
	return snap
}

// assertSameSet fails unless got and want are indistinguishable: the same
// observable behaviour and the same compiled flags.
func assertSameSet(t *testing.T, got, want *Set) {
	t.Helper()
	g, w := snapshotOf(t, got), snapshotOf(t, want)
	if !reflect.DeepEqual(g, w) {
		gv, wv := reflect.ValueOf(g), reflect.ValueOf(w)
		for i := range gv.NumField() {
			if a, b := gv.Field(i).Interface(), wv.Field(i).Interface(); !reflect.DeepEqual(a, b) {
				if gd, ok := a.(*Document); ok {
					wd := b.(*Document)
					for k := range wd.Flags {
						if !reflect.DeepEqual(gd.Flags[k], wd.Flags[k]) {
							t.Fatalf("Documents differ in flag %s:\n got %#v\nwant %#v", k, gd.Flags[k], wd.Flags[k])
						}
					}
					t.Fatalf("Documents differ:\n got %#v\nwant %#v", gd, wd)
				}
				aj, _ := json.Marshal(a)
				bj, _ := json.Marshal(b)
				t.Fatalf("sets differ in %s:\n got %.3000s\nwant %.3000s", gv.Type().Field(i).Name, aj, bj)
			}
		}
	}
	if m := mustMarshal(t, got.Document()); !bytes.Equal(got.src.canon, m) {
		t.Fatalf("canonical bytes are not json.Marshal of the Document:\n got %s\nwant %s", got.src.canon, m)
	}
	for _, k := range want.Keys() {
		if !reflect.DeepEqual(got.flags[k], want.flags[k]) {
			t.Fatalf("compiled flag %s differs:\n got %#v\nwant %#v", k, got.flags[k], want.flags[k])
		}
	}
}

// assertSameInput fails unless got holds the input want holds: what the
// next Recompile compares with.
func assertSameInput(t *testing.T, got, want *Set) {
	t.Helper()
	if !bytes.Equal(got.src.input, want.src.input) || (got.src.input == nil) != (want.src.input == nil) {
		t.Fatalf("the sets hold different inputs:\n got %q\nwant %q", got.src.input, want.src.input)
	}
}

// docGen builds and edits random flag sets as generic JSON values.
type docGen struct {
	r *rand.Rand
}

var (
	genEvalNames = []string{"e0", "e1", "e2", "e3"}
	genFlagKeys  = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k.dot", "l m"}
)

func (g *docGen) pick(n int) int { return g.r.IntN(n) }

func (g *docGen) doc() map[string]any {
	d := map[string]any{}
	flags := map[string]any{}
	for _, k := range genFlagKeys {
		if g.pick(4) > 0 {
			flags[k] = g.flag()
		}
	}
	d["flags"] = flags
	if g.pick(20) > 0 {
		ev := map[string]any{}
		for i, name := range genEvalNames {
			ev[name] = g.evaluator(i)
		}
		d["$evaluators"] = ev
	}
	if m := g.metadata(); m != nil {
		d["metadata"] = m
	}
	if g.pick(5) == 0 {
		d["$schema"] = "https://flagd.dev/schema/v0/flags.json"
	}
	return d
}

func (g *docGen) metadata() any {
	switch g.pick(6) {
	case 0:
		return nil
	case 1:
		return map[string]any{}
	case 2:
		return map[string]any{"env": "prod"}
	case 3:
		return map[string]any{"env": "dev", "v": 2.0}
	case 4:
		return map[string]any{"owner": "team-x", "tier": true}
	}
	if g.pick(20) == 0 {
		return map[string]any{"bad": []any{1.0}} // invalid: not a primitive
	}
	return map[string]any{"env": "prod", "owner": "set"}
}

func (g *docGen) evaluator(i int) any {
	switch g.pick(6) {
	case 0:
		return map[string]any{"ends_with": []any{map[string]any{"var": "email"}, "@example.com"}}
	case 1:
		return map[string]any{"in": []any{map[string]any{"var": "platform"}, []any{"ios", "android"}}}
	case 2:
		return map[string]any{">": []any{map[string]any{"var": "n"}, float64(g.pick(5))}}
	case 3: // refers to a later evaluator (no cycles), or rarely to any one
		j := i + 1 + g.pick(2)
		if g.pick(40) == 0 {
			j = g.pick(len(genEvalNames))
		} else if j >= len(genEvalNames) {
			return map[string]any{"var": "beta"}
		}
		return map[string]any{"or": []any{map[string]any{"$ref": genEvalNames[j]}, map[string]any{"var": "beta"}}}
	case 4:
		return map[string]any{"sem_ver": []any{map[string]any{"var": "version"}, ">=", "2.0.0"}}
	}
	if g.pick(30) == 0 {
		return map[string]any{"no_such_op": []any{1.0}} // invalid
	}
	return map[string]any{"starts_with": []any{map[string]any{"var": "targetingKey"}, "u"}}
}

func (g *docGen) flag() any {
	f := map[string]any{}
	state := []string{"ENABLED", "ENABLED", "ENABLED", "DISABLED"}[g.pick(4)]
	if g.pick(400) == 0 {
		state = "ON" // invalid
	}
	f["state"] = state
	var variants map[string]any
	switch g.pick(5) {
	case 0, 1:
		variants = map[string]any{"on": true, "off": false}
	case 2:
		variants = map[string]any{"a": "A", "b": "B", "c": "<c&>"}
	case 3:
		variants = map[string]any{"low": float64(g.pick(3)), "high": 100.5, "1": 1.0}
	default:
		variants = map[string]any{"x": map[string]any{"size": float64(g.pick(3)), "tags": []any{"t"}}, "y": map[string]any{}}
	}
	if g.pick(300) == 0 {
		variants["mixed"] = 1.0 // invalid unless numbers
	}
	f["variants"] = variants
	names := slices.Sorted(mapKeys(variants))
	switch g.pick(6) {
	case 0:
	case 1:
		f["defaultVariant"] = nil
	case 2:
		if g.pick(100) == 0 {
			f["defaultVariant"] = "missing" // invalid
			break
		}
		fallthrough
	default:
		f["defaultVariant"] = names[g.pick(len(names))]
	}
	v := func() any { return names[g.pick(len(names))] }
	switch g.pick(8) {
	case 0, 1:
	case 2:
		f["targeting"] = map[string]any{}
	case 3:
		f["targeting"] = map[string]any{"if": []any{map[string]any{"$ref": genEvalNames[g.pick(len(genEvalNames))]}, v(), nil}}
	case 4:
		f["targeting"] = map[string]any{"fractional": []any{[]any{v(), 50.0}, []any{v(), 50.0}}}
	case 5:
		f["targeting"] = map[string]any{"if": []any{map[string]any{"in": []any{"@example.com", map[string]any{"var": "email"}}}, v(),
			map[string]any{"and": []any{map[string]any{"$ref": genEvalNames[g.pick(len(genEvalNames))]}, map[string]any{"$ref": genEvalNames[g.pick(len(genEvalNames))]}}}, v(), nil}}
	case 6:
		f["targeting"] = map[string]any{"var": "n"}
	default:
		f["targeting"] = map[string]any{"cat": []any{"", map[string]any{"if": []any{map[string]any{"var": "n"}, v(), nil}}}}
	}
	switch g.pick(5) {
	case 0:
		f["metadata"] = map[string]any{}
	case 1:
		f["metadata"] = map[string]any{"owner": "team-" + strconv.Itoa(g.pick(3))}
	case 2:
		f["metadata"] = map[string]any{"env": "flag-wins", "weight": 0.5}
	}
	return f
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// edit applies one to three random changes.
func (g *docGen) edit(d map[string]any) map[string]any {
	d = cloneDoc(d)
	for range 1 + g.pick(3) {
		flags := d["flags"].(map[string]any)
		switch g.pick(10) {
		case 0, 1, 2: // change, add or remove one flag
			k := genFlagKeys[g.pick(len(genFlagKeys))]
			if _, ok := flags[k]; ok && g.pick(3) == 0 {
				delete(flags, k)
			} else {
				flags[k] = g.flag()
			}
		case 3: // change one field of one flag
			for _, k := range genFlagKeys {
				if f, ok := flags[k].(map[string]any); ok {
					fresh := g.flag().(map[string]any)
					field := []string{"state", "defaultVariant", "targeting", "metadata"}[g.pick(4)]
					if field == "defaultVariant" { // another of its own variants
						names := slices.Sorted(mapKeys(f["variants"].(map[string]any)))
						fresh[field] = names[g.pick(len(names))]
					}
					if v, ok := fresh[field]; ok {
						f[field] = v
					} else {
						delete(f, field)
					}
					break
				}
			}
		case 4: // change, add or remove an evaluator
			ev, _ := d["$evaluators"].(map[string]any)
			if ev == nil {
				ev = map[string]any{}
				d["$evaluators"] = ev
			}
			i := g.pick(len(genEvalNames))
			for j, name := range genEvalNames { // usually bring a removed one back
				if _, ok := ev[name]; !ok && g.pick(3) > 0 {
					i = j
				}
			}
			if _, ok := ev[genEvalNames[i]]; ok && g.pick(6) == 0 {
				delete(ev, genEvalNames[i])
			} else {
				ev[genEvalNames[i]] = g.evaluator(i)
			}
		case 5: // set metadata
			if m := g.metadata(); m != nil {
				d["metadata"] = m
			} else {
				delete(d, "metadata")
			}
		case 6: // rename a flag
			for _, k := range genFlagKeys {
				if f, ok := flags[k]; ok {
					delete(flags, k)
					flags[k+"2"] = f
					break
				}
			}
		default: // nothing: only the formatting changes
		}
	}
	return d
}

func cloneDoc(d map[string]any) map[string]any {
	var c map[string]any
	b, _ := json.Marshal(d)
	_ = json.Unmarshal(b, &c)
	return c
}

// render writes d as JSON in the map form (usually compact and sorted,
// as the server stores it), sometimes with other layouts, number
// spellings, the array form, or as YAML.
func (g *docGen) render(d map[string]any) []byte {
	switch g.pick(12) {
	case 0: // YAML
		out, err := yaml.Marshal(d)
		if err != nil {
			panic(err)
		}
		return out
	case 1: // the array form
		flags := d["flags"].(map[string]any)
		arr := []any{}
		for _, k := range slices.Sorted(mapKeys(flags)) {
			f := flags[k].(map[string]any)
			c := map[string]any{"key": k}
			for kk, v := range f {
				c[kk] = v
			}
			arr = append(arr, c)
		}
		d = cloneDoc(d)
		d["flags"] = arr
	}
	var b bytes.Buffer
	w := &jsonWriter{b: &b, r: g.r, style: g.pick(4)}
	w.value(d)
	return b.Bytes()
}

// jsonWriter writes JSON with a layout: 0 and 1 compact with sorted keys,
// 2 with random whitespace, 3 with shuffled keys and respelled numbers.
type jsonWriter struct {
	b     *bytes.Buffer
	r     *rand.Rand
	style int
}

func (w *jsonWriter) space() {
	if w.style == 2 {
		w.b.WriteString([]string{"", " ", "\n  ", "\t"}[w.r.IntN(4)])
	}
}

func (w *jsonWriter) value(v any) {
	w.space()
	switch t := v.(type) {
	case map[string]any:
		keys := slices.Sorted(mapKeys(t))
		if w.style == 3 {
			w.r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		}
		w.b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.space()
			kb, _ := json.Marshal(k)
			w.b.Write(kb)
			w.space()
			w.b.WriteByte(':')
			w.value(t[k])
		}
		w.space()
		w.b.WriteByte('}')
	case []any:
		w.b.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.value(e)
		}
		w.space()
		w.b.WriteByte(']')
	case float64:
		if w.style == 3 && t == math.Trunc(t) {
			w.b.WriteString([]string{strconv.FormatFloat(t, 'f', 1, 64), strconv.FormatFloat(t, 'e', -1, 64)}[w.r.IntN(2)])
			return
		}
		b, _ := json.Marshal(t)
		w.b.Write(b)
	default:
		b, _ := json.Marshal(t)
		w.b.Write(b)
	}
	w.space()
}

// Problems come in the same order as Load's, every time.
func TestRecompileProblemsInOrder(t *testing.T) {
	bad := strings.Replace(recompileBase, `"defaultVariant": "a",`, `"defaultVariant": "zz",`, 1)
	bad = strings.Replace(bad, `"defaultVariant": "on",`, `"defaultVariant": "zz",`, 1)
	prev := mustLoad(t, recompileBase)
	for range 20 {
		_, err := prev.Recompile([]byte(bad))
		_, want := Load([]byte(bad))
		if err == nil || err.Error() != want.Error() {
			t.Fatalf("got %v, want %v", err, want)
		}
		ve, ok := err.(*ValidationError)
		if !ok || len(ve.Problems) != 2 {
			t.Fatalf("want 2 problems, got %v", err)
		}
	}
}

// Limits count evaluator expansions: a flag changed to expand a (valid,
// unchanged) evaluator too often or too deeply is rejected as Load
// rejects it, whether the evaluator was compiled on its own first or not.
func TestRecompileLimits(t *testing.T) {
	ones := strings.TrimSuffix(strings.Repeat("1,", 1000), ",")
	chain := func(n int) string { // e0 → e1 → … → e(n-1), each one "!" deeper
		var b strings.Builder
		for i := range n - 1 {
			fmt.Fprintf(&b, `"e%d": {"!": {"$ref": "e%d"}},`, i, i+1)
		}
		fmt.Fprintf(&b, `"e%d": {"var": "x"}`, n-1)
		return b.String()
	}
	nest := func(depth int, inner string) string {
		return strings.Repeat(`{"!": `, depth) + inner + strings.Repeat(`}`, depth)
	}
	refs := func(n int) string {
		return `{"+": [` + strings.TrimSuffix(strings.Repeat(`{"$ref": "big"},`, n), ",") + `]}`
	}
	doc := func(targeting string) string {
		return `{"$evaluators": {"big": {"+": [{"var": "x"},` + ones + `]},` + chain(30) + `},
		  "flags": {"other": {"state": "ENABLED", "variants": {"1": 1}, "targeting": {"$ref": "big"}},
		            "f": {"state": "ENABLED", "variants": {"1": 1}, "targeting": ` + targeting + `}}}`
	}
	cases := []struct{ name, before, after, want string }{
		{"too many operations", doc(refs(50)), doc(refs(150)), "more than 100000 operations"},
		{"too deep", doc(nest(30, `{"$ref": "e0"}`)), doc(nest(90, `{"$ref": "e0"}`)), "nested deeper than 100 levels"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prev := mustLoad(t, tc.before)
			_, err := prev.Recompile([]byte(tc.after))
			_, want := Load([]byte(tc.after))
			if err == nil || want == nil || err.Error() != want.Error() {
				t.Fatalf("Recompile: %v\nLoad: %v", err, want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// CompileFrom takes a previous definition as it is only when it reads
// back to exactly it; near misses go through the ordinary checks (and keep
// the compiled flag when their canonical definition is the same) and give
// what Compile gives.
func TestCompileFromNearMisses(t *testing.T) {
	prev := mustLoad(t, `{"flags": {
	  "n": {"state": "ENABLED", "variants": {"a": 0, "b": 1.5}, "defaultVariant": "a", "metadata": {}},
	  "t": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	        "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "on", null]}}}}`)
	base := prev.Document()
	cases := []struct {
		name  string
		edit  func(d *Document)
		reuse map[string]bool // whether each flag keeps its compiled form
	}{
		{"unchanged", func(*Document) {}, map[string]bool{"n": true, "t": true}},
		{"minus zero is not zero", func(d *Document) { d.Flags["n"].Variants["a"] = math.Copysign(0, -1) }, map[string]bool{"n": false, "t": true}},
		{"an int reads as the float64", func(d *Document) { d.Flags["n"].Variants["a"] = 0 }, map[string]bool{"n": true, "t": true}},
		{"no metadata is not empty metadata", func(d *Document) { d.Flags["n"].Metadata = nil }, map[string]bool{"n": false, "t": true}},
		{"a matching key is checked and dropped", func(d *Document) { d.Flags["n"].Key = "n" }, map[string]bool{"n": true, "t": true}},
		{"targeting with spaces is made compact", func(d *Document) {
			d.Flags["t"].Targeting = json.RawMessage(`{"if": [{"==": [{"var": "x"}, 1]}, "on", null]}`)
		}, map[string]bool{"n": true, "t": true}},
		{"targeting respelled", func(d *Document) {
			d.Flags["t"].Targeting = json.RawMessage(`{"if":[{"==":[{"var":"x"},1.0]},"on",null]}`)
		}, map[string]bool{"n": true, "t": false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := base.Clone()
			tc.edit(d)
			got, err := CompileFrom(prev, d)
			want, wantErr := Compile(d)
			if err != nil || wantErr != nil {
				t.Fatalf("CompileFrom: %v; Compile: %v", err, wantErr)
			}
			assertSameSet(t, got, want)
			for k, reused := range tc.reuse {
				if kept := got.flags[k] == prev.flags[k]; kept != reused {
					t.Errorf("flag %s: kept its compiled form = %v, want %v", k, kept, reused)
				}
			}
		})
	}
	// A NaN never compares equal, and is reported as Compile reports it.
	d := base.Clone()
	d.Flags["n"].Variants["a"] = math.NaN()
	_, err := CompileFrom(prev, d)
	_, want := Compile(d)
	if err == nil || err.Error() != want.Error() {
		t.Fatalf("CompileFrom: %v; Compile: %v", err, want)
	}
}

func TestSameDefinition(t *testing.T) {
	dv := func(s string) *string { return &s }
	def := &Flag{State: Enabled, Variants: map[string]any{"a": 0.0, "b": []any{"x", map[string]any{"k": true}}},
		DefaultVariant: dv("a"), Targeting: json.RawMessage(`{"var":"x"}`), Metadata: map[string]any{}}
	same := func() *Flag { return def.Clone() }
	cases := []struct {
		name string
		edit func(f *Flag)
		want bool
	}{
		{"a copy", func(*Flag) {}, true},
		{"minus zero", func(f *Flag) { f.Variants["a"] = math.Copysign(0, -1) }, false},
		{"an int", func(f *Flag) { f.Variants["a"] = 0 }, false},
		{"a json.Number", func(f *Flag) { f.Variants["a"] = json.Number("0") }, false},
		{"nested change", func(f *Flag) { f.Variants["b"].([]any)[1].(map[string]any)["k"] = false }, false},
		{"a []string", func(f *Flag) { f.Variants["b"] = []string{"x"} }, false},
		{"nil metadata", func(f *Flag) { f.Metadata = nil }, false},
		{"a key", func(f *Flag) { f.Key = "k" }, false},
		{"no default", func(f *Flag) { f.DefaultVariant = nil }, false},
		{"another default", func(f *Flag) { f.DefaultVariant = dv("b") }, false},
		{"other targeting bytes", func(f *Flag) { f.Targeting = json.RawMessage(`{"var": "x"}`) }, false},
		{"disabled", func(f *Flag) { f.State = Disabled }, false},
		{"an extra variant", func(f *Flag) { f.Variants["c"] = nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := same()
			tc.edit(f)
			if got := sameDefinition(f, def); got != tc.want {
				t.Fatalf("sameDefinition = %v, want %v", got, tc.want)
			}
		})
	}
}
