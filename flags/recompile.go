package flags

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Recompile loads data (JSON or YAML, as [Load] does) into a new Set,
// reusing the compiled form of every flag of s whose definition is
// unchanged: its canonical definition is the same, the evaluators its
// targeting expands are the same, and its merged metadata is rebuilt if
// the set's metadata changed. When data is JSON with the flags in the map
// form (as Flagpole stores and streams it), a flag whose bytes are those
// it had in s is not even parsed again.
//
// The result is indistinguishable from Load(data): the same Hash, Keys,
// Metadata, Info, Document and Evaluate results (its clock is time.Now,
// as Load's). Errors are Load's: a *ValidationError listing every
// problem, and nothing of data is applied. s is not modified; a nil s
// makes Recompile the same as Load.
func (s *Set) Recompile(data []byte) (*Set, error) {
	return load(s, data)
}

// CompileFrom is [Compile] reusing the compiled flags of prev as
// [Set.Recompile] does; prev may be nil. doc is not retained or modified,
// and errors are Compile's.
func CompileFrom(prev *Set, doc *Document) (*Set, error) {
	if doc == nil {
		return nil, &ValidationError{Problems: []Problem{{Path: "(root)", Message: "no flag set"}}}
	}
	if prev != nil && prev.src == nil {
		prev = nil
	}
	var ps problems
	root := docTree(doc, &ps, prev)
	if err := ps.err(); err != nil {
		return nil, err
	}
	sc := getScratch()
	defer sc.release()
	return compileTree(root, nil, prev, nil, sc)
}

// source is what a Set keeps of its input so that a later Recompile can
// tell which flags are unchanged.
type source struct {
	canon []byte // the canonical JSON document; Hash is its SHA-256
	evals []byte // within canon: the "$evaluators" object, or nil
	meta  []byte // within canon: the set's metadata object, or nil
	input []byte // the JSON input the set was read from (canon itself when equal), or nil
	recs  []flagRec
	sum   atomic.Pointer[string] // the hex SHA-256 of canon, once asked for
}

// flagRec is one flag of a set, in key order (parallel to Set.keys).
type flagRec struct {
	f          *flag
	def        *Flag // its canonical definition (in the set's Document)
	seg0, seg1 int32 // the flag's canonical JSON is canon[seg0:seg1]
	raw0, raw1 int32 // its bytes are input[raw0:raw1] (none when raw1 is 0)
	nodes      int32 // the JSON values in its bytes
}

func (s *source) seg(r *flagRec) []byte { return s.canon[r.seg0:r.seg1:r.seg1] }
func (s *source) raw(r *flagRec) []byte { return s.input[r.raw0:r.raw1:r.raw1] }

// hash returns the hex SHA-256 of the canonical document, computing it on
// first use (a set that is never asked for it, such as an SDK's, never
// pays for it).
func (s *source) hash() string {
	if h := s.sum.Load(); h != nil {
		return *h
	}
	sum := sha256.Sum256(s.canon)
	h := hex.EncodeToString(sum[:])
	s.sum.Store(&h) // concurrent callers store the same value
	return h
}

// index finds key among s's flags (-1 when absent), trying hint first:
// documents list their flags in key order, so the next flag is usually
// the next record.
func (s *Set) index(key string, hint int) int {
	if hint >= 0 && hint < len(s.keys) && s.keys[hint] == key {
		return hint
	}
	i, ok := slices.BinarySearch(s.keys, key)
	if !ok {
		return -1
	}
	return i
}

// indexBytes is index for a key held in bytes.
func (s *Set) indexBytes(key []byte, hint int) int {
	if hint >= 0 && hint < len(s.keys) && s.keys[hint] == string(key) {
		return hint
	}
	i, ok := slices.BinarySearchFunc(s.keys, key, func(k string, key []byte) int { return strings.Compare(k, string(key)) })
	if !ok {
		return -1
	}
	return i
}

// reuseFunc returns the parser's test for skipping a flag (see
// fastParser.reuse).
func (s *Set) reuseFunc() flagReuser {
	next := 0
	return func(key, rest []byte) (int, int, int, string) {
		i := s.indexBytes(key, next)
		if i < 0 {
			return 0, 0, -1, ""
		}
		next = i + 1
		r := &s.src.recs[i]
		if r.raw1 == 0 || !bytes.HasPrefix(rest, s.src.raw(r)) {
			return 0, 0, -1, s.keys[i]
		}
		return int(r.raw1 - r.raw0), int(r.nodes), i, s.keys[i]
	}
}

// canonScratch holds buffers for writing canonical documents, which are
// usually equal to the input and then not kept.
var canonScratch sync.Pool

// set checks the flags read by b and compiles them into a Set, reusing
// the compiled flags of b.prev that cannot have changed.
func (b *builder) set() (*Set, error) {
	order := b.keyOrder()
	canon := b.canonical(order)
	prev := b.prev

	var same reuseCheck
	if prev != nil {
		same = reuseCheck{prev: prev, doc: b.doc, evalsSame: bytes.Equal(prev.src.evals, canon.evals),
			metaSame: bytes.Equal(prev.src.meta, canon.meta)}
	}
	c := newCompiler(b.evaluators, &b.ps)
	// Every evaluator must compile on its own, even if nothing uses it;
	// the previous set's evaluators did, so the same ones still do (and
	// are compiled when a flag that is compiled again expands them).
	if !same.evalsSame {
		for _, name := range sortedKeys(b.evaluators) {
			c.checkEvaluator(name)
		}
	}
	hint := 0
	for i := range b.flagNodes {
		src := &b.flagNodes[i]
		if prev != nil {
			f := same.reuse(src, canon.canon[src.seg0:src.seg1], hint)
			hint = same.idx + 1
			if f != nil {
				src.compiled = f
				continue
			}
			if src.reuse >= 0 {
				b.materialize(src)
			}
		}
		src.compiled = b.compileFlag(src, c)
	}
	if err := b.ps.err(); err != nil {
		return nil, err
	}

	// With the same keys as prev (the usual change), prev's key list is
	// kept and its maps copied, replacing only the flags that changed.
	sameKeys := prev != nil && len(order) == len(prev.keys)
	for j := 0; sameKeys && j < len(order); j++ {
		sameKeys = b.flagNodes[order[j]].key == prev.keys[j]
	}
	// The set keeps the Document without its flags map: the definitions
	// are in the records, and Document builds the map.
	b.doc.Flags = nil
	s := &Set{metadata: b.doc.Metadata, now: time.Now, doc: b.doc}
	if sameKeys {
		s.keys = prev.keys
		s.flags = maps.Clone(prev.flags)
		for j, i := range order {
			if src := &b.flagNodes[i]; src.compiled != prev.src.recs[j].f {
				s.flags[src.key] = src.compiled
			}
		}
	} else {
		s.keys = make([]string, len(order))
		s.flags = make(map[string]*flag, len(order))
		for j, i := range order {
			s.keys[j] = b.flagNodes[i].key
			s.flags[s.keys[j]] = b.flagNodes[i].compiled
		}
	}
	canon.input = b.input
	if bytes.Equal(canon.input, canon.canon) {
		canon.input = canon.canon // canonical input (as the server sends): keep one copy
	}
	canon.recs = make([]flagRec, len(order))
	for j, i := range order {
		src := &b.flagNodes[i]
		canon.recs[j] = flagRec{f: src.compiled, def: src.flag, seg0: src.seg0, seg1: src.seg1,
			raw0: src.span.start, raw1: src.span.end, nodes: src.span.nodes}
	}
	s.src = canon
	return s, nil
}

// keyOrder returns the indices of b.flagNodes in key order.
func (b *builder) keyOrder() []int {
	order := slices.Grow(b.sc.order[:0], len(b.flagNodes))[:len(b.flagNodes)]
	b.sc.order = order
	for i := range order {
		order[i] = i
	}
	if !slices.IsSortedFunc(b.flagNodes, func(x, y flagSource) int { return strings.Compare(x.key, y.key) }) {
		slices.SortFunc(order, func(x, y int) int { return strings.Compare(b.flagNodes[x].key, b.flagNodes[y].key) })
	}
	return order
}

// canonical writes the canonical JSON of b.doc (exactly what json.Marshal
// writes for it) and records where each flag's definition is in it. A
// reused flag's bytes are copied from the previous set. When the input
// is canonical already, it is the result: nothing is allocated.
func (b *builder) canonical(order []int) *source {
	d := b.doc
	var buf []byte
	if p, ok := canonScratch.Get().(*[]byte); ok {
		buf = (*p)[:0]
	}
	buf = slices.Grow(buf, 64+len(b.input))
	buf = append(buf, '{')
	if d.Schema != "" {
		buf = append(buf, `"$schema":`...)
		buf = appendJSONString(buf, d.Schema)
		buf = append(buf, ',')
	}
	buf = append(buf, `"flags":{`...)
	for j, i := range order {
		src := &b.flagNodes[i]
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, src.key)
		buf = append(buf, ':')
		start := len(buf)
		if src.reuse >= 0 {
			buf = append(buf, b.prev.src.seg(&b.prev.src.recs[src.reuse])...)
		} else {
			buf = appendCanonFlag(buf, src.flag)
		}
		src.seg0, src.seg1 = int32(start), int32(len(buf))
	}
	buf = append(buf, '}')
	var ev, meta [2]int
	if len(d.Evaluators) > 0 {
		buf = append(buf, `,"$evaluators":`...)
		ev[0] = len(buf)
		buf = append(buf, '{')
		for i, name := range sortedKeys(d.Evaluators) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, name)
			buf = append(buf, ':')
			buf = append(buf, d.Evaluators[name]...)
		}
		buf = append(buf, '}')
		ev[1] = len(buf)
	}
	if len(d.Metadata) > 0 {
		buf = append(buf, `,"metadata":`...)
		meta[0] = len(buf)
		buf = appendCanonMap(buf, d.Metadata)
		meta[1] = len(buf)
	}
	buf = append(buf, '}')
	src := &source{}
	if bytes.Equal(buf, b.input) {
		src.canon = b.input
	} else {
		src.canon = bytes.Clone(buf)
	}
	canonScratch.Put(&buf)
	if ev[1] > 0 {
		src.evals = src.canon[ev[0]:ev[1]:ev[1]]
	}
	if meta[1] > 0 {
		src.meta = src.canon[meta[0]:meta[1]:meta[1]]
	}
	return src
}

// reuseCheck decides which compiled flags of prev a new set can keep.
type reuseCheck struct {
	prev      *Set
	doc       *Document // the new document
	evalsSame bool      // the evaluators are all unchanged
	metaSame  bool      // the set's metadata is unchanged
	idx       int       // the index in prev of the last flag looked up
}

// reuse returns prev's compiled flag for src when it is valid in the new
// set (with its metadata merged again if the set's changed), nil when src
// must be compiled. seg is src's canonical definition.
func (r *reuseCheck) reuse(src *flagSource, seg []byte, hint int) *flag {
	i := src.reuse
	if i < 0 {
		i = r.prev.index(src.key, hint)
		if i < 0 {
			r.idx = hint - 1
			return nil
		}
	}
	r.idx = i
	rec := &r.prev.src.recs[i]
	if src.reuse < 0 {
		// Not the same bytes: the same canonical definition will do, with
		// metadata present or absent alike (canonical JSON omits an empty
		// object, which the Document keeps as an empty map).
		if !bytes.Equal(r.prev.src.seg(rec), seg) || (rec.def.Metadata == nil) != (src.flag.Metadata == nil) {
			return nil
		}
	}
	f := rec.f
	if !r.evalsSame {
		for _, name := range f.deps() {
			ov, ok1 := r.prev.doc.Evaluators[name]
			nv, ok2 := r.doc.Evaluators[name]
			if !ok1 || !ok2 || !bytes.Equal(ov, nv) {
				return nil
			}
		}
	}
	if !r.metaSame {
		f = f.withSetMetadata(r.doc.Metadata, src.flag.Metadata)
	}
	return f
}

// sameDefinition reports whether f (from a Document built in code) is
// exactly def, a definition as a set holds it: the same state, default,
// targeting bytes and metadata presence, and values of the kinds JSON
// decodes to, equal bit for bit. Reading f then yields def, so CompileFrom
// can take def and its compiled flag without converting f. Anything else
// (other Go types, a key, targeting not in canonical form) is "not the
// same" and goes through the ordinary checks.
func sameDefinition(f, def *Flag) bool {
	switch {
	case f == nil || def == nil || f.Key != "" || f.State != def.State:
		return false
	case (f.DefaultVariant == nil) != (def.DefaultVariant == nil):
		return false
	case f.DefaultVariant != nil && *f.DefaultVariant != *def.DefaultVariant:
		return false
	case !bytes.Equal(f.Targeting, def.Targeting) || (f.Targeting == nil) != (def.Targeting == nil):
		return false
	case (f.Metadata == nil) != (def.Metadata == nil) || (f.Variants == nil) != (def.Variants == nil):
		return false
	}
	return sameValue(map[string]any(f.Variants), map[string]any(def.Variants), 0) &&
		sameValue(map[string]any(f.Metadata), map[string]any(def.Metadata), 0)
}

// sameValue compares values of JSON's Go kinds strictly (floats by their
// bits, so that -0 and 0 differ as their JSON does).
func sameValue(a, b any, depth int) bool {
	if depth > maxNesting {
		return false
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i], depth+1) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for k, v := range x {
			w, found := y[k]
			if !found || !sameValue(v, w, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}
