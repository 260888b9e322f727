package flags

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

var fixedNow = func() time.Time { return time.Unix(1700000000, 0) }

// runLogic compiles a JsonLogic rule on its own and evaluates it for ctx.
func runLogic(t *testing.T, logic string, ctx map[string]any) any {
	t.Helper()
	v, err := tryLogic(logic, nil, ctx)
	if err != nil {
		t.Fatalf("compile %s: %v", logic, err)
	}
	return v
}

func tryLogic(logic string, evaluators map[string]*node, ctx map[string]any) (any, error) {
	var ps problems
	n, err := parseJSONTree([]byte(logic), &ps, "rule")
	if err != nil {
		return nil, err
	}
	c := newCompiler(evaluators, &ps)
	r := c.compileRule(n, "rule")
	if err := ps.err(); err != nil {
		return nil, err
	}
	e := env{ctx: ctx, flagKey: "my-flag", now: fixedNow, budget: workBudget}
	v := e.eval(r.root)
	if e.failed != "" {
		return nil, &ValidationError{Problems: []Problem{{Path: "eval", Message: e.failed}}}
	}
	return toAny(v), nil
}

type logicCase struct {
	name  string
	logic string
	ctx   map[string]any
	want  any
}

func runLogicCases(t *testing.T, cases []logicCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got := runLogic(t, tt.logic, tt.ctx)
			if f, ok := tt.want.(float64); ok && math.IsNaN(f) {
				if g, ok := got.(float64); !ok || !math.IsNaN(g) {
					t.Errorf("%s = %#v, want NaN", tt.logic, got)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.logic, got, tt.want)
			}
		})
	}
}

var data = map[string]any{
	"a":      1.0,
	"s":      "hello",
	"empty":  "",
	"nil":    nil,
	"user":   map[string]any{"email": "ann@example.com", "tags": []any{"x", "y"}, "n": 3},
	"list":   []any{1.0, 2.0, 3.0},
	"strs":   []string{"a", "b"},
	"1":      "one",
	"ints":   []int{4, 5},
	"$flagd": map[string]any{"flagKey": "spoofed", "timestamp": 1.0},
}

func TestVarAndMissing(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"var by name", `{"var": "a"}`, data, 1.0},
		{"var single-element array", `{"var": ["a"]}`, data, 1.0},
		{"var dotted path", `{"var": "user.email"}`, data, "ann@example.com"},
		{"var array index", `{"var": "list.1"}`, data, 2.0},
		{"var index into []string", `{"var": "strs.1"}`, data, "b"},
		{"var index into []int", `{"var": "ints.0"}`, data, 4.0},
		{"var nested array index", `{"var": "user.tags.0"}`, data, "x"},
		{"var int from context", `{"var": "user.n"}`, data, 3.0},
		{"var index out of range", `{"var": "list.9"}`, data, nil},
		{"var non-canonical index", `{"var": "list.01"}`, data, nil},
		{"var missing is null", `{"var": "nope"}`, data, nil},
		{"var default when missing", `{"var": ["nope", "dflt"]}`, data, "dflt"},
		{"var default when path breaks", `{"var": ["a.b.c", 7]}`, data, 7.0},
		{"var explicit null is not missing", `{"var": ["nil", "dflt"]}`, data, nil},
		{"var number name", `{"var": 1}`, data, "one"},
		{"var computed name", `{"var": {"cat": ["us", "er.email"]}}`, data, "ann@example.com"},
		{"var computed default", `{"var": ["nope", {"cat": ["x", "y"]}]}`, data, "xy"},
		{"var into a string is missing", `{"var": ["s.length", "none"]}`, data, "none"},
		{"$flagd.flagKey overrides the caller", `{"var": "$flagd.flagKey"}`, data, "my-flag"},
		{"$flagd.timestamp is unix seconds", `{"var": "$flagd.timestamp"}`, data, 1700000000.0},
		{"$flagd unknown property", `{"var": ["$flagd.other", "d"]}`, data, "d"},
		{"missing lists absent, null and empty", `{"missing": ["a", "nope", "nil", "empty", "user.email", "user.zip"]}`, data, []any{"nope", "nil", "empty", "user.zip"}},
		{"missing with an array argument", `{"missing": [["a", "b"]]}`, data, []any{"b"}},
		{"missing with merge", `{"missing": {"merge": [["a"], ["zz"]]}}`, data, []any{"zz"}},
		{"missing none", `{"missing": []}`, data, []any{}},
		{"missing_some satisfied", `{"missing_some": [1, ["a", "b", "c"]]}`, data, []any{}},
		{"missing_some not satisfied", `{"missing_some": [2, ["a", "b", "c"]]}`, data, []any{"b", "c"}},
		{"missing_some in if", `{"if": [{"missing_some": [2, ["a", "s"]]}, "missing", "ok"]}`, data, "ok"},
	})
}

func TestEqualityAndTruthiness(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"== same", `{"==": [1, 1]}`, nil, true},
		{"== number and string", `{"==": [1, "1"]}`, nil, true},
		{"== number and decimal string", `{"==": [1, "1.0"]}`, nil, true},
		{"== zero and false", `{"==": [0, false]}`, nil, true},
		{"== empty string and zero", `{"==": ["", 0]}`, nil, true},
		{"== null and false", `{"==": [null, false]}`, nil, false},
		{"== null and null", `{"==": [null, null]}`, nil, true},
		{"== null and zero", `{"==": [null, 0]}`, nil, false},
		{"== missing var and null", `{"==": [{"var": "nope"}, null]}`, nil, true},
		{"== array and number", `{"==": [[1], 1]}`, nil, true},
		{"== empty array and false", `{"==": [[], false]}`, nil, true},
		{"== array and string", `{"==": [[1, 2], "1,2"]}`, nil, true},
		{"== true and string 1", `{"==": [true, "1"]}`, nil, true},
		{"== strings differ", `{"==": ["a", "b"]}`, nil, false},
		{"== whitespace string and zero", `{"==": [" ", 0]}`, nil, true},
		{"== hex string", `{"==": ["0x10", 16]}`, nil, true},
		{"== NaN string", `{"==": ["abc", 0]}`, nil, false},
		{"=== same type", `{"===": [1, 1]}`, nil, true},
		{"=== different type", `{"===": [1, "1"]}`, nil, false},
		{"!= coerces", `{"!=": [1, "1"]}`, nil, false},
		{"!= differs", `{"!=": [1, 2]}`, nil, true},
		{"!== different type", `{"!==": [1, "1"]}`, nil, true},
		{"! true", `{"!": [true]}`, nil, false},
		{"! unwrapped argument", `{"!": true}`, nil, false},
		{"! empty array is falsy", `{"!": [[]]}`, nil, true},
		{"! zero", `{"!": 0}`, nil, true},
		{"! string zero is truthy", `{"!": ["0"]}`, nil, false},
		{"!! non-empty array", `{"!!": [["a"]]}`, nil, true},
		{"!! empty string", `{"!!": [""]}`, nil, false},
		{"!! object is truthy", `{"!!": [{"var": "user"}]}`, data, true},
		{"!! NaN is falsy", `{"!!": [{"/": [0, 0]}]}`, nil, false},
		{"or returns first truthy", `{"or": [false, 0, "a", "b"]}`, nil, "a"},
		{"or returns last when none", `{"or": [false, 0]}`, nil, 0.0},
		{"and returns first falsy", `{"and": [true, "", 3]}`, nil, ""},
		{"and returns last when all", `{"and": [true, "a", 3]}`, nil, 3.0},
		{"or short-circuits", `{"or": [true, {"var": "x"}]}`, nil, true},
	})
}

func TestComparisons(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"< numbers", `{"<": [1, 2]}`, nil, true},
		{"< equal", `{"<": [2, 2]}`, nil, false},
		{"< strings compare as strings", `{"<": ["10", "9"]}`, nil, true},
		{"< number and numeric string", `{"<": [10, "9"]}`, nil, false},
		{"< letters", `{"<": ["a", "b"]}`, nil, true},
		{"< null is zero", `{"<": [null, 1]}`, nil, true},
		{"< NaN is false", `{"<": ["abc", 1]}`, nil, false},
		{"< NaN reversed is false", `{"<": [1, "abc"]}`, nil, false},
		{"< between", `{"<": [1, 2, 3]}`, nil, true},
		{"< between fails at the edge", `{"<": [1, 1, 3]}`, nil, false},
		{"< between upper", `{"<": [1, 5, 3]}`, nil, false},
		{"<= equal", `{"<=": [1, 1]}`, nil, true},
		{"<= between inclusive", `{"<=": [1, 1, 3]}`, nil, true},
		{"<= between outside", `{"<=": [1, 4, 3]}`, nil, false},
		{"> numbers", `{">": [2, 1]}`, nil, true},
		{"> strings", `{">": ["b", "a"]}`, nil, true},
		{">= equal", `{">=": [1, 1]}`, nil, true},
		{">= less", `{">=": [0, 1]}`, nil, false},
		{"> with var", `{">": [{"var": "a"}, 0]}`, data, true},
		{"< UTF-16 order", `{"<": ["\uffff", "😀"]}`, nil, false},
		{"< astral pair", `{"<": ["😀", "😁"]}`, nil, true},
	})
}

func TestArithmetic(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"+ numbers", `{"+": [1, 2, 3]}`, nil, 6.0},
		{"+ parses strings", `{"+": [1, "2"]}`, nil, 3.0},
		{"+ parses a numeric prefix", `{"+": ["1.5abc"]}`, nil, 1.5},
		{"+ none is zero", `{"+": []}`, nil, 0.0},
		{"+ single casts", `{"+": "3"}`, nil, 3.0},
		{"+ null is NaN", `{"+": [null, 1]}`, nil, math.NaN()},
		{"- binary", `{"-": [5, 2]}`, nil, 3.0},
		{"- unary", `{"-": [2]}`, nil, -2.0},
		{"- strings", `{"-": ["5", "2"]}`, nil, 3.0},
		{"* numbers", `{"*": [2, "3"]}`, nil, 6.0},
		{"* lone argument is returned as is", `{"*": ["3"]}`, nil, "3"},
		{"/ numbers", `{"/": [6, 4]}`, nil, 1.5},
		{"/ by zero", `{"/": [1, 0]}`, nil, math.Inf(1)},
		{"% positive", `{"%": [7, 3]}`, nil, 1.0},
		{"% keeps the dividend's sign", `{"%": [-7, 3]}`, nil, -1.0},
		{"% by zero", `{"%": [1, 0]}`, nil, math.NaN()},
		{"min", `{"min": [1, 2, 0.5]}`, nil, 0.5},
		{"max coerces", `{"max": [1, "5", 2]}`, nil, 5.0},
		{"max with NaN", `{"max": [1, "x"]}`, nil, math.NaN()},
		{"arithmetic on context", `{"*": [{"var": "a"}, {"var": "user.n"}]}`, data, 3.0},
	})
}

func TestStringsAndArrays(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"cat mixes types", `{"cat": ["a", 1, null, true, [1, 2], 1.5]}`, nil, "a1true1,21.5"},
		{"cat none", `{"cat": []}`, nil, ""},
		{"cat with var", `{"cat": ["Hi ", {"var": "s"}]}`, data, "Hi hello"},
		{"cat large number", `{"cat": [1e21, " ", 1e-7, " ", 123456789012]}`, nil, "1e+21 1e-7 123456789012"},
		{"substr from", `{"substr": ["jsonlogic", 4]}`, nil, "logic"},
		{"substr negative start", `{"substr": ["jsonlogic", -5]}`, nil, "logic"},
		{"substr length", `{"substr": ["jsonlogic", 1, 3]}`, nil, "son"},
		{"substr negative length", `{"substr": ["jsonlogic", 4, -2]}`, nil, "log"},
		{"substr code points", `{"substr": ["héllo", 1, 2]}`, nil, "él"},
		{"substr past the end", `{"substr": ["abc", 5]}`, nil, ""},
		{"substr number source", `{"substr": [12345, 1, 2]}`, nil, "23"},
		{"in substring", `{"in": ["Spring", "Springfield"]}`, nil, true},
		{"in substring miss", `{"in": ["Illinois", "Springfield"]}`, nil, false},
		{"in array", `{"in": ["Mike", ["Bob", "Mike"]]}`, nil, true},
		{"in array is strict", `{"in": [1, ["1"]]}`, nil, false},
		{"in array from context", `{"in": ["y", {"var": "user.tags"}]}`, data, true},
		{"in []string from context", `{"in": ["b", {"var": "strs"}]}`, data, true},
		{"in non-container", `{"in": ["x", 5]}`, nil, false},
		{"in email domain", `{"in": ["@example.com", {"var": "user.email"}]}`, data, true},
		{"in number in string", `{"in": [2, "123"]}`, nil, true},
		{"merge flattens one level", `{"merge": [[1, 2], [3], 4, [[5]]]}`, nil, []any{1.0, 2.0, 3.0, 4.0, []any{5.0}}},
		{"merge none", `{"merge": []}`, nil, []any{}},
		{"merge context arrays", `{"merge": [{"var": "list"}, {"var": "strs"}]}`, data, []any{1.0, 2.0, 3.0, "a", "b"}},
		{"literal array with expressions", `[{"var": "a"}, 2]`, data, []any{1.0, 2.0}},
		{"starts_with", `{"starts_with": ["192.168.0.1", "192.168"]}`, nil, true},
		{"starts_with miss", `{"starts_with": ["10.0.0.1", "192.168"]}`, nil, false},
		{"ends_with", `{"ends_with": [{"var": "user.email"}, "@example.com"]}`, data, true},
		{"ends_with miss", `{"ends_with": ["a@test.com", "@example.com"]}`, nil, false},
		{"starts_with non-string is null", `{"starts_with": [123, "1"]}`, nil, nil},
		{"ends_with missing var is null", `{"ends_with": [{"var": "nope"}, "x"]}`, data, nil},
		{"ends_with non-string target is null", `{"ends_with": ["abc", 1]}`, nil, nil},
	})
}

func TestControlAndIteration(t *testing.T) {
	runLogicCases(t, []logicCase{
		{"if then", `{"if": [true, "yes", "no"]}`, nil, "yes"},
		{"if else", `{"if": [false, "yes", "no"]}`, nil, "no"},
		{"if chain", `{"if": [false, "yes", false, "no", "maybe"]}`, nil, "maybe"},
		{"if chain no else", `{"if": [false, "yes", false, "no"]}`, nil, nil},
		{"if empty", `{"if": []}`, nil, nil},
		{"if single", `{"if": ["x"]}`, nil, "x"},
		{"if truthiness of empty string", `{"if": ["", "y", "n"]}`, nil, "n"},
		{"?: alias", `{"?:": [true, 1, 2]}`, nil, 1.0},
		{"map", `{"map": [{"var": "list"}, {"*": [{"var": ""}, 2]}]}`, data, []any{2.0, 4.0, 6.0}},
		{"map non-array is empty", `{"map": [{"var": "a"}, 1]}`, data, []any{}},
		{"filter", `{"filter": [{"var": "list"}, {">": [{"var": ""}, 1]}]}`, data, []any{2.0, 3.0}},
		{"reduce sum", `{"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}`, data, 6.0},
		{"reduce without initial", `{"reduce": [{"var": "list"}, {"var": "current"}]}`, data, 3.0},
		{"reduce non-array returns initial", `{"reduce": [5, {"var": "current"}, "init"]}`, nil, "init"},
		{"all true", `{"all": [[1, 2], {">": [{"var": ""}, 0]}]}`, nil, true},
		{"all false", `{"all": [[1, -2], {">": [{"var": ""}, 0]}]}`, nil, false},
		{"all empty is false", `{"all": [[], true]}`, nil, false},
		{"none", `{"none": [[1, 2], {">": [{"var": ""}, 5]}]}`, nil, true},
		{"none found", `{"none": [[1, 6], {">": [{"var": ""}, 5]}]}`, nil, false},
		{"some", `{"some": [{"var": "user.tags"}, {"==": [{"var": ""}, "y"]}]}`, data, true},
		{"some none", `{"some": [[], true]}`, nil, false},
		{"nested map sees the item", `{"map": [[[1, 2], [3]], {"merge": [{"var": ""}, 0]}]}`, nil, []any{[]any{1.0, 2.0, 0.0}, []any{3.0, 0.0}}},
		{"var after map sees the context again", `{"cat": [{"map": [[1], 1]}, {"var": "s"}]}`, data, "1hello"},
	})
}

func TestCompileProblems(t *testing.T) {
	tests := []struct {
		name, logic, want string
	}{
		{"unknown operator", `{"inn": [1, 2]}`, `rule: unknown operator "inn"`},
		{"unknown nested operator", `{"if": [{"nope": 1}, "a", "b"]}`, `rule.if[0]: unknown operator "nope"`},
		{"legacy fractionalEvaluation", `{"fractionalEvaluation": ["email", ["a", 50], ["b", 50]]}`, `unknown operator "fractionalEvaluation" (flagd's legacy form`},
		{"== arity", `{"==": [1]}`, `rule.==: == takes 2 arguments, got 1`},
		{"! arity", `{"!": [1, 2]}`, `rule.!: ! takes 1 argument, got 2`},
		{"< arity", `{"<": [1, 2, 3, 4]}`, `rule.<: < takes 2 to 3 arguments, got 4`},
		{"> between is not JsonLogic", `{">": [1, 2, 3]}`, `rule.>: > takes 2 arguments, got 3`},
		{"and needs an argument", `{"and": []}`, `rule.and: and takes at least 1 argument, got 0`},
		{"sem_ver arity", `{"sem_ver": ["1.0.0", "="]}`, `rule.sem_ver: sem_ver takes 3 arguments, got 2`},
		{"starts_with arity", `{"starts_with": ["a"]}`, `rule.starts_with: starts_with takes 2 arguments, got 1`},
		{"map arity", `{"map": [[1]]}`, `rule.map: map takes 2 arguments, got 1`},
		{"object with two keys", `{"==": [1, 1], "var": "x"}`, `rule: a JsonLogic operation is an object with exactly one key, got 2 (==, var)`},
		{"var name object", `{"var": [[1]]}`, `rule.var[0]: a variable name must be a string or number, got an array`},
		{"sem_ver bad operator", `{"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}`, `rule.sem_ver[1]: sem_ver operator must be one of`},
		{"sem_ver bad version", `{"sem_ver": [{"var": "v"}, ">=", "1.0.0.0"]}`, `rule.sem_ver[2]: "1.0.0.0" is not a semantic version`},
		{"fractional without entries", `{"fractional": [{"var": "email"}]}`, `rule.fractional: fractional needs at least one [variant, weight] entry`},
		{"fractional empty entry", `{"fractional": [["a", 1], []]}`, `rule.fractional[1]: a fractional entry is [variant] or [variant, weight], got 0 elements`},
		{"fractional long entry", `{"fractional": [["a", 1, 2]]}`, `rule.fractional[0]: a fractional entry is [variant] or [variant, weight], got 3 elements`},
		{"fractional fractional weight", `{"fractional": [["a", 1.5], ["b", 1]]}`, `rule.fractional[0][1]: a weight must be a whole number, got 1.5`},
		{"fractional string weight", `{"fractional": [["a", "50"], ["b", 1]]}`, `rule.fractional[0][1]: a weight must be a whole number, got a string`},
		{"fractional weights too large", `{"fractional": [["a", 2147483647], ["b", 1]]}`, `rule.fractional: weights add up to 2147483648, more than 2147483647`},
		{"fractional array variant", `{"fractional": [[{"if": [true, [1], 0]}, 1]]}`, `rule.fractional[0][0]: a fractional variant must be a string, boolean, number or null, got an array`},
		{"fractional bad bucketing constant", `{"fractional": [5, ["a", 1]]}`, `rule.fractional[0]: the bucketing value must be a string`},
		{"$ref to missing evaluator", `{"$ref": "nope"}`, `rule.$ref: no evaluator named "nope" in $evaluators (none defined)`},
		{"$ref not a string", `{"$ref": 1}`, `rule.$ref: must be the name of an evaluator (a string), got a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tryLogic(tt.logic, nil, nil)
			if tt.want == "" {
				if err != nil {
					t.Errorf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNestingLimit(t *testing.T) {
	deep := strings.Repeat(`{"!": `, maxRuleDepth+5) + "true" + strings.Repeat("}", maxRuleDepth+5)
	if _, err := tryLogic(deep, nil, nil); err == nil || !strings.Contains(err.Error(), "nested deeper than") {
		t.Errorf("err = %v", err)
	}
	ok := strings.Repeat(`{"!": `, 50) + "true" + strings.Repeat("}", 50)
	if v, err := tryLogic(ok, nil, nil); err != nil || v != true {
		t.Errorf("50 levels: %v %v", v, err)
	}
	tooDeepJSON := strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1)
	if _, err := tryLogic(tooDeepJSON, nil, nil); err == nil {
		t.Error("JSON deeper than the parser's limit was accepted")
	}
}

func TestWorkLimit(t *testing.T) {
	// 3 nested maps over a 200-element array: 8 million steps.
	list := make([]any, 200)
	for i := range list {
		list[i] = float64(i)
	}
	ctx := map[string]any{"l": list}
	logic := `{"map": [{"var": "l"}, {"map": [[` + strings.Repeat("0,", 199) + `0], {"map": [[` + strings.Repeat("0,", 199) + `0], 1]}]}]}`
	_, err := tryLogic(logic, nil, ctx)
	if err == nil || !strings.Contains(err.Error(), msgWorkLimit) {
		t.Errorf("err = %v, want the work limit", err)
	}
	// Quadratic string building through reduce is bounded too.
	long := make([]any, 5000)
	for i := range long {
		long[i] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	}
	_, err = tryLogic(`{"reduce": [{"var": "l"}, {"cat": [{"var": "accumulator"}, {"var": "current"}]}, ""]}`, nil, map[string]any{"l": long})
	if err == nil || !strings.Contains(err.Error(), msgWorkLimit) {
		t.Errorf("cat in reduce: err = %v, want the work limit", err)
	}
}

func TestConstantFolding(t *testing.T) {
	var ps problems
	n, _ := parseJSONTree([]byte(`{"if": [{"==": [{"+": [1, 2]}, 3]}, {"cat": ["a", "b"]}, "c"]}`), &ps, "r")
	r := newCompiler(nil, &ps).compileRule(n, "r")
	if r.root.code != opConst || r.root.c.s != "ab" {
		t.Errorf("rule not folded to a constant: %+v", r.root)
	}
}

func TestJSNumberFormatting(t *testing.T) {
	tests := []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1, "-1"}, {1.5, "1.5"}, {0.1, "0.1"},
		{100, "100"}, {1e20, "100000000000000000000"}, {1e21, "1e+21"}, {1.5e21, "1.5e+21"},
		{1e-6, "0.000001"}, {1e-7, "1e-7"}, {1.25e-7, "1.25e-7"}, {123.456, "123.456"},
		{math.NaN(), "NaN"}, {math.Inf(1), "Infinity"}, {math.Inf(-1), "-Infinity"},
		{9007199254740993, "9007199254740992"}, {-0.5, "-0.5"}, {1e300, "1e+300"},
	}
	for _, tt := range tests {
		if got := string(appendJSNumber(nil, tt.f)); got != tt.want {
			t.Errorf("appendJSNumber(%v) = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestJSStringToNumber(t *testing.T) {
	tests := []struct {
		s    string
		want float64
	}{
		{"", 0}, {"  ", 0}, {"12", 12}, {" 12 ", 12}, {"1.5", 1.5}, {".5", 0.5}, {"5.", 5}, {"1e3", 1000},
		{"-2", -2}, {"+2", 2}, {"0x1f", 31}, {"0b11", 3}, {"0o17", 15}, {"Infinity", math.Inf(1)},
		{"-Infinity", math.Inf(-1)}, {"abc", math.NaN()}, {"1abc", math.NaN()}, {"inf", math.NaN()},
		{"1_000", math.NaN()}, {"0x", math.NaN()}, {"-0x10", math.NaN()}, {".", math.NaN()}, {"1e", math.NaN()},
	}
	for _, tt := range tests {
		got := strToNum(tt.s)
		if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
			t.Errorf("strToNum(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}
