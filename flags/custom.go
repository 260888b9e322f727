package flags

import (
	"math"
	"strings"
)

// flagd's custom operations: fractional, sem_ver, starts_with and ends_with
// (the last two are evaluated inline in eval). Each yields null when given
// input it cannot use, so the flag falls back to its default variant.

// maxWeightSum is the largest total weight fractional accepts (2^31-1).
const maxWeightSum = math.MaxInt32

// fracSpec is a compiled fractional operation.
type fracSpec struct {
	bucket  *op // nil: bucket by flag key + targeting key
	entries []fracEntry
	// When every entry is a literal with a constant variant and weight, the
	// table below is built at compile time.
	static bool
	total  uint64
	cum    []uint64 // running weight sums
	names  []value
}

// fracEntry is one [variant, weight] entry: literal parts, or one expression
// that must evaluate to such an array.
type fracEntry struct {
	variant *op
	weight  *op // nil: weight 1
	whole   *op // the entry is an expression
}

// evalFractional picks a variant deterministically: MurmurHash3 (x86,
// 32-bit, seed 0) of the bucketing value, scaled into [0, total weight).
func (e *env) evalFractional(f *fracSpec) value {
	var h uint32
	var extra *value // a bucketing expression that turned out to be an entry
	hashed := false
	if f.bucket != nil && f.bucket.code == opCat && e.failed == "" {
		// {"cat": [...]} is hashed piece by piece, without building the string.
		var m murStream
		var buf [32]byte
		for _, a := range f.bucket.args {
			v := e.eval(a)
			switch v.k {
			case kNull:
			case kStr:
				m.write(v.s)
			case kNum:
				m.write(string(appendJSNumber(buf[:0], v.n)))
			default:
				m.write(toStr(v))
			}
		}
		h, hashed = m.sum(), true
	} else if f.bucket != nil {
		bv := e.eval(f.bucket)
		switch bv.k {
		case kStr:
			h, hashed = murmur3(bv.s), true
		case kNull:
		case kArr:
			extra = &bv
		default:
			return vNull
		}
	}
	if !hashed {
		tk, ok := e.ctx["targetingKey"].(string)
		if !ok || tk == "" {
			return vNull
		}
		h = murmur3Concat(e.flagKey, tk)
	}
	if f.static && extra == nil {
		if len(f.names) == 1 {
			return f.names[0]
		}
		if f.total == 0 {
			return vNull
		}
		b := uint64(h) * f.total >> 32
		for i, c := range f.cum {
			if b < c {
				return f.names[i]
			}
		}
		return vNull
	}
	return e.fractionalDynamic(h, extra, f.entries)
}

// fractionalDynamic evaluates entries whose variant or weight is computed.
func (e *env) fractionalDynamic(h uint32, extra *value, entries []fracEntry) value {
	n := len(entries)
	if extra != nil {
		n++
	}
	var vbuf [16]value
	var wbuf [16]uint64
	vars, weights := vbuf[:0], wbuf[:0]
	if n > len(vbuf) {
		vars, weights = make([]value, 0, n), make([]uint64, 0, n)
	}
	var total uint64
	add := func(v, w value, hasW bool) bool {
		switch v.k {
		case kStr, kBool, kNum, kNull:
		default:
			return false
		}
		weight := uint64(1)
		if hasW && w.k != kNull {
			if w.k != kNum || w.n != math.Trunc(w.n) || math.IsNaN(w.n) {
				return false
			}
			switch {
			case w.n < 0:
				weight = 0
			case w.n > maxWeightSum:
				return false
			default:
				weight = uint64(w.n)
			}
		}
		total += weight
		vars = append(vars, v)
		weights = append(weights, weight)
		return total <= maxWeightSum
	}
	fromArray := func(a value) bool {
		switch arrLen(a) {
		case 1:
			return add(arrAt(a, 0), vNull, false)
		case 2:
			return add(arrAt(a, 0), arrAt(a, 1), true)
		}
		return false
	}
	if extra != nil && !fromArray(*extra) {
		return vNull
	}
	for i := range entries {
		en := &entries[i]
		ok := false
		switch {
		case en.whole != nil:
			a := e.eval(en.whole)
			ok = a.k == kArr && fromArray(a)
		case en.weight == nil:
			ok = add(e.eval(en.variant), vNull, false)
		default:
			ok = add(e.eval(en.variant), e.eval(en.weight), true)
		}
		if !ok || e.failed != "" {
			return vNull
		}
	}
	if len(vars) == 1 {
		return vars[0]
	}
	if total == 0 {
		return vNull
	}
	b := uint64(h) * total >> 32
	var run uint64
	for i, w := range weights {
		run += w
		if b < run {
			return vars[i]
		}
	}
	return vNull
}

// semverSpec is a compiled sem_ver: the operator and the version on the
// right, when they are constants.
type semverSpec struct {
	op       string
	opConst  bool
	ver      semver
	verConst bool
}

var semverOps = map[string]bool{"=": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true, "~": true, "^": true}

func (e *env) evalSemVer(o *op) value {
	switch e.semVer(o) {
	case 1:
		return vTrue
	case 0:
		return vFalse
	}
	return vNull
}

// semVer evaluates sem_ver: 1 true, 0 false, -1 null (bad input).
func (e *env) semVer(o *op) int {
	sp := o.sv
	var a semver
	var ok bool
	if o.key != "" && e.scope == nil && e.red == nil {
		x := e.ctx[o.key]
		if str, isStr := x.(string); isStr {
			a, ok = parseSemver(str)
		} else {
			a, ok = versionOf(fromAny(x))
		}
	} else {
		a, ok = versionOf(e.eval(o.args[0]))
	}
	if !ok {
		return -1
	}
	opName := sp.op
	if !sp.opConst {
		ov := e.eval(o.args[1])
		if ov.k != kStr || !semverOps[ov.s] {
			return -1
		}
		opName = ov.s
	}
	b := sp.ver
	if !sp.verConst {
		if b, ok = versionOf(e.eval(o.args[2])); !ok {
			return -1
		}
	}
	c := a.compare(b)
	switch opName {
	case "=":
		return b2i(c == 0)
	case "!=":
		return b2i(c != 0)
	case "<":
		return b2i(c < 0)
	case "<=":
		return b2i(c <= 0)
	case ">":
		return b2i(c > 0)
	case ">=":
		return b2i(c >= 0)
	case "~":
		return b2i(cmpNumeric(a.major, b.major) == 0 && cmpNumeric(a.minor, b.minor) == 0)
	case "^":
		return b2i(cmpNumeric(a.major, b.major) == 0)
	}
	return -1
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// versionOf reads a version from a string, or from a number as JavaScript
// would print it (1.2 is "1.2", that is 1.2.0).
func versionOf(v value) (semver, bool) {
	switch v.k {
	case kStr:
		return parseSemver(v.s)
	case kNum:
		var buf [32]byte
		return parseSemver(string(appendJSNumber(buf[:0], v.n)))
	}
	return semver{}, false
}

// semver is a parsed semantic version. Parts are substrings of the input.
type semver struct {
	major, minor, patch string
	pre                 string // without the '-'; "" for a release
}

// parseSemver accepts MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD] with an
// optional leading v or V. Missing minor and patch are 0 (only when there is
// no pre-release or build part, as in Go's semver); numbers have no leading
// zeros; build metadata is checked and then ignored.
func parseSemver(s string) (semver, bool) {
	var v semver
	i := 0
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		i = 1
	}
	parts := 0
	for {
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		num := s[i:j]
		if num == "" || len(num) > 1 && num[0] == '0' {
			return v, false
		}
		switch parts {
		case 0:
			v.major = num
		case 1:
			v.minor = num
		default:
			v.patch = num
		}
		parts++
		i = j
		if parts == 3 || i == len(s) || s[i] != '.' {
			break
		}
		i++ // the dot; a number must follow
	}
	if i < len(s) && s[i] == '-' {
		j := i + 1
		for j < len(s) && s[j] != '+' {
			j++
		}
		v.pre = s[i+1 : j]
		if !validIdents(v.pre, true) {
			return v, false
		}
		i = j
	}
	if i < len(s) && s[i] == '+' {
		if !validIdents(s[i+1:], false) {
			return v, false
		}
		i = len(s)
		if parts < 3 {
			return v, false
		}
	}
	if i != len(s) || parts < 3 && v.pre != "" {
		return v, false
	}
	if v.minor == "" {
		v.minor = "0"
	}
	if v.patch == "" {
		v.patch = "0"
	}
	return v, true
}

// validIdents checks dot-separated identifiers of [0-9A-Za-z-]; in a
// pre-release, numeric identifiers must not have leading zeros.
func validIdents(s string, pre bool) bool {
	for {
		id, rest, more := strings.Cut(s, ".")
		if id == "" {
			return false
		}
		numeric := true
		for i := 0; i < len(id); i++ {
			c := id[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				numeric = false
			default:
				return false
			}
		}
		if pre && numeric && len(id) > 1 && id[0] == '0' {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// compare orders versions by semantic-versioning precedence.
func (a semver) compare(b semver) int {
	if c := cmpNumeric(a.major, b.major); c != 0 {
		return c
	}
	if c := cmpNumeric(a.minor, b.minor); c != 0 {
		return c
	}
	if c := cmpNumeric(a.patch, b.patch); c != 0 {
		return c
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "":
		return 1 // a release sorts after its pre-releases
	case b.pre == "":
		return -1
	}
	x, y := a.pre, b.pre
	for {
		var ix, iy string
		var mx, my bool
		ix, x, mx = strings.Cut(x, ".")
		iy, y, my = strings.Cut(y, ".")
		if c := cmpIdent(ix, iy); c != 0 {
			return c
		}
		switch {
		case !mx && !my:
			return 0
		case !mx:
			return -1
		case !my:
			return 1
		}
	}
}

// cmpNumeric compares digit strings without leading zeros, of any length.
func cmpNumeric(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func cmpIdent(a, b string) int {
	na, nb := isDigits(a), isDigits(b)
	switch {
	case na && nb:
		return cmpNumeric(a, b)
	case na:
		return -1 // numeric identifiers sort before alphanumeric ones
	case nb:
		return 1
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
