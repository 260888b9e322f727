package flags

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// fastParser reads JSON straight from bytes into a node tree. It accepts
// exactly what the token-based parser (parseJSONTreeSlow, built on
// encoding/json's Decoder) accepts and builds the same tree with the same
// problems, but it computes paths only when it reports a problem and
// allocates nodes in slabs. On any syntax error or limit it gives up
// (ok false): the caller then runs the slow parser, whose error message is
// the one reported, so that messages never depend on which parser ran.
type fastParser struct {
	data     []byte
	pos      int
	ps       *problems
	root     string    // path of the value parsed
	path     []pathSeg // path below root, for problems
	count    int       // values read, against maxNodes
	slab     []node
	slabSize int
	hint     int        // the number of flags expected
	spanBuf  []flagSpan // buffer for the spans of the first "flags" object
	spansOut bool       // spanBuf is in use
	flagKeys []string   // buffers for the first "flags" object's members
	flagVals []*node
	stack    []*node  // children of the containers being read
	kstk     []string // keys of the objects being read

	// reuse, when set, is asked about every member of the root object's
	// "flags" object before it is read: if it says the member's bytes are
	// those of a flag it already holds, the member is skipped.
	// The "flags" object itself then carries a span for each member
	// (nodeExt.spans), which the next Recompile compares against.
	reuse flagReuser
}

// flagReuser looks a flag up by key before its value is read. If rest
// starts with the bytes the flag had, it returns their length, the
// number of JSON values in them and the flag's index (n 0 otherwise);
// known is the key as held already ("" when new), so that it need not
// be allocated again.
type flagReuser func(key, rest []byte) (n, nodes, idx int, known string)

// flagSpan is where one flag's definition is in the input: its bytes are
// input[start:end] (none when end is 0).
type flagSpan struct {
	start, end int32
	nodes      int32 // the JSON values in it
	reuse      int32 // the index of the previous set's flag with these bytes, or -1
}

// reusedFlag stands in the tree for a flag the parser skipped because its
// bytes are those of a flag of the previous set (its span says which).
var reusedFlag = &node{kind: nObj}

// pathSeg is one step of a path: an object key, or an array index when
// key is unset (idx ≥ 0).
type pathSeg struct {
	key string
	idx int
}

// nodeExt carries what only a few nodes need.
type nodeExt struct {
	spans []flagSpan // the root's "flags" object: one span per member
}

// parseJSONFast parses data as one JSON value. It reports ok false when
// the slow parser must run (and leaves ps as it was).
func parseJSONFast(data []byte, ps *problems, root string) (*node, bool) {
	p := &fastParser{data: data, ps: ps, root: root}
	return p.parse()
}

func (p *fastParser) parse() (*node, bool) {
	before := len(*p.ps)
	n, ok := p.value(0, false)
	if ok {
		p.skipSpace()
		ok = p.pos == len(p.data)
	}
	if !ok {
		*p.ps = (*p.ps)[:before]
		return nil, false
	}
	return n, true
}

func (p *fastParser) newNode() *node {
	if len(p.slab) == 0 {
		// Slabs grow with the document, so that small rules stay small.
		p.slabSize = min(max(2*p.slabSize, 8), 256)
		p.slab = make([]node, p.slabSize)
	}
	n := &p.slab[0]
	p.slab = p.slab[1:]
	return n
}

func (p *fastParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// pathString renders the current path (for a problem).
func (p *fastParser) pathString() string {
	s := p.root
	for _, seg := range p.path {
		if seg.idx >= 0 {
			s = indexPath(s, seg.idx)
		} else {
			s = joinPath(s, seg.key)
		}
	}
	return s
}

// value reads one value at depth; flagsMap says it is the root's "flags".
func (p *fastParser) value(depth int, flagsMap bool) (*node, bool) {
	p.skipSpace()
	if p.pos >= len(p.data) {
		return nil, false
	}
	p.count++
	if p.count > maxNodes {
		return nil, false
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		if depth >= maxNesting {
			return nil, false
		}
		return p.object(depth, flagsMap)
	case c == '[':
		if depth >= maxNesting {
			return nil, false
		}
		return p.array(depth)
	case c == '"':
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		n := p.newNode()
		n.kind, n.raw = nStr, s
		return n, true
	case c == 't':
		return p.literal("true", nBool, true)
	case c == 'f':
		return p.literal("false", nBool, false)
	case c == 'n':
		return p.literal("null", nNull, false)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, false
}

func (p *fastParser) literal(word string, kind nodeKind, b bool) (*node, bool) {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return nil, false
	}
	p.pos += len(word)
	n := p.newNode()
	n.kind, n.b = kind, b
	return n, true
}

// scanNumber returns the end of the number that starts at i, with JSON's
// grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; ok is false
// when there is none.
func scanNumber[T string | []byte](d T, i int) (end int, ok bool) {
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return 0, false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return 0, false
		}
	}
	return i, true
}

// number reads a number.
func (p *fastParser) number() (*node, bool) {
	start := p.pos
	end, ok := scanNumber(p.data, start)
	if !ok {
		return nil, false
	}
	p.pos = end
	raw := string(p.data[start:end])
	n := p.newNode()
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(f, 0) {
		p.ps.add(p.pathString(), "number %s is out of range", raw)
		n.kind = nNull
		return n, true
	}
	n.kind, n.num, n.raw = nNum, f, raw
	return n, true
}

// strOrBytes reads a string token at p.pos: a plain one (no escapes,
// valid UTF-8) is returned as its bytes (within p.data), any other
// unquoted as a string.
func (p *fastParser) strOrBytes() (string, []byte, bool) {
	d := p.data
	i := p.pos + 1
	for i < len(d) {
		c := d[i]
		if c == '"' {
			body := d[p.pos+1 : i : i]
			if utf8.Valid(body) {
				p.pos = i + 1
				return "", body, true
			}
			break
		}
		if c == '\\' || c < 0x20 {
			break
		}
		i++
	}
	s, ok := p.str()
	return s, nil, ok
}

// str reads a string token at p.pos. Plain strings (no escapes, valid
// UTF-8) are converted directly; the rest go through encoding/json, which
// defines what escapes and invalid bytes turn into.
func (p *fastParser) str() (string, bool) {
	d := p.data
	i := p.pos + 1
	plain, ascii := true, true
	for {
		if i >= len(d) {
			return "", false
		}
		c := d[i]
		if c == '"' {
			break
		}
		switch {
		case c == '\\':
			plain = false
			i++ // the escaped byte cannot end the string
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		i++
	}
	tok := d[p.pos : i+1]
	p.pos = i + 1
	body := tok[1 : len(tok)-1]
	if plain && (ascii || utf8.Valid(body)) {
		return string(body), true
	}
	var s string
	if json.Unmarshal(tok, &s) != nil {
		return "", false
	}
	return s, true
}

func (p *fastParser) array(depth int) (*node, bool) {
	p.pos++ // '['
	base := len(p.stack)
	p.path = append(p.path, pathSeg{})
	defer func() { p.path = p.path[:len(p.path)-1] }()
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
	} else {
		for {
			p.path[len(p.path)-1].idx = len(p.stack) - base
			c, ok := p.value(depth+1, false)
			if !ok {
				return nil, false
			}
			p.stack = append(p.stack, c)
			p.skipSpace()
			if p.pos >= len(p.data) {
				return nil, false
			}
			if p.data[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.data[p.pos] == ']' {
				p.pos++
				break
			}
			return nil, false
		}
	}
	n := p.newNode()
	n.kind = nArr
	if len(p.stack) > base {
		n.arr = make([]*node, len(p.stack)-base)
		copy(n.arr, p.stack[base:])
	}
	clear(p.stack[base:])
	p.stack = p.stack[:base]
	return n, true
}

func (p *fastParser) object(depth int, flagsMap bool) (*node, bool) {
	p.pos++ // '{'
	base := len(p.stack)
	kbase := len(p.kstk)
	p.path = append(p.path, pathSeg{idx: -1})
	defer func() { p.path = p.path[:len(p.path)-1] }()
	var seen map[string]bool
	ascending := true // the keys so far are in order, so a greater one is new
	var spans []flagSpan
	first := flagsMap && !p.spansOut
	if first {
		spans, p.spansOut = slices.Grow(p.spanBuf[:0], p.hint), true
	}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				return nil, false
			}
			var key string
			var keyBytes []byte
			var ok bool
			if flagsMap {
				key, keyBytes, ok = p.strOrBytes()
			} else {
				key, ok = p.str()
			}
			if !ok {
				return nil, false
			}
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				return nil, false
			}
			p.pos++
			var c *node
			var span flagSpan
			if flagsMap {
				c, span, key, ok = p.flagValue(key, keyBytes, depth+1)
				p.path[len(p.path)-1].key = key
			} else {
				p.path[len(p.path)-1].key = key
				c, ok = p.value(depth+1, depth == 0 && key == "flags" && p.reuse != nil)
			}
			if !ok {
				return nil, false
			}
			dup := false
			if ascending && len(p.kstk) > kbase && key <= p.kstk[len(p.kstk)-1] {
				ascending = false
			}
			if !ascending {
				dup = p.dupKey(kbase, &seen, key)
			}
			if dup {
				p.ps.add(p.pathString(), "duplicate key %q", key)
			} else {
				p.kstk = append(p.kstk, key)
				p.stack = append(p.stack, c)
				if flagsMap {
					spans = append(spans, span)
				}
			}
			p.skipSpace()
			if p.pos >= len(p.data) {
				return nil, false
			}
			if p.data[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.data[p.pos] == '}' {
				p.pos++
				break
			}
			return nil, false
		}
	}
	n := p.newNode()
	n.kind = nObj
	if k := len(p.kstk) - kbase; k > 0 {
		if first { // the flags: into the pooled buffers
			n.keys = append(p.flagKeys[:0], p.kstk[kbase:]...)
			n.vals = append(p.flagVals[:0], p.stack[base:]...)
			p.flagKeys, p.flagVals = n.keys, n.vals
		} else {
			n.keys = make([]string, k)
			copy(n.keys, p.kstk[kbase:])
			n.vals = make([]*node, k)
			copy(n.vals, p.stack[base:])
		}
	}
	if flagsMap {
		n.ext = &nodeExt{spans: spans}
	}
	if first {
		p.spanBuf = spans // back to the pool once the tree is dropped
	}
	clear(p.stack[base:])
	p.stack = p.stack[:base]
	p.kstk = p.kstk[:kbase]
	return n, true
}

// flagValue reads one member of the root's "flags" object, skipping it
// when p.reuse recognises its bytes. The key comes either as a string or,
// when it has no escapes, as its bytes; it is returned as a string.
func (p *fastParser) flagValue(key string, keyBytes []byte, depth int) (*node, flagSpan, string, bool) {
	p.skipSpace()
	start, count0 := p.pos, p.count
	if keyBytes == nil {
		keyBytes = []byte(key)
	}
	n, nodes, idx, known := p.reuse(keyBytes, p.data[p.pos:])
	switch {
	case known != "":
		key = known
	case key == "":
		key = string(keyBytes)
	}
	if n > 0 {
		p.count += nodes
		if p.count > maxNodes {
			return nil, flagSpan{}, key, false
		}
		p.pos += n
		return reusedFlag, flagSpan{start: int32(start), end: int32(p.pos), nodes: int32(nodes), reuse: int32(idx)}, key, true
	}
	p.path[len(p.path)-1].key = key
	c, ok := p.value(depth, false)
	if !ok {
		return nil, flagSpan{}, key, false
	}
	return c, flagSpan{start: int32(start), end: int32(p.pos), nodes: int32(p.count - count0), reuse: -1}, key, true
}

// dupKey reports whether key was already read in the object whose keys
// start at kbase in p.kstk (a scan for small objects, a set for large).
func (p *fastParser) dupKey(kbase int, seen *map[string]bool, key string) bool {
	keys := p.kstk[kbase:]
	if len(keys) < 16 {
		for _, k := range keys {
			if k == key {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]bool, 2*len(keys))
		for _, k := range keys {
			(*seen)[k] = true
		}
	}
	if (*seen)[key] {
		return true
	}
	(*seen)[key] = true
	return false
}
