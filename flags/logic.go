package flags

import (
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Targeting rules are compiled once, at load time, into a tree of ops: each
// op has an opcode, its compiled arguments and whatever could be worked out
// in advance (split variable paths, parsed versions, fractional tables,
// folded constants). Evaluation is one switch per op over that tree: no JSON,
// no maps of interfaces, no reflection, and the per-evaluation state lives on
// the caller's stack.

// Limits that keep every rule's compile and evaluation bounded.
const (
	maxRuleDepth = 100     // nesting of operations, after $ref expansion
	maxRuleOps   = 100_000 // operations in one rule, after $ref expansion
	// workBudget bounds the work one evaluation may do: loop iterations of
	// map/filter/reduce/all/some/none/merge/missing, and bytes built by cat
	// and substr (one unit per 16 bytes).
	workBudget = 1 << 20
)

const msgWorkLimit = "targeting exceeded its work limit"

type opcode uint8

const (
	opConst opcode = iota
	opArray        // literal array with computed elements
	opVar
	opMissing
	opMissingSome
	opIf
	opEq
	opStrictEq
	opNe
	opStrictNe
	opNot
	opTruthy
	opOr
	opAnd
	opLt
	opLe
	opGt
	opGe
	opMod
	opAdd
	opSub
	opMul
	opDiv
	opMin
	opMax
	opCat
	opSubstr
	opIn
	opMerge
	opMap
	opFilter
	opReduce
	opAll
	opNone
	opSome
	opFractional
	opSemVer
	opStartsWith
	opEndsWith
	// Fused forms of common patterns with a top-level variable and a
	// constant; inside map/filter/... they fall back to the general form.
	opInConstVar  // {"in": ["const", {"var": "key"}]}
	opCmpVarConst // ==, ===, !=, !== between {"var": "key"} and a constant
)

// op is one compiled operation.
type op struct {
	code opcode
	args []*op
	c    value    // opConst
	path []string // opVar with a constant path (nil: the whole data)
	key  string   // opVar: path[0] when the path has one segment other than "$flagd"; fused ops: the variable
	dyn  bool     // opVar whose path is computed
	sub  opcode   // opCmpVarConst: the comparison
	frac *fracSpec
	sv   *semverSpec
}

// rule is a compiled targeting rule.
type rule struct {
	root *op
	deps []string // the evaluators it expands, sorted (shared: do not modify)
}

// env is the state of one evaluation. It lives on the evaluating
// goroutine's stack: nothing below keeps a pointer to it.
type env struct {
	ctx     map[string]any
	flagKey string
	now     func() time.Time
	ts      float64
	tsSet   bool
	budget  int
	failed  string // non-empty when evaluation had to stop; the result is an error
	scope   *value // the current item inside map/filter/...; nil at the top
	red     *reduceData
}

// reduceData is the data a reduce body sees: {"current", "accumulator"}.
type reduceData struct {
	current, accumulator value
}

// spend charges n units of work and reports whether evaluation may go on.
func (e *env) spend(n int) bool {
	if e.failed != "" {
		return false
	}
	e.budget -= n
	if e.budget < 0 {
		e.failed = msgWorkLimit
		return false
	}
	return true
}

func (e *env) timestamp() float64 {
	if !e.tsSet {
		e.ts = float64(e.now().Unix())
		e.tsSet = true
	}
	return e.ts
}

// eval evaluates o. The operations flag rules use most are handled here;
// the rest are in evalOther, which keeps this function's frame small.
func (e *env) eval(o *op) value {
	switch o.code {
	case opConst:
		return o.c
	case opVar:
		if o.key != "" && e.scope == nil && e.red == nil {
			// A one-segment name at the top: a single map lookup.
			a, ok := e.ctx[o.key]
			if !ok {
				if len(o.args) > 1 {
					return e.eval(o.args[1])
				}
				return vNull
			}
			return fromAny(a)
		}
		return e.evalVar(o)
	case opIf:
		a := o.args
		i := 0
		for ; i+1 < len(a); i += 2 {
			if e.cond(a[i]) {
				return e.eval(a[i+1])
			}
		}
		if i < len(a) {
			return e.eval(a[i])
		}
		return vNull
	case opEq:
		return vBool(looseEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opStrictEq:
		return vBool(strictEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opNot:
		return vBool(!truthy(e.eval(o.args[0])))
	case opOr:
		var v value
		for _, a := range o.args {
			if v = e.eval(a); truthy(v) {
				return v
			}
		}
		return v
	case opAnd:
		var v value
		for _, a := range o.args {
			if v = e.eval(a); !truthy(v) {
				return v
			}
		}
		return v
	case opIn:
		return vBool(e.evalIn(o))
	case opInConstVar:
		return vBool(e.inConstVar(o))
	case opCmpVarConst:
		return vBool(e.cmpVarConst(o))
	case opFractional:
		return e.evalFractional(o.frac)
	case opSemVer:
		return e.evalSemVer(o)
	}
	return e.evalOther(o)
}

// cond evaluates o as a condition: truthy(eval(o)), without materialising
// the value for the operations that produce booleans.
func (e *env) cond(o *op) bool {
	switch o.code {
	case opInConstVar:
		return e.inConstVar(o)
	case opCmpVarConst:
		return e.cmpVarConst(o)
	case opSemVer:
		return e.semVer(o) == 1
	case opNot:
		return !e.cond(o.args[0])
	case opTruthy:
		return e.cond(o.args[0])
	case opIn:
		return e.evalIn(o)
	case opAnd: // and returns its first falsy argument, or its last
		for _, a := range o.args {
			if !e.cond(a) {
				return false
			}
		}
		return true
	case opOr:
		for _, a := range o.args {
			if e.cond(a) {
				return true
			}
		}
		return false
	}
	return truthy(e.eval(o))
}

// inConstVar is {"in": ["const", {"var": "key"}]}.
func (e *env) inConstVar(o *op) bool {
	if e.scope != nil || e.red != nil {
		return e.evalIn(o)
	}
	a, ok := e.ctx[o.key]
	if !ok {
		return false
	}
	if hay, isStr := a.(string); isStr {
		return strings.Contains(hay, o.c.s)
	}
	return e.inValue(o.c, fromAny(a))
}

// cmpVarConst is ==, ===, != or !== between {"var": "key"} and a constant.
func (e *env) cmpVarConst(o *op) bool {
	if e.scope != nil || e.red != nil {
		return truthy(e.evalOther(&op{code: o.sub, args: o.args}))
	}
	var v value
	if a, ok := e.ctx[o.key]; ok {
		v = fromAny(a)
	}
	var r bool
	switch o.sub {
	case opEq, opNe:
		r = looseEq(v, o.c)
	default:
		r = strictEq(v, o.c)
	}
	if o.sub == opNe || o.sub == opStrictNe {
		r = !r
	}
	return r
}

// evalOther evaluates the less common operations.
func (e *env) evalOther(o *op) value {
	switch o.code {
	case opEq:
		return vBool(looseEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opStrictEq:
		return vBool(strictEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opNe:
		return vBool(!looseEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opStrictNe:
		return vBool(!strictEq(e.eval(o.args[0]), e.eval(o.args[1])))
	case opTruthy:
		return vBool(truthy(e.eval(o.args[0])))
	case opLt, opLe:
		eq := o.code == opLe
		a, b := e.eval(o.args[0]), e.eval(o.args[1])
		if !less(a, b, eq) {
			return vFalse
		}
		if len(o.args) == 3 {
			return vBool(less(b, e.eval(o.args[2]), eq))
		}
		return vTrue
	case opGt:
		a, b := e.eval(o.args[0]), e.eval(o.args[1])
		return vBool(less(b, a, false))
	case opGe:
		a, b := e.eval(o.args[0]), e.eval(o.args[1])
		return vBool(less(b, a, true))
	case opStartsWith, opEndsWith:
		a, b := e.eval(o.args[0]), e.eval(o.args[1])
		if a.k != kStr || b.k != kStr {
			return vNull
		}
		if o.code == opStartsWith {
			return vBool(strings.HasPrefix(a.s, b.s))
		}
		return vBool(strings.HasSuffix(a.s, b.s))
	case opCat:
		return e.evalCat(o)
	case opSubstr:
		return e.evalSubstr(o)
	case opArray:
		out := make([]value, len(o.args))
		for i, a := range o.args {
			out[i] = e.eval(a)
		}
		return vArr(out)
	case opMerge:
		return e.evalMerge(o)
	case opMissing:
		return e.evalMissing(o.args)
	case opMissingSome:
		return e.evalMissingSome(o)
	case opMap, opFilter, opAll, opNone, opSome:
		return e.evalIter(o)
	case opReduce:
		return e.evalReduce(o)
	}
	return e.evalArith(o)
}

// evalArith evaluates the arithmetic operations.
func (e *env) evalArith(o *op) value {
	switch o.code {
	case opMod:
		return vNum(math.Mod(toNum(e.eval(o.args[0])), toNum(e.eval(o.args[1]))))
	case opAdd:
		var sum float64
		for _, a := range o.args {
			sum += parseFloatJS(e.eval(a))
		}
		return vNum(sum)
	case opMul:
		if len(o.args) == 1 { // JavaScript's reduce returns a lone element untouched
			return e.eval(o.args[0])
		}
		p := parseFloatJS(e.eval(o.args[0]))
		for _, a := range o.args[1:] {
			p *= parseFloatJS(e.eval(a))
		}
		return vNum(p)
	case opSub:
		if len(o.args) == 1 {
			return vNum(-toNum(e.eval(o.args[0])))
		}
		return vNum(toNum(e.eval(o.args[0])) - toNum(e.eval(o.args[1])))
	case opDiv:
		return vNum(toNum(e.eval(o.args[0])) / toNum(e.eval(o.args[1])))
	case opMin, opMax:
		r := toNum(e.eval(o.args[0]))
		for _, a := range o.args[1:] {
			x := toNum(e.eval(a))
			switch {
			case math.IsNaN(r) || math.IsNaN(x):
				r = math.NaN()
			case o.code == opMin && x < r, o.code == opMax && x > r:
				r = x
			}
		}
		return vNum(r)
	}
	return vNull
}

// evalVar looks a variable up: in the context (with "$flagd" answered by the
// evaluator), or in the current item inside map/filter/reduce/....
func (e *env) evalVar(o *op) value {
	path := o.path
	if o.dyn {
		key := e.eval(o.args[0])
		switch key.k {
		case kNull:
			path = nil
		case kStr:
			if key.s == "" {
				path = nil
			} else {
				path = strings.Split(key.s, ".")
			}
		default:
			path = strings.Split(toStr(key), ".")
		}
	}
	v, ok := e.lookup(path)
	if !ok && len(o.args) > 1 {
		return e.eval(o.args[1])
	}
	return v
}

// lookup resolves a split variable path; ok is false when it is not there
// (JsonLogic's "undefined"), in which case var's default applies.
func (e *env) lookup(path []string) (value, bool) {
	var cur value
	switch {
	case e.red != nil:
		if len(path) == 0 {
			return value{k: kObj, x: map[string]any{"current": toAny(e.red.current), "accumulator": toAny(e.red.accumulator)}}, true
		}
		switch path[0] {
		case "current":
			cur = e.red.current
		case "accumulator":
			cur = e.red.accumulator
		default:
			return vNull, false
		}
		path = path[1:]
	case e.scope != nil:
		cur = *e.scope
	default:
		if len(path) == 0 {
			return e.wholeContext(), true
		}
		if path[0] == "$flagd" {
			return e.flagdLookup(path[1:])
		}
		a, ok := e.ctx[path[0]]
		if !ok {
			return vNull, false
		}
		cur = fromAny(a)
		path = path[1:]
	}
	for _, seg := range path {
		var ok bool
		switch cur.k {
		case kObj:
			cur, ok = objGet(cur, seg)
		case kArr:
			var i int
			i, ok = arrayIndex(seg, arrLen(cur))
			if ok {
				cur = arrAt(cur, i)
			}
		}
		if !ok {
			return vNull, false
		}
	}
	return cur, true
}

// arrayIndex parses seg as a canonical array index below n.
func arrayIndex(seg string, n int) (int, bool) {
	if seg == "" || len(seg) > 1 && seg[0] == '0' {
		return 0, false
	}
	i := 0
	for _, c := range []byte(seg) {
		if c < '0' || c > '9' || i > n {
			return 0, false
		}
		i = i*10 + int(c-'0')
	}
	return i, i < n
}

// flagdLookup answers "$flagd.…": the evaluator's own properties win over
// anything the caller sent under "$flagd".
func (e *env) flagdLookup(rest []string) (value, bool) {
	if len(rest) == 0 {
		return value{k: kObj, x: map[string]any{"flagKey": e.flagKey, "timestamp": e.timestamp()}}, true
	}
	if len(rest) > 1 {
		return vNull, false
	}
	switch rest[0] {
	case "flagKey":
		return vStr(e.flagKey), true
	case "timestamp":
		return vNum(e.timestamp()), true
	}
	return vNull, false
}

// wholeContext is {"var": ""} at the top: the context with "$flagd" added.
func (e *env) wholeContext() value {
	m := make(map[string]any, len(e.ctx)+1)
	for k, v := range e.ctx {
		m[k] = v
	}
	m["$flagd"] = map[string]any{"flagKey": e.flagKey, "timestamp": e.timestamp()}
	return value{k: kObj, x: m}
}

func (e *env) evalCat(o *op) value {
	if len(o.args) == 1 {
		v := e.eval(o.args[0])
		switch v.k {
		case kStr:
			return v
		case kNull:
			return vStr("")
		}
		s := toStr(v)
		e.spend(len(s)/16 + 1)
		return vStr(s)
	}
	var b strings.Builder
	for _, a := range o.args {
		v := e.eval(a)
		switch v.k {
		case kNull:
		case kStr:
			b.WriteString(v.s)
		default:
			b.WriteString(toStr(v))
		}
		if !e.spend(b.Len()/16 + 1) {
			return vNull
		}
	}
	return vStr(b.String())
}

// evalSubstr is JsonLogic's substr over Unicode code points: a negative
// start counts from the end; a negative length drops that many from the end.
func (e *env) evalSubstr(o *op) value {
	src := e.eval(o.args[0])
	s := src.s
	if src.k != kStr {
		s = toStr(src)
	}
	n := utf8.RuneCountInString(s)
	start := jsInt(toNum(e.eval(o.args[1])))
	if start < 0 {
		start = max(n+start, 0)
	}
	start = min(start, n)
	end := n
	if len(o.args) == 3 {
		lv := e.eval(o.args[2])
		if lv.k != kNull {
			l := jsInt(toNum(lv))
			if l < 0 {
				end = max(n+l, start)
			} else {
				end = min(start+l, n)
			}
		}
	}
	if end <= start {
		return vStr("")
	}
	if !e.spend((end-start)/16 + 1) {
		return vNull
	}
	return vStr(runeSlice(s, start, end))
}

// jsInt is ToIntegerOrInfinity, clamped to int.
func jsInt(f float64) int {
	switch {
	case math.IsNaN(f):
		return 0
	case f >= math.MaxInt32:
		return math.MaxInt32
	case f <= math.MinInt32:
		return math.MinInt32
	}
	return int(f)
}

// runeSlice is s[start:end] counted in code points.
func runeSlice(s string, start, end int) string {
	i, from, to := 0, len(s), len(s)
	for pos := range s {
		if i == start {
			from = pos
		}
		if i == end {
			to = pos
			break
		}
		i++
	}
	return s[from:to]
}

func (e *env) evalIn(o *op) bool {
	return e.inValue(e.eval(o.args[0]), e.eval(o.args[1]))
}

// inValue is JsonLogic's in: substring of a string, or strict membership of
// an array.
func (e *env) inValue(a, b value) bool {
	switch b.k {
	case kStr:
		if a.k == kStr {
			return strings.Contains(b.s, a.s)
		}
		return strings.Contains(b.s, toStr(a))
	case kArr:
		n := arrLen(b)
		if !e.spend(n/16 + 1) {
			return false
		}
		for i := range n {
			if strictEq(a, arrAt(b, i)) {
				return true
			}
		}
	}
	return false
}

func (e *env) evalMerge(o *op) value {
	var out []value
	for _, a := range o.args {
		v := e.eval(a)
		if v.k != kArr {
			out = append(out, v)
			continue
		}
		n := arrLen(v)
		if !e.spend(n + 1) {
			return vNull
		}
		for i := range n {
			out = append(out, arrAt(v, i))
		}
	}
	if out == nil {
		out = []value{}
	}
	return vArr(out)
}

// evalMissing returns the keys (of args, or of the array args[0] evaluates
// to) whose value is absent, null or "".
func (e *env) evalMissing(args []*op) value {
	var out []value
	check := func(k value) {
		var path []string
		switch {
		case k.k == kStr && k.s == "", k.k == kNull:
		case k.k == kStr:
			path = strings.Split(k.s, ".")
		default:
			path = strings.Split(toStr(k), ".")
		}
		v, ok := e.lookup(path)
		if !ok || v.k == kNull || v.k == kStr && v.s == "" {
			out = append(out, k)
		}
	}
	if len(args) > 0 {
		first := e.eval(args[0])
		if first.k == kArr {
			n := arrLen(first)
			if !e.spend(n + 1) {
				return vNull
			}
			for i := range n {
				check(arrAt(first, i))
			}
			return missingResult(out)
		}
		check(first)
		for _, a := range args[1:] {
			check(e.eval(a))
		}
	}
	return missingResult(out)
}

func missingResult(out []value) value {
	if out == nil {
		out = []value{}
	}
	return vArr(out)
}

// evalMissingSome is [need, keys]: [] when at least need keys are present,
// otherwise the missing ones.
func (e *env) evalMissingSome(o *op) value {
	need := toNum(e.eval(o.args[0]))
	keys := e.eval(o.args[1])
	total := 1
	var miss value
	if keys.k == kArr {
		total = arrLen(keys)
		miss = e.evalMissing([]*op{{code: opConst, c: keys}})
	} else {
		miss = e.evalMissing([]*op{{code: opConst, c: keys}})
	}
	if miss.k != kArr {
		return miss
	}
	if float64(total-arrLen(miss)) >= need {
		return vArr([]value{})
	}
	return miss
}

// evalIter runs map, filter, all, none and some: args[1] is evaluated with
// each item of args[0] as the data.
func (e *env) evalIter(o *op) value {
	list := e.eval(o.args[0])
	n := 0
	if list.k == kArr {
		n = arrLen(list)
	}
	if !e.spend(n + 1) {
		return vNull
	}
	var out []value
	if o.code == opMap || o.code == opFilter {
		out = make([]value, 0, n)
	}
	saveScope, saveRed := e.scope, e.red
	defer func() { e.scope, e.red = saveScope, saveRed }()
	e.red = nil
	for i := range n {
		item := arrAt(list, i)
		e.scope = &item
		r := e.eval(o.args[1])
		if e.failed != "" {
			return vNull
		}
		switch o.code {
		case opMap:
			out = append(out, r)
		case opFilter:
			if truthy(r) {
				out = append(out, item)
			}
		case opAll:
			if !truthy(r) {
				return vFalse
			}
		case opNone, opSome:
			if truthy(r) {
				return vBool(o.code == opSome)
			}
		}
	}
	switch o.code {
	case opAll:
		return vBool(n > 0)
	case opNone:
		return vTrue
	case opSome:
		return vFalse
	}
	return vArr(out)
}

func (e *env) evalReduce(o *op) value {
	list := e.eval(o.args[0])
	acc := vNull
	if len(o.args) == 3 {
		acc = e.eval(o.args[2])
	}
	if list.k != kArr {
		return acc
	}
	n := arrLen(list)
	if !e.spend(n + 1) {
		return vNull
	}
	saveScope, saveRed := e.scope, e.red
	defer func() { e.scope, e.red = saveScope, saveRed }()
	rd := reduceData{}
	e.scope = nil
	for i := range n {
		rd.current = arrAt(list, i)
		rd.accumulator = acc
		e.red = &rd
		acc = e.eval(o.args[1])
		if e.failed != "" {
			return vNull
		}
	}
	return acc
}
