package splitter

import (
	"regexp"
	"sync"

	"github.com/valyala/fasthttp"
)

// condOp is the test a condition applies to a field's value.
type condOp uint8

const (
	opEqual condOp = iota
	opIn
	opRegex
	opKeyIn
)

// condition is one compiled test: field src/name compared by op.
type condition struct {
	src  keyKind
	op   condOp
	name string
	// value for opEqual; values for opIn; re for opRegex; keys for opKeyIn.
	value  string
	values []string
	re     *regexp.Regexp
	keys   map[string]struct{}
	// bufs holds decode buffers for query values tested by a regex: the
	// regexp package keeps its input in a heap machine while matching, so a
	// stack buffer handed to it would be moved to the heap on every request.
	// One pool per Splitter (not global); nil for other conditions.
	bufs *sync.Pool
}

func newBufPool() *sync.Pool {
	return &sync.Pool{New: func() any {
		b := make([]byte, 0, 256)
		return &b
	}}
}

// cohort is one compiled cohort rule.
type cohort struct {
	name   string
	target uint8
	conds  []condition
}

// compileConditions turns validated Conditions into a list evaluated in a
// fixed order: exact tests first (cheapest), then lists, then regexes, each
// sorted by field name.
func compileConditions(c *Conditions, bufs *sync.Pool) []condition {
	var out []condition
	for _, op := range []condOp{opEqual, opIn, opRegex} {
		for _, f := range c.fields() {
			if f.op != op {
				continue
			}
			for _, name := range sortedKeys(f) {
				cd := condition{src: f.src, op: f.op, name: name}
				switch f.op {
				case opEqual:
					cd.value = f.values[name]
				case opIn:
					cd.values = append([]string(nil), f.lists[name]...)
				case opRegex:
					cd.re = regexp.MustCompile(f.values[name]) // checked by Validate
					if f.src == keyQuery {
						cd.bufs = bufs
					}
				}
				out = append(out, cd)
			}
		}
	}
	if len(c.KeyIn) > 0 {
		keys := make(map[string]struct{}, len(c.KeyIn))
		for _, k := range c.KeyIn {
			keys[k] = struct{}{}
		}
		out = append(out, condition{op: opKeyIn, keys: keys})
	}
	return out
}

// matches reports whether every condition of c holds for req. key is the
// split key, keyOK false when the request has none. scratch is for decoding
// query values.
func (c *cohort) matches(req *fasthttp.Request, key []byte, keyOK bool, scratch []byte) bool {
	for i := range c.conds {
		if !c.conds[i].holds(req, key, keyOK, scratch) {
			return false
		}
	}
	return true
}

func (cd *condition) holds(req *fasthttp.Request, key []byte, keyOK bool, scratch []byte) bool {
	switch cd.op {
	case opKeyIn:
		if !keyOK {
			return false
		}
		_, in := cd.keys[string(key)] // the compiler does not allocate for this conversion
		return in
	case opRegex:
		// Kept apart from scratch: see condition.bufs.
		if cd.src == keyQuery {
			return cd.queryRegex(req)
		}
		v := cd.headerOrCookie(req)
		return len(v) > 0 && cd.re.Match(v)
	}
	var v []byte
	if cd.src == keyQuery {
		v, _ = queryValue(req.Header.RequestURI(), cd.name, scratch[:0])
	} else {
		v = cd.headerOrCookie(req)
	}
	if len(v) == 0 {
		return false // absent or empty: see Conditions
	}
	if cd.op == opEqual {
		return b2s(v) == cd.value
	}
	for _, want := range cd.values { // opIn
		if b2s(v) == want {
			return true
		}
	}
	return false
}

// headerOrCookie reads the field a header or cookie condition tests; the
// result lives in req's buffers.
func (cd *condition) headerOrCookie(req *fasthttp.Request) []byte {
	if cd.src == keyCookie {
		return req.Header.Cookie(cd.name)
	}
	return req.Header.Peek(cd.name)
}

// queryRegex tests a query value against the regex, decoding into a pooled
// heap buffer (see condition.bufs). A decoded value longer than the buffer
// makes append allocate a one-off buffer; the pooled one is put back as it
// was, so the pool never holds request memory or grows without bound.
func (cd *condition) queryRegex(req *fasthttp.Request) bool {
	bp := cd.bufs.Get().(*[]byte)
	v, _ := queryValue(req.Header.RequestURI(), cd.name, (*bp)[:0])
	ok := len(v) > 0 && cd.re.Match(v)
	cd.bufs.Put(bp)
	return ok
}
