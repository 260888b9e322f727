package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// node is a parsed JSON value that keeps object keys in source order, so that
// duplicate keys can be reported and paths named. Parse and Compile work on
// nodes; nothing on the evaluation path does.
type node struct {
	kind nodeKind
	b    bool
	num  float64
	raw  string // a number's source text, or a string's value
	arr  []*node
	keys []string // object keys, in order (duplicates already reported)
	vals []*node
	ext  *nodeExt // set only on the nodes the fast parser marks
}

type nodeKind uint8

const (
	nNull nodeKind = iota
	nBool
	nNum
	nStr
	nArr
	nObj
)

func (k nodeKind) String() string {
	switch k {
	case nNull:
		return "null"
	case nBool:
		return "a boolean"
	case nNum:
		return "a number"
	case nStr:
		return "a string"
	case nArr:
		return "an array"
	}
	return "an object"
}

// get returns the value of key in an object node.
func (n *node) get(key string) *node {
	for i, k := range n.keys {
		if k == key {
			return n.vals[i]
		}
	}
	return nil
}

// dupKey reports whether key is already in the object n. Small objects are
// scanned; from 16 keys on, a set is kept so that large objects stay linear.
func dupKey(n *node, seen *map[string]bool, key string) bool {
	if len(n.keys) < 16 {
		return n.get(key) != nil
	}
	if *seen == nil {
		*seen = make(map[string]bool, 2*len(n.keys))
		for _, k := range n.keys {
			(*seen)[k] = true
		}
	}
	if (*seen)[key] {
		return true
	}
	(*seen)[key] = true
	return false
}

// Limits on input, so that hostile documents cannot exhaust the stack or memory.
const (
	maxNesting   = 128     // JSON/YAML nesting depth
	maxNodes     = 4 << 20 // values in one document
	maxAliasNode = 1 << 20 // values produced by expanding YAML aliases
)

// problems collects validation problems.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// joinPath appends a key to a dotted path. Keys that would make the path
// ambiguous (empty, or containing '.', '[' or spaces) are quoted: flags["a.b"].
func joinPath(path, key string) string {
	plain := key != ""
	for i := 0; i < len(key) && plain; i++ {
		switch c := key[i]; {
		case c == '.' || c == '[' || c == ']' || c == '"' || c <= ' ' || c == 0x7f:
			plain = false
		}
	}
	if !plain {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// parseJSONTree parses one JSON value, reporting duplicate object keys (with
// their path) in ps. A syntax error is returned as an error.
func parseJSONTree(data []byte, ps *problems, root string) (*node, error) {
	if n, ok := parseJSONFast(data, ps, root); ok {
		return n, nil
	}
	return parseJSONTreeSlow(data, ps, root)
}

// parseJSONTreeSlow is parseJSONTree on encoding/json's tokenizer: the
// reference the fast parser is checked against, and the source of the
// error messages for input the fast parser gives up on.
func parseJSONTreeSlow(data []byte, ps *problems, root string) (*node, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	p := &jsonTreeParser{d: d, ps: ps}
	n, err := p.value(root, 0)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		if err == nil {
			return nil, errors.New("unexpected data after the top-level value")
		}
		return nil, err
	}
	return n, nil
}

type jsonTreeParser struct {
	d     *json.Decoder
	ps    *problems
	count int
}

var errTooDeep = fmt.Errorf("nested deeper than %d levels", maxNesting)

func (p *jsonTreeParser) value(path string, depth int) (*node, error) {
	tok, err := p.d.Token()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return p.fromToken(tok, path, depth)
}

func (p *jsonTreeParser) fromToken(tok json.Token, path string, depth int) (*node, error) {
	p.count++
	if p.count > maxNodes {
		return nil, fmt.Errorf("more than %d values", maxNodes)
	}
	switch t := tok.(type) {
	case nil:
		return &node{kind: nNull}, nil
	case bool:
		return &node{kind: nBool, b: t}, nil
	case string:
		return &node{kind: nStr, raw: t}, nil
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil || math.IsInf(f, 0) {
			p.ps.add(path, "number %s is out of range", t)
			return &node{kind: nNull}, nil
		}
		return &node{kind: nNum, num: f, raw: string(t)}, nil
	case json.Delim:
		if depth >= maxNesting {
			return nil, errTooDeep
		}
		if t == '[' {
			n := &node{kind: nArr}
			for p.d.More() {
				c, err := p.value(indexPath(path, len(n.arr)), depth+1)
				if err != nil {
					return nil, err
				}
				n.arr = append(n.arr, c)
			}
			_, err := p.d.Token() // ']'
			return n, err
		}
		if t == '{' {
			n := &node{kind: nObj}
			var seen map[string]bool // for large objects; small ones are scanned
			for p.d.More() {
				kt, err := p.d.Token()
				if err != nil {
					return nil, err
				}
				key, _ := kt.(string)
				kp := joinPath(path, key)
				c, err := p.value(kp, depth+1)
				if err != nil {
					return nil, err
				}
				if dupKey(n, &seen, key) {
					p.ps.add(kp, "duplicate key %q", key)
					continue
				}
				n.keys = append(n.keys, key)
				n.vals = append(n.vals, c)
			}
			_, err := p.d.Token() // '}'
			return n, err
		}
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// parseYAMLTree converts a YAML document into a node tree, reporting
// duplicate keys in ps.
func parseYAMLTree(data []byte, ps *problems) (*node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 {
		return nil, errors.New("empty document")
	}
	c := &yamlConv{ps: ps}
	return c.conv(&doc, "", 0)
}

type yamlConv struct {
	ps      *problems
	count   int
	aliased int // values produced inside alias expansions
	inAlias int
}

func (c *yamlConv) conv(y *yaml.Node, path string, depth int) (*node, error) {
	c.count++
	if c.count > maxNodes {
		return nil, fmt.Errorf("more than %d values", maxNodes)
	}
	if c.inAlias > 0 {
		c.aliased++
		if c.aliased > maxAliasNode {
			return nil, fmt.Errorf("YAML aliases expand to more than %d values", maxAliasNode)
		}
	}
	if depth >= maxNesting {
		return nil, errTooDeep
	}
	switch y.Kind {
	case yaml.DocumentNode:
		if len(y.Content) == 0 {
			return nil, errors.New("empty document")
		}
		return c.conv(y.Content[0], path, depth)
	case yaml.AliasNode:
		if y.Alias == nil {
			return nil, fmt.Errorf("line %d: unknown alias", y.Line)
		}
		c.inAlias++
		n, err := c.conv(y.Alias, path, depth+1)
		c.inAlias--
		return n, err
	case yaml.SequenceNode:
		n := &node{kind: nArr}
		for _, e := range y.Content {
			v, err := c.conv(e, indexPath(path, len(n.arr)), depth+1)
			if err != nil {
				return nil, err
			}
			n.arr = append(n.arr, v)
		}
		return n, nil
	case yaml.MappingNode:
		n := &node{kind: nObj}
		var seen map[string]bool
		for i := 0; i+1 < len(y.Content); i += 2 {
			k, v := y.Content[i], y.Content[i+1]
			for k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: %s: keys must be plain scalars", k.Line, orRoot(path))
			}
			if k.Tag == "!!merge" {
				return nil, fmt.Errorf("line %d: %s: YAML merge keys (<<) are not supported", k.Line, orRoot(path))
			}
			key := k.Value
			kp := joinPath(path, key)
			val, err := c.conv(v, kp, depth+1)
			if err != nil {
				return nil, err
			}
			if dupKey(n, &seen, key) {
				c.ps.add(kp, "duplicate key %q (line %d)", key, k.Line)
				continue
			}
			n.keys = append(n.keys, key)
			n.vals = append(n.vals, val)
		}
		return n, nil
	case yaml.ScalarNode:
		switch y.ShortTag() {
		case "!!null":
			return &node{kind: nNull}, nil
		case "!!bool":
			var b bool
			if err := y.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %s: %v", y.Line, orRoot(path), err)
			}
			return &node{kind: nBool, b: b}, nil
		case "!!int", "!!float":
			var f float64
			if err := y.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("line %d: %s: %q is not a finite number", y.Line, orRoot(path), y.Value)
			}
			raw := strconv.FormatFloat(f, 'g', -1, 64)
			if y.ShortTag() == "!!int" {
				if _, err := strconv.ParseInt(y.Value, 0, 64); err == nil && !strings.ContainsAny(y.Value, "xXoObB_") {
					raw = strings.TrimPrefix(y.Value, "+")
				}
			}
			return &node{kind: nNum, num: f, raw: raw}, nil
		case "!!str", "!!binary", "!!timestamp":
			return &node{kind: nStr, raw: y.Value}, nil
		default:
			return &node{kind: nStr, raw: y.Value}, nil
		}
	}
	return nil, fmt.Errorf("line %d: %s: unsupported YAML node", y.Line, orRoot(path))
}

func orRoot(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}

// toGo converts a node into the plain Go value encoding/json would produce:
// nil, bool, float64, string, []any or map[string]any.
func (n *node) toGo() any {
	switch n.kind {
	case nBool:
		return n.b
	case nNum:
		return n.num
	case nStr:
		return n.raw
	case nArr:
		a := make([]any, len(n.arr))
		for i, e := range n.arr {
			a[i] = e.toGo()
		}
		return a
	case nObj:
		m := make(map[string]any, len(n.keys))
		for i, k := range n.keys {
			m[k] = n.vals[i].toGo()
		}
		return m
	}
	return nil
}

// canonicalJSON writes n as compact JSON with object keys sorted, numbers in
// their source spelling (so large integers keep every digit).
func (n *node) canonicalJSON() []byte {
	return n.appendJSON(nil)
}

// appendJSON appends n's canonical JSON to b.
func (n *node) appendJSON(b []byte) []byte {
	switch n.kind {
	case nNull:
		return append(b, "null"...)
	case nBool:
		return strconv.AppendBool(b, n.b)
	case nNum:
		if n.raw != "" && validJSONNumber(n.raw) {
			return append(b, n.raw...)
		}
		return strconv.AppendFloat(b, n.num, 'g', -1, 64)
	case nStr:
		return appendJSONString(b, n.raw)
	case nArr:
		b = append(b, '[')
		for i, e := range n.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = e.appendJSON(b)
		}
		return append(b, ']')
	}
	var small [8]int
	idx := small[:0]
	for i := range n.keys {
		idx = append(idx, i)
	}
	sortIdx(idx, n.keys)
	b = append(b, '{')
	for j, i := range idx {
		if j > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, n.keys[i])
		b = append(b, ':')
		b = n.vals[i].appendJSON(b)
	}
	return append(b, '}')
}

// validJSONNumber reports whether s is a number as JSON spells it.
func validJSONNumber(s string) bool {
	end, ok := scanNumber(s, 0)
	return ok && end == len(s)
}

func sortIdx(idx []int, keys []string) {
	if len(idx) > 12 {
		slices.SortFunc(idx, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
		return
	}
	// Insertion sort for the small objects JsonLogic uses.
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && keys[idx[j]] < keys[idx[j-1]]; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
}

// fromGo converts a Go value (as found in a Document) into a node. Types
// other than JSON's are reported as an error naming path.
func fromGo(v any, path string, depth int) (*node, error) {
	if depth >= maxNesting {
		return nil, errTooDeep
	}
	switch t := v.(type) {
	case nil:
		return &node{kind: nNull}, nil
	case bool:
		return &node{kind: nBool, b: t}, nil
	case string:
		return &node{kind: nStr, raw: t}, nil
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, &pathError{path, fmt.Sprintf("%q is not a finite number", string(t))}
		}
		return &node{kind: nNum, num: f, raw: string(t)}, nil
	case []any:
		n := &node{kind: nArr, arr: make([]*node, len(t))}
		for i, e := range t {
			c, err := fromGo(e, indexPath(path, i), depth+1)
			if err != nil {
				return nil, err
			}
			n.arr[i] = c
		}
		return n, nil
	case map[string]any:
		n := &node{kind: nObj, keys: make([]string, 0, len(t)), vals: make([]*node, 0, len(t))}
		for k, e := range t {
			c, err := fromGo(e, joinPath(path, k), depth+1)
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, k)
			n.vals = append(n.vals, c)
		}
		return n, nil
	}
	if f, ok := toFloat(v); ok {
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, &pathError{path, fmt.Sprintf("%v is not a finite number", v)}
		}
		return &node{kind: nNum, num: f, raw: strconv.FormatFloat(f, 'g', -1, 64)}, nil
	}
	// Other Go values ([]string, structs, ...) count as what they marshal to.
	data, err := json.Marshal(v)
	if err != nil {
		return nil, &pathError{path, fmt.Sprintf("value of type %T cannot be represented in JSON: %v", v, err)}
	}
	var ps problems
	n, err := parseJSONTree(data, &ps, path)
	if err != nil || len(ps) > 0 {
		return nil, &pathError{path, fmt.Sprintf("value of type %T cannot be represented in JSON", v)}
	}
	return n, nil
}

// pathError is a problem with one value, at its JSON path.
type pathError struct{ path, msg string }

func (e *pathError) Error() string { return e.path + ": " + e.msg }

// addErr records err as a problem, at its own path when it has one.
func (ps *problems) addErr(path string, err error) {
	if pe, ok := err.(*pathError); ok {
		ps.add(pe.path, "%s", pe.msg)
		return
	}
	ps.add(path, "%v", err)
}

// toFloat converts Go's numeric types to float64.
func toFloat(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case float32:
		return float64(t), true
	case int:
		return float64(t), true
	case int8:
		return float64(t), true
	case int16:
		return float64(t), true
	case int32:
		return float64(t), true
	case int64:
		return float64(t), true
	case uint:
		return float64(t), true
	case uint8:
		return float64(t), true
	case uint16:
		return float64(t), true
	case uint32:
		return float64(t), true
	case uint64:
		return float64(t), true
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	}
	return 0, false
}
