package flags

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// maxInput bounds the size of a flag-set document Parse and Load accept.
const maxInput = 64 << 20

// Parse reads a flag set in flagd's format from JSON or YAML. Structural
// problems (syntax, wrong types, unknown or duplicate keys) are reported
// together as a *ValidationError; semantic checks (variants, targeting) are
// left to [Compile]. The returned Document is in canonical form: "flags" in
// the map form, targeting and evaluators as compact JSON with sorted keys.
func Parse(data []byte) (*Document, error) {
	sc := getScratch()
	defer sc.release()
	root, ps, _ := parseTree(data, nil, sc)
	if root == nil {
		return nil, ps.err()
	}
	b := &builder{ps: ps, sc: sc}
	defer func() { sc.flagNodes = b.flagNodes }()
	b.read(root)
	if err := b.ps.err(); err != nil {
		return nil, err
	}
	b.fillFlags()
	return b.doc, nil
}

// Compile validates doc and compiles its targeting. Every problem is reported
// at once in a *ValidationError; doc is not retained or modified.
func Compile(doc *Document) (*Set, error) {
	if doc == nil {
		return nil, &ValidationError{Problems: []Problem{{Path: "(root)", Message: "no flag set"}}}
	}
	var ps problems
	root := docTree(doc, &ps, nil)
	if err := ps.err(); err != nil {
		return nil, err
	}
	sc := getScratch()
	defer sc.release()
	return compileTree(root, nil, nil, nil, sc)
}

// Load is Parse followed by Compile, reporting structural and semantic
// problems together in one *ValidationError.
func Load(data []byte) (*Set, error) {
	return load(nil, data)
}

// load is Load, reusing what it can of prev (which may be nil).
func load(prev *Set, data []byte) (*Set, error) {
	if prev != nil && prev.src == nil {
		prev = nil
	}
	if prev != nil && prev.src.input != nil && bytes.Equal(trimInput(data), prev.src.input) {
		c := *prev
		c.now = time.Now
		return &c, nil
	}
	sc := getScratch()
	defer sc.release()
	root, ps, input := parseTree(data, prev, sc)
	if root == nil {
		return nil, ps.err()
	}
	return compileTree(root, ps, prev, input, sc)
}

func compileTree(root *node, ps problems, prev *Set, input []byte, sc *scratch) (*Set, error) {
	b := &builder{ps: ps, prev: prev, input: input, sc: sc}
	defer func() { sc.flagNodes = b.flagNodes }()
	b.read(root)
	if err := b.ps.err(); err != nil {
		return nil, err
	}
	return b.set()
}

// trimInput drops leading whitespace and byte-order marks.
func trimInput(data []byte) []byte {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	return bytes.TrimPrefix(trimmed, []byte("\ufeff"))
}

// parseTree parses JSON (when the input looks like JSON) or YAML into a node
// tree. A nil tree means the input could not be read; the problems say why.
// For JSON it also returns the copy of the input the tree was read from;
// flags whose bytes are those of a flag of prev are not read but marked
// for reuse (see fastParser.reuse).
func parseTree(data []byte, prev *Set, sc *scratch) (*node, problems, []byte) {
	var ps problems
	if len(data) > maxInput {
		ps.add("(root)", "document is larger than %d MiB", maxInput>>20)
		return nil, ps, nil
	}
	trimmed := trimInput(data)
	if len(bytes.TrimSpace(trimmed)) == 0 {
		ps.add("(root)", "empty document")
		return nil, ps, nil
	}
	if trimmed[0] == '{' || trimmed[0] == '[' {
		input := bytes.Clone(trimmed)
		p := &fastParser{data: input, ps: &ps, stack: sc.stack, kstk: sc.kstk, spanBuf: sc.spans, flagKeys: sc.flagKeys, flagVals: sc.flagVals}
		p.reuse = noReuse
		if prev != nil {
			p.reuse = prev.reuseFunc()
			p.hint = prev.Len()
		}
		root, ok := p.parse()
		sc.stack, sc.kstk, sc.spans, sc.flagKeys, sc.flagVals = p.stack, p.kstk, p.spanBuf, p.flagKeys, p.flagVals
		if ok {
			return root, ps, input
		}
		root, err := parseJSONTreeSlow(input, &ps, "")
		if err != nil {
			return nil, problems{{Path: "(root)", Message: "invalid JSON: " + jsonErrorText(input, err)}}, nil
		}
		return root, ps, nil
	}
	root, err := parseYAMLTree(data, &ps)
	if err != nil {
		return nil, problems{{Path: "(root)", Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}, nil
	}
	return root, ps, nil
}

// noReuse recognises no flag; with it the fast parser still records
// where each flag is, for a later Recompile.
func noReuse([]byte, []byte) (int, int, int, string) { return 0, 0, -1, "" }

// jsonErrorText describes a JSON syntax error with its line and column.
func jsonErrorText(data []byte, err error) string {
	if se, ok := err.(*json.SyntaxError); ok {
		line, col := 1, 1
		for _, c := range data[:min(int(se.Offset), len(data))] {
			if c == '\n' {
				line++
				col = 1
			} else {
				col++
			}
		}
		return fmt.Sprintf("%v (line %d, column %d)", se, line, col)
	}
	if err == io.ErrUnexpectedEOF {
		return "unexpected end of input"
	}
	return err.Error()
}

// docTree turns a Document (perhaps built in code or decoded by
// encoding/json) back into a node tree so that it goes through exactly the
// same checks as parsed input.
//
// With prev, a flag whose definition is exactly one of prev's (see
// sameDefinition) is not converted but marked for reuse, as the fast
// parser marks unchanged bytes.
func docTree(doc *Document, ps *problems, prev *Set) *node {
	root := &node{kind: nObj}
	add := func(k string, v *node) {
		root.keys = append(root.keys, k)
		root.vals = append(root.vals, v)
	}
	if doc.Schema != "" {
		add("$schema", &node{kind: nStr, raw: doc.Schema})
	}
	flags := &node{kind: nObj} // a nil map is an empty flag set
	keys := sortedKeys(doc.Flags)
	if prev != nil {
		flags.ext = &nodeExt{spans: make([]flagSpan, 0, len(keys))}
	}
	for _, k := range keys {
		f := doc.Flags[k]
		if prev != nil {
			i := prev.index(k, len(flags.keys))
			if i >= 0 && sameDefinition(f, prev.src.recs[i].def) {
				flags.keys = append(flags.keys, k)
				flags.vals = append(flags.vals, reusedFlag)
				flags.ext.spans = append(flags.ext.spans, flagSpan{reuse: int32(i)})
				continue
			}
			flags.ext.spans = append(flags.ext.spans, flagSpan{reuse: -1})
		}
		path := joinPath("flags", k)
		if f == nil {
			flags.keys = append(flags.keys, k)
			flags.vals = append(flags.vals, &node{kind: nNull})
			continue
		}
		fn := &node{kind: nObj}
		set := func(name string, v *node) {
			fn.keys = append(fn.keys, name)
			fn.vals = append(fn.vals, v)
		}
		if f.Key != "" {
			set("key", &node{kind: nStr, raw: f.Key})
		}
		if f.State != "" {
			set("state", &node{kind: nStr, raw: string(f.State)})
		}
		if f.Variants != nil {
			v, err := fromGo(map[string]any(f.Variants), joinPath(path, "variants"), 0)
			if err != nil {
				ps.addErr(joinPath(path, "variants"), err)
			} else {
				set("variants", v)
			}
		}
		if f.DefaultVariant != nil {
			set("defaultVariant", &node{kind: nStr, raw: *f.DefaultVariant})
		}
		if len(bytes.TrimSpace(f.Targeting)) > 0 {
			t, err := parseJSONTree(f.Targeting, ps, joinPath(path, "targeting"))
			if err != nil {
				ps.add(joinPath(path, "targeting"), "invalid JSON: %s", jsonErrorText(f.Targeting, err))
			} else {
				set("targeting", t)
			}
		}
		if f.Metadata != nil {
			v, err := fromGo(map[string]any(f.Metadata), joinPath(path, "metadata"), 0)
			if err != nil {
				ps.addErr(joinPath(path, "metadata"), err)
			} else {
				set("metadata", v)
			}
		}
		flags.keys = append(flags.keys, k)
		flags.vals = append(flags.vals, fn)
	}
	add("flags", flags)
	if doc.Evaluators != nil {
		ev := &node{kind: nObj}
		for _, name := range sortedKeys(doc.Evaluators) {
			path := joinPath("$evaluators", name)
			t, err := parseJSONTree(doc.Evaluators[name], ps, path)
			if err != nil {
				ps.add(path, "invalid JSON: %s", jsonErrorText(doc.Evaluators[name], err))
				continue
			}
			ev.keys = append(ev.keys, name)
			ev.vals = append(ev.vals, t)
		}
		add("$evaluators", ev)
	}
	if doc.Metadata != nil {
		v, err := fromGo(doc.Metadata, "metadata", 0)
		if err != nil {
			ps.addErr("metadata", err)
		} else {
			add("metadata", v)
		}
	}
	return root
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// builder reads a node tree into a canonical Document, checking it as it
// goes, and compiles the flags.
type builder struct {
	ps    problems
	prev  *Set   // the set being recompiled, or nil
	input []byte // the JSON input (a private copy), or nil
	sc    *scratch

	doc        *Document
	evaluators map[string]*node
	flagNodes  []flagSource

	// Flags with the same variants (most of a set) share one map in the
	// Document and one compiled form: both are immutable.
	variants map[string]*sharedVariants
	scratch  []byte
	rules    map[string]*rule // compiled rules by canonical targeting
	strs     map[string]*string
	raws     map[string]json.RawMessage
	metas    map[string]map[string]any

	// A fresh build allocates its flags from one array each (see slabs).
	flagSlab []flag
	defSlab  []Flag
}

// slabs sets up one array for the n compiled flags and one for the n
// definitions of a fresh build: two objects instead of 2n for the garbage
// collector to track. A Recompile allocates its few changed flags one by
// one, so that the flags it keeps hold on to at most the one array of the
// set they were loaded with.
func (b *builder) slabs(n int) {
	if b.prev == nil {
		b.flagSlab = make([]flag, 0, n)
		b.defSlab = make([]Flag, 0, n)
	}
}

func (b *builder) newFlag() *flag {
	if len(b.flagSlab) < cap(b.flagSlab) {
		b.flagSlab = b.flagSlab[:len(b.flagSlab)+1]
		return &b.flagSlab[len(b.flagSlab)-1]
	}
	return new(flag)
}

func (b *builder) newDef() *Flag {
	if len(b.defSlab) < cap(b.defSlab) {
		b.defSlab = b.defSlab[:len(b.defSlab)+1]
		return &b.defSlab[len(b.defSlab)-1]
	}
	return new(Flag)
}

// The Document's definitions are immutable (Document hands out deep
// copies), so a build shares equal values between flags instead of
// holding one copy per flag: fewer objects for the garbage collector.

// internState returns the State constant for s when there is one.
func internState(s string) State {
	switch s {
	case string(Enabled):
		return Enabled
	case string(Disabled):
		return Disabled
	}
	return State(s)
}

// flagMetadata is readMetadata for a flag's metadata, sharing valid maps
// equal to one read before.
func (b *builder) flagMetadata(v *node, path func() string) map[string]any {
	if v.kind != nObj {
		return b.readMetadata(v, path)
	}
	b.scratch = v.appendJSON(b.scratch[:0])
	if m, ok := b.metas[string(b.scratch)]; ok {
		return m
	}
	key := string(b.scratch)
	before := len(b.ps)
	m := b.readMetadata(v, path)
	if len(b.ps) == before {
		if b.metas == nil {
			b.metas = map[string]map[string]any{}
		}
		b.metas[key] = m
	}
	return m
}

// internString returns a pointer to a string equal to s, shared within
// the build (for defaultVariant).
func (b *builder) internString(s string) *string {
	if p, ok := b.strs[s]; ok {
		return p
	}
	if b.strs == nil {
		b.strs = map[string]*string{}
	}
	p := &s
	b.strs[s] = p
	return p
}

// internJSON returns v's canonical JSON, shared within the build.
func (b *builder) internJSON(v *node) json.RawMessage {
	b.scratch = v.appendJSON(b.scratch[:0])
	if raw, ok := b.raws[string(b.scratch)]; ok {
		return raw
	}
	raw := json.RawMessage(slices.Clone(b.scratch))
	if b.raws == nil {
		b.raws = map[string]json.RawMessage{}
	}
	b.raws[string(raw)] = raw
	return raw
}

// sharedVariants is one set of variants as the Document holds them and,
// once a flag using them compiled, as flags hold them.
type sharedVariants struct {
	m        map[string]any
	compiled bool
	list     []variant
	names    []string
	typ      ValueType
	byName   map[string]int32
}

// sharedVariantsFor returns the shared variants equal to v (an object).
func (b *builder) sharedVariantsFor(v *node) *sharedVariants {
	b.scratch = v.appendJSON(b.scratch[:0])
	if sv, ok := b.variants[string(b.scratch)]; ok {
		return sv
	}
	sv := &sharedVariants{m: v.toGo().(map[string]any)}
	if b.variants == nil {
		b.variants = map[string]*sharedVariants{}
	}
	b.variants[string(b.scratch)] = sv
	return sv
}

// flagSource is one flag as read, with the parts compilation needs.
type flagSource struct {
	key       string
	path      string
	flag      *Flag
	targeting *node // nil when absent, null or {}
	bad       bool  // a field had the wrong type; its absence is not reported again
	variants  *node
	// reuse is the index in prev's records of a flag whose bytes were
	// those of this one, which was therefore not read (-1 otherwise).
	reuse int
	span  flagSpan // where the flag is in the input (empty if unknown)
	vars  *sharedVariants

	// Set while building the Set.
	seg0, seg1 int32 // the canonical definition, within the canonical document
	compiled   *flag
}

func (b *builder) read(root *node) {
	b.doc = &Document{Flags: map[string]*Flag{}}
	if root.kind != nObj {
		b.ps.add("(root)", "a flag set must be an object with \"flags\", got %s", root.kind)
		return
	}
	var flagsNode *node
	for i, k := range root.keys {
		v := root.vals[i]
		switch k {
		case "$schema":
			if v.kind != nStr {
				b.ps.add("$schema", "must be a string, got %s", v.kind)
			} else {
				b.doc.Schema = v.raw
			}
		case "flags":
			flagsNode = v
		case "$evaluators":
			b.readEvaluators(v)
		case "metadata":
			b.doc.Metadata = b.readMetadata(v, func() string { return "metadata" })
		default:
			b.ps.add(joinPath("", k), "unknown field (want flags, $evaluators, metadata or $schema)")
		}
	}
	if flagsNode == nil {
		b.ps.add("flags", "required")
		return
	}
	switch flagsNode.kind {
	case nNull: // an empty flag set, as encoding/json writes a nil map
	case nObj:
		var spans []flagSpan
		if flagsNode.ext != nil {
			spans = flagsNode.ext.spans
		}
		b.flagNodes = slices.Grow(b.sc.flagNodes[:0], len(flagsNode.keys))
		b.slabs(len(flagsNode.keys))
		for i, k := range flagsNode.keys {
			v := flagsNode.vals[i]
			if v == reusedFlag {
				b.reuseFlag(k, spans[i])
				continue
			}
			n := len(b.flagNodes)
			b.readFlag(k, joinPath("flags", k), v, false)
			if len(b.flagNodes) > n && spans != nil {
				b.flagNodes[n].span = spans[i]
			}
		}
	case nArr:
		b.flagNodes = slices.Grow(b.sc.flagNodes[:0], len(flagsNode.arr))
		b.slabs(len(flagsNode.arr))
		first := map[string]string{}
		for i, fn := range flagsNode.arr {
			path := indexPath("flags", i)
			if fn.kind != nObj {
				b.ps.add(path, "a flag must be an object, got %s", fn.kind)
				continue
			}
			kn := fn.get("key")
			if kn == nil || kn.kind != nStr || kn.raw == "" {
				b.ps.add(path+".key", "required in the array form of flags (a non-empty string)")
				continue
			}
			if prev, dup := first[kn.raw]; dup {
				b.ps.add(path+".key", "duplicate flag key %q (first at %s)", kn.raw, prev)
				continue
			}
			first[kn.raw] = path
			b.readFlag(kn.raw, path, fn, true)
		}
	default:
		b.ps.add("flags", "must be an object (or an array of flags with \"key\"), got %s", flagsNode.kind)
	}
}

func (b *builder) readEvaluators(v *node) {
	if v.kind != nObj {
		b.ps.add("$evaluators", "must be an object of named targeting rules, got %s", v.kind)
		return
	}
	b.evaluators = make(map[string]*node, len(v.keys))
	b.doc.Evaluators = make(map[string]json.RawMessage, len(v.keys))
	for i, name := range v.keys {
		if name == "" {
			b.ps.add(joinPath("$evaluators", name), "an evaluator needs a name")
			continue
		}
		b.evaluators[name] = v.vals[i]
		b.doc.Evaluators[name] = v.vals[i].canonicalJSON()
	}
}

// readMetadata checks that v is an object of primitive values and returns
// it; path (built only for a problem) is v's.
func (b *builder) readMetadata(v *node, path func() string) map[string]any {
	if v.kind == nNull {
		return nil
	}
	if v.kind != nObj {
		b.ps.add(path(), "must be an object, got %s", v.kind)
		return nil
	}
	m := make(map[string]any, len(v.keys))
	for i, k := range v.keys {
		e := v.vals[i]
		switch e.kind {
		case nStr, nNum, nBool:
			m[k] = e.toGo()
		default:
			b.ps.add(joinPath(path(), k), "metadata values must be strings, numbers or booleans, got %s", e.kind)
		}
	}
	return m
}

func (b *builder) readFlag(key, path string, fn *node, arrayForm bool) {
	if src, ok := b.readFlagSource(key, path, fn, arrayForm); ok {
		b.flagNodes = append(b.flagNodes, src)
	}
}

// reuseFlag records a flag whose bytes are those of a flag of b.prev
// (span.reuse): its definition is the previous one, and it is read again
// only if it has to be compiled again (see materialize).
func (b *builder) reuseFlag(key string, span flagSpan) {
	def := b.prev.src.recs[span.reuse].def
	b.flagNodes = append(b.flagNodes, flagSource{key: key, flag: def, reuse: int(span.reuse), span: span})
}

// fillFlags sets the Document's flags (for Parse: a Set keeps its
// definitions in its records and builds the map in Document).
func (b *builder) fillFlags() {
	b.doc.Flags = make(map[string]*Flag, len(b.flagNodes))
	for i := range b.flagNodes {
		b.doc.Flags[b.flagNodes[i].key] = b.flagNodes[i].flag
	}
}

// materialize reads a reused flag's definition, for compiling it again:
// the canonical JSON prev holds for it, which reads back to the same
// definition.
func (b *builder) materialize(src *flagSource) {
	src.path = joinPath("flags", src.key)
	raw := b.prev.src.seg(&b.prev.src.recs[src.reuse])
	fn, err := parseJSONTree(raw, &b.ps, src.path)
	if err != nil { // not reachable: the same bytes were read before
		b.ps.add(src.path, "invalid JSON: %s", jsonErrorText(raw, err))
		return
	}
	if s, ok := b.readFlagSource(src.key, src.path, fn, false); ok {
		// The definition stays prev's: canonical JSON leaves out an empty
		// metadata object, which the definition keeps.
		s.flag, s.reuse, s.span, s.seg0, s.seg1 = src.flag, -1, src.span, src.seg0, src.seg1
		*src = s
	}
}

// readFlagSource checks one flag's fields and returns what compiling it
// needs; ok is false when it is not an object.
func (b *builder) readFlagSource(key, path string, fn *node, arrayForm bool) (src flagSource, ok bool) {
	src = flagSource{key: key, path: path, flag: b.newDef(), reuse: -1}
	if key == "" {
		b.ps.add(path, "a flag key must not be empty")
	}
	if fn.kind != nObj {
		b.ps.add(path, "a flag must be an object, got %s", fn.kind)
		return src, false
	}
	f := src.flag
	for i, k := range fn.keys {
		v := fn.vals[i]
		fp := func() string { return joinPath(path, k) } // for problems only
		switch k {
		case "key":
			if !arrayForm && (v.kind != nStr || v.raw != key) {
				b.ps.add(fp(), "must match the flag's key %q (or be left out)", key)
			}
		case "state":
			if v.kind != nStr {
				b.ps.add(fp(), "must be \"ENABLED\" or \"DISABLED\", got %s", v.kind)
				src.bad = true
			} else {
				f.State = internState(v.raw)
			}
		case "variants":
			if v.kind != nObj {
				b.ps.add(fp(), "must be an object mapping variant names to values, got %s", v.kind)
				src.bad = true
			} else {
				src.variants = v
				src.vars = b.sharedVariantsFor(v)
				f.Variants = src.vars.m
			}
		case "defaultVariant":
			switch v.kind {
			case nNull:
			case nStr:
				f.DefaultVariant = b.internString(v.raw)
			default:
				b.ps.add(fp(), "must be a variant name or null, got %s", v.kind)
				src.bad = true
			}
		case "targeting":
			switch {
			case v.kind == nNull:
			case v.kind == nObj && len(v.keys) == 0:
				f.Targeting = json.RawMessage("{}")
			case v.kind == nObj:
				src.targeting = v
				f.Targeting = b.internJSON(v)
			default:
				b.ps.add(fp(), "must be a JsonLogic rule (an object), got %s", v.kind)
				src.bad = true
			}
		case "metadata":
			f.Metadata = b.flagMetadata(v, fp)
		default:
			b.ps.add(fp(), "unknown field (want state, variants, defaultVariant, targeting or metadata)")
		}
	}
	return src, true
}
