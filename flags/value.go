package flags

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// value is a JsonLogic value during evaluation. It is a small struct rather
// than an interface so that numbers and strings never allocate.
type value struct {
	k vkind
	n float64 // kNum; kBool as 0 or 1
	s string  // kStr
	x any     // kArr: []value or a slice from the context; kObj: a map from the context
}

type vkind uint8

const (
	kNull vkind = iota
	kBool
	kNum
	kStr
	kArr
	kObj
)

var (
	vNull  = value{}
	vTrue  = value{k: kBool, n: 1}
	vFalse = value{k: kBool}
)

func vBool(b bool) value {
	if b {
		return vTrue
	}
	return vFalse
}

func vNum(f float64) value { return value{k: kNum, n: f} }
func vStr(s string) value  { return value{k: kStr, s: s} }
func vArr(a []value) value { return value{k: kArr, x: a} }

func (v value) kindName() string {
	switch v.k {
	case kNull:
		return "null"
	case kBool:
		return "a boolean"
	case kNum:
		return "a number"
	case kStr:
		return "a string"
	case kArr:
		return "an array"
	}
	return "an object"
}

// describe renders v for an error message.
func (v value) describe() string {
	switch v.k {
	case kStr:
		return strconv.Quote(v.s)
	case kNum, kBool:
		return toStr(v)
	}
	return v.kindName()
}

// fromAny converts a context value. Types JSON cannot produce are mapped to
// their nearest JSON kind; anything else (funcs, channels, structs) is null.
func fromAny(a any) value {
	switch t := a.(type) {
	case nil:
		return vNull
	case string:
		return value{k: kStr, s: t}
	case bool:
		return vBool(t)
	case float64:
		return value{k: kNum, n: t}
	case int:
		return value{k: kNum, n: float64(t)}
	case int64:
		return value{k: kNum, n: float64(t)}
	case map[string]any, map[string]string:
		return value{k: kObj, x: a}
	case []any, []string, []float64, []int, []int64, []bool, []map[string]any, []value:
		return value{k: kArr, x: a}
	case json.Number:
		f, err := t.Float64()
		if err != nil {
			return value{k: kStr, s: string(t)}
		}
		return value{k: kNum, n: f}
	}
	if f, ok := toFloat(a); ok {
		return value{k: kNum, n: f}
	}
	return vNull
}

// toAny converts a value back into a plain Go value (for object results).
func toAny(v value) any {
	switch v.k {
	case kBool:
		return v.n != 0
	case kNum:
		return v.n
	case kStr:
		return v.s
	case kArr:
		n := arrLen(v)
		out := make([]any, n)
		for i := range n {
			out[i] = toAny(arrAt(v, i))
		}
		return out
	case kObj:
		return v.x
	}
	return nil
}

// arrLen is the length of an array value.
func arrLen(v value) int {
	switch t := v.x.(type) {
	case []value:
		return len(t)
	case []any:
		return len(t)
	case []string:
		return len(t)
	case []float64:
		return len(t)
	case []int:
		return len(t)
	case []int64:
		return len(t)
	case []bool:
		return len(t)
	case []map[string]any:
		return len(t)
	}
	return 0
}

// arrAt is element i of an array value.
func arrAt(v value, i int) value {
	switch t := v.x.(type) {
	case []value:
		return t[i]
	case []any:
		return fromAny(t[i])
	case []string:
		return vStr(t[i])
	case []float64:
		return vNum(t[i])
	case []int:
		return vNum(float64(t[i]))
	case []int64:
		return vNum(float64(t[i]))
	case []bool:
		return vBool(t[i])
	case []map[string]any:
		return value{k: kObj, x: t[i]}
	}
	return vNull
}

// objGet looks key up in an object value.
func objGet(v value, key string) (value, bool) {
	switch t := v.x.(type) {
	case map[string]any:
		a, ok := t[key]
		if !ok {
			return vNull, false
		}
		return fromAny(a), true
	case map[string]string:
		s, ok := t[key]
		if !ok {
			return vNull, false
		}
		return vStr(s), true
	}
	return vNull, false
}

// truthy is JsonLogic truthiness: false, null, 0, NaN, "" and [] are false.
func truthy(v value) bool {
	if v.k == kBool {
		return v.n != 0
	}
	return truthySlow(v)
}

func truthySlow(v value) bool {
	switch v.k {
	case kNull:
		return false
	case kBool, kNum:
		return v.n != 0 && !math.IsNaN(v.n)
	case kStr:
		return v.s != ""
	case kArr:
		return arrLen(v) > 0
	}
	return true
}

// toStr is JavaScript's String(v).
func toStr(v value) string {
	switch v.k {
	case kNull:
		return "null"
	case kBool:
		if v.n != 0 {
			return "true"
		}
		return "false"
	case kNum:
		var buf [32]byte
		return string(appendJSNumber(buf[:0], v.n))
	case kStr:
		return v.s
	case kArr:
		return arrJoin(v, 0)
	}
	return "[object Object]"
}

// arrJoin is Array.prototype.join(","): null elements become "".
func arrJoin(v value, depth int) string {
	if depth > maxNesting {
		return ""
	}
	n := arrLen(v)
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		e := arrAt(v, i)
		switch e.k {
		case kNull:
		case kArr:
			b.WriteString(arrJoin(e, depth+1))
		default:
			b.WriteString(toStr(e))
		}
	}
	return b.String()
}

// appendJSNumber formats f as JavaScript's Number.prototype.toString does.
func appendJSNumber(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		return append(dst, '0')
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		if math.Abs(f) < 1<<63 {
			return strconv.AppendInt(dst, int64(f), 10)
		}
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	// Shortest round-trip digits, then JavaScript's layout rules.
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64) // d.ddde±XX
	mant, exps, _ := strings.Cut(string(e), "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(exps)
	k := len(digits)
	n := exp + 1
	switch {
	case k <= n && n <= 21:
		dst = append(dst, digits...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, digits[:n]...)
		dst = append(dst, '.')
		dst = append(dst, digits[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, "0."...)
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, digits...)
	default:
		dst = append(dst, digits[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}

// toNum is JavaScript's Number(v).
func toNum(v value) float64 {
	switch v.k {
	case kNull:
		return 0
	case kBool, kNum:
		return v.n
	case kStr:
		return strToNum(v.s)
	case kArr:
		return strToNum(arrJoin(v, 0))
	}
	return math.NaN()
}

// isJSSpace reports whether r is whitespace or a line terminator to JavaScript.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// strToNum is JavaScript's Number(string).
func strToNum(s string) float64 {
	s = strings.TrimFunc(s, isJSSpace)
	if s == "" {
		return 0
	}
	if len(s) > 2 && s[0] == '0' {
		base := 0
		switch s[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 0 {
			var f float64
			for _, c := range s[2:] {
				d := digitVal(c)
				if d >= base {
					return math.NaN()
				}
				f = f*float64(base) + float64(d)
			}
			return f
		}
	}
	n, f := decimalPrefix(s)
	if n != len(s) {
		return math.NaN()
	}
	return f
}

func digitVal(c rune) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

// parseFloatJS is JavaScript's parseFloat: the longest decimal prefix after
// leading whitespace, NaN when there is none.
func parseFloatJS(v value) float64 {
	switch v.k {
	case kNum:
		return v.n
	case kStr:
	default:
		v = vStr(toStr(v))
	}
	s := strings.TrimLeftFunc(v.s, isJSSpace)
	n, f := decimalPrefix(s)
	if n == 0 {
		return math.NaN()
	}
	return f
}

// decimalPrefix scans the longest StrDecimalLiteral at the start of s
// (sign, digits, fraction, exponent, or Infinity) and returns its length and value.
func decimalPrefix(s string) (int, float64) {
	i := 0
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	if strings.HasPrefix(s[i:], "Infinity") {
		if neg {
			return i + 8, math.Inf(-1)
		}
		return i + 8, math.Inf(1)
	}
	start := i
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		j := i + 1
		frac := 0
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
			frac++
		}
		if digits > 0 || frac > 0 {
			i = j
			digits += frac
		}
	}
	if digits == 0 {
		return 0, 0
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	f, err := strconv.ParseFloat(s[start:i], 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0, 0
	}
	if neg {
		f = -f
	}
	return i, f
}

// toPrimitive is JavaScript's ToPrimitive with hint "default": arrays and
// objects become strings, everything else stays.
func toPrimitive(v value) value {
	switch v.k {
	case kArr:
		return vStr(arrJoin(v, 0))
	case kObj:
		return vStr("[object Object]")
	}
	return v
}

// looseEq is JavaScript's == (abstract equality).
func looseEq(a, b value) bool {
	for range 4 { // each step removes a coercion; four always suffice
		if a.k == b.k {
			switch a.k {
			case kNull:
				return true
			case kBool, kNum:
				return a.n == b.n
			case kStr:
				return a.s == b.s
			}
			return false // distinct arrays or objects are never equal
		}
		switch {
		case a.k == kNull || b.k == kNull:
			return false
		case a.k == kNum && b.k == kStr:
			return a.n == strToNum(b.s)
		case a.k == kStr && b.k == kNum:
			return strToNum(a.s) == b.n
		case a.k == kBool:
			a = vNum(a.n)
		case b.k == kBool:
			b = vNum(b.n)
		case (a.k == kArr || a.k == kObj) && (b.k == kNum || b.k == kStr):
			a = toPrimitive(a)
		case (b.k == kArr || b.k == kObj) && (a.k == kNum || a.k == kStr):
			b = toPrimitive(b)
		default:
			return false
		}
	}
	return false
}

// strictEq is JavaScript's ===.
func strictEq(a, b value) bool {
	if a.k != b.k {
		return false
	}
	switch a.k {
	case kNull:
		return true
	case kBool, kNum:
		return a.n == b.n
	case kStr:
		return a.s == b.s
	}
	return false
}

// less is JavaScript's a < b; orEqual makes it a <= b. Comparisons with NaN
// (or strings that are not numbers, against numbers) are false.
func less(a, b value, orEqual bool) bool {
	a, b = toPrimitive(a), toPrimitive(b)
	if a.k == kStr && b.k == kStr {
		c := compareUTF16(a.s, b.s)
		return c < 0 || orEqual && c == 0
	}
	x, y := toNum(a), toNum(b)
	if orEqual {
		return x <= y
	}
	return x < y
}

// compareUTF16 orders strings as JavaScript does, by UTF-16 code units.
func compareUTF16(a, b string) int {
	if a == b {
		return 0
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	// Back up to the start of the differing rune.
	for i > 0 && i < len(a) && !utf8.RuneStart(a[i]) {
		i--
	}
	switch {
	case i >= len(a):
		return -1
	case i >= len(b):
		return 1
	}
	ra, _ := utf8.DecodeRuneInString(a[i:])
	rb, _ := utf8.DecodeRuneInString(b[i:])
	if utf16Key(ra) < utf16Key(rb) {
		return -1
	}
	return 1
}

// utf16Key orders runes by their UTF-16 encoding: the first code unit in
// the high half, the second (for astral runes) in the low half.
func utf16Key(r rune) uint32 {
	if r >= 0x10000 {
		r -= 0x10000
		return uint32(0xd800+(r>>10))<<16 | uint32(0xdc00+(r&0x3ff))
	}
	return uint32(r) << 16
}
