package sdk

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/flagpole/flagpole/api/ofrep"
)

// decodeMessage decodes the data of a stream event. The hub writes
// messages with encoding/json, so their members come in a fixed order with
// the (large) flag set last; in that shape the header is read directly and
// the flag set is taken as the bytes up to the closing brace, without a
// pass of encoding/json over it (the flags package reads those bytes, and
// rejects them if they are not one JSON value). fast reports that this
// shortcut was taken: a caller whose flags do not load must then decode
// again with decodeMessageSlow, which decides what the message says.
// Anything else is decoded by encoding/json.
func decodeMessage(data []byte) (msg ofrep.StreamMessage, fast bool, err error) {
	if m, ok := decodeMessageFast(data); ok {
		return m, true, nil
	}
	m, err := decodeMessageSlow(data)
	return m, false, err
}

func decodeMessageSlow(data []byte) (ofrep.StreamMessage, error) {
	var msg ofrep.StreamMessage
	err := json.Unmarshal(data, &msg)
	return msg, err
}

// decodeMessageFast reads {"environment":…,"version":…,"etag":…,
// "changed":[…],"flags":…} with each member at most once, "flags" last.
// ok is false for anything else.
func decodeMessageFast(data []byte) (msg ofrep.StreamMessage, ok bool) {
	s := msgScanner{d: data}
	s.space()
	if !s.eat('{') {
		return msg, false
	}
	var seen [5]bool
	for first := true; ; first = false {
		s.space()
		if first && s.eat('}') {
			break
		}
		key, ok := s.plainString()
		if !ok {
			return msg, false
		}
		s.space()
		if !s.eat(':') {
			return msg, false
		}
		s.space()
		var field int
		switch key {
		case "environment":
			field = 0
			msg.Environment, ok = s.plainString()
		case "version":
			field = 1
			msg.Version, ok = s.integer()
		case "etag":
			field = 2
			msg.ETag, ok = s.plainString()
		case "changed":
			field = 3
			msg.Changed, ok = s.stringList()
		case "flags":
			// The rest up to the final '}' is the flag set.
			end := len(data)
			for end > s.i && isSpace(data[end-1]) {
				end--
			}
			if end-s.i < 2 || data[end-1] != '}' {
				return msg, false
			}
			end--
			for end > s.i && isSpace(data[end-1]) {
				end--
			}
			raw := data[s.i:end:end]
			if len(raw) == 0 || raw[0] != '{' && raw[0] != '[' || seen[4] {
				return msg, false
			}
			msg.Flags = raw
			return msg, true
		default:
			return msg, false
		}
		if !ok || seen[field] {
			return msg, false
		}
		seen[field] = true
		s.space()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return msg, false
		}
		break
	}
	s.space()
	return msg, s.i == len(data)
}

type msgScanner struct {
	d []byte
	i int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *msgScanner) space() {
	for s.i < len(s.d) && isSpace(s.d[s.i]) {
		s.i++
	}
}

func (s *msgScanner) eat(c byte) bool {
	if s.i < len(s.d) && s.d[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plainString reads a string; one with escapes (such as a quoted ETag)
// is unquoted by encoding/json.
func (s *msgScanner) plainString() (string, bool) {
	start := s.i
	if !s.eat('"') {
		return "", false
	}
	escaped := false
	for s.i < len(s.d) {
		switch c := s.d[s.i]; {
		case c == '"':
			s.i++
			tok := s.d[start:s.i]
			if v := tok[1 : len(tok)-1]; !escaped && utf8.Valid(v) {
				return string(v), true
			}
			var v string
			return v, json.Unmarshal(tok, &v) == nil
		case c == '\\':
			escaped = true
			s.i++ // the escaped byte cannot end the string
		case c < 0x20:
			return "", false
		}
		s.i++
	}
	return "", false
}

// integer reads a JSON integer that fits an int64.
func (s *msgScanner) integer() (int64, bool) {
	start := s.i
	if s.i < len(s.d) && s.d[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.d) && s.d[s.i] >= '0' && s.d[s.i] <= '9' {
		s.i++
	}
	n := s.i - digits
	if n == 0 || n > 1 && s.d[digits] == '0' {
		return 0, false
	}
	if s.i < len(s.d) && (s.d[s.i] == '.' || s.d[s.i] == 'e' || s.d[s.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(string(s.d[start:s.i]), 10, 64)
	return v, err == nil
}

// stringList reads an array of plain strings, or null.
func (s *msgScanner) stringList() ([]string, bool) {
	if len(s.d)-s.i >= 4 && string(s.d[s.i:s.i+4]) == "null" {
		s.i += 4
		return nil, true
	}
	if !s.eat('[') {
		return nil, false
	}
	out := []string{}
	s.space()
	if s.eat(']') {
		return out, true
	}
	for {
		s.space()
		v, ok := s.plainString()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		s.space()
		if s.eat(']') {
			return out, true
		}
		if !s.eat(',') {
			return nil, false
		}
	}
}
