package flags

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
	root, ps, _ := parseTree(data, nil)
	if root == nil {
		return nil, ps.err()
	}
	b := &builder{ps: ps, structural: true}
	b.read(root)
	if err := b.ps.err(); err != nil {
		return nil, err
	}
	return b.doc, nil
}

// Compile validates doc and compiles its targeting. Every problem is reported
// at once in a *ValidationError; doc is not retained or modified.
func Compile(doc *Document) (*Set, error) {
	if doc == nil {
		return nil, &ValidationError{Problems: []Problem{{Path: "(root)", Message: "no flag set"}}}
	}
	var ps problems
	root := docTree(doc, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return compileTree(root, nil, nil, nil)
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
	root, ps, input := parseTree(data, prev)
	if root == nil {
		return nil, ps.err()
	}
	return compileTree(root, ps, prev, input)
}

func compileTree(root *node, ps problems, prev *Set, input []byte) (*Set, error) {
	b := &builder{ps: ps, prev: prev, input: input}
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
func parseTree(data []byte, prev *Set) (*node, problems, []byte) {
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
		p := &fastParser{data: input, ps: &ps}
		if prev != nil {
			p.reuse = prev.reuseFunc()
		} else {
			p.reuse = noReuse
		}
		if root, ok := p.parse(); ok {
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
func noReuse(string, []byte) (int, int, int) { return 0, 0, -1 }

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
func docTree(doc *Document, ps *problems) *node {
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
	for _, k := range keys {
		f := doc.Flags[k]
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
// goes, and (unless structural is set) compiles the flags.
type builder struct {
	ps         problems
	structural bool   // Parse: structure only
	prev       *Set   // the set being recompiled, or nil
	input      []byte // the JSON input (a private copy), or nil

	doc        *Document
	evaluators map[string]*node
	flagNodes  []flagSource
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
			b.doc.Metadata = b.readMetadata(v, "metadata")
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
		b.doc.Flags = make(map[string]*Flag, len(flagsNode.keys))
		b.flagNodes = make([]flagSource, 0, len(flagsNode.keys))
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
		b.flagNodes = make([]flagSource, 0, len(flagsNode.arr))
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

// readMetadata checks that v is an object of primitive values and returns it.
func (b *builder) readMetadata(v *node, path string) map[string]any {
	if v.kind == nNull {
		return nil
	}
	if v.kind != nObj {
		b.ps.add(path, "must be an object, got %s", v.kind)
		return nil
	}
	m := make(map[string]any, len(v.keys))
	for i, k := range v.keys {
		e := v.vals[i]
		switch e.kind {
		case nStr, nNum, nBool:
			m[k] = e.toGo()
		default:
			b.ps.add(joinPath(path, k), "metadata values must be strings, numbers or booleans, got %s", e.kind)
		}
	}
	return m
}

func (b *builder) readFlag(key, path string, fn *node, arrayForm bool) {
	if src, ok := b.readFlagSource(key, path, fn, arrayForm); ok {
		b.doc.Flags[key] = src.flag
		b.flagNodes = append(b.flagNodes, src)
	}
}

// reuseFlag records a flag whose bytes are those of flag idx of b.prev:
// its definition is the previous one, and it is read again only if it
// has to be compiled again (see materialize).
func (b *builder) reuseFlag(key string, span flagSpan) {
	def := b.prev.doc.Flags[key]
	b.doc.Flags[key] = def
	b.flagNodes = append(b.flagNodes, flagSource{key: key, flag: def, reuse: span.reuse, span: span})
}

// materialize reads a reused flag's bytes, for compiling it again.
func (b *builder) materialize(src *flagSource) {
	src.path = joinPath("flags", src.key)
	fn, err := parseJSONTree(src.span.raw, &b.ps, src.path)
	if err != nil { // not reachable: the same bytes were read before
		b.ps.add(src.path, "invalid JSON: %s", jsonErrorText(src.span.raw, err))
		return
	}
	if s, ok := b.readFlagSource(src.key, src.path, fn, false); ok {
		s.reuse, s.span = -1, src.span
		*src = s
	}
}

// readFlagSource checks one flag's fields and returns what compiling it
// needs; ok is false when it is not an object.
func (b *builder) readFlagSource(key, path string, fn *node, arrayForm bool) (src flagSource, ok bool) {
	src = flagSource{key: key, path: path, flag: &Flag{}, reuse: -1}
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
		fp := joinPath(path, k)
		switch k {
		case "key":
			if !arrayForm && (v.kind != nStr || v.raw != key) {
				b.ps.add(fp, "must match the flag's key %q (or be left out)", key)
			}
		case "state":
			if v.kind != nStr {
				b.ps.add(fp, "must be \"ENABLED\" or \"DISABLED\", got %s", v.kind)
				src.bad = true
			} else {
				f.State = State(v.raw)
			}
		case "variants":
			if v.kind != nObj {
				b.ps.add(fp, "must be an object mapping variant names to values, got %s", v.kind)
				src.bad = true
			} else {
				src.variants = v
				f.Variants = v.toGo().(map[string]any)
			}
		case "defaultVariant":
			switch v.kind {
			case nNull:
			case nStr:
				s := v.raw
				f.DefaultVariant = &s
			default:
				b.ps.add(fp, "must be a variant name or null, got %s", v.kind)
				src.bad = true
			}
		case "targeting":
			switch {
			case v.kind == nNull:
			case v.kind == nObj && len(v.keys) == 0:
				f.Targeting = json.RawMessage("{}")
			case v.kind == nObj:
				src.targeting = v
				f.Targeting = v.canonicalJSON()
			default:
				b.ps.add(fp, "must be a JsonLogic rule (an object), got %s", v.kind)
				src.bad = true
			}
		case "metadata":
			f.Metadata = b.readMetadata(v, fp)
		default:
			b.ps.add(fp, "unknown field (want state, variants, defaultVariant, targeting or metadata)")
		}
	}
	return src, true
}
