package diff

import (
	"bytes"
	"fmt"
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
	return compareWith(primary, shadow, rules, nil)
}

func compareWith(primary, shadow *Capture, rules *Rules, f Filter) Result {
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
	c.f = f
	res := c.compare(primary, shadow)
	c.f = nil
	c.key = Key{}
	c.release()
	return res
}

// Key identifies one difference for a Filter. Its byte slices are valid
// only during the call.
type Key struct {
	// Path is the exact path: "/items/3/id", "header/Etag", "body".
	Path []byte
	// Norm is Path normalized (indices as "*"), as NormalizePath does.
	Norm []byte
	Kind Kind
	// Bytes is set for a whole-body difference of bodies compared as bytes
	// (not JSON): such noise must never cover JSON differences.
	Bytes bool
}

// Filter decides, during a comparison and before the MaxDifferences cap,
// which differences are noise. Differences it calls noise are dropped from
// the result and counted in Result.NoiseFiltered. The status code is never
// offered to it. It is called on the comparing goroutine only.
type Filter interface {
	Noise(k *Key) bool
}

// CompareFiltered is Compare with a noise filter consulted for every
// difference that is not ignored, before the difference cap, so real
// differences among many noisy ones are still listed. A nil f is Compare.
func CompareFiltered(primary, shadow *Capture, rules *Rules, f Filter) Result {
	return compareWith(primary, shadow, rules, f)
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
	f         Filter // nil: no noise filtering
	filtered  int
	norm      []byte // normalized path handed to f
	key       Key
}

// pseg is a path segment: an object key or, when idx >= 0, an array index.
type pseg struct {
	key []byte
	idx int
}

type hashed struct {
	h    uint64
	idx  int32
	next int32 // next possibly unused entry (see matchElems)
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
	c.filtered = 0
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
	res.NoiseFiltered = c.filtered
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
	if c.f != nil && d.Path != StatusPath {
		c.out = append(c.out[:0], d.Path...)
		if c.noise(c.out, d.Kind, d.Path == BodyPath) {
			return
		}
	}
	if len(c.diffs) >= MaxDifferences {
		c.omitted++
		return
	}
	c.diffs = append(c.diffs, d)
}

func (c *comparer) compareHeaders(p, s *Capture) {
	if !slices.Contains(c.r.headers, contentTypeHeader) {
		c.compareMediaType(p, s)
	}
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
			if n == contentTypeHeader || c.r.isVolatile(n) || slices.Contains(c.r.headers, n) || slices.Contains(names, n) {
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

const contentTypeHeader = "Content-Type"

// compareMediaType compares the media type of Content-Type (not its
// parameters) even when no header is listed: a JSON answer turning into an
// HTML error page is a real difference. Listing Content-Type in headers
// compares the whole value instead.
func (c *comparer) compareMediaType(p, s *Capture) {
	pv, sv := p.contentType(), s.contentType()
	if strings.EqualFold(mediaType(pv), mediaType(sv)) {
		return
	}
	c.compareValues(contentTypeHeader, pv, pv != "", sv, sv != "")
}

func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.TrimSpace(ct)
}

func (c *comparer) compareHeader(p, s *Capture, name string) {
	pv, pok := p.header(name)
	sv, sok := s.header(name)
	if pok && sok && name == "Cache-Control" && sameTokenSet(pv, sv) {
		return
	}
	c.compareValues(name, pv, pok, sv, sok)
}

// sameTokenSet compares two comma-separated directive lists regardless of
// order, case and spacing ("no-cache, max-age=0" equals "max-age=0,no-cache").
func sameTokenSet(a, b string) bool {
	ta, tb := tokens(a), tokens(b)
	slices.Sort(ta)
	slices.Sort(tb)
	return slices.Equal(slices.Compact(ta), slices.Compact(tb))
}

func tokens(v string) []string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func (c *comparer) compareValues(name, pv string, pok bool, sv string, sok bool) {
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

// IsJSON reports whether body is one valid JSON document (any top-level
// value, a leading UTF-8 byte order mark allowed): what the proxy compares as
// JSON when Content-Type declares it. The offline diff command uses it so
// that files compare exactly as the proxy would compare declared JSON.
func IsJSON(body []byte) bool {
	var d doc
	return d.parse(body) == nil
}

// looksLikeJSON is the sniff for undeclared bodies: only documents (objects
// and arrays) qualify, so a text body "42" is not compared as the number 42.
func looksLikeJSON(b []byte) bool {
	for _, ch := range bytes.TrimPrefix(b, utf8BOM) {
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

func (c *comparer) pathString() string { return string(c.pathBytes()) }

// pathBytes renders the current path into c.out.
func (c *comparer) pathBytes() []byte {
	if len(c.path) == 0 {
		c.out = append(c.out[:0], BodyPath...)
		return c.out
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
	return out
}

// emit records a difference at the current path; a nil node is the absent
// side. Ignored paths are dropped first, then noise (before the cap, so real
// differences among many noisy ones are still listed), then the cap applies.
func (c *comparer) emit(k Kind, an, bn *node) {
	if c.ignoredHere() {
		return
	}
	if c.f != nil && c.noise(c.pathBytes(), k, false) {
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

// noise asks the filter about one difference; path is the exact path.
func (c *comparer) noise(path []byte, k Kind, bytesBody bool) bool {
	c.norm = appendNormalized(c.norm[:0], path)
	c.key = Key{Path: path, Norm: c.norm, Kind: k, Bytes: bytesBody}
	if c.f.Noise(&c.key) {
		c.filtered++
		return true
	}
	return false
}

// appendNormalized appends path with its index segments turned into "*",
// exactly as NormalizePath does, without allocating.
func appendNormalized(dst, path []byte) []byte {
	if len(path) == 0 || path[0] != '/' {
		return append(dst, path...)
	}
	for start := 1; start <= len(path); {
		end := bytes.IndexByte(path[start:], '/')
		if end < 0 {
			end = len(path)
		} else {
			end += start
		}
		dst = append(dst, '/')
		if isIndex(b2s(path[start:end])) {
			dst = append(dst, '*')
		} else {
			dst = append(dst, path[start:end]...)
		}
		start = end + 1
	}
	return dst
}

// numEqual reports whether two number literals are equal: exactly by
// decimal value, or within float_tolerance (inclusive, also in exact
// decimal arithmetic).
func (c *comparer) numEqual(an, bn *node) bool {
	ra, rb := c.a.raw(an), c.b.raw(bn)
	if numbersEqual(ra, rb) {
		return true
	}
	return c.r.tolerance > 0 && withinTolerance(ra, rb, c.r.tolLit)
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
func (c *comparer) diffNodes(an, bn *node) { c.walk(an, bn, true) }

// equal is deep equality under the rules, without output. It spends the
// comparison budget and answers false once it is gone.
func (c *comparer) equal(an, bn *node) bool { return c.walk(an, bn, false) }

// differ handles one difference found by walk: with out, it is emitted (if
// not ignored); without, the values are equal only if the path is ignored.
func (c *comparer) differ(out bool, k Kind, an, bn *node) bool {
	if out {
		c.emit(k, an, bn)
		return false
	}
	return c.ignoredHere()
}

// walk is the single statement of the JSON equality rules, shared by the
// reporting walk (diffNodes, out=true: every difference is emitted) and the
// silent one (equal, out=false: it stops at the first unignored
// difference). hash must agree with it: equal values hash alike
// (TestEqualityRulesAgree pins the three to each other).
//
//   - identical source bytes are equal;
//   - null against anything else is "changed"; other differing types are
//     "type" (true and false are one type, so a flip is "changed");
//   - numbers compare by exact decimal value, or within float_tolerance;
//   - strings compare by decoded content;
//   - objects compare member by member regardless of order; a member on one
//     side only is "removed" or "added";
//   - arrays compare by index, or as multisets under array_order: ignore;
//   - a difference under an ignored path does not count.
func (c *comparer) walk(an, bn *node, out bool) bool {
	if !out {
		c.budget--
		if c.budget < 0 {
			c.budgetHit = true
			return false
		}
	}
	if sameRaw(c.a.raw(an), c.b.raw(bn)) {
		return true
	}
	ka, kb := an.kind.class(), bn.kind.class()
	if ka != kb {
		if ka == kNull || kb == kNull {
			return c.differ(out, Changed, an, bn)
		}
		return c.differ(out, TypeChanged, an, bn)
	}
	switch ka {
	case kNull:
		return true
	case kFalse:
		if an.kind != bn.kind {
			return c.differ(out, Changed, an, bn)
		}
		return true
	case kNumber:
		if !c.numEqual(an, bn) {
			return c.differ(out, Changed, an, bn)
		}
		return true
	case kString:
		if !bytes.Equal(c.a.str(an), c.b.str(bn)) {
			return c.differ(out, Changed, an, bn)
		}
		return true
	case kObject:
		return c.walkObjects(an, bn, out)
	case kArray:
		if c.r.unordered {
			return c.walkArraysUnordered(an, bn, out)
		}
		return c.walkArraysStrict(an, bn, out)
	}
	return false
}

// walkObjects merges the two sorted member lists.
func (c *comparer) walkObjects(an, bn *node, out bool) bool {
	ma, mb := c.a.kids(an), c.b.kids(bn)
	eq := true
	i, j := 0, 0
	for (i < len(ma) || j < len(mb)) && (out || eq) {
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
			eq = c.differ(out, Removed, &c.a.nodes[ma[i].val], nil) && eq
			i++
		case cmp > 0:
			c.push(c.b.key(&mb[j]))
			eq = c.differ(out, Added, nil, &c.b.nodes[mb[j].val]) && eq
			j++
		default:
			c.push(c.a.key(&ma[i]))
			eq = c.walk(&c.a.nodes[ma[i].val], &c.b.nodes[mb[j].val], out) && eq
			i++
			j++
		}
		c.pop()
	}
	return eq
}

func (c *comparer) walkArraysStrict(an, bn *node, out bool) bool {
	ea, eb := c.a.kids(an), c.b.kids(bn)
	n := min(len(ea), len(eb))
	eq := true
	for i := 0; i < n && (out || eq); i++ {
		c.pushIdx(i)
		eq = c.walk(&c.a.nodes[ea[i].val], &c.b.nodes[eb[i].val], out) && eq
		c.pop()
	}
	for i := n; i < len(ea) && (out || eq); i++ {
		c.pushIdx(i)
		eq = c.differ(out, Removed, &c.a.nodes[ea[i].val], nil) && eq
		c.pop()
	}
	for i := n; i < len(eb) && (out || eq); i++ {
		c.pushIdx(i)
		eq = c.differ(out, Added, nil, &c.b.nodes[eb[i].val]) && eq
		c.pop()
	}
	return eq
}

// walkArraysUnordered compares arrays as multisets: elements are paired
// with equal elements wherever they are (a pairing is found whenever one
// exists), and what is left unpaired is reported as removed (at its primary
// index) or added (at its shadow index). Pairing leftovers by position would
// invent "changed" differences between unrelated elements.
func (c *comparer) walkArraysUnordered(an, bn *node, out bool) bool {
	ea, eb := c.a.kids(an), c.b.kids(bn)
	if c.equalInOrder(ea, eb) {
		return true
	}
	hb, ib := len(c.hs), len(c.is)
	ua, ub := c.matchElems(ea, eb)
	eq := len(ua) == 0 && len(ub) == 0
	if out {
		for _, i := range ua {
			c.pushIdx(int(i))
			c.emit(Removed, &c.a.nodes[ea[i].val], nil)
			c.pop()
		}
		for _, j := range ub {
			c.pushIdx(int(j))
			c.emit(Added, nil, &c.b.nodes[eb[j].val])
			c.pop()
		}
	}
	c.hs, c.is = c.hs[:hb], c.is[:ib]
	return eq
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
//
// Candidates are found by a hash that is consistent with equal (it skips
// ignored paths and, with a float tolerance, numbers). Equality without a
// tolerance is an equivalence, so pairing each shadow element with any
// equal primary element finds a complete pairing whenever one exists; used
// entries are skipped with a next-unused pointer, so long runs of
// duplicates stay near-linear. Under a tolerance, arrays of numbers are
// paired by sorting both sides (optimal for |a-b| <= t), and other arrays
// fall back to first-fit within a hash run.
func (c *comparer) matchElems(ea, eb []member) (ua, ub []int32) {
	if c.r.tolerance > 0 && c.allNumbers(ea, &c.a) && c.allNumbers(eb, &c.b) && len(c.r.ignore) == 0 {
		return c.matchNumbers(ea, eb)
	}
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
	// next[k] is k while hs[k] is unused; a used entry points past itself.
	for k := range hs {
		hs[k].next = int32(k)
	}
	find := func(k int) int {
		root := k
		for root < len(hs) && int(hs[root].next) != root {
			root = int(hs[root].next)
		}
		for k < len(hs) && int(hs[k].next) != k {
			nx := int(hs[k].next)
			hs[k].next = int32(root)
			k = nx
		}
		return root
	}
	ibase := len(c.is)
	for j := range eb {
		c.pushIdx(j)
		if c.ignoredHere() {
			c.pop()
			continue
		}
		h := c.hash(&c.b, &c.b.nodes[eb[j].val])
		c.pop()
		k, _ := slices.BinarySearchFunc(hs, h, func(e hashed, t uint64) int { return cmpNum(e.h, t) })
		matched := false
		for k = find(k); k < len(hs) && hs[k].h == h; k = find(k + 1) {
			c.pushIdx(int(hs[k].idx))
			eq := c.equal(&c.a.nodes[ea[hs[k].idx].val], &c.b.nodes[eb[j].val])
			c.pop()
			if eq {
				hs[k].used = true
				hs[k].next = int32(k + 1)
				matched = true
				break
			}
			if c.budgetHit {
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

func (c *comparer) allNumbers(es []member, d *doc) bool {
	for _, m := range es {
		if d.nodes[m.val].kind != kNumber {
			return false
		}
	}
	return true
}

// matchNumbers pairs two arrays of numbers under a tolerance: both sides
// sorted, then a two-pointer sweep pairs the smallest unpaired values that
// are within tolerance. For equal-width intervals this greedy pairing is a
// maximum one.
func (c *comparer) matchNumbers(ea, eb []member) (ua, ub []int32) {
	ibase := len(c.is)
	for i := range ea {
		c.is = append(c.is, int32(i))
	}
	mid := len(c.is)
	for j := range eb {
		c.is = append(c.is, int32(j))
	}
	sa, sb := c.is[ibase:mid], c.is[mid:]
	val := func(d *doc, es []member, i int32) float64 {
		f, _ := strconv.ParseFloat(b2s(d.raw(&d.nodes[es[i].val])), 64)
		return f
	}
	slices.SortFunc(sa, func(x, y int32) int { return cmpNum(val(&c.a, ea, x), val(&c.a, ea, y)) })
	slices.SortFunc(sb, func(x, y int32) int { return cmpNum(val(&c.b, eb, x), val(&c.b, eb, y)) })
	var lefta, leftb []int32
	i, j := 0, 0
	for i < len(sa) && j < len(sb) {
		na, nb := &c.a.nodes[ea[sa[i]].val], &c.b.nodes[eb[sb[j]].val]
		switch {
		case c.numEqual(na, nb):
			i++
			j++
		case val(&c.a, ea, sa[i]) < val(&c.b, eb, sb[j]):
			lefta = append(lefta, sa[i])
			i++
		default:
			leftb = append(leftb, sb[j])
			j++
		}
	}
	lefta = append(lefta, sa[i:]...)
	leftb = append(leftb, sb[j:]...)
	c.is = c.is[:ibase]
	c.is = append(c.is, leftb...)
	mid = len(c.is)
	c.is = append(c.is, lefta...)
	ua, ub = c.is[mid:], c.is[ibase:mid]
	slices.Sort(ua)
	slices.Sort(ub)
	return ua, ub
}

// cmpNum orders two numbers for slices.SortFunc and BinarySearchFunc.
// Written out rather than cmp.Compare, which orders a NaN before every
// number: this one keeps the ordering the float and hash sorts always had.
func cmpNum[T float64 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpHashed(a, b hashed) int {
	if r := cmpNum(a.h, b.h); r != 0 {
		return r
	}
	return int(a.idx - b.idx)
}

// hash digests a value consistently with walk in unordered mode: equal
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
