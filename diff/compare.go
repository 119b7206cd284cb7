package diff

import (
	"bytes"
	"fmt"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Header is one response header line as captured by the proxy.
type Header struct {
	Name  string
	Value string
}

// Capture is what the proxy recorded of one upstream response.
type Capture struct {
	// Status is the HTTP status code.
	Status int
	// ContentType decides whether the body is JSON. When empty, the
	// Content-Type entry of Headers is used.
	ContentType string
	// Headers holds the response headers the comparison may read: the
	// names in Rules.HeaderNames, or all of them when Rules.AllHeaders.
	// Repeated names are joined with ", " in order.
	Headers []Header
	// Body is the response body, at most Rules.MaxBody bytes. It must not
	// change during Compare; Compare keeps no reference to it afterwards.
	Body []byte
	// Truncated is set when the body was cut at max_body.
	Truncated bool
	// Err is set when the upstream failed (connect error, timeout, reset);
	// the comparison is then uncomparable.
	Err error
}

func (c *Capture) header(canonical string) (string, bool) {
	var v string
	found := false
	for i := range c.Headers {
		h := &c.Headers[i]
		if !strings.EqualFold(h.Name, canonical) {
			continue
		}
		if found {
			v += ", " + h.Value
		} else {
			v, found = h.Value, true
		}
	}
	return v, found
}

func (c *Capture) contentType() string {
	if c.ContentType != "" {
		return c.ContentType
	}
	v, _ := c.header("Content-Type")
	return v
}

// redactedValue is what a secret value is replaced with, as a JSON string.
const redactedValue = `"[REDACTED]"`

// maskReplacement replaces every mask match on both sides, so only what is
// around the masked text is compared.
const maskReplacement = "\x00masked\x00"

// budgetSteps bounds the element comparisons spent matching unordered arrays
// in one Compare; past it the remaining elements are reported as differences
// rather than burning CPU on a pathological document.
const budgetSteps = 1 << 21

// Compare compares a shadow response with the primary one under rules. A nil
// rules means all defaults; it is compiled on every call, so compile once with
// CompileRules for repeated use. Compare is safe for concurrent use and, for a
// matching pair, does not allocate once its pooled buffers are warm.
func Compare(primary, shadow *Capture, rules *Rules) Result {
	if rules == nil {
		var err error
		if rules, err = CompileRules(Spec{}); err != nil {
			return Result{Outcome: Uncomparable, Body: BodySkipped, Note: err.Error()}
		}
	}
	if primary == nil || shadow == nil {
		return Result{Outcome: Uncomparable, Body: BodySkipped, Note: "missing capture"}
	}
	if primary.Err != nil || shadow.Err != nil {
		var notes []string
		if primary.Err != nil {
			notes = append(notes, "primary upstream failed: "+primary.Err.Error())
		}
		if shadow.Err != nil {
			notes = append(notes, "shadow upstream failed: "+shadow.Err.Error())
		}
		return Result{Outcome: Uncomparable, Body: BodySkipped, Note: strings.Join(notes, "; ")}
	}
	c := rules.pool.Get().(*comparer)
	c.start(rules)
	res := c.compare(primary, shadow)
	c.release()
	return res
}

// CompareJSON compares two documents as JSON whatever they look like, as the
// offline "shadowproxy diff A.json B.json" command does: status and headers
// play no part. A document that does not parse is compared as bytes, with a
// Note saying why.
func CompareJSON(primary, shadow []byte, rules *Rules) Result {
	return Compare(
		&Capture{ContentType: "application/json", Body: primary},
		&Capture{ContentType: "application/json", Body: shadow},
		rules)
}

// comparer holds the reusable state of one comparison.
type comparer struct {
	r         *Rules
	a, b      doc
	path      []pseg   // current path in the documents
	mat       [][]byte // path materialized for pattern matching
	num       []byte   // digits of materialized indices
	diffs     []Difference
	omitted   int
	notes     []string
	out       []byte // rendering buffer
	hs        []hashed
	is        []int32
	budget    int
	budgetHit bool
}

// pseg is a path segment: an object key or, when idx >= 0, an array index.
type pseg struct {
	key []byte
	idx int
}

type hashed struct {
	h    uint64
	idx  int32
	used bool
}

func (c *comparer) start(r *Rules) {
	c.r = r
	c.path = c.path[:0]
	c.diffs = c.diffs[:0]
	c.notes = c.notes[:0]
	c.omitted = 0
	c.hs = c.hs[:0]
	c.is = c.is[:0]
	c.budget = budgetSteps
	c.budgetHit = false
}

// release returns the comparer to the pool, unless one huge document made
// its buffers too large to be worth keeping around.
func (c *comparer) release() {
	r := c.r
	c.r = nil
	c.a.src, c.b.src = nil, nil
	const keep = 1 << 16
	if cap(c.a.nodes) > keep || cap(c.b.nodes) > keep || cap(c.a.buf) > 1<<20 || cap(c.b.buf) > 1<<20 {
		return
	}
	// Drop references to the caller's bodies and to result strings, so a
	// pooled comparer pins no memory it does not own.
	clear(c.diffs[:cap(c.diffs)])
	clear(c.path[:cap(c.path)])
	clear(c.mat[:cap(c.mat)])
	r.pool.Put(c)
}

func (c *comparer) compare(p, s *Capture) Result {
	if p.Status != s.Status {
		c.add(Difference{Path: StatusPath, Kind: Changed, Primary: strconv.Itoa(p.Status), Shadow: strconv.Itoa(s.Status)})
	}
	c.compareHeaders(p, s)
	res := Result{}
	maxBody := c.r.MaxBody()
	switch {
	case p.Truncated || s.Truncated || int64(len(p.Body)) > maxBody || int64(len(s.Body)) > maxBody:
		res.Body = BodySkipped
		side := "primary"
		if !(p.Truncated || int64(len(p.Body)) > maxBody) {
			side = "shadow"
		}
		c.notes = append(c.notes, fmt.Sprintf("%s body exceeds max_body (%s); body not compared", side, cfgtypes.FormatSize(maxBody)))
	default:
		res.Body = c.compareBody(p, s)
	}
	if c.budgetHit {
		c.notes = append(c.notes, "unordered array matching stopped at its work limit; some differences may be approximate")
	}
	if len(c.notes) > 0 {
		res.Note = strings.Join(c.notes, "; ")
	}
	switch {
	case len(c.diffs) > 0:
		res.Outcome = Mismatch
		res.Differences = slices.Clone(c.diffs)
		res.Omitted = c.omitted
	case res.Body == BodySkipped:
		res.Outcome = Uncomparable
	default:
		res.Outcome = Match
	}
	return res
}

func (c *comparer) add(d Difference) {
	if len(c.diffs) >= MaxDifferences {
		c.omitted++
		return
	}
	c.diffs = append(c.diffs, d)
}

func (c *comparer) compareHeaders(p, s *Capture) {
	for _, name := range c.r.headers {
		c.compareHeader(p, s, name)
	}
	if !c.r.allHeaders {
		return
	}
	var names []string
	for _, hs := range [2][]Header{p.Headers, s.Headers} {
		for _, h := range hs {
			n := textproto.CanonicalMIMEHeaderKey(h.Name)
			if c.r.volatile[n] || slices.Contains(c.r.headers, n) || slices.Contains(names, n) {
				continue
			}
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		c.compareHeader(p, s, n)
	}
}

func (c *comparer) compareHeader(p, s *Capture, name string) {
	pv, pok := p.header(name)
	sv, sok := s.header(name)
	var k Kind
	switch {
	case pok && sok && pv == sv, !pok && !sok:
		return
	case pok && sok:
		k = Changed
	case pok:
		k = Removed
	default:
		k = Added
	}
	d := Difference{Path: HeaderPathPrefix + name, Kind: k}
	render := func(v string, ok bool) string {
		switch {
		case !ok:
			return ""
		case sensitiveHeader(name):
			return redactedValue
		}
		return string(cutValue(appendJSONString(nil, []byte(v))))
	}
	d.Primary, d.Shadow = render(pv, pok), render(sv, sok)
	c.add(d)
}

// isJSONType reports whether a Content-Type is application/json or a +json
// type such as application/problem+json.
func isJSONType(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	return strings.EqualFold(ct, "application/json") ||
		(len(ct) > 5 && strings.EqualFold(ct[len(ct)-5:], "+json"))
}

// looksLikeJSON is the sniff for undeclared bodies: only documents (objects
// and arrays) qualify, so a text body "42" is not compared as the number 42.
func looksLikeJSON(b []byte) bool {
	for _, ch := range b {
		switch ch {
		case ' ', '\t', '\n', '\r':
			continue
		case '{', '[':
			return true
		}
		return false
	}
	return false
}

func (c *comparer) compareBody(p, s *Capture) BodyMode {
	declared := isJSONType(p.contentType()) || isJSONType(s.contentType())
	if !declared && !(looksLikeJSON(p.Body) && looksLikeJSON(s.Body)) {
		return c.compareBytes(p.Body, s.Body)
	}
	if bytes.Equal(p.Body, s.Body) {
		if len(p.Body) == 0 {
			return BodyBytes // two empty bodies: nothing to parse
		}
		return BodyJSON
	}
	errA := c.a.parse(p.Body)
	errB := c.b.parse(s.Body)
	if errA == nil && errB == nil {
		c.diffNodes(&c.a.nodes[0], &c.b.nodes[0])
		return BodyJSON
	}
	why := func(side string, body []byte, err error) {
		if err == nil {
			return
		}
		if len(body) == 0 {
			c.notes = append(c.notes, side+" body is empty")
			return
		}
		c.notes = append(c.notes, fmt.Sprintf("%s body is not valid JSON (%v)", side, err))
	}
	why("primary", p.Body, errA)
	why("shadow", s.Body, errB)
	c.notes[len(c.notes)-1] += "; compared as bytes"
	return c.compareBytes(p.Body, s.Body)
}

func (c *comparer) compareBytes(a, b []byte) BodyMode {
	if len(c.r.masks) > 0 {
		for _, re := range c.r.masks {
			a = re.ReplaceAllLiteral(a, []byte(maskReplacement))
			b = re.ReplaceAllLiteral(b, []byte(maskReplacement))
		}
	}
	if bytes.Equal(a, b) {
		return BodyBytes
	}
	c.path = c.path[:0]
	if c.ignoredHere() {
		return BodyBytes
	}
	d := Difference{Path: BodyPath}
	switch {
	case len(a) == 0:
		d.Kind = Added
	case len(b) == 0:
		d.Kind = Removed
	default:
		d.Kind = Changed
	}
	// Show both bodies from shortly before the first differing byte: with
	// large bodies the start is usually identical and useless.
	off := 0
	for off < len(a) && off < len(b) && a[off] == b[off] {
		off++
	}
	from := max(0, off-32)
	for from > 0 && from < len(a) && !utf8.RuneStart(a[from]) {
		from--
	}
	excerpt := func(body []byte) string {
		if len(body) == 0 {
			return ""
		}
		var out []byte
		if from > 0 {
			out = append(out, "…"...)
		}
		end := min(len(body), from+MaxValueLen)
		out = appendJSONString(out, body[min(from, len(body)):end])
		if len(out) > MaxValueLen {
			return string(cutValue(out))
		}
		if end < len(body) {
			out = append(out, "…"...)
		}
		return string(out)
	}
	d.Primary, d.Shadow = excerpt(a), excerpt(b)
	if d.Kind == Changed {
		c.notes = append(c.notes, fmt.Sprintf("bodies differ from byte %d", off))
	}
	c.add(d)
	return BodyBytes
}

// ---- the JSON walk ----

func (c *comparer) push(key []byte) { c.path = append(c.path, pseg{key: key, idx: -1}) }
func (c *comparer) pushIdx(i int)   { c.path = append(c.path, pseg{idx: i}) }
func (c *comparer) pop()            { c.path = c.path[:len(c.path)-1] }

// materialize renders the current path as byte segments for pattern
// matching. Only done when a pattern must be checked, so a walk over equal
// documents never formats an index.
func (c *comparer) materialize() [][]byte {
	c.mat = c.mat[:0]
	c.num = c.num[:0]
	for _, s := range c.path {
		if s.idx < 0 {
			c.mat = append(c.mat, s.key)
			continue
		}
		st := len(c.num)
		c.num = strconv.AppendInt(c.num, int64(s.idx), 10)
		c.mat = append(c.mat, c.num[st:len(c.num):len(c.num)])
	}
	return c.mat
}

// ignoredHere reports whether the current path or an ancestor is ignored.
func (c *comparer) ignoredHere() bool {
	if len(c.r.ignore) == 0 {
		return false
	}
	segs := c.materialize()
	for i := range c.r.ignore {
		if matchSegs(c.r.ignore[i].segs, segs, false) {
			return true
		}
	}
	return false
}

func (c *comparer) redactedHere() bool {
	if len(c.r.redact) == 0 {
		return false
	}
	return redactedSegs(c.r.redact, c.materialize())
}

func (c *comparer) pathString() string {
	if len(c.path) == 0 {
		return BodyPath
	}
	out := c.out[:0]
	for _, s := range c.path {
		out = append(out, '/')
		if s.idx >= 0 {
			out = strconv.AppendInt(out, int64(s.idx), 10)
		} else {
			out = appendEscapedSegment(out, s.key)
		}
	}
	c.out = out
	return string(out)
}

// emit records a difference at the current path; a nil node is the absent
// side.
func (c *comparer) emit(k Kind, an, bn *node) {
	if c.ignoredHere() {
		return
	}
	if len(c.diffs) >= MaxDifferences {
		c.omitted++
		return
	}
	d := Difference{Path: c.pathString(), Kind: k}
	secret := c.redactedHere()
	d.Primary = c.render(&c.a, an, secret)
	d.Shadow = c.render(&c.b, bn, secret)
	c.diffs = append(c.diffs, d)
}

func (c *comparer) numEqual(an, bn *node) bool {
	ra, rb := c.a.raw(an), c.b.raw(bn)
	if numbersEqual(ra, rb) {
		return true
	}
	if c.r.tolerance > 0 {
		fa, _ := strconv.ParseFloat(b2s(ra), 64)
		fb, _ := strconv.ParseFloat(b2s(rb), 64)
		return math.Abs(fa-fb) <= c.r.tolerance
	}
	return false
}

// b2s views bytes as a string without copying, for read-only parsing calls
// that do not keep the string.
func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func sameRaw(a, b []byte) bool { return len(a) == len(b) && bytes.Equal(a, b) }

// diffNodes walks two values and emits every difference.
func (c *comparer) diffNodes(an, bn *node) {
	if sameRaw(c.a.raw(an), c.b.raw(bn)) {
		return
	}
	ka, kb := an.kind.class(), bn.kind.class()
	if ka != kb {
		if ka == kNull || kb == kNull {
			c.emit(Changed, an, bn)
		} else {
			c.emit(TypeChanged, an, bn)
		}
		return
	}
	switch ka {
	case kNull:
	case kFalse:
		if an.kind != bn.kind {
			c.emit(Changed, an, bn)
		}
	case kNumber:
		if !c.numEqual(an, bn) {
			c.emit(Changed, an, bn)
		}
	case kString:
		if !bytes.Equal(c.a.str(an), c.b.str(bn)) {
			c.emit(Changed, an, bn)
		}
	case kObject:
		c.diffObjects(an, bn)
	case kArray:
		if c.r.unordered {
			c.diffArraysUnordered(an, bn)
		} else {
			c.diffArraysStrict(an, bn)
		}
	}
}

// diffObjects merges the two sorted member lists.
func (c *comparer) diffObjects(an, bn *node) {
	ma, mb := c.a.kids(an), c.b.kids(bn)
	i, j := 0, 0
	for i < len(ma) || j < len(mb) {
		var cmp int
		switch {
		case i == len(ma):
			cmp = 1
		case j == len(mb):
			cmp = -1
		default:
			cmp = bytes.Compare(c.a.key(&ma[i]), c.b.key(&mb[j]))
		}
		switch {
		case cmp < 0:
			c.push(c.a.key(&ma[i]))
			c.emit(Removed, &c.a.nodes[ma[i].val], nil)
			i++
		case cmp > 0:
			c.push(c.b.key(&mb[j]))
			c.emit(Added, nil, &c.b.nodes[mb[j].val])
			j++
		default:
			c.push(c.a.key(&ma[i]))
			c.diffNodes(&c.a.nodes[ma[i].val], &c.b.nodes[mb[j].val])
			i++
			j++
		}
		c.pop()
	}
}

func (c *comparer) diffArraysStrict(an, bn *node) {
	ea, eb := c.a.kids(an), c.b.kids(bn)
	n := min(len(ea), len(eb))
	for i := 0; i < n; i++ {
		c.pushIdx(i)
		c.diffNodes(&c.a.nodes[ea[i].val], &c.b.nodes[eb[i].val])
		c.pop()
	}
	for i := n; i < len(ea); i++ {
		c.pushIdx(i)
		c.emit(Removed, &c.a.nodes[ea[i].val], nil)
		c.pop()
	}
	for i := n; i < len(eb); i++ {
		c.pushIdx(i)
		c.emit(Added, nil, &c.b.nodes[eb[i].val])
		c.pop()
	}
}

// diffArraysUnordered compares arrays as multisets. Equal elements are
// paired wherever they are; what is left is paired in order and diffed
// (reported at the primary's index) so that one changed field of one element
// reads as that field, not as a removed and an added element; the surplus of
// the longer side is removed or added.
func (c *comparer) diffArraysUnordered(an, bn *node) {
	ea, eb := c.a.kids(an), c.b.kids(bn)
	if c.equalInOrder(ea, eb) {
		return
	}
	hb, ib := len(c.hs), len(c.is)
	ua, ub := c.matchElems(ea, eb)
	n := min(len(ua), len(ub))
	for k := 0; k < n; k++ {
		c.pushIdx(int(ua[k]))
		c.diffNodes(&c.a.nodes[ea[ua[k]].val], &c.b.nodes[eb[ub[k]].val])
		c.pop()
	}
	for _, i := range ua[n:] {
		c.pushIdx(int(i))
		c.emit(Removed, &c.a.nodes[ea[i].val], nil)
		c.pop()
	}
	for _, j := range ub[n:] {
		c.pushIdx(int(j))
		c.emit(Added, nil, &c.b.nodes[eb[j].val])
		c.pop()
	}
	c.hs, c.is = c.hs[:hb], c.is[:ib]
}

func (c *comparer) equalInOrder(ea, eb []member) bool {
	if len(ea) != len(eb) {
		return false
	}
	for i := range ea {
		c.pushIdx(i)
		eq := c.equal(&c.a.nodes[ea[i].val], &c.b.nodes[eb[i].val])
		c.pop()
		if !eq {
			return false
		}
	}
	return true
}

// matchElems pairs equal elements of two arrays regardless of position and
// returns the indices left unmatched on each side, in ascending order. Both
// slices live on c.is; the caller truncates c.hs and c.is afterwards.
// Candidates are found by a hash that is consistent with equal (it skips
// ignored paths and, with a float tolerance, numbers), so the work is
// O(n log n) plus one equal call per real match.
func (c *comparer) matchElems(ea, eb []member) (ua, ub []int32) {
	hbase := len(c.hs)
	for i := range ea {
		c.pushIdx(i)
		if !c.ignoredHere() {
			c.hs = append(c.hs, hashed{h: c.hash(&c.a, &c.a.nodes[ea[i].val]), idx: int32(i)})
		}
		c.pop()
	}
	hs := c.hs[hbase:]
	slices.SortFunc(hs, cmpHashed)
	ibase := len(c.is)
	for j := range eb {
		c.pushIdx(j)
		if c.ignoredHere() {
			c.pop()
			continue
		}
		h := c.hash(&c.b, &c.b.nodes[eb[j].val])
		c.pop()
		k, _ := slices.BinarySearchFunc(hs, h, func(e hashed, t uint64) int { return cmpUint(e.h, t) })
		matched := false
		for ; k < len(hs) && hs[k].h == h; k++ {
			if hs[k].used {
				continue
			}
			c.pushIdx(int(hs[k].idx))
			eq := c.equal(&c.a.nodes[ea[hs[k].idx].val], &c.b.nodes[eb[j].val])
			c.pop()
			if eq {
				hs[k].used = true
				matched = true
				break
			}
		}
		if !matched {
			c.is = append(c.is, int32(j))
		}
	}
	mid := len(c.is)
	for _, e := range hs {
		if !e.used {
			c.is = append(c.is, e.idx)
		}
	}
	ua = c.is[mid:]
	slices.Sort(ua)
	return ua, c.is[ibase:mid]
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpHashed(a, b hashed) int {
	if r := cmpUint(a.h, b.h); r != 0 {
		return r
	}
	return int(a.idx - b.idx)
}

// equal is diffNodes without output: deep equality under the rules. It
// spends the comparison budget and answers false once it is gone.
func (c *comparer) equal(an, bn *node) bool {
	c.budget--
	if c.budget < 0 {
		c.budgetHit = true
		return false
	}
	if sameRaw(c.a.raw(an), c.b.raw(bn)) {
		return true
	}
	ka, kb := an.kind.class(), bn.kind.class()
	if ka != kb {
		return c.ignoredHere()
	}
	switch ka {
	case kNull:
		return true
	case kFalse:
		return an.kind == bn.kind || c.ignoredHere()
	case kNumber:
		return c.numEqual(an, bn) || c.ignoredHere()
	case kString:
		return bytes.Equal(c.a.str(an), c.b.str(bn)) || c.ignoredHere()
	case kObject:
		ma, mb := c.a.kids(an), c.b.kids(bn)
		i, j := 0, 0
		for i < len(ma) || j < len(mb) {
			var cmp int
			switch {
			case i == len(ma):
				cmp = 1
			case j == len(mb):
				cmp = -1
			default:
				cmp = bytes.Compare(c.a.key(&ma[i]), c.b.key(&mb[j]))
			}
			var eq bool
			switch {
			case cmp < 0:
				c.push(c.a.key(&ma[i]))
				eq = c.ignoredHere()
				i++
			case cmp > 0:
				c.push(c.b.key(&mb[j]))
				eq = c.ignoredHere()
				j++
			default:
				c.push(c.a.key(&ma[i]))
				eq = c.equal(&c.a.nodes[ma[i].val], &c.b.nodes[mb[j].val])
				i++
				j++
			}
			c.pop()
			if !eq {
				return false
			}
		}
		return true
	case kArray:
		ea, eb := c.a.kids(an), c.b.kids(bn)
		if c.r.unordered {
			if c.equalInOrder(ea, eb) {
				return true
			}
			hb, ib := len(c.hs), len(c.is)
			ua, ub := c.matchElems(ea, eb)
			eq := len(ua) == 0 && len(ub) == 0
			c.hs, c.is = c.hs[:hb], c.is[:ib]
			return eq
		}
		n := min(len(ea), len(eb))
		for i := 0; i < n; i++ {
			c.pushIdx(i)
			eq := c.equal(&c.a.nodes[ea[i].val], &c.b.nodes[eb[i].val])
			c.pop()
			if !eq {
				return false
			}
		}
		for i := n; i < max(len(ea), len(eb)); i++ {
			c.pushIdx(i)
			eq := c.ignoredHere()
			c.pop()
			if !eq {
				return false
			}
		}
		return true
	}
	return false
}

// hash digests a value consistently with equal in unordered mode: equal
// values hash alike. Ignored members are skipped, arrays are hashed as
// multisets, numbers by exact value (or not at all under a tolerance, since
// 1.0 and 1.0000001 may be equal).
func (c *comparer) hash(d *doc, n *node) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	switch n.kind {
	case kNull:
		return 0x9e3779b97f4a7c15
	case kFalse:
		return 0x2545f4914f6cdd1d
	case kTrue:
		return 0x5851f42d4c957f2d
	case kNumber:
		if c.r.tolerance > 0 {
			return 0x14057b7ef767814f
		}
		dec := parseDecimal(d.raw(n))
		h := uint64(offset)
		if dec.n == 0 {
			return mix64(h)
		}
		if dec.neg {
			h = (h ^ '-') * prime
		}
		h = (h ^ uint64(dec.exp)) * prime
		for i := 0; i < dec.n; i++ {
			h = (h ^ uint64(dec.digit(dec.lz+i))) * prime
		}
		return mix64(h)
	case kString:
		h := uint64(offset) ^ 0x51
		for _, b := range d.str(n) {
			h = (h ^ uint64(b)) * prime
		}
		return mix64(h)
	case kArray:
		var sum uint64 = 0x6a09e667f3bcc908
		for i, m := range d.kids(n) {
			c.pushIdx(i)
			if !c.ignoredHere() {
				sum += mix64(c.hash(d, &d.nodes[m.val]))
			}
			c.pop()
		}
		return mix64(sum)
	case kObject:
		h := uint64(0xbb67ae8584caa73b)
		ms := d.kids(n)
		for i := range ms {
			k := d.key(&ms[i])
			c.push(k)
			if !c.ignoredHere() {
				for _, b := range k {
					h = (h ^ uint64(b)) * prime
				}
				h = mix64(h ^ c.hash(d, &d.nodes[ms[i].val]))
			}
			c.pop()
		}
		return h
	}
	return 0
}

// mix64 is the SplitMix64 finalizer: it spreads bits so sums of hashes do not
// cancel out in structured ways.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ---- rendering ----

// render returns the compact JSON of a node, secret members replaced, cut to
// MaxValueLen. A nil node (absent side) renders as "".
func (c *comparer) render(d *doc, n *node, secret bool) string {
	switch {
	case n == nil:
		return ""
	case secret:
		return redactedValue
	}
	c.out = c.renderNode(d, n, c.out[:0])
	return string(cutValue(c.out))
}

func (c *comparer) renderNode(d *doc, n *node, out []byte) []byte {
	switch n.kind {
	case kString:
		return appendJSONString(out, d.str(n))
	case kArray:
		out = append(out, '[')
		for i, m := range d.kids(n) {
			if len(out) > MaxValueLen {
				break
			}
			if i > 0 {
				out = append(out, ',')
			}
			c.pushIdx(i)
			if c.redactedHere() {
				out = append(out, redactedValue...)
			} else {
				out = c.renderNode(d, &d.nodes[m.val], out)
			}
			c.pop()
		}
		return append(out, ']')
	case kObject:
		out = append(out, '{')
		ms := d.kids(n)
		for i := range ms {
			if len(out) > MaxValueLen {
				break
			}
			if i > 0 {
				out = append(out, ',')
			}
			k := d.key(&ms[i])
			out = appendJSONString(out, k)
			out = append(out, ':')
			c.push(k)
			if c.redactedHere() {
				out = append(out, redactedValue...)
			} else {
				out = c.renderNode(d, &d.nodes[ms[i].val], out)
			}
			c.pop()
		}
		return append(out, '}')
	default:
		return append(out, d.raw(n)...)
	}
}

// cutValue shortens a rendering to MaxValueLen bytes on a rune boundary and
// marks the cut with "…".
func cutValue(b []byte) []byte {
	if len(b) <= MaxValueLen {
		return b
	}
	n := MaxValueLen
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return append(b[:n:n], "…"...)
}

// appendJSONString appends s as a JSON string literal, escaping only what
// must be escaped; invalid UTF-8 becomes U+FFFD so the output stays valid.
func appendJSONString(dst, s []byte) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		ch := s[i]
		if ch < utf8.RuneSelf {
			switch {
			case ch == '"' || ch == '\\':
				dst = append(dst, '\\', ch)
			case ch == '\n':
				dst = append(dst, '\\', 'n')
			case ch == '\r':
				dst = append(dst, '\\', 'r')
			case ch == '\t':
				dst = append(dst, '\\', 't')
			case ch < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexd[ch>>4], hexd[ch&0xf])
			default:
				dst = append(dst, ch)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
