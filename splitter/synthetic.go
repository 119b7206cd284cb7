package splitter

import (
	"fmt"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// MaxSynthetic bounds a route's synthetic rules: they are checked on every
// request, like cohorts.
const MaxSynthetic = 16

// Marker tells synthetic requests (smoke checks, test accounts) from real
// users' with the same conditions a cohort's "when" uses; any one rule
// marks the request. It is compiled once per snapshot, safe for concurrent
// use and does not allocate.
type Marker struct {
	key   KeySource
	hasKy bool
	tp    *TrustedProxies
	rules []cohort
}

// ValidateSynthetic checks a route's synthetic rules. hasKey says whether
// the route has a split key for key_in to test. Paths are relative to the
// synthetic section ("[1].header_regex.x").
func ValidateSynthetic(rules []Conditions, hasKey bool) []error {
	var errs []error
	if len(rules) > MaxSynthetic {
		errs = append(errs, cfgtypes.Errorf("", "%d rules; at most %d are allowed (they are checked on every request): merge them with header_in or key_in", len(rules), MaxSynthetic))
	}
	for i := range rules {
		p := fmt.Sprintf("[%d]", i)
		if rules[i].IsEmpty() {
			errs = append(errs, cfgtypes.Errorf(p, "empty: a rule needs a condition such as {header: {X-Synthetic: \"true\"}} or {key_in: [smoke-test-prod]}, else it would mark every request"))
			continue
		}
		if len(rules[i].KeyIn) > 0 && !hasKey {
			errs = append(errs, cfgtypes.Errorf(p+".key_in", "the route has no split, so there is no key to test; use a header condition instead, or add split.key"))
		}
		errs = append(errs, cfgtypes.Prefix(p, rules[i].validate())...)
	}
	return errs
}

// NewMarker compiles validated rules. key is the route's split key (used
// by key_in; nil when the route has no split); tp may be nil. It returns
// nil for no rules, which marks nothing.
func NewMarker(rules []Conditions, key *KeySource, tp *TrustedProxies) *Marker {
	if len(rules) == 0 {
		return nil
	}
	m := &Marker{tp: tp}
	if key != nil {
		m.key, m.hasKy = *key, true
	}
	bufs := newBufPool()
	for i := range rules {
		m.rules = append(m.rules, cohort{name: "synthetic", conds: compileConditions(&rules[i], bufs)})
	}
	return m
}

// Synthetic reports whether any rule holds for req. A nil Marker marks
// nothing.
func (m *Marker) Synthetic(req *fasthttp.Request, peer net.IP) bool {
	if m == nil {
		return false
	}
	var keyBuf [64]byte
	var key []byte
	ok := false
	if m.hasKy {
		key, ok = m.key.Extract(req, peer, m.tp, keyBuf[:0])
	}
	var condBuf [64]byte
	for i := range m.rules {
		if m.rules[i].matches(req, key, ok, condBuf[:0]) {
			return true
		}
	}
	return false
}
