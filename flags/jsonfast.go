package flags

import (
	"encoding/json"
	"math"
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
	stack    []*node  // children of the containers being read
	kstk     []string // keys of the objects being read

	// reuse, when set, is asked about every member of the root object's
	// "flags" object before it is read: if it says the member's bytes are
	// those of a flag it already holds, the member is skipped.
	// The "flags" object itself then carries a span for each member
	// (nodeExt.spans), which the next Recompile compares against.
	reuse func(key string, rest []byte) (n int, nodes int, idx int)
}

// flagSpan is where one flag's definition is in the input.
type flagSpan struct {
	raw   []byte
	nodes int
	reuse int // the index of the previous set's flag with these bytes, or -1
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

// number scans a number with JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *fastParser) number() (*node, bool) {
	d, i := p.data, p.pos
	start := i
	if d[i] == '-' {
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
		return nil, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
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
			return nil, false
		}
	}
	p.pos = i
	raw := string(d[start:i])
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
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				return nil, false
			}
			key, ok := p.str()
			if !ok {
				return nil, false
			}
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				return nil, false
			}
			p.pos++
			p.path[len(p.path)-1].key = key
			var c *node
			var span flagSpan
			if flagsMap {
				c, span, ok = p.flagValue(key, depth+1)
			} else {
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
		n.keys = make([]string, k)
		copy(n.keys, p.kstk[kbase:])
		n.vals = make([]*node, k)
		copy(n.vals, p.stack[base:])
	}
	if flagsMap {
		n.ext = &nodeExt{spans: spans}
	}
	clear(p.stack[base:])
	p.stack = p.stack[:base]
	p.kstk = p.kstk[:kbase]
	return n, true
}

// flagValue reads one member of the root's "flags" object, skipping it
// when p.reuse recognises its bytes.
func (p *fastParser) flagValue(key string, depth int) (*node, flagSpan, bool) {
	p.skipSpace()
	start, count0 := p.pos, p.count
	if n, nodes, idx := p.reuse(key, p.data[p.pos:]); n > 0 {
		p.count += nodes
		if p.count > maxNodes {
			return nil, flagSpan{}, false
		}
		p.pos += n
		return reusedFlag, flagSpan{raw: p.data[start:p.pos:p.pos], nodes: nodes, reuse: idx}, true
	}
	c, ok := p.value(depth, false)
	if !ok {
		return nil, flagSpan{}, false
	}
	return c, flagSpan{raw: p.data[start:p.pos:p.pos], nodes: p.count - count0, reuse: -1}, true
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
