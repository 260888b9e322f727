package flags

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
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
	root := docTree(doc, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return compileTree(root, nil, prev, nil)
}

// source is what a Set keeps of its input so that a later Recompile can
// tell which flags are unchanged.
type source struct {
	canon []byte // the canonical JSON document; Hash is its SHA-256
	evals []byte // within canon: the "$evaluators" object, or nil
	meta  []byte // within canon: the set's metadata object, or nil
	input []byte // the JSON input the set was read from, or nil
	recs  []flagRec
}

// flagRec is one flag of a set, in key order (parallel to Set.keys).
type flagRec struct {
	f     *flag
	seg   []byte // within canon: the flag's canonical JSON
	raw   []byte // within input: the flag's bytes, or nil
	nodes int    // the JSON values in raw
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

// reuseFunc returns the parser's test for skipping a flag: the bytes at
// the start of rest are those the flag had in s.
func (s *Set) reuseFunc() func(key string, rest []byte) (int, int, int) {
	next := 0
	return func(key string, rest []byte) (int, int, int) {
		i := s.index(key, next)
		if i < 0 {
			return 0, 0, -1
		}
		next = i + 1
		r := &s.src.recs[i]
		if len(r.raw) == 0 || !bytes.HasPrefix(rest, r.raw) {
			return 0, 0, -1
		}
		return len(r.raw), r.nodes, i
	}
}

// set checks the flags read by b and compiles them into a Set, reusing
// the compiled flags of b.prev that cannot have changed.
func (b *builder) set() (*Set, error) {
	order := b.keyOrder()
	canon, segs := b.canonical(order)
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
	compiled := make([]*flag, len(b.flagNodes))
	hint := 0
	for i := range b.flagNodes {
		src := &b.flagNodes[i]
		if prev != nil {
			if f := same.reuse(src, canon.canon[segs[i][0]:segs[i][1]], hint); f != nil {
				compiled[i] = f
				hint = same.idx + 1
				continue
			}
			hint = same.idx + 1
			if src.reuse >= 0 {
				b.materialize(src)
			}
		}
		compiled[i] = b.compileFlag(src, c)
	}
	if err := b.ps.err(); err != nil {
		return nil, err
	}

	s := &Set{
		flags:    make(map[string]*flag, len(order)),
		keys:     make([]string, len(order)),
		metadata: b.doc.Metadata,
		now:      time.Now,
		doc:      b.doc,
	}
	canon.input = b.input
	canon.recs = make([]flagRec, len(order))
	for j, i := range order {
		src, f := &b.flagNodes[i], compiled[i]
		s.keys[j] = src.key
		s.flags[src.key] = f
		canon.recs[j] = flagRec{f: f, seg: canon.canon[segs[i][0]:segs[i][1]:segs[i][1]], raw: src.span.raw, nodes: src.span.nodes}
	}
	s.src = canon
	sum := sha256.Sum256(canon.canon)
	s.hash = hex.EncodeToString(sum[:])
	return s, nil
}

// keyOrder returns the indices of b.flagNodes in key order.
func (b *builder) keyOrder() []int {
	order := make([]int, len(b.flagNodes))
	for i := range order {
		order[i] = i
	}
	if !slices.IsSortedFunc(b.flagNodes, func(x, y flagSource) int { return strings.Compare(x.key, y.key) }) {
		slices.SortFunc(order, func(x, y int) int { return strings.Compare(b.flagNodes[x].key, b.flagNodes[y].key) })
	}
	return order
}

// canonical writes the canonical JSON of b.doc (exactly what json.Marshal
// writes for it) and returns it with the offsets of each flag's
// definition, by index in b.flagNodes. A reused flag's bytes are copied
// from the previous set.
func (b *builder) canonical(order []int) (*source, [][2]int) {
	d := b.doc
	size := 64 + len(b.input)
	if b.prev != nil {
		size = max(size, len(b.prev.src.canon)+len(b.prev.src.canon)/8)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	if d.Schema != "" {
		buf = append(buf, `"$schema":`...)
		buf = appendJSONString(buf, d.Schema)
		buf = append(buf, ',')
	}
	buf = append(buf, `"flags":{`...)
	segs := make([][2]int, len(b.flagNodes))
	for j, i := range order {
		src := &b.flagNodes[i]
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, src.key)
		buf = append(buf, ':')
		start := len(buf)
		if src.reuse >= 0 {
			buf = append(buf, b.prev.src.recs[src.reuse].seg...)
		} else {
			buf = appendCanonFlag(buf, src.flag)
		}
		segs[i] = [2]int{start, len(buf)}
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
	src := &source{canon: buf}
	if ev[1] > 0 {
		src.evals = buf[ev[0]:ev[1]:ev[1]]
	}
	if meta[1] > 0 {
		src.meta = buf[meta[0]:meta[1]:meta[1]]
	}
	return src, segs
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
		old := r.prev.doc.Flags[src.key]
		if !bytes.Equal(rec.seg, seg) || (old.Metadata == nil) != (src.flag.Metadata == nil) {
			return nil
		}
	}
	f := rec.f
	if !r.evalsSame {
		for _, name := range f.deps {
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
