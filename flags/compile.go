package flags

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// compiler turns JsonLogic node trees into op trees, reporting problems
// with their JSON paths.
type compiler struct {
	evaluators map[string]*node
	ps         *problems
	refs       []string // $ref names being expanded, to catch cycles
	ops        int      // ops in the current rule, counting every $ref expansion
	deepest    int      // deepest nesting reached in the current rule
	tooBig     bool
	tooDeep    bool
	// Compiled evaluators are shared by every rule that uses them (ops are
	// immutable), with the size and height of their expansion.
	memo map[string]refInfo
	nums map[uint64]*op // shared number constants (see konst)
	strs map[string]*op // shared string constants
	// deps lists the evaluators the current rule expands, directly or
	// through other evaluators (with repeats): a compiled rule can be
	// reused only while all of them are unchanged.
	deps []string
}

type refInfo struct {
	op     *op
	size   int
	height int
	deps   []string // the evaluators this one expands, transitively
}

func newCompiler(ev map[string]*node, ps *problems) *compiler {
	return &compiler{evaluators: ev, ps: ps, memo: map[string]refInfo{}}
}

// arity is how many arguments an operation takes; max -1 means no limit.
type arity struct{ min, max int }

// operators lists every operation a rule may use, with its arity.
var operators = map[string]arity{
	"var": {0, 2}, "missing": {0, -1}, "missing_some": {2, 2},
	"if": {0, -1}, "?:": {0, -1},
	"==": {2, 2}, "===": {2, 2}, "!=": {2, 2}, "!==": {2, 2},
	"!": {1, 1}, "!!": {1, 1}, "or": {1, -1}, "and": {1, -1},
	"<": {2, 3}, "<=": {2, 3}, ">": {2, 2}, ">=": {2, 2},
	"%": {2, 2}, "+": {0, -1}, "-": {1, 2}, "*": {1, -1}, "/": {2, 2},
	"min": {1, -1}, "max": {1, -1},
	"cat": {0, -1}, "substr": {2, 3}, "in": {2, 2}, "merge": {0, -1},
	"map": {2, 2}, "filter": {2, 2}, "reduce": {2, 3},
	"all": {2, 2}, "none": {2, 2}, "some": {2, 2},
	"fractional": {1, -1}, "sem_ver": {3, 3}, "starts_with": {2, 2}, "ends_with": {2, 2},
}

var simpleOps = map[string]opcode{
	"==": opEq, "===": opStrictEq, "!=": opNe, "!==": opStrictNe,
	"!": opNot, "!!": opTruthy, "or": opOr, "and": opAnd,
	"<": opLt, "<=": opLe, ">": opGt, ">=": opGe,
	"%": opMod, "+": opAdd, "-": opSub, "*": opMul, "/": opDiv,
	"min": opMin, "max": opMax, "cat": opCat, "substr": opSubstr, "in": opIn,
	"merge": opMerge, "missing": opMissing, "missing_some": opMissingSome,
	"if": opIf, "?:": opIf,
	"map": opMap, "filter": opFilter, "reduce": opReduce, "all": opAll, "none": opNone, "some": opSome,
	"starts_with": opStartsWith, "ends_with": opEndsWith,
}

// pure opcodes depend only on their arguments, so constant arguments fold.
func pure(c opcode) bool {
	switch c {
	case opVar, opMissing, opMissingSome, opFractional, opMap, opFilter, opReduce, opAll, opNone, opSome:
		return false
	}
	return true
}

// checkEvaluator compiles a shared evaluator on its own so that its problems
// are reported once, at its own path, whether or not a flag uses it.
func (c *compiler) checkEvaluator(name string) {
	c.start()
	c.refs = append(c.refs, name)
	before := len(*c.ps)
	o := c.compile(c.evaluators[name], joinPath("$evaluators", name), 0)
	if len(*c.ps) == before {
		c.memo[name] = refInfo{op: o, size: c.ops, height: c.deepest, deps: c.deps}
	}
}

func (c *compiler) start() {
	c.ops, c.deepest, c.tooBig, c.tooDeep = 0, 0, false, false
	c.refs = c.refs[:0]
	c.deps = nil
}

// ruleDeps returns the evaluators the rule just compiled depends on,
// sorted and without repeats (nil for none).
func (c *compiler) ruleDeps() []string {
	if len(c.deps) == 0 {
		return nil
	}
	d := slices.Clone(c.deps)
	slices.Sort(d)
	return slices.Compact(d)
}

// compileRule compiles one flag's targeting; nil means problems were reported.
func (c *compiler) compileRule(n *node, path string) *rule {
	before := len(*c.ps)
	c.start()
	o := c.compile(n, path, 0)
	if len(*c.ps) > before {
		return nil
	}
	return &rule{root: o}
}

func constOp(v value) *op { return &op{code: opConst, c: v} }

// Shared constants: ops are immutable, so every rule can use these.
var (
	opNullConst  = constOp(vNull)
	opTrueConst  = constOp(vTrue)
	opFalseConst = constOp(vFalse)
)

// konst returns a constant op. Scalars are shared within a compilation
// (a flag set repeats the same few variant names, weights and nulls), so
// that a large set does not hold thousands of copies of "on".
func (c *compiler) konst(v value) *op {
	switch v.k {
	case kNull:
		return opNullConst
	case kBool:
		if v.n != 0 {
			return opTrueConst
		}
		return opFalseConst
	case kNum:
		bits := math.Float64bits(v.n)
		if o, ok := c.nums[bits]; ok {
			return o
		}
		o := constOp(v)
		if c.nums == nil {
			c.nums = map[uint64]*op{}
		}
		c.nums[bits] = o
		return o
	case kStr:
		if o, ok := c.strs[v.s]; ok {
			return o
		}
		o := constOp(v)
		if c.strs == nil {
			c.strs = map[string]*op{}
		}
		c.strs[v.s] = o
		return o
	}
	return constOp(v)
}

// compile compiles one JsonLogic value.
func (c *compiler) compile(n *node, path string, depth int) *op {
	if !c.grow(path, depth, 1) {
		return c.konst(vNull)
	}
	switch n.kind {
	case nNull:
		return c.konst(vNull)
	case nBool:
		return c.konst(vBool(n.b))
	case nNum:
		return c.konst(vNum(n.num))
	case nStr:
		return c.konst(vStr(n.raw))
	case nArr:
		args := make([]*op, len(n.arr))
		allConst := true
		for i, e := range n.arr {
			args[i] = c.compile(e, indexPath(path, i), depth+1)
			allConst = allConst && args[i].code == opConst
		}
		if allConst {
			vals := make([]value, len(args))
			for i, a := range args {
				vals[i] = a.c
			}
			return c.konst(vArr(vals))
		}
		return &op{code: opArray, args: args}
	}
	// An object: one operation.
	switch len(n.keys) {
	case 0:
		return c.konst(value{k: kObj, x: map[string]any{}})
	case 1:
	default:
		c.ps.add(path, "a JsonLogic operation is an object with exactly one key, got %d (%s)", len(n.keys), strings.Join(n.keys, ", "))
		return c.konst(vNull)
	}
	name, argNode := n.keys[0], n.vals[0]
	opPath := joinPath(path, name)
	if name == "$ref" {
		return c.ref(argNode, opPath, depth)
	}
	ar, known := operators[name]
	if !known {
		msg := fmt.Sprintf("unknown operator %q", name)
		if name == "fractionalEvaluation" {
			msg += " (flagd's legacy form: use \"fractional\" with {\"var\": ...} as the first argument)"
		}
		c.ps.add(path, "%s", msg)
		return c.konst(vNull)
	}
	argNodes := []*node{argNode}
	argPath := func(i int) string { return opPath }
	if argNode.kind == nArr {
		argNodes = argNode.arr
		argPath = func(i int) string { return indexPath(opPath, i) }
	}
	if len(argNodes) < ar.min || ar.max >= 0 && len(argNodes) > ar.max {
		c.ps.add(opPath, "%s takes %s, got %d", name, describeArity(ar), len(argNodes))
		return c.konst(vNull)
	}
	switch name {
	case "var":
		return c.compileVar(argNodes, argPath, depth)
	case "fractional":
		return c.compileFractional(argNodes, argPath, opPath, depth)
	}
	args := make([]*op, len(argNodes))
	allConst := true
	for i, a := range argNodes {
		args[i] = c.compile(a, argPath(i), depth+1)
		allConst = allConst && args[i].code == opConst
	}
	var o *op
	if name == "sem_ver" {
		o = c.compileSemVer(args, argPath)
	} else {
		o = fuse(&op{code: simpleOps[name], args: args})
	}
	if allConst && pure(o.code) {
		// Fold: constant arguments give a constant result.
		e := env{budget: workBudget}
		v := e.eval(o)
		if e.failed == "" {
			return c.konst(v)
		}
	}
	return o
}

// grow accounts for ops more operations reaching depth, reporting (once per
// rule) when a limit is passed.
func (c *compiler) grow(path string, depth, ops int) bool {
	c.ops += ops
	c.deepest = max(c.deepest, depth)
	if c.ops > maxRuleOps {
		if !c.tooBig {
			c.ps.add(path, "targeting expands to more than %d operations", maxRuleOps)
			c.tooBig = true
		}
		return false
	}
	if depth > maxRuleDepth {
		if !c.tooDeep {
			c.ps.add(path, "targeting is nested deeper than %d levels", maxRuleDepth)
			c.tooDeep = true
		}
		return false
	}
	return true
}

// simpleVar reports whether o is {"var": "name"} for a one-segment name
// without a default.
func simpleVar(o *op) bool {
	return o.code == opVar && o.key != "" && len(o.args) == 1
}

// fuse replaces common patterns by fused ops that skip a level of dispatch.
func fuse(o *op) *op {
	switch o.code {
	case opIn:
		if a, b := o.args[0], o.args[1]; a.code == opConst && a.c.k == kStr && simpleVar(b) {
			return &op{code: opInConstVar, args: o.args, key: b.key, c: a.c}
		}
	case opEq, opStrictEq, opNe, opStrictNe:
		a, b := o.args[0], o.args[1]
		if simpleVar(b) && a.code == opConst {
			a, b = b, a
		}
		if simpleVar(a) && b.code == opConst && (b.c.k != kArr && b.c.k != kObj) {
			return &op{code: opCmpVarConst, sub: o.code, args: o.args, key: a.key, c: b.c}
		}
	}
	return o
}

func describeArity(a arity) string {
	plural := func(n int) string {
		if n == 1 {
			return "1 argument"
		}
		return fmt.Sprintf("%d arguments", n)
	}
	switch {
	case a.max < 0:
		return "at least " + plural(a.min)
	case a.min == a.max:
		return plural(a.min)
	}
	return fmt.Sprintf("%d to %d arguments", a.min, a.max)
}

// ref expands {"$ref": "name"} into the named evaluator.
func (c *compiler) ref(arg *node, path string, depth int) *op {
	if arg.kind != nStr {
		c.ps.add(path, "must be the name of an evaluator (a string), got %s", arg.kind)
		return c.konst(vNull)
	}
	name := arg.raw
	ev, ok := c.evaluators[name]
	if !ok {
		have := "none defined"
		if len(c.evaluators) > 0 {
			have = "have: " + strings.Join(sortedKeys(c.evaluators), ", ")
		}
		c.ps.add(path, "no evaluator named %q in $evaluators (%s)", name, have)
		return c.konst(vNull)
	}
	if slices.Contains(c.refs, name) {
		c.ps.add(path, "evaluator %q refers to itself (%s)", name, strings.Join(append(slices.Clone(c.refs), name), " → "))
		return c.konst(vNull)
	}
	if m, ok := c.memo[name]; ok {
		if !c.grow(path, depth+1+m.height, m.size) {
			return c.konst(vNull)
		}
		c.deps = append(append(c.deps, name), m.deps...)
		return m.op
	}
	// Problems inside the evaluator are reported at its own path by
	// checkEvaluator; here one line says that this use cannot compile.
	saved := c.ps
	var inner problems
	c.ps = &inner
	c.refs = append(c.refs, name)
	ops0, deep0 := c.ops, c.deepest
	outer := c.deps
	c.deps = nil
	c.deepest = depth + 1
	o := c.compile(ev, joinPath("$evaluators", name), depth+1)
	height := c.deepest - (depth + 1)
	c.deepest = max(c.deepest, deep0)
	c.refs = c.refs[:len(c.refs)-1]
	c.ps = saved
	evDeps := c.deps
	c.deps = append(append(outer, name), evDeps...)
	if len(inner) == 0 {
		c.memo[name] = refInfo{op: o, size: c.ops - ops0, height: height, deps: evDeps}
		return o
	}
	for _, p := range inner {
		if strings.Contains(p.Message, "refers to itself") || strings.Contains(p.Message, "operations") || strings.Contains(p.Message, "nested deeper") {
			c.ps.add(path, "%s", p.Message)
			return c.konst(vNull)
		}
	}
	c.ps.add(path, "evaluator %q is invalid (see $evaluators)", name)
	return c.konst(vNull)
}

// compileVar precomputes a constant variable path.
func (c *compiler) compileVar(args []*node, argPath func(int) string, depth int) *op {
	o := &op{code: opVar}
	if len(args) == 0 {
		return o // the whole data
	}
	key := c.compile(args[0], argPath(0), depth+1)
	o.args = []*op{key}
	if len(args) == 2 {
		o.args = append(o.args, c.compile(args[1], argPath(1), depth+1))
	}
	if key.code != opConst {
		o.dyn = true
		return o
	}
	switch k := key.c; k.k {
	case kNull:
	case kStr:
		if k.s != "" {
			o.path = strings.Split(k.s, ".")
		}
	case kNum:
		o.path = strings.Split(toStr(k), ".")
	default:
		c.ps.add(argPath(0), "a variable name must be a string or number, got %s", k.kindName())
	}
	if len(o.path) == 1 && o.path[0] != "$flagd" {
		o.key = o.path[0]
	}
	return o
}

// compileSemVer checks constant operators and versions at load time.
func (c *compiler) compileSemVer(args []*op, argPath func(int) string) *op {
	sp := &semverSpec{}
	if a := args[1]; a.code == opConst {
		if a.c.k != kStr || !semverOps[a.c.s] {
			c.ps.add(argPath(1), "sem_ver operator must be one of =, !=, <, <=, >, >=, ~, ^; got %s", a.c.describe())
		}
		sp.op, sp.opConst = a.c.s, true
	}
	if a := args[2]; a.code == opConst {
		v, ok := versionOf(a.c)
		if !ok {
			c.ps.add(argPath(2), "%s is not a semantic version", a.c.describe())
		}
		sp.ver, sp.verConst = v, true
	}
	if a := args[0]; a.code == opConst {
		if _, ok := versionOf(a.c); !ok {
			c.ps.add(argPath(0), "%s is not a semantic version", a.c.describe())
		}
	}
	o := &op{code: opSemVer, args: args, sv: sp}
	if simpleVar(args[0]) {
		o.key = args[0].key
	}
	return o
}

// compileFractional compiles flagd's fractional: an optional bucketing
// expression, then [variant, weight?] entries.
func (c *compiler) compileFractional(args []*node, argPath func(int) string, opPath string, depth int) *op {
	f := &fracSpec{}
	start := 0
	if args[0].kind != nArr {
		f.bucket = c.compile(args[0], argPath(0), depth+1)
		start = 1
		if b := f.bucket; b.code == opConst && b.c.k != kStr && b.c.k != kNull {
			c.ps.add(argPath(0), "the bucketing value must be a string (or an expression giving one), got %s", b.c.kindName())
		}
	}
	if start >= len(args) {
		c.ps.add(opPath, "fractional needs at least one [variant, weight] entry")
		return c.konst(vNull)
	}
	f.static = true
	var total float64
	for i := start; i < len(args); i++ {
		a, p := args[i], argPath(i)
		if a.kind != nArr {
			f.entries = append(f.entries, fracEntry{whole: c.compile(a, p, depth+1)})
			f.static = false
			continue
		}
		if len(a.arr) == 0 || len(a.arr) > 2 {
			c.ps.add(p, "a fractional entry is [variant] or [variant, weight], got %d elements", len(a.arr))
			continue
		}
		en := fracEntry{variant: c.compile(a.arr[0], indexPath(p, 0), depth+2)}
		if v := en.variant; v.code == opConst {
			switch v.c.k {
			case kStr, kBool, kNum, kNull:
			default:
				c.ps.add(indexPath(p, 0), "a fractional variant must be a string, boolean, number or null, got %s", v.c.kindName())
			}
		} else {
			f.static = false
		}
		w := 1.0
		if len(a.arr) == 2 {
			en.weight = c.compile(a.arr[1], indexPath(p, 1), depth+2)
			if wo := en.weight; wo.code == opConst {
				switch {
				case wo.c.k == kNull:
				case wo.c.k != kNum:
					c.ps.add(indexPath(p, 1), "a weight must be a whole number, got %s", wo.c.kindName())
				case wo.c.n != math.Trunc(wo.c.n):
					c.ps.add(indexPath(p, 1), "a weight must be a whole number, got %s", wo.c.describe())
				case wo.c.n > maxWeightSum:
					c.ps.add(indexPath(p, 1), "a weight must be at most %d, got %s", maxWeightSum, wo.c.describe())
				case wo.c.n < 0:
					w = 0 // negative weights count as 0
				default:
					w = wo.c.n
				}
			} else {
				f.static = false
			}
		}
		total += w
		f.entries = append(f.entries, en)
	}
	if f.static && total > maxWeightSum {
		c.ps.add(opPath, "weights add up to %.0f, more than %d", total, maxWeightSum)
	}
	if f.static {
		var run uint64
		for _, en := range f.entries {
			w := uint64(1)
			if en.weight != nil && en.weight.c.k == kNum {
				w = uint64(max(en.weight.c.n, 0))
			}
			run += w
			f.cum = append(f.cum, run)
			f.names = append(f.names, en.variant.c)
		}
		f.total = run
	}
	return &op{code: opFractional, frac: f}
}
