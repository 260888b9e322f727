package flags

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	refmurmur "github.com/spaolacci/murmur3"
)

// Published MurmurHash3_x86_32 vectors (SMHasher's algorithm, as listed in
// many ports' test suites).
func TestMurmur3ReferenceVectors(t *testing.T) {
	tests := []struct {
		in   string
		seed uint32
		want uint32
	}{
		{"", 0, 0},
		{"", 1, 0x514e28b7},
		{"", 0xffffffff, 0x81f16f39},
		{"\x00\x00\x00\x00", 0, 0x2362f9de},
		{"hello", 0, 0x248bfa47},
		{"The quick brown fox jumps over the lazy dog", 0, 0x2e4ff723},
		{"aaaa", 0x9747b28c, 0x5a97808a},
		{"aaa", 0x9747b28c, 0x283e0130},
		{"aa", 0x9747b28c, 0x5d211726},
		{"a", 0x9747b28c, 0x7fa09ea6},
		{"abcd", 0x9747b28c, 0xf0478627},
		{"abc", 0x9747b28c, 0xc84a62dd},
		{"Hello, world!", 0x9747b28c, 0x24884cba},
		{"The quick brown fox jumps over the lazy dog", 0x9747b28c, 0x2fa826cd},
	}
	for _, tt := range tests {
		if got := murmur3Seed(tt.in, tt.seed); got != tt.want {
			t.Errorf("murmur3(%q, %#x) = %#08x, want %#08x", tt.in, tt.seed, got, tt.want)
		}
	}
}

// The string implementation agrees with an independent byte-slice one, and
// hashing a+b in two parts agrees with hashing the concatenation.
func TestMurmur3MatchesReferenceImplementation(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		s := string(b)
		want := refSum32(b)
		if got := murmur3(s); got != want {
			t.Fatalf("case %d: murmur3(%q) = %#x, reference %#x", i, s, got, want)
		}
		cut := 0
		if len(s) > 0 {
			cut = r.IntN(len(s) + 1)
		}
		if got := murmur3Concat(s[:cut], s[cut:]); got != want {
			t.Fatalf("case %d: murmur3Concat(%q, %q) = %#x, reference %#x", i, s[:cut], s[cut:], got, want)
		}
		cut2 := cut + r.IntN(len(s)-cut+1)
		if got := Murmur3(s[:cut], s[cut:cut2], s[cut2:]); got != want {
			t.Fatalf("case %d: Murmur3(%q, %q, %q) = %#x, reference %#x", i, s[:cut], s[cut:cut2], s[cut2:], got, want)
		}
	}
}

// refSum32 hashes with the reference library's streaming API (its one-shot
// Sum32 does pointer arithmetic that the race detector's checkptr rejects).
func refSum32(b []byte) uint32 {
	h := refmurmur.New32()
	h.Write(b)
	return h.Sum32()
}

// refBucket computes flagd's bucketing independently of the engine: the
// reference hash, then floor(h * total / 2^32) in arbitrary precision, then
// the first entry whose running sum exceeds the bucket.
func refBucket(key string, names []string, weights []int64) string {
	h := new(big.Int).SetUint64(uint64(refSum32([]byte(key))))
	var total int64
	for _, w := range weights {
		total += max(w, 0)
	}
	b := new(big.Int).Mul(h, big.NewInt(total))
	b.Rsh(b, 32)
	var run int64
	for i, w := range weights {
		run += max(w, 0)
		if b.Cmp(big.NewInt(run)) < 0 {
			return names[i]
		}
	}
	return ""
}

func fractionalSet(t testing.TB, flagKey, bucketing string, names []string, weights []int64) *Set {
	t.Helper()
	var entries []string
	for i, n := range names {
		entries = append(entries, fmt.Sprintf("[%q, %d]", n, weights[i]))
	}
	args := strings.Join(entries, ", ")
	if bucketing != "" {
		args = bucketing + ", " + args
	}
	var variants []string
	for _, n := range names {
		variants = append(variants, fmt.Sprintf("%q: %q", n, n))
	}
	src := fmt.Sprintf(`{"flags": {%q: {"state": "ENABLED", "variants": {%s}, "defaultVariant": %q,
		"targeting": {"fractional": [%s]}}}}`, flagKey, strings.Join(variants, ", "), names[0], args)
	return mustLoad(t, src)
}

func TestFractionalMatchesIndependentReference(t *testing.T) {
	tests := []struct {
		name      string
		bucketing string // "" for flagKey+targetingKey
		names     []string
		weights   []int64
	}{
		{"50/50 by targeting key", "", []string{"a", "b"}, []int64{50, 50}},
		{"four variants by email", `{"var": "email"}`, []string{"red", "blue", "green", "yellow"}, []int64{25, 25, 25, 25}},
		{"uneven weights", `{"var": "email"}`, []string{"x", "y", "z"}, []int64{1, 7, 992}},
		{"large weights", "", []string{"p", "q"}, []int64{1_000_000_000, 1_147_483_647}},
		{"seeded with cat", `{"cat": ["seed-", {"var": "email"}]}`, []string{"on", "off"}, []int64{10, 90}},
		{"zero weight in the middle", "", []string{"a", "b", "c"}, []int64{30, 0, 70}},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fractionalSet(t, "rollout-flag", tt.bucketing, tt.names, tt.weights)
			for i := range 2000 {
				user := fmt.Sprintf("user-%d-%x@example.com", i, r.Uint64())
				ctx := map[string]any{"targetingKey": user, "email": user}
				var key string
				switch tt.bucketing {
				case "":
					key = "rollout-flag" + user
				case `{"var": "email"}`:
					key = user
				default:
					key = "seed-" + user
				}
				want := refBucket(key, tt.names, tt.weights)
				got := s.Evaluate("rollout-flag", ctx)
				if got.Variant != want || got.Reason != ReasonTargetingMatch {
					t.Fatalf("user %q: got %q (%s), reference %q", user, got.Variant, got.Reason, want)
				}
			}
		})
	}
}

func TestFractionalBucketEdges(t *testing.T) {
	// Hand-checked: the hash of the bucketing value and where it lands.
	h := uint64(murmur3("hello")) // 0x248bfa47 = 613153351
	if h != 0x248bfa47 {
		t.Fatalf("hash = %#x", h)
	}
	// bucket for total 100 = floor(613153351 * 100 / 2^32) = 14
	s := fractionalSet(t, "f", `"hello"`, []string{"a", "b"}, []int64{14, 86})
	if r := s.Evaluate("f", nil); r.Variant != "b" {
		t.Errorf("bucket 14 with [14, 86] chose %q, want b (14 is not < 14)", r.Variant)
	}
	s = fractionalSet(t, "f", `"hello"`, []string{"a", "b"}, []int64{15, 85})
	if r := s.Evaluate("f", nil); r.Variant != "a" {
		t.Errorf("bucket 14 with [15, 85] chose %q, want a", r.Variant)
	}
}

func TestFractionalDistribution(t *testing.T) {
	s := fractionalSet(t, "split", "", []string{"a", "b"}, []int64{50, 50})
	const n = 100_000
	count := 0
	for i := range n {
		if s.Evaluate("split", map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}).Variant == "a" {
			count++
		}
	}
	if frac := float64(count) / n; frac < 0.49 || frac > 0.51 {
		t.Errorf("50/50 split put %.4f in a", frac)
	}
}

func TestFractionalIsStickyAcrossUnrelatedChanges(t *testing.T) {
	base := `{"flags": {
	  "rollout": {"state": "ENABLED", "variants": {"new": true, "old": false}, "defaultVariant": "old",
	    "targeting": {"fractional": [["new", 30], ["old", 70]]}}%s}}`
	before := mustLoad(t, fmt.Sprintf(base, ""))
	after := mustLoad(t, fmt.Sprintf(base, `,
	  "other": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x",
	    "targeting": {"fractional": [["x", 5], ["y", 95]]}}`))
	for i := range 5000 {
		ctx := map[string]any{"targetingKey": fmt.Sprintf("u%d", i)}
		if a, b := before.Evaluate("rollout", ctx).Variant, after.Evaluate("rollout", ctx).Variant; a != b {
			t.Fatalf("user u%d moved from %q to %q when another flag changed", i, a, b)
		}
	}
}

func TestFractionalRampOnlyMovesUsersIn(t *testing.T) {
	at10 := fractionalSet(t, "ramp", "", []string{"new", "old"}, []int64{10, 90})
	at20 := fractionalSet(t, "ramp", "", []string{"new", "old"}, []int64{20, 80})
	moved := 0
	for i := range 20000 {
		ctx := map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}
		a, b := at10.Evaluate("ramp", ctx).Variant, at20.Evaluate("ramp", ctx).Variant
		if a == "new" && b != "new" {
			t.Fatalf("user-%d left the new variant when the ramp grew", i)
		}
		if a != b {
			moved++
		}
	}
	if moved < 1500 || moved > 2500 {
		t.Errorf("%d of 20000 users moved in going 10%%→20%%, want about 2000", moved)
	}
}

func TestFractionalEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		logic   string
		ctx     map[string]any
		want    any
		wantAny []any // when the variant depends on the hash, any of these
	}{
		{"no bucketing value and no targeting key is null", `{"fractional": [["a", 50], ["b", 50]]}`, map[string]any{}, nil, nil},
		{"empty targeting key is null", `{"fractional": [["a", 50], ["b", 50]]}`, map[string]any{"targetingKey": ""}, nil, nil},
		{"non-string targeting key is null", `{"fractional": [["a", 50], ["b", 50]]}`, map[string]any{"targetingKey": 5}, nil, nil},
		{"bucketing expression null falls back to targeting key", `{"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}`, map[string]any{"targetingKey": "k"}, nil, []any{"a", "b"}},
		{"bucketing null and no targeting key", `{"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}`, map[string]any{}, nil, nil},
		{"bucketing number is null", `{"fractional": [{"var": "n"}, ["a", 50], ["b", 50]]}`, map[string]any{"n": 5, "targetingKey": "k"}, nil, nil},
		{"single entry always wins", `{"fractional": [["only"]]}`, map[string]any{"targetingKey": "k"}, "only", nil},
		{"single entry with weight zero wins", `{"fractional": [{"var": "email"}, ["only", 0]]}`, map[string]any{"email": "e"}, "only", nil},
		{"all weights zero is null", `{"fractional": [{"var": "email"}, ["a", 0], ["b", 0]]}`, map[string]any{"email": "e"}, nil, nil},
		{"negative weight counts as zero", `{"fractional": [{"var": "email"}, ["a", -5], ["b", 1]]}`, map[string]any{"email": "e"}, "b", nil},
		{"weight defaults to 1", `{"fractional": [{"var": "email"}, ["a"], ["b", 0]]}`, map[string]any{"email": "e"}, "a", nil},
		{"null weight counts as 1", `{"fractional": [{"var": "email"}, ["a", null], ["b", 0]]}`, map[string]any{"email": "e"}, "a", nil},
		{"computed weight", `{"fractional": [{"var": "email"}, ["a", {"var": "w"}], ["b", 0]]}`, map[string]any{"email": "e", "w": 3}, "a", nil},
		{"computed fractional weight is null", `{"fractional": [{"var": "email"}, ["a", {"var": "w"}], ["b", 1]]}`, map[string]any{"email": "e", "w": 1.5}, nil, nil},
		{"computed string weight is null", `{"fractional": [{"var": "email"}, ["a", {"var": "w"}], ["b", 1]]}`, map[string]any{"email": "e", "w": "2"}, nil, nil},
		{"computed weights over the cap are null", `{"fractional": [{"var": "email"}, ["a", {"var": "w"}], ["b", {"var": "w"}]]}`, map[string]any{"email": "e", "w": 2147483647}, nil, nil},
		{"computed variant", `{"fractional": [{"var": "email"}, [{"cat": ["v", "1"]}, 1], ["b", 0]]}`, map[string]any{"email": "e"}, "v1", nil},
		{"computed variant object is null", `{"fractional": [{"var": "email"}, [{"var": "o"}, 1], ["b", 1]]}`, map[string]any{"email": "e", "o": map[string]any{}}, nil, nil},
		{"boolean variant", `{"fractional": [{"var": "email"}, [true, 1]]}`, map[string]any{"email": "e"}, true, nil},
		{"entry from an expression", `{"fractional": [{"var": "email"}, {"var": "entry"}, ["b", 0]]}`, map[string]any{"email": "e", "entry": []any{"x", 1.0}}, "x", nil},
		{"entry expression not an array is null", `{"fractional": [{"var": "email"}, {"var": "entry"}]}`, map[string]any{"email": "e", "entry": "x"}, nil, nil},
		{"literal bucketing string", `{"fractional": ["same-for-all", ["a", 1], ["b", 1]]}`, map[string]any{}, nil, []any{"a", "b"}},
		{"$flagd.flagKey in bucketing", `{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 1], ["b", 1]]}`, map[string]any{"email": "e"}, nil, []any{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runLogic(t, tt.logic, tt.ctx)
			if tt.wantAny != nil {
				for _, w := range tt.wantAny {
					if got == w {
						return
					}
				}
				t.Errorf("got %#v, want one of %v", got, tt.wantAny)
				return
			}
			if got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// The default bucketing value is flagKey+targetingKey, and an explicit
// bucketing expression that builds the same string lands in the same bucket.
func TestFractionalDefaultBucketingIsFlagKeyPlusTargetingKey(t *testing.T) {
	implicit := `{"fractional": [["a", 1], ["b", 1], ["c", 1], ["d", 1]]}`
	explicit := `{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}, ["a", 1], ["b", 1], ["c", 1], ["d", 1]]}`
	for i := range 500 {
		ctx := map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}
		if a, b := runLogic(t, implicit, ctx), runLogic(t, explicit, ctx); a != b {
			t.Fatalf("user-%d: implicit %v, explicit %v", i, a, b)
		}
	}
}

func TestSemVer(t *testing.T) {
	tests := []struct {
		a, op, b string
		want     any
	}{
		{"1.0.0", "=", "1.0.0", true},
		{"1.0.0", "=", "1.0.1", false},
		{"1.0.0", "!=", "1.0.1", true},
		{"1.0.0", "<", "1.0.1", true},
		{"1.0.0", "<=", "1.0.0", true},
		{"2.0.0", ">", "1.9.9", true},
		{"1.10.0", ">", "1.9.0", true},
		{"1.0.0", ">=", "1.0.1", false},
		{"1.2.3", "~", "1.2.9", true},
		{"1.3.0", "~", "1.2.9", false},
		{"1.9.0", "^", "1.0.0", true},
		{"2.0.0", "^", "1.0.0", false},
		{"0.2.0", "^", "0.1.0", true},
		{"v1.2.3", "=", "1.2.3", true},
		{"V1.2.3", "=", "v1.2.3", true},
		{"1", "=", "1.0.0", true},
		{"1.2", "=", "1.2.0", true},
		{"1.0.0-alpha", "<", "1.0.0", true},
		{"1.0.0-alpha", "<", "1.0.0-alpha.1", true},
		{"1.0.0-alpha.1", "<", "1.0.0-alpha.beta", true},
		{"1.0.0-alpha.beta", "<", "1.0.0-beta", true},
		{"1.0.0-beta.2", "<", "1.0.0-beta.11", true},
		{"1.0.0-beta.11", "<", "1.0.0-rc.1", true},
		{"1.0.0+build.1", "=", "1.0.0+build.2", true},
		{"1.0.0-rc.1+b", "=", "1.0.0-rc.1", true},
		{"99999999999999999999.0.0", ">", "9999999999999999999.0.0", true},
		{"2.0.0.0", "=", "2.0.0", nil},
		{"01.0.0", "=", "1.0.0", nil},
		{"1.0.0-01", "=", "1.0.0", nil},
		{"1.0.0-", "=", "1.0.0", nil},
		{"1.0-beta", "=", "1.0.0-beta", nil},
		{"1.0.", "=", "1.0.0", nil},
		{"", "=", "1.0.0", nil},
		{"abc", "=", "1.0.0", nil},
		{"1.0.0 ", "=", "1.0.0", nil},
		{"1.0.0+", "=", "1.0.0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.a+tt.op+tt.b, func(t *testing.T) {
			// The version under test comes from the context so the rule compiles.
			logic := fmt.Sprintf(`{"sem_ver": [{"var": "v"}, %q, %q]}`, tt.op, tt.b)
			got := runLogic(t, logic, map[string]any{"v": tt.a})
			if got != tt.want {
				t.Errorf("%s %s %s = %v, want %v", tt.a, tt.op, tt.b, got, tt.want)
			}
		})
	}
}

func TestSemVerEdgeInputs(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"number version is stringified", `{"sem_ver": [{"var": "v"}, "=", "1.2.0"]}`, map[string]any{"v": 1.2}, true},
		{"integer version", `{"sem_ver": [{"var": "v"}, ">=", "2.0.0"]}`, map[string]any{"v": 2}, true},
		{"missing version is null", `{"sem_ver": [{"var": "v"}, "=", "1.0.0"]}`, map[string]any{}, nil},
		{"boolean version is null", `{"sem_ver": [{"var": "v"}, "=", "1.0.0"]}`, map[string]any{"v": true}, nil},
		{"computed bad operator is null", `{"sem_ver": ["1.0.0", {"var": "op"}, "1.0.0"]}`, map[string]any{"op": "=="}, nil},
		{"computed operator", `{"sem_ver": ["1.0.0", {"var": "op"}, "1.0.0"]}`, map[string]any{"op": "="}, true},
		{"computed target", `{"sem_ver": ["1.5.0", "<", {"var": "t"}]}`, map[string]any{"t": "v2"}, true},
		{"computed invalid target is null", `{"sem_ver": ["1.5.0", "<", {"var": "t"}]}`, map[string]any{"t": "2.x"}, nil},
		{"constant both sides folds", `{"sem_ver": ["1.0.0", "<", "2.0.0"]}`, nil, true},
	})
}

func TestEvaluatorsAndRefs(t *testing.T) {
	src := `{
	  "$evaluators": {
	    "isStaff": {"ends_with": [{"var": "email"}, "@example.com"]},
	    "isStaffBeta": {"and": [{"$ref": "isStaff"}, {"==": [{"var": "beta"}, true]}]}
	  },
	  "flags": {
	    "f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	      "targeting": {"if": [ { "$ref" : "isStaffBeta" }, "on", null]}}
	  }
	}`
	s := mustLoad(t, src)
	tests := []struct {
		name    string
		ctx     map[string]any
		variant string
		reason  Reason
	}{
		{"both conditions", map[string]any{"email": "a@example.com", "beta": true}, "on", ReasonTargetingMatch},
		{"one condition", map[string]any{"email": "a@example.com"}, "off", ReasonDefault},
		{"neither", map[string]any{}, "off", ReasonDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Evaluate("f", tt.ctx)
			if r.Variant != tt.variant || r.Reason != tt.reason {
				t.Errorf("got %+v", r)
			}
		})
	}
	if got := string(s.Document().Flags["f"].Targeting); got != `{"if":[{"$ref":"isStaffBeta"},"on",null]}` {
		t.Errorf("canonical targeting keeps the $ref compact: %s", got)
	}
}

func TestEvaluatorProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"missing evaluator", `{"$evaluators": {"a": true}, "flags": {"f": {"state": "ENABLED", "variants": {"on": true}, "targeting": {"if": [{"$ref": "b"}, "on", null]}}}}`,
			[]string{`flags.f.targeting.if[0].$ref: no evaluator named "b" in $evaluators (have: a)`}},
		{"cycle", `{"$evaluators": {"a": {"$ref": "b"}, "b": {"!": {"$ref": "a"}}}, "flags": {}}`,
			[]string{`$evaluators.a.$ref: evaluator "a" refers to itself (a → b → a)`, `$evaluators.b.!.$ref: evaluator "b" refers to itself (b → a → b)`}},
		{"invalid evaluator reported once at its path", `{"$evaluators": {"bad": {"nope": 1}}, "flags": {"f": {"state": "ENABLED", "variants": {"on": true}, "targeting": {"$ref": "bad"}}}}`,
			[]string{`$evaluators.bad: unknown operator "nope"`, `flags.f.targeting.$ref: evaluator "bad" is invalid (see $evaluators)`}},
		{"exponential expansion is bounded", expansionBomb(),
			[]string{`targeting expands to more than 100000 operations`}},
		{"evaluators must be an object", `{"$evaluators": [1], "flags": {}}`,
			[]string{`$evaluators: must be an object of named targeting rules, got an array`}},
		{"targeting must be an object", `{"flags": {"f": {"state": "ENABLED", "variants": {"on": true}, "targeting": "on"}}}`,
			[]string{`flags.f.targeting: must be a JsonLogic rule (an object), got a string`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.src))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in\n%v", w, err)
				}
			}
		})
	}
}

// expansionBomb: each evaluator uses the previous one twice.
func expansionBomb() string {
	var b strings.Builder
	b.WriteString(`{"$evaluators": {"e0": {"var": "x"}`)
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, `, "e%d": {"or": [{"$ref": "e%d"}, {"$ref": "e%d"}]}`, i, i-1, i-1)
	}
	b.WriteString(`}, "flags": {}}`)
	return b.String()
}
