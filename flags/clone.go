package flags

import (
	"bytes"
	"encoding/json"

	yaml "go.yaml.in/yaml/v3"
)

// Clone returns a deep copy of d: no map, slice or raw message is shared
// with d. A nil Document clones to nil.
func (d *Document) Clone() *Document {
	if d == nil {
		return nil
	}
	c := &Document{Schema: d.Schema}
	if d.Flags != nil {
		c.Flags = make(map[string]*Flag, len(d.Flags))
		for k, f := range d.Flags {
			c.Flags[k] = f.Clone()
		}
	}
	if d.Evaluators != nil {
		c.Evaluators = make(map[string]json.RawMessage, len(d.Evaluators))
		for k, r := range d.Evaluators {
			c.Evaluators[k] = bytes.Clone(r)
		}
	}
	c.Metadata = cloneMap(d.Metadata)
	return c
}

// Clone returns a deep copy of f; a nil Flag clones to nil.
func (f *Flag) Clone() *Flag {
	if f == nil {
		return nil
	}
	c := &Flag{Key: f.Key, State: f.State, Targeting: bytes.Clone(f.Targeting)}
	c.Variants = cloneMap(f.Variants)
	c.Metadata = cloneMap(f.Metadata)
	if f.DefaultVariant != nil {
		s := *f.DefaultVariant
		c.DefaultVariant = &s
	}
	return c
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneMap(t)
	case []any:
		if t == nil {
			return t
		}
		c := make([]any, len(t))
		for i, e := range t {
			c[i] = cloneValue(e)
		}
		return c
	case json.RawMessage:
		return bytes.Clone(t)
	}
	return v
}

// MarshalYAML implements the Marshaler interface of the common YAML
// libraries: d is encoded as the same structure as its JSON, with targeting
// and evaluators as nested YAML rather than strings. It fails only if the
// document holds values JSON cannot represent.
func (d *Document) MarshalYAML() (any, error) {
	data, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// YAML renders d as block-style YAML with the same structure as its JSON
// (keys sorted; targeting and evaluators as nested YAML). [Parse] reads the
// result back to an equal Document. It fails only if the document holds
// values JSON cannot represent.
func (d *Document) YAML() ([]byte, error) {
	data, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	// JSON is YAML: decoding it into a node tree and encoding that tree again
	// gives block-style YAML with every scalar's type preserved.
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, err
	}
	clearStyle(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// clearStyle switches flow-style collections (as JSON input produces) to
// block style, keeping quoting on strings that need it.
func clearStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style = 0
	}
	if n.Kind == yaml.ScalarNode && n.Style == yaml.DoubleQuotedStyle {
		n.Style = 0 // the encoder re-quotes strings that would otherwise change type
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}
