package splitter

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// OnMissing values: what happens to a request without a key.
const (
	// OnMissingStable sends keyless requests to the stable upstream, so
	// anonymous traffic never sees the canary. The default.
	OnMissingStable = "stable"
	// OnMissingRandom samples keyless requests per request at the split's
	// percentage: the canary gets its share of anonymous traffic, at the
	// price of one client possibly seeing both versions.
	OnMissingRandom = "random"
)

// MaxCohorts bounds the cohort list: rules are evaluated in order on every
// request, and a cohort index must fit Decision.Cohort and a metric label.
const MaxCohorts = 64

// Spec is the `split:` section of a route, as decoded from YAML. It is plain
// data; Validate checks it and Compile turns it into a Splitter.
type Spec struct {
	// Key says which request field identifies a user: header:NAME,
	// cookie:NAME, query:NAME or ip. Required.
	Key string `yaml:"key"`
	// Salt is hashed in front of the key. Default: the route name. Two splits
	// with different salts assign users independently; reusing a salt on
	// purpose makes two routes agree on who is in the canary.
	Salt string `yaml:"salt,omitempty"`
	// To is the canary upstream that receives Percent of the keys. Required.
	To string `yaml:"to"`
	// Percent of keys (0 to 100, two decimals) sent to To.
	Percent cfgtypes.Percent `yaml:"percent"`
	// OnMissing is "stable" (default) or "random".
	OnMissing string `yaml:"on_missing,omitempty"`
	// ForceHeader, when set, names a request header whose value, if it is one
	// of the route's upstream names, sends the request there. Off by default:
	// anyone who can set the header can pick an upstream, so enable it only
	// where the edge strips it from outside traffic.
	ForceHeader string `yaml:"force_header,omitempty"`
	// ResponseHeader, when set, is added to every response with the name of
	// the upstream that served it. Off by default.
	ResponseHeader string `yaml:"response_header,omitempty"`
	// Cohorts are evaluated in order before the percentage; the first match
	// decides.
	Cohorts []CohortSpec `yaml:"cohorts,omitempty"`
}

// CohortSpec is one cohort rule: requests matching When go to To.
type CohortSpec struct {
	// Name identifies the cohort in metrics and logs: letters, digits, '_'
	// and '-'. Required and unique within the route.
	Name string `yaml:"name"`
	// When holds the conditions, all of which must hold. At least one.
	When Conditions `yaml:"when"`
	// To is the upstream for matching requests. Default: the split's To.
	To string `yaml:"to,omitempty"`
}

// Conditions are the tests of one cohort, ANDed. Maps go from a header,
// cookie or query parameter name to the wanted value(s). A condition on a
// field the request does not have, or has with an empty value, is false,
// whatever the test (a regex that matches "" does not match an absent
// header); this is the same rule that makes an empty key a missing one. Values are compared exactly
// (case-sensitive); header names are case-insensitive, cookie and query names
// exact; query names and values are percent-decoded first. Regexes are Go
// RE2 syntax and unanchored: write ^...$ for a whole-value match.
type Conditions struct {
	Header      map[string]string   `yaml:"header,omitempty"`
	HeaderIn    map[string][]string `yaml:"header_in,omitempty"`
	HeaderRegex map[string]string   `yaml:"header_regex,omitempty"`
	Cookie      map[string]string   `yaml:"cookie,omitempty"`
	CookieIn    map[string][]string `yaml:"cookie_in,omitempty"`
	CookieRegex map[string]string   `yaml:"cookie_regex,omitempty"`
	Query       map[string]string   `yaml:"query,omitempty"`
	QueryIn     map[string][]string `yaml:"query_in,omitempty"`
	QueryRegex  map[string]string   `yaml:"query_regex,omitempty"`
	// KeyIn matches when the split key (see Spec.Key) is one of these
	// values: internal users, synthetic test accounts.
	KeyIn []string `yaml:"key_in,omitempty"`
}

// IsEmpty reports whether c has no condition at all.
func (c *Conditions) IsEmpty() bool {
	return len(c.Header)+len(c.HeaderIn)+len(c.HeaderRegex)+
		len(c.Cookie)+len(c.CookieIn)+len(c.CookieRegex)+
		len(c.Query)+len(c.QueryIn)+len(c.QueryRegex)+len(c.KeyIn) == 0
}

// fieldErr builds the *cfgtypes.FieldError every validation error is.
func fieldErr(path, format string, args ...any) error {
	return cfgtypes.Errorf(path, format, args...)
}

// Validate returns every problem in s, each a *cfgtypes.FieldError whose path
// is relative to the split section ("cohorts[1].when.header_regex.v"), in a
// stable order. It does not check that upstream names exist (the config
// package does, with UpstreamRefs) nor that To differs from the route's own
// upstream (ValidateRoute does).
func (s *Spec) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, format, args...))
	}
	if strings.TrimSpace(s.Key) == "" {
		add("key", "required: say which request field identifies a user, e.g. header:X-User-ID, cookie:session, query:uid or ip")
	} else if _, err := ParseKeySource(s.Key); err != nil {
		add("key", "%v", err)
	}
	if s.To == "" {
		add("to", "required: name the canary upstream that receives the split's percentage")
	}
	if s.Percent.BP() > cfgtypes.MaxBasisPoints {
		add("percent", "%s%% is more than 100", s.Percent.BP())
	}
	switch s.OnMissing {
	case "", OnMissingStable, OnMissingRandom:
	default:
		add("on_missing", "unknown value %q: want %q (keyless requests go to the stable upstream, the default) or %q (sampled per request at the same percentage)", s.OnMissing, OnMissingStable, OnMissingRandom)
	}
	if s.ForceHeader != "" {
		if err := checkHeaderName(s.ForceHeader); err != nil {
			add("force_header", "invalid header name %q: %v", s.ForceHeader, err)
		}
	}
	if s.ResponseHeader != "" && !cfgtypes.IsToken(s.ResponseHeader) {
		add("response_header", "invalid header name %q: want letters, digits and !#$%%&'*+-.^_`|~, such as X-Shadowproxy-Upstream", s.ResponseHeader)
	}
	if len(s.Cohorts) > MaxCohorts {
		add("cohorts", "%d cohorts; at most %d are allowed (they are checked in order on every request): merge rules with header_in or key_in", len(s.Cohorts), MaxCohorts)
	}
	seen := make(map[string]int, len(s.Cohorts))
	for i := range s.Cohorts {
		c := &s.Cohorts[i]
		p := fmt.Sprintf("cohorts[%d]", i)
		switch {
		case c.Name == "":
			add(p+".name", "required: name the cohort (it labels metrics), e.g. internal or beta")
		case !cfgtypes.IsLabelValue(c.Name):
			add(p+".name", "invalid cohort name %q: use up to 64 letters, digits, '_' and '-'", c.Name)
		default:
			if j, dup := seen[c.Name]; dup {
				add(p+".name", "duplicate cohort name %q (also cohorts[%d]); names must be unique within a route", c.Name, j)
			} else {
				seen[c.Name] = i
			}
		}
		errs = append(errs, cfgtypes.Prefix(p+".when", c.When.validate())...)
	}
	return errs
}

// validate checks one cohort's conditions; paths are relative to "when".
func (c *Conditions) validate() []error {
	if c.IsEmpty() {
		return []error{fieldErr("", "empty: a cohort needs at least one condition (header, header_in, header_regex, cookie, cookie_in, cookie_regex, query, query_in, query_regex or key_in); without one it would match every request")}
	}
	var errs []error
	for _, f := range c.fields() {
		for _, name := range sortedKeys(f) {
			p := f.yaml + "." + name
			if err := f.checkName(name); err != nil {
				errs = append(errs, fieldErr(p, "%v", err))
			}
			switch f.op {
			case opEqual:
				if f.values[name] == "" {
					errs = append(errs, fieldErr(p, "empty value never matches (an absent or empty field fails every condition); give the value to match"))
				}
			case opIn:
				if len(f.lists[name]) == 0 {
					errs = append(errs, fieldErr(p, "empty list: give at least one value, or remove the condition"))
				}
				for i, v := range f.lists[name] {
					if v == "" {
						errs = append(errs, fieldErr(fmt.Sprintf("%s[%d]", p, i), "empty value never matches (an absent or empty field fails every condition); remove it"))
					}
				}
			case opRegex:
				if _, err := regexp.Compile(f.values[name]); err != nil {
					errs = append(errs, fieldErr(p, "invalid regex %q: %v", f.values[name], regexErrText(err)))
				}
			}
		}
	}
	if c.KeyIn != nil && len(c.KeyIn) == 0 {
		errs = append(errs, fieldErr("key_in", "empty list: give at least one key, or remove the condition"))
	}
	for i, k := range c.KeyIn {
		if k == "" {
			errs = append(errs, fieldErr(fmt.Sprintf("key_in[%d]", i), "empty key: a request without a key never matches, so list real keys only"))
		}
	}
	return errs
}

// regexErrText drops the "error parsing regexp: " prefix regexp adds, which
// would repeat what the message already says.
func regexErrText(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}

// condField is one map of Conditions seen generically, so validation and
// compilation walk the nine maps with one loop.
type condField struct {
	yaml      string
	src       keyKind
	op        condOp
	values    map[string]string
	lists     map[string][]string
	checkName func(string) error
}

func (f condField) len() int { return len(f.values) + len(f.lists) }

func (c *Conditions) fields() []condField {
	cookieName := func(n string) error {
		if !cfgtypes.IsToken(n) {
			return fmt.Errorf("invalid cookie name %q: want letters, digits and !#$%%&'*+-.^_`|~", n)
		}
		return nil
	}
	headerName := func(n string) error {
		if err := checkHeaderName(n); err != nil {
			return fmt.Errorf("invalid header name %q: %v", n, err)
		}
		return nil
	}
	return []condField{
		{"header", keyHeader, opEqual, c.Header, nil, headerName},
		{"header_in", keyHeader, opIn, nil, c.HeaderIn, headerName},
		{"header_regex", keyHeader, opRegex, c.HeaderRegex, nil, headerName},
		{"cookie", keyCookie, opEqual, c.Cookie, nil, cookieName},
		{"cookie_in", keyCookie, opIn, nil, c.CookieIn, cookieName},
		{"cookie_regex", keyCookie, opRegex, c.CookieRegex, nil, cookieName},
		{"query", keyQuery, opEqual, c.Query, nil, checkQueryName},
		{"query_in", keyQuery, opIn, nil, c.QueryIn, checkQueryName},
		{"query_regex", keyQuery, opRegex, c.QueryRegex, nil, checkQueryName},
	}
}

// sortedKeys returns f's names in order, so errors and evaluation order do
// not depend on map iteration.
func sortedKeys(f condField) []string {
	keys := make([]string, 0, f.len())
	for k := range f.values {
		keys = append(keys, k)
	}
	for k := range f.lists {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// UpstreamRef is one upstream name a Spec refers to, with the field path
// (relative to the split section) that holds it.
type UpstreamRef struct {
	Path, Name string
}

// UpstreamRefs lists every upstream name s refers to (to, cohorts[i].to), so
// the config package can check that each exists and suggest a spelling.
// Empty names are left out: a missing "to" is a Validate error, and an empty
// cohort "to" means the split's "to".
func (s *Spec) UpstreamRefs() []UpstreamRef {
	var refs []UpstreamRef
	if s.To != "" {
		refs = append(refs, UpstreamRef{Path: "to", Name: s.To})
	}
	for i, c := range s.Cohorts {
		if c.To != "" {
			refs = append(refs, UpstreamRef{Path: fmt.Sprintf("cohorts[%d].to", i), Name: c.To})
		}
	}
	return refs
}
