package flags

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Reason says why a flag resolved the way it did (OpenFeature resolution reasons).
type Reason string

// Resolution reasons.
const (
	ReasonStatic         Reason = "STATIC"
	ReasonDefault        Reason = "DEFAULT"
	ReasonTargetingMatch Reason = "TARGETING_MATCH"
	ReasonDisabled       Reason = "DISABLED"
	ReasonError          Reason = "ERROR"
)

// ErrorCode is an OpenFeature error code, set when Reason is [ReasonError].
type ErrorCode string

// OpenFeature error codes.
const (
	ErrorNone                ErrorCode = ""
	ErrorFlagNotFound        ErrorCode = "FLAG_NOT_FOUND"
	ErrorParse               ErrorCode = "PARSE_ERROR"
	ErrorTypeMismatch        ErrorCode = "TYPE_MISMATCH"
	ErrorTargetingKeyMissing ErrorCode = "TARGETING_KEY_MISSING"
	ErrorInvalidContext      ErrorCode = "INVALID_CONTEXT"
	ErrorGeneral             ErrorCode = "GENERAL"
)

// ValueType is the type shared by all of a flag's variant values.
type ValueType string

// Variant value types.
const (
	TypeBoolean ValueType = "boolean"
	TypeString  ValueType = "string"
	TypeNumber  ValueType = "number"
	TypeObject  ValueType = "object"
)

// Resolution is the outcome of evaluating one flag.
//
// Value is nil when the caller's code default applies (Reason DEFAULT with no
// Variant, DISABLED, or ERROR). Metadata is the flag's metadata merged over the
// flag set's metadata; it is shared and must not be modified.
type Resolution struct {
	Key          string
	Value        any
	Variant      string
	Reason       Reason
	ErrorCode    ErrorCode
	ErrorMessage string
	Metadata     map[string]any
}

// FlagInfo describes a compiled flag, for servers that cache or list flags.
type FlagInfo struct {
	Key            string
	State          State
	Type           ValueType
	Static         bool // no targeting: the result does not depend on the context
	Variants       []string
	DefaultVariant string // "" when the code default applies
	Metadata       map[string]any
}

// Set is a compiled, immutable flag set, safe for concurrent use. To change
// flags, compile a new Set and swap it in (for example with an
// atomic.Pointer); readers of the old Set are unaffected.
type Set struct {
	flags    map[string]*flag
	keys     []string
	doc      *Document // canonical; never handed out without a copy
	metadata map[string]any
	now      func() time.Time
	src      *source // what Recompile compares against
}

// flag is one compiled flag.
type flag struct {
	key      string
	state    State
	typ      ValueType
	variants []variant        // sorted by name
	byName   map[string]int32 // nil for up to maxScannedVariants variants
	def      int32            // index of the default variant, -1 for the code default
	rule     *rule            // nil when there is no targeting
	meta     map[string]any
	names    []string // variant names, sorted
}

// fixed is the resolution when it does not depend on the context: no
// targeting, or DISABLED. It is built on each call rather than kept, which
// keeps flags small (a set is mostly flags, and the garbage collector
// scans every one).
func (f *flag) fixed() Resolution {
	var r Resolution
	f.fixedInto(&r)
	return r
}

// fixedInto is fixed writing into *r (every field).
func (f *flag) fixedInto(r *Resolution) {
	*r = Resolution{Key: f.key, Metadata: f.meta}
	switch {
	case f.state == Disabled:
		r.Reason = ReasonDisabled
	case f.def < 0:
		r.Reason = ReasonDefault
	default:
		vr := &f.variants[f.def]
		r.Value, r.Variant, r.Reason = vr.value, vr.name, ReasonStatic
	}
}

// deps are the evaluators the targeting expands (sorted): the compiled
// flag is valid only with those exact evaluators.
func (f *flag) deps() []string {
	if f.rule == nil {
		return nil
	}
	return f.rule.deps
}

// variant is one variant with its value boxed once, so that resolutions
// never allocate.
type variant struct {
	name  string
	value any // bool, float64, string or map[string]any
	num   float64
}

// Document returns a deep copy of the set's source document, in canonical
// form (flags in the map form; targeting and evaluators as compact JSON with
// sorted keys).
func (s *Set) Document() *Document {
	if s.doc == nil {
		return nil
	}
	d := s.doc.Clone()
	d.Flags = make(map[string]*Flag, len(s.keys))
	for i, k := range s.keys {
		d.Flags[k] = s.src.recs[i].def.Clone()
	}
	return d
}

// Keys returns the flag keys, sorted. The slice is shared: do not modify.
func (s *Set) Keys() []string { return s.keys }

// Hash is a hex SHA-256 of the canonical JSON document: two sets with the
// same flags, evaluators and metadata have the same hash, however their
// source was formatted.
func (s *Set) Hash() string {
	if s.src == nil {
		return ""
	}
	return s.src.hash()
}

// Metadata is the flag set's metadata (shared: do not modify).
func (s *Set) Metadata() map[string]any { return s.metadata }

// Len is the number of flags in the set.
func (s *Set) Len() int { return len(s.keys) }

// WithClock returns a Set sharing s's compiled flags whose targeting reads
// "$flagd.timestamp" from now instead of time.Now. It is meant for tests.
func (s *Set) WithClock(now func() time.Time) *Set {
	c := *s
	c.now = now
	if c.now == nil {
		c.now = time.Now
	}
	return &c
}

// Info describes one flag; ok is false for an unknown key. The slices and
// maps in the result are shared: do not modify.
func (s *Set) Info(key string) (info FlagInfo, ok bool) {
	f := s.flags[key]
	if f == nil {
		return FlagInfo{}, false
	}
	return f.info(), true
}

const msgFlagNotFound = "flag not found"

// Evaluate resolves key for ctx. ctx is the flattened evaluation context with
// "targetingKey" as a top-level key; it is read, never modified or retained.
// Evaluation never fails: problems are reported in the Resolution (Reason
// ERROR with an ErrorCode), never by panicking.
func (s *Set) Evaluate(key string, ctx map[string]any) Resolution {
	f := s.flags[key]
	if f == nil {
		return Resolution{Key: key, Reason: ReasonError, ErrorCode: ErrorFlagNotFound, ErrorMessage: msgFlagNotFound}
	}
	if f.rule == nil || f.state == Disabled {
		return f.fixed()
	}
	return f.evaluate(s, ctx)
}

// evaluate runs f's targeting and maps the result to a resolution.
func (f *flag) evaluate(s *Set, ctx map[string]any) Resolution {
	var r Resolution
	f.evaluateInto(&r, s, ctx)
	return r
}

// evaluateInto is evaluate writing into *r, which saves copying the
// Resolution through every caller on the hot path.
func (f *flag) evaluateInto(r *Resolution, s *Set, ctx map[string]any) {
	e := env{ctx: ctx, flagKey: f.key, now: s.now, budget: workBudget}
	v := e.eval(f.rule.root)
	r.Key, r.Metadata = f.key, f.meta
	if e.failed != "" {
		r.Reason, r.ErrorCode, r.ErrorMessage = ReasonError, ErrorGeneral, e.failed
		return
	}
	var idx int32
	var ok bool
	switch v.k {
	case kNull:
		r.Reason = ReasonDefault
		if f.def >= 0 {
			vr := &f.variants[f.def]
			r.Value, r.Variant = vr.value, vr.name
		}
		return
	case kStr:
		idx, ok = f.lookup(v.s)
	case kBool:
		if v.n != 0 {
			idx, ok = f.lookup("true")
		} else {
			idx, ok = f.lookup("false")
		}
	case kNum:
		var buf [32]byte
		idx, ok = f.lookupBytes(appendJSNumber(buf[:0], v.n))
	default:
		r.Reason, r.ErrorCode = ReasonError, ErrorGeneral
		r.ErrorMessage = "targeting returned " + v.kindName() + ", not a variant name"
		return
	}
	if !ok {
		r.Reason, r.ErrorCode = ReasonError, ErrorGeneral
		r.ErrorMessage = fmt.Sprintf("targeting returned %s, which is not a variant (have: %s)", v.describe(), strings.Join(f.names, ", "))
		return
	}
	vr := &f.variants[idx]
	r.Value, r.Variant, r.Reason = vr.value, vr.name, ReasonTargetingMatch
}

// info describes f.
func (f *flag) info() FlagInfo {
	info := FlagInfo{Key: f.key, State: f.state, Type: f.typ, Static: f.rule == nil || f.state == Disabled,
		Variants: f.names, Metadata: f.meta}
	if f.def >= 0 {
		info.DefaultVariant = f.variants[f.def].name
	}
	return info
}

// lookup finds a variant by name: a short scan for the usual handful of
// variants, the map otherwise.
func (f *flag) lookup(name string) (int32, bool) {
	if f.byName == nil {
		for i := range f.variants {
			if f.variants[i].name == name {
				return int32(i), true
			}
		}
		return 0, false
	}
	i, ok := f.byName[name]
	return i, ok
}

// lookupBytes is lookup for a name held in bytes (without allocating).
func (f *flag) lookupBytes(name []byte) (int32, bool) {
	if f.byName == nil {
		for i := range f.variants {
			if f.variants[i].name == string(name) {
				return int32(i), true
			}
		}
		return 0, false
	}
	i, ok := f.byName[string(name)]
	return i, ok
}

// maxScannedVariants is how many variants lookup scans; flags with more
// get a map.
const maxScannedVariants = 8

// typed resolves key into *r, checking the flag's type before anything
// else so that a wrong-type call is reported even for a disabled flag. It
// reports whether r carries a value.
func (s *Set) typed(r *Resolution, key string, want ValueType, ctx map[string]any) bool {
	f := s.flags[key]
	switch {
	case f == nil:
		*r = Resolution{Key: key, Reason: ReasonError, ErrorCode: ErrorFlagNotFound, ErrorMessage: msgFlagNotFound}
		return false
	case f.typ != want:
		*r = Resolution{Key: key, Reason: ReasonError, ErrorCode: ErrorTypeMismatch,
			ErrorMessage: typeMismatch(f.typ, want), Metadata: f.meta}
		return false
	case f.rule == nil || f.state == Disabled:
		f.fixedInto(r)
	default:
		f.evaluateInto(r, s, ctx)
	}
	return r.Value != nil
}

// nodeType is the type of a variant value, "" for one that cannot be.
func nodeType(v *node) ValueType {
	switch v.kind {
	case nBool:
		return TypeBoolean
	case nNum:
		return TypeNumber
	case nStr:
		return TypeString
	case nObj:
		return TypeObject
	}
	return ""
}

// valueTypes lists the variant types in the order problems name them.
var valueTypes = [4]ValueType{TypeBoolean, TypeNumber, TypeString, TypeObject}

func typeMismatch(have, want ValueType) string {
	return "flag is of type " + string(have) + ", not " + string(want)
}

// Boolean resolves a boolean flag, returning def with the resolution when the
// code default applies or on any error (TYPE_MISMATCH for a non-boolean flag).
func (s *Set) Boolean(key string, def bool, ctx map[string]any) (bool, Resolution) {
	var r Resolution
	if !s.typed(&r, key, TypeBoolean, ctx) {
		return def, r
	}
	return r.Value.(bool), r
}

// String resolves a string flag (see [Set.Boolean] for the contract).
func (s *Set) String(key string, def string, ctx map[string]any) (string, Resolution) {
	var r Resolution
	if !s.typed(&r, key, TypeString, ctx) {
		return def, r
	}
	return r.Value.(string), r
}

// Int resolves an integer flag; a float value is accepted only when lossless
// (10.0 is 10; 3.14 gives TYPE_MISMATCH with def).
func (s *Set) Int(key string, def int64, ctx map[string]any) (int64, Resolution) {
	var r Resolution
	if !s.typed(&r, key, TypeNumber, ctx) {
		return def, r
	}
	f := r.Value.(float64)
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return def, Resolution{Key: key, Variant: r.Variant, Reason: ReasonError, ErrorCode: ErrorTypeMismatch,
			ErrorMessage: "value " + strconv.FormatFloat(f, 'g', -1, 64) + " is not an integer", Metadata: r.Metadata}
	}
	return int64(f), r
}

// Float resolves a number flag (see [Set.Boolean] for the contract).
func (s *Set) Float(key string, def float64, ctx map[string]any) (float64, Resolution) {
	var r Resolution
	if !s.typed(&r, key, TypeNumber, ctx) {
		return def, r
	}
	return r.Value.(float64), r
}

// Object resolves an object flag (see [Set.Boolean] for the contract). The
// returned map is shared by every caller: do not modify it.
func (s *Set) Object(key string, def any, ctx map[string]any) (any, Resolution) {
	var r Resolution
	if !s.typed(&r, key, TypeObject, ctx) {
		return def, r
	}
	return r.Value, r
}

func (b *builder) compileFlag(src *flagSource, c *compiler) *flag {
	fd := src.flag
	path := src.path
	f := b.newFlag()
	*f = flag{key: src.key, state: fd.State, def: -1}
	ok := true
	switch fd.State {
	case Enabled, Disabled:
	case "":
		if !src.bad {
			b.ps.add(joinPath(path, "state"), "required (ENABLED or DISABLED)")
		}
		ok = false
	default:
		b.ps.add(joinPath(path, "state"), "unknown state %q (want ENABLED or DISABLED)", string(fd.State))
		ok = false
	}

	// Paths are built only for problems.
	vpath := func() string { return joinPath(path, "variants") }
	if src.variants == nil {
		if !src.bad {
			b.ps.add(vpath(), "required (at least one variant)")
		}
		return nil
	}
	vn := src.variants
	if len(vn.keys) == 0 {
		b.ps.add(vpath(), "must have at least one variant")
		return nil
	}
	if sv := src.vars; sv != nil && sv.compiled {
		f.variants, f.names, f.typ, f.byName = sv.list, sv.names, sv.typ, sv.byName
	} else if b.compileVariants(f, src, vpath) {
		if sv != nil {
			sv.compiled, sv.list, sv.names, sv.typ, sv.byName = true, f.variants, f.names, f.typ, f.byName
		}
	} else {
		ok = false
	}
	names := f.names

	if fd.DefaultVariant != nil {
		name := *fd.DefaultVariant
		if i, found := f.lookup(name); found {
			f.def = i
		} else {
			b.ps.add(joinPath(path, "defaultVariant"), "%q is not a variant (have: %s)", name, strings.Join(names, ", "))
			ok = false
		}
	}

	if src.targeting != nil {
		// Flags with the same targeting (the same canonical JSON) share
		// its compiled rule: rules are immutable, and what they do depends
		// only on their JSON and the evaluators.
		if cr, found := b.rules[string(fd.Targeting)]; found {
			f.rule = cr
		} else if r := c.compileRule(src.targeting, joinPath(path, "targeting")); r != nil {
			r.deps = c.ruleDeps()
			f.rule = r
			if b.rules == nil {
				b.rules = map[string]*rule{}
			}
			b.rules[string(fd.Targeting)] = r
		} else {
			ok = false
		}
	}
	if !ok {
		return nil
	}
	f.finish(b.doc.Metadata, fd.Metadata, names)
	return f
}

// compileVariants checks and compiles src's variants into f (variants,
// names, type, byName), reporting whether they are valid.
func (b *builder) compileVariants(f *flag, src *flagSource, vpath func() string) bool {
	fd, vn := src.flag, src.variants
	ok := true
	order := make([]int, len(vn.keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(vn.keys[a], vn.keys[b]) })
	names := make([]string, len(order))
	for i, j := range order {
		names[i] = vn.keys[j]
	}
	f.names = names
	var kinds [4]int // variants by type, in the order of valueTypes
	f.variants = make([]variant, 0, len(names))
	for i, name := range names {
		v := vn.vals[order[i]]
		if name == "" {
			b.ps.add(joinPath(vpath(), name), "a variant needs a non-empty name")
			ok = false
			continue
		}
		t := nodeType(v)
		if t == "" {
			b.ps.add(joinPath(vpath(), name), "a variant value must be a boolean, number, string or object, got %s", v.kind)
			ok = false
			continue
		}
		kinds[slices.Index(valueTypes[:], t)]++
		val := fd.Variants[name]
		f.variants = append(f.variants, variant{name: name, value: val, num: v.num})
		f.typ = t
	}
	if len(f.variants) > maxScannedVariants {
		f.byName = make(map[string]int32, len(f.variants))
		for i := range f.variants {
			f.byName[f.variants[i].name] = int32(i)
		}
	}
	mixed := 0
	for _, n := range kinds {
		if n > 0 {
			mixed++
		}
	}
	if mixed > 1 {
		var parts []string
		for _, t := range valueTypes {
			var ns []string
			for i, name := range names {
				if name != "" && nodeType(vn.vals[order[i]]) == t {
					ns = append(ns, name)
				}
			}
			if len(ns) > 0 {
				parts = append(parts, string(t)+" ("+strings.Join(ns, ", ")+")")
			}
		}
		b.ps.add(vpath(), "all variants must have the same type, got %s", strings.Join(parts, ", "))
		ok = false
	}

	return ok
}

// withSetMetadata returns a copy of f (compiled in another set) whose
// metadata is merged over setMeta instead.
func (f *flag) withSetMetadata(setMeta, flagMeta map[string]any) *flag {
	c := *f
	c.finish(setMeta, flagMeta, f.names)
	return &c
}

// finish sets what depends on the metadata: the merged metadata, the
// flag's description and its fixed resolution.
func (f *flag) finish(setMeta, flagMeta map[string]any, names []string) {
	// Flag metadata wins over flag-set metadata.
	switch {
	case len(setMeta) == 0:
		f.meta = flagMeta
	case len(flagMeta) == 0:
		f.meta = setMeta
	default:
		f.meta = maps.Clone(setMeta)
		maps.Copy(f.meta, flagMeta)
	}
	f.names = names
}
