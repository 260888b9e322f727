package api

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// This file holds the OFREP hot path's JSON: a small parser for request
// bodies that builds the evaluation context directly, and appenders for
// response bodies. Both avoid reflection; the tests compare them with
// encoding/json.

// maxContextDepth bounds nesting in an evaluation context.
const maxContextDepth = 64

// requestError is a problem with an OFREP request body: the OFREP error code
// and a message that says where.
type requestError struct {
	code    string // PARSE_ERROR or INVALID_CONTEXT
	message string
}

func (e *requestError) Error() string { return e.message }

// parseEvalRequest reads an OFREP request body, {"context": {...}}, and
// returns the context. An empty body, a missing or null context give an
// empty (nil) context; other top-level members are ignored. A body that is
// not JSON is a PARSE_ERROR; a context that is not an object, or a
// targetingKey that is not a string, is INVALID_CONTEXT.
func parseEvalRequest(data []byte) (map[string]any, *requestError) {
	p := parser{data: data}
	p.skipSpace()
	if p.pos == len(p.data) {
		return nil, nil
	}
	if p.data[p.pos] != '{' {
		return nil, p.fail("the request body must be a JSON object")
	}
	p.pos++
	var ctx map[string]any
	p.skipSpace()
	if p.peek() == '}' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			key, ok := p.stringLit()
			if !ok {
				return nil, p.err
			}
			p.skipSpace()
			if p.peek() != ':' {
				return nil, p.fail("expected ':' after an object key")
			}
			p.pos++
			p.skipSpace()
			if key == "context" {
				start := p.pos
				v, ok := p.value(1)
				if !ok {
					return nil, p.err
				}
				switch t := v.(type) {
				case nil:
					ctx = nil
				case map[string]any:
					ctx = t
				default:
					return nil, &requestError{code: "INVALID_CONTEXT", message: fmt.Sprintf("context must be a JSON object, not %s (at byte %d)", jsonKind(v), start)}
				}
			} else if _, ok := p.value(1); !ok {
				return nil, p.err
			}
			p.skipSpace()
			switch p.peek() {
			case ',':
				p.pos++
				continue
			case '}':
				p.pos++
			default:
				return nil, p.fail("expected ',' or '}' in the request object")
			}
			break
		}
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.fail("unexpected data after the request object")
	}
	if tk, ok := ctx["targetingKey"]; ok {
		if _, isString := tk.(string); !isString {
			return nil, &requestError{code: "INVALID_CONTEXT", message: fmt.Sprintf("context.targetingKey must be a string, not %s", jsonKind(tk))}
		}
	}
	return ctx, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

type parser struct {
	data []byte
	pos  int
	err  *requestError
}

func (p *parser) peek() byte {
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

func (p *parser) fail(msg string) *requestError {
	if p.pos >= len(p.data) {
		p.err = &requestError{code: "PARSE_ERROR", message: fmt.Sprintf("malformed JSON: %s, but the body ended (byte %d)", msg, p.pos)}
	} else {
		p.err = &requestError{code: "PARSE_ERROR", message: fmt.Sprintf("malformed JSON at byte %d: %s", p.pos, msg)}
	}
	return p.err
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value parses one JSON value starting at p.pos (space already skipped).
func (p *parser) value(depth int) (any, bool) {
	if depth > maxContextDepth {
		p.fail(fmt.Sprintf("nesting deeper than %d levels", maxContextDepth))
		return nil, false
	}
	switch c := p.peek(); {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, ok := p.stringLit()
		return s, ok
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	p.fail("expected a JSON value")
	return nil, false
}

func (p *parser) literal(lit string) bool {
	if len(p.data)-p.pos >= len(lit) && string(p.data[p.pos:p.pos+len(lit)]) == lit {
		p.pos += len(lit)
		return true
	}
	p.fail("invalid literal, expected " + lit)
	return false
}

func (p *parser) object(depth int) (any, bool) {
	p.pos++ // '{'
	m := make(map[string]any, 4)
	p.skipSpace()
	if p.peek() == '}' {
		p.pos++
		return m, true
	}
	for {
		p.skipSpace()
		key, ok := p.stringLit()
		if !ok {
			return nil, false
		}
		p.skipSpace()
		if p.peek() != ':' {
			p.fail("expected ':' after an object key")
			return nil, false
		}
		p.pos++
		p.skipSpace()
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		m[key] = v
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return m, true
		default:
			p.fail("expected ',' or '}' in an object")
			return nil, false
		}
	}
}

func (p *parser) array(depth int) (any, bool) {
	p.pos++ // '['
	a := []any{}
	p.skipSpace()
	if p.peek() == ']' {
		p.pos++
		return a, true
	}
	for {
		p.skipSpace()
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return a, true
		default:
			p.fail("expected ',' or ']' in an array")
			return nil, false
		}
	}
}

func (p *parser) number() (any, bool) {
	start := p.pos
	d := p.data
	i := p.pos
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
		p.pos = i
		p.fail("invalid number")
		return nil, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			p.fail("invalid number: a digit must follow '.'")
			return nil, false
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			p.fail("invalid number: a digit must follow the exponent")
			return nil, false
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	p.pos = i
	f, err := strconv.ParseFloat(string(d[start:i]), 64)
	if err != nil || math.IsInf(f, 0) {
		p.pos = start
		p.fail("number out of range")
		return nil, false
	}
	return f, true
}

// stringLit parses a JSON string at p.pos.
func (p *parser) stringLit() (string, bool) {
	if p.peek() != '"' {
		p.fail("expected a string")
		return "", false
	}
	p.pos++
	start := p.pos
	d := p.data
	// Fast path: no escapes, ASCII or valid UTF-8.
	for i := start; i < len(d); i++ {
		c := d[i]
		if c == '"' {
			p.pos = i + 1
			s := d[start:i]
			if !utf8.Valid(s) {
				return string(slices.Clip(validUTF8(s))), true
			}
			return string(s), true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			p.pos = i
			p.fail("control character in a string")
			return "", false
		}
	}
	// Slow path with escapes.
	var b []byte
	i := start
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return string(validUTF8(b)), true
		case c < 0x20:
			p.pos = i
			p.fail("control character in a string")
			return "", false
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		i++
		if i >= len(d) {
			break
		}
		switch e := d[i]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, n := p.unicodeEscape(i + 1)
			if n < 0 {
				return "", false
			}
			b = utf8.AppendRune(b, r)
			i += n
		default:
			p.pos = i
			p.fail("invalid escape in a string")
			return "", false
		}
		i++
	}
	p.pos = len(d)
	p.fail("unterminated string")
	return "", false
}

// unicodeEscape decodes the hex digits of a \u escape starting at i, and a
// following low surrogate; it returns the rune and how many bytes it read
// after the 'u' (minus the final one the caller skips), or -1.
func (p *parser) unicodeEscape(i int) (rune, int) {
	hex4 := func(at int) (rune, bool) {
		if at+4 > len(p.data) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(p.data[at:at+4]), 16, 32)
		return rune(v), err == nil
	}
	r, ok := hex4(i)
	if !ok {
		p.pos = i
		p.fail("invalid \\u escape")
		return 0, -1
	}
	if r >= 0xD800 && r < 0xDC00 {
		if i+10 <= len(p.data) && p.data[i+4] == '\\' && p.data[i+5] == 'u' {
			if lo, ok := hex4(i + 6); ok && lo >= 0xDC00 && lo < 0xE000 {
				return (r-0xD800)<<10 + (lo - 0xDC00) + 0x10000, 10
			}
		}
		return utf8.RuneError, 4
	}
	if r >= 0xDC00 && r < 0xE000 {
		return utf8.RuneError, 4
	}
	return r, 4
}

// validUTF8 replaces invalid UTF-8 sequences with U+FFFD, as encoding/json does.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		out = utf8.AppendRune(out, r)
		b = b[n:]
	}
	return out
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += n
			start = i
			continue
		}
		i += n
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendValue appends v as JSON. It handles the types an evaluation
// produces without reflection and falls back to encoding/json otherwise.
// A value that cannot be encoded is written as null.
func appendValue(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, t)
	case string:
		return appendString(b, t)
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return append(b, "null"...)
		}
		return appendFloat(b, t)
	case int:
		return strconv.AppendInt(b, int64(t), 10)
	case int64:
		return strconv.AppendInt(b, t, 10)
	case json.Number:
		if json.Valid([]byte(t)) {
			return append(b, t...)
		}
		return append(b, "null"...)
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, enc...)
}

// appendFloat formats f the way encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendMetadata appends a metadata object holding only the primitive
// (boolean, string, number) members of m, keys sorted.
func appendMetadata(b []byte, m map[string]any) []byte {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if isPrimitive(v) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, m[k])
	}
	return append(b, '}')
}

func isPrimitive(v any) bool {
	switch t := v.(type) {
	case bool, string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32:
		return true
	case float64:
		return !math.IsNaN(t) && !math.IsInf(t, 0)
	case json.Number:
		return json.Valid([]byte(t))
	}
	return false
}
