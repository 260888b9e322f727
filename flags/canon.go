package flags

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The canonical JSON of a Document is what encoding/json's Marshal writes
// for it; the set's Hash is its SHA-256. The writers below produce exactly
// those bytes without reflection, one flag at a time, so that a set
// compiled from a previous one can copy the bytes of every unchanged flag.
// Targeting and evaluators are written as they are held: canonicalJSON
// makes them compact with HTML-escaped strings, which is what Marshal's
// compaction of a json.RawMessage leaves unchanged.

// appendCanonFlag appends json.Marshal(f) for a canonical flag.
func appendCanonFlag(b []byte, f *Flag) []byte {
	b = append(b, '{')
	if f.Key != "" {
		b = append(b, `"key":`...)
		b = appendJSONString(b, f.Key)
		b = append(b, ',')
	}
	b = append(b, `"state":`...)
	b = appendJSONString(b, string(f.State))
	b = append(b, `,"variants":`...)
	b = appendCanonMap(b, f.Variants)
	if f.DefaultVariant != nil {
		b = append(b, `,"defaultVariant":`...)
		b = appendJSONString(b, *f.DefaultVariant)
	}
	if len(f.Targeting) > 0 {
		b = append(b, `,"targeting":`...)
		b = append(b, f.Targeting...)
	}
	if len(f.Metadata) > 0 {
		b = append(b, `,"metadata":`...)
		b = appendCanonMap(b, f.Metadata)
	}
	return append(b, '}')
}

// appendCanonMap appends json.Marshal(m): keys sorted, null for nil.
func appendCanonMap(b []byte, m map[string]any) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendCanonValue(b, m[k])
	}
	return append(b, '}')
}

// appendCanonValue appends json.Marshal(v) for the values a canonical
// document holds (those of node.toGo); anything else goes through Marshal.
func appendCanonValue(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, t)
	case float64:
		if !math.IsNaN(t) && !math.IsInf(t, 0) {
			return appendJSONFloat(b, t)
		}
	case string:
		return appendJSONString(b, t)
	case map[string]any:
		return appendCanonMap(b, t)
	case []any:
		if t == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonValue(b, e)
		}
		return append(b, ']')
	}
	data, err := json.Marshal(v)
	if err != nil { // not reachable for values read from JSON or YAML
		return append(b, "null"...)
	}
	return append(b, data...)
}

// appendJSONFloat formats f as encoding/json does (ES6 number formatting:
// %f, or %e outside [1e-6, 1e21) with the exponent not padded).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does with HTML escaping on:
// <, > and & as \u003c…, control characters escaped, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
