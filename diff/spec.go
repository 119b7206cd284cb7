package diff

import (
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Defaults of the compare section.
const (
	DefaultMaxBody         = 1 << 20 // 1MiB
	DefaultSamples         = 100
	DefaultMaxFields       = 200
	DefaultMinObservations = 100
	DefaultNoiseThreshold  = 0.05
	DefaultNoiseRelative   = 0.2
	DefaultNoiseWindow     = 1000
	DefaultNoiseMaxPaths   = 200
	DefaultMaxEndpoints    = 50

	// Upper bounds keep a typo ("samples: 1000000") from turning into memory.
	maxMaxBody   = 256 << 20
	maxSamples   = 10000
	maxMaxFields = 10000
	maxNoisePath = 10000
	maxWindow    = 1000000
	maxEndpoints = 1000
)

// Array order modes of the array_order setting.
const (
	ArrayOrderStrict = "strict"
	ArrayOrderIgnore = "ignore"
)

// defaultRedact is always applied on top of Spec.Redact: secrets must not
// land in stored samples because someone forgot a line of configuration.
// Matching is case-insensitive. Read-only.
var defaultRedact = []string{
	"**/password", "**/passwd", "**/secret", "**/token", "**/access_token",
	"**/refresh_token", "**/id_token", "**/api_key", "**/apikey",
	"**/authorization", "**/client_secret",
}

// volatileHeaders are the headers skipped when headers lists "*": they differ
// between any two servers or requests. A header named explicitly in the list is
// compared even when it is in this set: an explicit name is a deliberate choice.
// Read-only.
var volatileHeaders = []string{
	"Age", "Alt-Svc", "Connection", "Content-Length", "Date", "Etag", "Expires",
	"Keep-Alive", "Last-Modified", "Nel", "Report-To", "Server", "Server-Timing",
	"Set-Cookie", "Traceparent", "Tracestate", "Transfer-Encoding", "Via",
	"X-Amzn-Trace-Id", "X-B3-*", "X-Request-Id", "X-Correlation-Id", "Cf-Ray",
	"X-Envoy-*", "X-Response-Time", "X-Runtime", "X-Trace-Id", "B3",
}

// DefaultRedact returns the redaction patterns that always apply, whatever
// Spec.Redact adds (matched case-insensitively).
func DefaultRedact() []string { return append([]string(nil), defaultRedact...) }

// VolatileHeaders returns the headers that headers: ["*"] skips; a name
// ending in "*" covers every header with that prefix (X-B3-*, X-Envoy-*).
func VolatileHeaders() []string { return append([]string(nil), volatileHeaders...) }

// Spec is the YAML of a route's compare: section. The zero value of a field
// means its default (see ApplyDefaults).
type Spec struct {
	// Secondary names an upstream that runs the same version as the
	// primary; primary-vs-secondary differences teach the noise tracker.
	// The proxy resolves the name; this package only carries it.
	Secondary string `yaml:"secondary,omitempty"`
	// Ignore lists JSON Pointer patterns whose differences never count.
	Ignore []string `yaml:"ignore,omitempty"`
	// Headers lists response headers to compare, case-insensitively; "*"
	// means every header except VolatileHeaders(). Empty compares none.
	Headers []string `yaml:"headers,omitempty"`
	// ArrayOrder is "strict" (default) or "ignore" (arrays are multisets).
	ArrayOrder string `yaml:"array_order,omitempty"`
	// FloatTolerance is the largest absolute difference between two
	// numbers that still counts as equal. 0 means exact.
	FloatTolerance float64 `yaml:"float_tolerance,omitempty"`
	// Mask lists regular expressions whose matches are blanked in non-JSON
	// bodies before they are compared as bytes.
	Mask []string `yaml:"mask,omitempty"`
	// MaxBody is the largest body captured and compared; a longer one makes
	// the comparison uncomparable. Default 1MiB.
	MaxBody cfgtypes.Size `yaml:"max_body,omitempty"`
	// Samples is how many recent mismatches are kept. Default 100.
	Samples int `yaml:"samples,omitempty"`
	// MaxFields caps the distinct field labels per route and target; later
	// fields are counted as "other". Default 200.
	MaxFields int `yaml:"max_fields,omitempty"`
	// Redact lists JSON Pointer patterns whose values are replaced by
	// "[REDACTED]" in differences and samples, on top of DefaultRedact().
	Redact []string `yaml:"redact,omitempty"`
	// Noise tunes noise learning from the secondary.
	Noise NoiseSpec `yaml:"noise,omitempty"`
	// AlwaysNoise lists paths whose differences are always noise: JSON
	// Pointer patterns ("/meta/**") or "header/Name" or "body".
	AlwaysNoise []string `yaml:"always_noise,omitempty"`
	// NeverNoise lists paths that are never noise, whatever is learnt
	// (same forms as AlwaysNoise; it wins over AlwaysNoise).
	NeverNoise []string `yaml:"never_noise,omitempty"`
	// Endpoints names endpoint templates, "GET /users/{id}" or
	// "/users/{id}/orders" (any method), tried in order before the
	// automatic folding of ids (see EndpointOf).
	Endpoints []string `yaml:"endpoints,omitempty"`
	// MaxEndpoints bounds the endpoints kept per route; later ones are
	// counted as "other". Default 50.
	MaxEndpoints int `yaml:"max_endpoints,omitempty"`
}

// NoiseSpec tunes the noise tracker (see NoiseTracker.Judge for the rule).
type NoiseSpec struct {
	// MinObservations is how many primary/secondary comparisons an
	// endpoint needs before its verdicts count; until then they are
	// "learning". Default 100.
	MinObservations int `yaml:"min_observations,omitempty"`
	// Threshold is the absolute margin of the comparative rule: noise at
	// rate rn explains a candidate difference rate rc <= rn + threshold.
	// Written 0.05 or "5%". Default 0.05.
	Threshold cfgtypes.Ratio `yaml:"threshold,omitempty"`
	// Relative is the relative margin: rn also explains rc <= rn × (1 +
	// relative). Default 0.2.
	Relative cfgtypes.Ratio `yaml:"relative,omitempty"`
	// Window is how many recent observations rates are computed over;
	// noise not seen for this many observations is forgotten. Default
	// 1000.
	Window int `yaml:"window,omitempty"`
	// MaxPaths bounds the tracked paths. Default 200.
	MaxPaths int `yaml:"max_paths,omitempty"`
}

// UpstreamRef is an upstream named by the compare section, with the field
// path (relative to the section) where it was named, for the config loader's
// "unknown upstream" check.
type UpstreamRef struct {
	Path string
	Name string
}

// UpstreamRefs lists the upstreams the section refers to.
func (s *Spec) UpstreamRefs() []UpstreamRef {
	if s.Secondary == "" {
		return nil
	}
	return []UpstreamRef{{Path: "secondary", Name: s.Secondary}}
}

// ApplyDefaults fills every zero field with its default.
func (s *Spec) ApplyDefaults() {
	if s.ArrayOrder == "" {
		s.ArrayOrder = ArrayOrderStrict
	}
	if s.MaxBody == 0 {
		s.MaxBody = DefaultMaxBody
	}
	if s.Samples == 0 {
		s.Samples = DefaultSamples
	}
	if s.MaxFields == 0 {
		s.MaxFields = DefaultMaxFields
	}
	if s.Noise.MinObservations == 0 {
		s.Noise.MinObservations = DefaultMinObservations
	}
	if s.Noise.Threshold == 0 {
		s.Noise.Threshold = DefaultNoiseThreshold
	}
	if s.Noise.MaxPaths == 0 {
		s.Noise.MaxPaths = DefaultNoiseMaxPaths
	}
	if s.Noise.Relative == 0 {
		s.Noise.Relative = DefaultNoiseRelative
	}
	if s.Noise.Window == 0 {
		s.Noise.Window = DefaultNoiseWindow
	}
	if s.MaxEndpoints == 0 {
		s.MaxEndpoints = DefaultMaxEndpoints
	}
}

// Validate returns every problem in the section, each a *cfgtypes.FieldError
// whose path is relative to the section ("ignore[2]", "noise.threshold").
// Zero values are valid: they mean the default.
func (s *Spec) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}
	if strings.TrimSpace(s.Secondary) != s.Secondary {
		add("secondary", "upstream name %q has surrounding spaces", s.Secondary)
	}
	for i, p := range s.Ignore {
		if _, err := ParsePattern(p); err != nil {
			add(fmt.Sprintf("ignore[%d]", i), "invalid pattern: %v", err)
		}
	}
	seen := map[string]int{}
	for i, h := range s.Headers {
		path := fmt.Sprintf("headers[%d]", i)
		if h == "*" {
			continue
		}
		if !cfgtypes.IsToken(h) {
			add(path, "invalid header name %q: want a token such as Content-Type, or \"*\" for all but the volatile headers", h)
			continue
		}
		c := textproto.CanonicalMIMEHeaderKey(h)
		if j, dup := seen[c]; dup {
			add(path, "header %q is already listed at headers[%d]", h, j)
		}
		seen[c] = i
	}
	switch s.ArrayOrder {
	case "", ArrayOrderStrict, ArrayOrderIgnore:
	default:
		add("array_order", "invalid value %q: want %q or %q", s.ArrayOrder, ArrayOrderStrict, ArrayOrderIgnore)
	}
	if math.IsNaN(s.FloatTolerance) || math.IsInf(s.FloatTolerance, 0) || s.FloatTolerance < 0 {
		add("float_tolerance", "invalid tolerance %v: want a finite number >= 0 (an absolute difference such as 0.001)", s.FloatTolerance)
	}
	for i, m := range s.Mask {
		if m == "" {
			add(fmt.Sprintf("mask[%d]", i), "empty regular expression")
			continue
		}
		if _, err := regexp.Compile(m); err != nil {
			add(fmt.Sprintf("mask[%d]", i), "invalid regular expression: %v", err)
		}
	}
	if s.MaxBody < 0 || s.MaxBody > maxMaxBody {
		add("max_body", "invalid size %s: want at most %s (bodies are held in memory)", cfgtypes.FormatSize(int64(s.MaxBody)), cfgtypes.FormatSize(maxMaxBody))
	}
	if s.Samples < 0 || s.Samples > maxSamples {
		add("samples", "invalid count %d: want 1 to %d", s.Samples, maxSamples)
	}
	if s.MaxFields < 0 || s.MaxFields > maxMaxFields {
		add("max_fields", "invalid count %d: want 1 to %d", s.MaxFields, maxMaxFields)
	}
	for i, p := range s.Redact {
		if _, err := ParsePattern(p); err != nil {
			add(fmt.Sprintf("redact[%d]", i), "invalid pattern: %v", err)
		}
	}
	if s.Noise.MinObservations < 0 {
		add("noise.min_observations", "invalid count %d: want 1 or more", s.Noise.MinObservations)
	}
	if t := float64(s.Noise.Threshold); math.IsNaN(t) || t < 0 || t >= 1 {
		add("noise.threshold", "invalid rate %v: want a fraction below 1 such as 0.05 or 5%%", t)
	}
	if s.Noise.MaxPaths < 0 || s.Noise.MaxPaths > maxNoisePath {
		add("noise.max_paths", "invalid count %d: want 1 to %d", s.Noise.MaxPaths, maxNoisePath)
	}
	if t := float64(s.Noise.Relative); math.IsNaN(t) || t < 0 || t > 100 {
		add("noise.relative", "invalid ratio %v: want a fraction such as 0.2 or 20%%", t)
	}
	if s.Noise.Window < 0 || s.Noise.Window > maxWindow {
		add("noise.window", "invalid count %d: want %d to %d observations", s.Noise.Window, windowBuckets, maxWindow)
	} else if s.Noise.Window > 0 && s.Noise.Window < windowBuckets {
		add("noise.window", "invalid count %d: want at least %d observations", s.Noise.Window, windowBuckets)
	}
	for _, list := range []struct {
		name  string
		paths []string
	}{{"always_noise", s.AlwaysNoise}, {"never_noise", s.NeverNoise}} {
		for i, p := range list.paths {
			if err := validNoisePath(p); err != nil {
				add(fmt.Sprintf("%s[%d]", list.name, i), "%v", err)
			}
		}
	}
	for i, e := range s.Endpoints {
		if _, err := parseEndpointTemplate(e); err != nil {
			add(fmt.Sprintf("endpoints[%d]", i), "%v", err)
		}
	}
	if s.MaxEndpoints < 0 || s.MaxEndpoints > maxEndpoints {
		add("max_endpoints", "invalid count %d: want 1 to %d", s.MaxEndpoints, maxEndpoints)
	}
	return errs
}

// validNoisePath checks an always_noise or never_noise entry.
func validNoisePath(p string) error {
	switch {
	case p == BodyPath:
		return nil
	case strings.HasPrefix(p, HeaderPathPrefix):
		if !cfgtypes.IsToken(p[len(HeaderPathPrefix):]) {
			return fmt.Errorf("invalid header name in %q: want header/Name such as header/Etag", p)
		}
		return nil
	case p == StatusPath:
		return fmt.Errorf(`"status" is never noise: a shadow answering another status code must always show`)
	}
	if _, err := ParsePattern(p); err != nil {
		return fmt.Errorf(`invalid path: %v (or write "body" or "header/Name")`, err)
	}
	return nil
}

// Rules is a compiled compare section: immutable, safe for concurrent use,
// built once per config snapshot. It also owns the pool of comparison
// buffers, so a route's comparisons reuse memory without package-level state.
type Rules struct {
	spec       Spec
	ignore     []Pattern // with implicit trailing "**"
	redact     []Pattern // folded, with implicit trailing "**"
	redactKeys []string  // last literal segment of each redact pattern, for query strings
	headers    []string  // canonical names, in configured order
	allHeaders bool
	volatile   map[string]bool
	// volatilePrefixes are canonical prefixes ("X-B3-") of volatile headers.
	volatilePrefixes []string
	masks            []*regexp.Regexp
	unordered        bool
	tolerance        float64
	tolLit           []byte // tolerance as its shortest decimal literal, for exact comparison
	endpoints        []endpointTemplate
	pool             sync.Pool // *comparer
}

// CompileRules validates spec (after applying defaults to a copy) and
// compiles it. The error joins every validation problem.
func CompileRules(spec Spec) (*Rules, error) {
	spec.ApplyDefaults()
	if errs := spec.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("compare: %w", errors.Join(errs...))
	}
	r := &Rules{
		spec:      spec,
		unordered: spec.ArrayOrder == ArrayOrderIgnore,
		tolerance: spec.FloatTolerance,
		volatile:  make(map[string]bool, len(volatileHeaders)),
	}
	if spec.FloatTolerance > 0 {
		// The shortest literal that round-trips is what the user wrote
		// ("0.1"), so the boundary |a-b| <= 0.1 is exact in decimal.
		r.tolLit = strconv.AppendFloat(nil, spec.FloatTolerance, 'g', -1, 64)
	}
	for _, h := range volatileHeaders {
		if p, ok := strings.CutSuffix(h, "*"); ok {
			r.volatilePrefixes = append(r.volatilePrefixes, textproto.CanonicalMIMEHeaderKey(p))
			continue
		}
		r.volatile[textproto.CanonicalMIMEHeaderKey(h)] = true
	}
	for _, p := range spec.Ignore {
		r.ignore = append(r.ignore, MustParsePattern(p).subtree())
	}
	seenRedact := map[string]bool{}
	for _, p := range append(DefaultRedact(), spec.Redact...) {
		if seenRedact[p] {
			continue
		}
		seenRedact[p] = true
		pat := MustParsePattern(p)
		if n := len(pat.segs); n > 0 && pat.segs[n-1].kind == segLiteral {
			r.redactKeys = append(r.redactKeys, pat.segs[n-1].lit)
		}
		r.redact = append(r.redact, pat.subtree().folded())
	}
	for _, h := range spec.Headers {
		if h == "*" {
			r.allHeaders = true
			continue
		}
		r.headers = append(r.headers, textproto.CanonicalMIMEHeaderKey(h))
	}
	for _, m := range spec.Mask {
		r.masks = append(r.masks, regexp.MustCompile(m))
	}
	for _, e := range spec.Endpoints {
		t, _ := parseEndpointTemplate(e) // validated above
		r.endpoints = append(r.endpoints, t)
	}
	r.pool.New = func() any { return &comparer{} }
	return r, nil
}

// Spec returns the compiled section with defaults applied.
func (r *Rules) Spec() Spec { return r.spec }

// MaxBody is the largest body, in bytes, the proxy should capture.
func (r *Rules) MaxBody() int64 { return int64(r.spec.MaxBody) }

// Secondary is the upstream used for noise learning, or "".
func (r *Rules) Secondary() string { return r.spec.Secondary }

// HeaderNames lists the canonical names of the headers compared explicitly.
// When AllHeaders is false the proxy may capture only these (and
// Content-Type, which decides how bodies are compared).
func (r *Rules) HeaderNames() []string { return append([]string(nil), r.headers...) }

// AllHeaders reports whether headers lists "*", so every response header
// must be captured.
func (r *Rules) AllHeaders() bool { return r.allHeaders }

// isVolatile reports whether a canonical header name is skipped by "*".
func (r *Rules) isVolatile(canonical string) bool {
	if r.volatile[canonical] {
		return true
	}
	for _, p := range r.volatilePrefixes {
		if strings.HasPrefix(canonical, p) {
			return true
		}
	}
	return false
}

// redacted reports whether a body path (as decoded segments) is secret.
func redactedSegs[S ~string | ~[]byte](pats []Pattern, segs []S) bool {
	for i := range pats {
		if matchSegs(pats[i].segs, segs, true) {
			return true
		}
	}
	return false
}

// sensitiveHeader reports whether a header's values are always redacted.
func sensitiveHeader(canonical string) bool {
	switch canonical {
	case "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie":
		return true
	}
	return false
}
