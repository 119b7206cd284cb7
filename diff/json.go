package diff

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds a small JSON parser that builds a flat, reusable tree.
// The comparison needs things a generic decoder into interface{} does not
// give cheaply: exact number literals (so 12345678901234567890 and
// 12345678901234567891 differ, while 1 and 1.0 are equal), the raw byte span
// of every value (identical sub-documents are skipped with one bytes.Equal),
// object members sorted once (a merge walk replaces map lookups), and no
// per-value allocation (the arrays are pooled with the comparer).

// kind is a JSON value type. kFalse and kTrue are one class for type checks.
type kind uint8

const (
	kNull kind = iota
	kFalse
	kTrue
	kNumber
	kString
	kArray
	kObject
)

// class merges true and false so that a boolean flip is a change, not a type
// change.
func (k kind) class() kind {
	if k == kTrue {
		return kFalse
	}
	return k
}

// maxDepth bounds nesting; deeper documents are treated as invalid JSON and
// compared as bytes, which keeps the recursive walk's stack small.
const maxDepth = 512

// node is one JSON value. raw0:raw1 is its span in the source. For a string,
// x:y is the content without quotes, in src or (when it had escapes and was
// decoded) in buf. For an array or object, x:x+y are its members.
type node struct {
	kind       kind
	inBuf      bool
	raw0, raw1 int32
	x, y       int32
}

// member is an object member (key and value) or an array element (value only).
type member struct {
	key0, key1 int32
	keyInBuf   bool
	val        int32
}

// doc is a parsed document. Its slices are reused across parses.
type doc struct {
	src     []byte
	buf     []byte // decoded strings that had escapes
	nodes   []node
	members []member
	scratch []member
	tmp     []member // merge sort buffer
}

// utf8BOM is the UTF-8 byte order mark.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// jsonError is a syntax error with the offset where it was found.
type jsonError struct {
	off int
	msg string
}

func (e *jsonError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

// parse parses src, which must stay unchanged while the doc is used. The root
// is node 0.
func (d *doc) parse(src []byte) error {
	d.src = src
	d.buf = d.buf[:0]
	d.nodes = d.nodes[:0]
	d.members = d.members[:0]
	d.scratch = d.scratch[:0]
	p := parser{d: d, s: src}
	i := 0
	if bytes.HasPrefix(src, utf8BOM) {
		// RFC 8259 forbids emitting a BOM but lets parsers ignore one;
		// some servers send it.
		i = len(utf8BOM)
	}
	i = p.ws(i)
	_, i, err := p.value(i, 0)
	if err != nil {
		return err
	}
	if i = p.ws(i); i != len(src) {
		return &jsonError{i, "unexpected data after the top-level value"}
	}
	return nil
}

// str returns the decoded bytes of a string node.
func (d *doc) str(n *node) []byte {
	if n.inBuf {
		return d.buf[n.x:n.y]
	}
	return d.src[n.x:n.y]
}

// raw returns the source bytes of a node.
func (d *doc) raw(n *node) []byte { return d.src[n.raw0:n.raw1] }

// key returns the decoded key of an object member.
func (d *doc) key(m *member) []byte {
	if m.keyInBuf {
		return d.buf[m.key0:m.key1]
	}
	return d.src[m.key0:m.key1]
}

// kids returns the members of an array or object node.
func (d *doc) kids(n *node) []member { return d.members[n.x : n.x+n.y] }

type parser struct {
	d *doc
	s []byte
}

func (p *parser) ws(i int) int {
	for i < len(p.s) {
		switch p.s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (p *parser) value(i, depth int) (int32, int, error) {
	if i >= len(p.s) {
		return 0, i, &jsonError{i, "unexpected end of input"}
	}
	if depth > maxDepth {
		return 0, i, &jsonError{i, fmt.Sprintf("nesting deeper than %d levels", maxDepth)}
	}
	d := p.d
	idx := int32(len(d.nodes))
	switch c := p.s[i]; {
	case c == '{':
		return p.object(i, depth)
	case c == '[':
		return p.array(i, depth)
	case c == '"':
		x, y, inBuf, next, err := p.str(i)
		if err != nil {
			return 0, next, err
		}
		d.nodes = append(d.nodes, node{kind: kString, inBuf: inBuf, raw0: int32(i), raw1: int32(next), x: x, y: y})
		return idx, next, nil
	case c == '-' || (c >= '0' && c <= '9'):
		next, err := p.number(i)
		if err != nil {
			return 0, next, err
		}
		d.nodes = append(d.nodes, node{kind: kNumber, raw0: int32(i), raw1: int32(next)})
		return idx, next, nil
	case c == 't':
		return p.literal(i, "true", kTrue)
	case c == 'f':
		return p.literal(i, "false", kFalse)
	case c == 'n':
		return p.literal(i, "null", kNull)
	default:
		return 0, i, &jsonError{i, fmt.Sprintf("invalid character %q looking for a value", c)}
	}
}

func (p *parser) literal(i int, lit string, k kind) (int32, int, error) {
	if !bytes.HasPrefix(p.s[i:], []byte(lit)) {
		return 0, i, &jsonError{i, "invalid literal, want " + lit}
	}
	idx := int32(len(p.d.nodes))
	p.d.nodes = append(p.d.nodes, node{kind: k, raw0: int32(i), raw1: int32(i + len(lit))})
	return idx, i + len(lit), nil
}

func (p *parser) object(i, depth int) (int32, int, error) {
	d := p.d
	idx := int32(len(d.nodes))
	d.nodes = append(d.nodes, node{kind: kObject, raw0: int32(i)})
	base := len(d.scratch)
	i = p.ws(i + 1)
	if i < len(p.s) && p.s[i] == '}' {
		i++
	} else {
		for {
			if i >= len(p.s) || p.s[i] != '"' {
				return 0, i, &jsonError{i, "want a string key"}
			}
			k0, k1, kb, next, err := p.str(i)
			if err != nil {
				return 0, next, err
			}
			i = p.ws(next)
			if i >= len(p.s) || p.s[i] != ':' {
				return 0, i, &jsonError{i, `want ":" after an object key`}
			}
			v, next, err := p.value(p.ws(i+1), depth+1)
			if err != nil {
				return 0, next, err
			}
			d.scratch = append(d.scratch, member{key0: k0, key1: k1, keyInBuf: kb, val: v})
			i = p.ws(next)
			if i < len(p.s) && p.s[i] == ',' {
				i = p.ws(i + 1)
				continue
			}
			if i < len(p.s) && p.s[i] == '}' {
				i++
				break
			}
			return 0, i, &jsonError{i, `want "," or "}" in an object`}
		}
	}
	ms := d.scratch[base:]
	sortMembers(d, ms)
	ms = dedupeMembers(d, ms)
	first := int32(len(d.members))
	d.members = append(d.members, ms...)
	d.scratch = d.scratch[:base]
	n := &d.nodes[idx]
	n.raw1, n.x, n.y = int32(i), first, int32(len(ms))
	return idx, i, nil
}

func (p *parser) array(i, depth int) (int32, int, error) {
	d := p.d
	idx := int32(len(d.nodes))
	d.nodes = append(d.nodes, node{kind: kArray, raw0: int32(i)})
	base := len(d.scratch)
	i = p.ws(i + 1)
	if i < len(p.s) && p.s[i] == ']' {
		i++
	} else {
		for {
			v, next, err := p.value(i, depth+1)
			if err != nil {
				return 0, next, err
			}
			d.scratch = append(d.scratch, member{val: v})
			i = p.ws(next)
			if i < len(p.s) && p.s[i] == ',' {
				i = p.ws(i + 1)
				continue
			}
			if i < len(p.s) && p.s[i] == ']' {
				i++
				break
			}
			return 0, i, &jsonError{i, `want "," or "]" in an array`}
		}
	}
	first := int32(len(d.members))
	d.members = append(d.members, d.scratch[base:]...)
	cnt := int32(len(d.scratch) - base)
	d.scratch = d.scratch[:base]
	n := &d.nodes[idx]
	n.raw1, n.x, n.y = int32(i), first, cnt
	return idx, i, nil
}

// sortMembers sorts by decoded key, stably, so that among duplicate keys the
// last one stays last (and wins, as with encoding/json).
func sortMembers(d *doc, ms []member) {
	if len(ms) <= 16 {
		for i := 1; i < len(ms); i++ {
			for j := i; j > 0 && bytes.Compare(d.key(&ms[j-1]), d.key(&ms[j])) > 0; j-- {
				ms[j], ms[j-1] = ms[j-1], ms[j]
			}
		}
		return
	}
	if cap(d.tmp) < len(ms) {
		d.tmp = make([]member, len(ms))
	}
	mergeSortMembers(d, ms, d.tmp[:len(ms)])
}

// mergeSortMembers is a stable sort that does not go through an interface or
// closure; tmp is the doc's reusable buffer.
func mergeSortMembers(d *doc, ms, tmp []member) {
	if len(ms) <= 16 {
		sortMembers(d, ms)
		return
	}
	mid := len(ms) / 2
	mergeSortMembers(d, ms[:mid], tmp[:mid])
	mergeSortMembers(d, ms[mid:], tmp[mid:])
	copy(tmp, ms)
	i, j, k := 0, mid, 0
	for i < mid && j < len(ms) {
		if bytes.Compare(d.key(&tmp[j]), d.key(&tmp[i])) < 0 {
			ms[k] = tmp[j]
			j++
		} else {
			ms[k] = tmp[i]
			i++
		}
		k++
	}
	k += copy(ms[k:], tmp[i:mid])
	copy(ms[k:], tmp[j:])
}

// dedupeMembers keeps the last of each run of equal keys.
func dedupeMembers(d *doc, ms []member) []member {
	if len(ms) < 2 {
		return ms
	}
	out := ms[:0]
	for i := range ms {
		if i+1 < len(ms) && bytes.Equal(d.key(&ms[i]), d.key(&ms[i+1])) {
			continue
		}
		out = append(out, ms[i])
	}
	return out
}

// str parses a string starting at the quote at i. Strings without escapes are
// referenced in place; others are decoded into buf.
func (p *parser) str(i int) (x, y int32, inBuf bool, next int, err error) {
	s := p.s
	j := i + 1
	for j < len(s) {
		c := s[j]
		if c == '"' {
			return int32(i + 1), int32(j), false, j + 1, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return 0, 0, false, j, &jsonError{j, "control character in string"}
		}
		j++
	}
	if j >= len(s) {
		return 0, 0, false, j, &jsonError{j, "unterminated string"}
	}
	d := p.d
	start := len(d.buf)
	d.buf = append(d.buf, s[i+1:j]...)
	for j < len(s) {
		c := s[j]
		switch {
		case c == '"':
			return int32(start), int32(len(d.buf)), true, j + 1, nil
		case c < 0x20:
			return 0, 0, false, j, &jsonError{j, "control character in string"}
		case c != '\\':
			d.buf = append(d.buf, c)
			j++
			continue
		}
		if j+1 >= len(s) {
			return 0, 0, false, j, &jsonError{j, "unterminated string"}
		}
		switch e := s[j+1]; e {
		case '"', '\\', '/':
			d.buf = append(d.buf, e)
			j += 2
		case 'b':
			d.buf = append(d.buf, '\b')
			j += 2
		case 'f':
			d.buf = append(d.buf, '\f')
			j += 2
		case 'n':
			d.buf = append(d.buf, '\n')
			j += 2
		case 'r':
			d.buf = append(d.buf, '\r')
			j += 2
		case 't':
			d.buf = append(d.buf, '\t')
			j += 2
		case 'u':
			r, ok := hex4(s, j+2)
			if !ok {
				return 0, 0, false, j, &jsonError{j, `invalid \u escape`}
			}
			j += 6
			if utf16.IsSurrogate(r) {
				// A valid pair decodes to one rune; a lone surrogate becomes
				// U+FFFD, as encoding/json does.
				r2, ok2 := rune(0), false
				if j+1 < len(s) && s[j] == '\\' && s[j+1] == 'u' {
					r2, ok2 = hex4(s, j+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r = dec
					j += 6
				} else {
					r = utf8.RuneError
				}
			}
			d.buf = utf8.AppendRune(d.buf, r)
		default:
			return 0, 0, false, j, &jsonError{j, fmt.Sprintf("invalid escape %q in string", "\\"+string(rune(e)))}
		}
	}
	return 0, 0, false, j, &jsonError{j, "unterminated string"}
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number validates the RFC 8259 number grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?
func (p *parser) number(i int) (int, error) {
	s := p.s
	j := i
	if s[j] == '-' {
		j++
	}
	switch {
	case j < len(s) && s[j] == '0':
		j++
	case j < len(s) && s[j] >= '1' && s[j] <= '9':
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
	default:
		return j, &jsonError{j, "invalid number"}
	}
	if j < len(s) && s[j] == '.' {
		j++
		d0 := j
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == d0 {
			return j, &jsonError{j, "invalid number: want digits after the decimal point"}
		}
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		j++
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		d0 := j
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == d0 {
			return j, &jsonError{j, "invalid number: want digits in the exponent"}
		}
	}
	return j, nil
}

// decimal is a number literal taken apart for exact comparison: the value is
// 0.D × 10^exp where D is the digit string without leading or trailing zeros.
// Zero has no digits, whatever its sign or spelling.
type decimal struct {
	neg    bool
	ip, fp []byte // integer and fraction digits as written
	lz, n  int    // leading zeros to skip in ip++fp, significant digit count
	exp    int64
}

// maxExp saturates absurd exponents; numbers beyond 1e±(10^15) are not
// distinguished from each other.
const maxExp = 1 << 50

func parseDecimal(lit []byte) decimal {
	var d decimal
	i := 0
	if i < len(lit) && lit[i] == '-' {
		d.neg = true
		i++
	}
	s := i
	for i < len(lit) && lit[i] >= '0' && lit[i] <= '9' {
		i++
	}
	d.ip = lit[s:i]
	if i < len(lit) && lit[i] == '.' {
		i++
		s = i
		for i < len(lit) && lit[i] >= '0' && lit[i] <= '9' {
			i++
		}
		d.fp = lit[s:i]
	}
	var e int64
	if i < len(lit) && (lit[i] == 'e' || lit[i] == 'E') {
		i++
		eneg := false
		if i < len(lit) && (lit[i] == '+' || lit[i] == '-') {
			eneg = lit[i] == '-'
			i++
		}
		for ; i < len(lit); i++ {
			if e < maxExp {
				e = e*10 + int64(lit[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
	}
	total := len(d.ip) + len(d.fp)
	for d.lz < total && d.digit(d.lz) == '0' {
		d.lz++
	}
	end := total
	for end > d.lz && d.digit(end-1) == '0' {
		end--
	}
	d.n = end - d.lz
	d.exp = int64(len(d.ip)) - int64(d.lz) + e
	return d
}

func (d *decimal) digit(i int) byte {
	if i < len(d.ip) {
		return d.ip[i]
	}
	return d.fp[i-len(d.ip)]
}

// numbersEqual compares two valid number literals exactly by value, so "1",
// "1.0", "10e-1" and "0.1e1" are equal and large integers keep every digit.
func numbersEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	da, db := parseDecimal(a), parseDecimal(b)
	if da.n == 0 || db.n == 0 {
		return da.n == db.n
	}
	if da.neg != db.neg || da.n != db.n || da.exp != db.exp {
		return false
	}
	for i := 0; i < da.n; i++ {
		if da.digit(da.lz+i) != db.digit(db.lz+i) {
			return false
		}
	}
	return true
}

// maxToleranceSpread bounds, in decimal digits, how far apart the exponents
// of two numbers and the tolerance may be for the exact comparison; beyond
// it (absurd literals such as 1e400 against 0.001) float64 decides.
const maxToleranceSpread = 2048

// withinTolerance reports |a-b| <= tol exactly in decimal, for valid number
// literals a and b and a tolerance literal tol: 0.3 and 0.4 are within 0.1,
// and integers beyond 2^53 keep every digit (12345678901234567890 and
// 12345678901234567891 differ by 1, which no tolerance below 1 covers).
// Values of up to 18 digits once aligned use integer arithmetic (no
// allocation); longer ones use math/big.
func withinTolerance(a, b, tol []byte) bool {
	da, db, dt := parseDecimal(a), parseDecimal(b), parseDecimal(tol)
	// Each value is M × 10^e with M the significant digits as an integer.
	low := func(d *decimal) int64 { return d.exp - int64(d.n) }
	eMin, eMax := int64(math.MaxInt64), int64(math.MinInt64)
	for _, d := range []*decimal{&da, &db, &dt} {
		if d.n == 0 {
			continue
		}
		eMin = min(eMin, low(d))
		eMax = max(eMax, d.exp)
	}
	if eMin == math.MaxInt64 {
		return true // all zero
	}
	if eMax-eMin > maxToleranceSpread {
		fa, _ := strconv.ParseFloat(b2s(a), 64)
		fb, _ := strconv.ParseFloat(b2s(b), 64)
		ft, _ := strconv.ParseFloat(b2s(tol), 64)
		return !math.IsInf(fa-fb, 0) && math.Abs(fa-fb) <= ft
	}
	if eMax-eMin <= 18 {
		scaled := func(d *decimal) int64 {
			var v int64
			for i := 0; i < d.n; i++ {
				v = v*10 + int64(d.digit(d.lz+i)-'0')
			}
			if d.n == 0 {
				return 0
			}
			for e := low(d); e > eMin; e-- {
				v *= 10
			}
			if d.neg {
				v = -v
			}
			return v
		}
		diff := scaled(&da) - scaled(&db)
		if diff < 0 {
			diff = -diff
		}
		return diff <= scaled(&dt)
	}
	scaled := func(d *decimal) *big.Int {
		v := new(big.Int)
		if d.n == 0 {
			return v
		}
		digits := make([]byte, 0, d.n)
		for i := 0; i < d.n; i++ {
			digits = append(digits, d.digit(d.lz+i))
		}
		v.SetString(string(digits), 10)
		v.Mul(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(low(d)-eMin), nil))
		if d.neg {
			v.Neg(v)
		}
		return v
	}
	diff := new(big.Int).Sub(scaled(&da), scaled(&db))
	return diff.Abs(diff).Cmp(scaled(&dt)) <= 0
}
