package splitter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Reason says why a Decision went where it did. The set is fixed and small so
// it can be a Prometheus label value; Reasons lists it for pre-creating series.
type Reason uint8

// The reasons, in the order Decide considers them.
const (
	// ReasonForced: the force header named one of the route's upstreams.
	ReasonForced Reason = iota
	// ReasonHalted: the split is halted (rolled back); everything goes to stable.
	ReasonHalted
	// ReasonCohort: a cohort rule matched; Decision.Cohort says which.
	ReasonCohort
	// ReasonMissingKey: the request had no key; on_missing decided.
	ReasonMissingKey
	// ReasonPercent: the key's bucket compared with the percentage decided.
	ReasonPercent
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonForced:     "forced",
	ReasonHalted:     "halted",
	ReasonCohort:     "cohort",
	ReasonMissingKey: "missing_key",
	ReasonPercent:    "percent",
}

// String returns the reason's label value ("percent", "cohort", ...).
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons returns every Reason, so the proxy can initialise one metric series
// per reason before the first request.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Target indexes in Splitter.Targets.
const (
	// TargetStable is the route's own upstream.
	TargetStable uint8 = 0
	// TargetCanary is the split's "to".
	TargetCanary uint8 = 1
)

// Decision is the outcome for one request. It is a small value so Decide can
// return it without allocating.
type Decision struct {
	// Target indexes Splitter.Targets: 0 stable, 1 canary, then cohort targets.
	Target uint8
	// Reason says why.
	Reason Reason
	// Cohort is the index of the matching cohort (Splitter.CohortNames), or
	// -1 when no cohort decided.
	Cohort int16
}

// Splitter decides, per request, which upstream serves it. It is compiled
// from a Spec once per config snapshot and is safe for concurrent use; the
// percentage and the halted flag are atomics the rollout controller may change
// at any time without locks on the request path.
type Splitter struct {
	route          string
	salt           string
	key            KeySource
	tp             *TrustedProxies
	digest         xxhash.Digest // state after hashing salt + ":"
	onMissingRand  bool
	forceHeader    string
	responseHeader string
	targets        []string
	cohorts        []cohort
	cohortNames    []string

	percent atomic.Uint32
	halted  atomic.Bool
}

// ValidateRoute is Validate plus the checks that need the route: the canary
// must differ from the route's own upstream, and a salt must exist (the route
// name is the default). Every error is a *cfgtypes.FieldError relative to the
// split section, except the one for an empty stableUpstream, which is the
// caller's bug rather than the user's.
func (s *Spec) ValidateRoute(routeName, stableUpstream string) []error {
	errs := s.Validate()
	if stableUpstream == "" {
		errs = append(errs, errors.New("splitter: the route's stable upstream name is empty; compile the split with the upstream the route forwards to"))
	}
	if s.To != "" && s.To == stableUpstream {
		errs = append(errs, fieldErr("to", "%q is the route's own upstream; the canary must be a different upstream", s.To))
	}
	if s.Salt == "" && routeName == "" {
		errs = append(errs, fieldErr("salt", "empty, and the route has no name to default to; set a salt such as the service name"))
	}
	return errs
}

// Compile validates spec and builds the Splitter for a route. routeName is the
// default salt; stableUpstream is the route's own upstream (Targets()[0]); tp
// is used by the ip key and may be nil (trust nobody). The error joins every
// problem ValidateRoute reports.
func Compile(spec Spec, routeName, stableUpstream string, tp *TrustedProxies) (*Splitter, error) {
	if errs := spec.ValidateRoute(routeName, stableUpstream); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	salt := spec.Salt
	if salt == "" {
		salt = routeName
	}
	key, _ := ParseKeySource(spec.Key) // checked by Validate

	s := &Splitter{
		route:          routeName,
		salt:           salt,
		key:            key,
		tp:             tp,
		digest:         saltedDigest(salt),
		onMissingRand:  spec.OnMissing == OnMissingRandom,
		forceHeader:    spec.ForceHeader,
		responseHeader: spec.ResponseHeader,
		targets:        []string{stableUpstream, spec.To},
	}
	bufs := newBufPool()
	for _, c := range spec.Cohorts {
		to := c.To
		if to == "" {
			to = spec.To
		}
		idx := slices.Index(s.targets, to)
		if idx < 0 {
			idx = len(s.targets)
			s.targets = append(s.targets, to)
		}
		s.cohorts = append(s.cohorts, cohort{name: c.Name, target: uint8(idx), conds: compileConditions(&c.When, bufs)})
		s.cohortNames = append(s.cohortNames, c.Name)
	}
	s.percent.Store(uint32(spec.Percent.BP()))
	return s, nil
}

// Decide returns where req goes. peer is the socket's remote address (used by
// the ip key). In order:
//
//  1. force header (if configured) naming one of Targets: that target, "forced";
//  2. halted: stable, "halted" (cohorts included: a rollback is a rollback);
//  3. the first cohort whose conditions all hold: its target, "cohort";
//  4. no key: on_missing decides, "missing_key";
//  5. Bucket(salt, key) < percent: canary, else stable, "percent".
//
// It does not allocate (see KeySource.Extract for the buffers it reads).
func (s *Splitter) Decide(req *fasthttp.Request, peer net.IP) Decision {
	if s.forceHeader != "" {
		if v := req.Header.Peek(s.forceHeader); len(v) > 0 {
			for i, t := range s.targets {
				if b2s(v) == t {
					return Decision{Target: uint8(i), Reason: ReasonForced, Cohort: -1}
				}
			}
		}
	}
	if s.halted.Load() {
		return Decision{Target: TargetStable, Reason: ReasonHalted, Cohort: -1}
	}
	var keyBuf [64]byte
	key, ok := s.key.Extract(req, peer, s.tp, keyBuf[:0])
	if len(s.cohorts) > 0 {
		var condBuf [64]byte
		for i := range s.cohorts {
			if s.cohorts[i].matches(req, key, ok, condBuf[:0]) {
				return Decision{Target: s.cohorts[i].target, Reason: ReasonCohort, Cohort: int16(i)}
			}
		}
	}
	pct := s.percent.Load()
	if !ok {
		if s.onMissingRand && rand.Uint32N(NumBuckets) < pct {
			return Decision{Target: TargetCanary, Reason: ReasonMissingKey, Cohort: -1}
		}
		return Decision{Target: TargetStable, Reason: ReasonMissingKey, Cohort: -1}
	}
	if bucketOf(&s.digest, key) < pct {
		return Decision{Target: TargetCanary, Reason: ReasonPercent, Cohort: -1}
	}
	return Decision{Target: TargetStable, Reason: ReasonPercent, Cohort: -1}
}

// Targets returns the upstream names a Decision can pick: index 0 the stable
// upstream, 1 the canary (the split's "to"), then each distinct cohort target
// not already listed. The caller may keep the slice; it is a copy.
func (s *Splitter) Targets() []string { return slices.Clone(s.targets) }

// Target returns the upstream name of d.
func (s *Splitter) Target(d Decision) string { return s.targets[d.Target] }

// CohortNames returns the cohort names in rule order; Decision.Cohort indexes
// it. The caller may keep the slice; it is a copy.
func (s *Splitter) CohortNames() []string { return slices.Clone(s.cohortNames) }

// SetPercent changes the canary share. Values above 100% are clamped. Keys
// move only in the direction of the change (see the package comment), so the
// rollout controller can step up without reshuffling users.
func (s *Splitter) SetPercent(bp cfgtypes.BasisPoints) {
	s.percent.Store(uint32(min(bp, cfgtypes.MaxBasisPoints)))
}

// Percent returns the current canary share.
func (s *Splitter) Percent() cfgtypes.BasisPoints { return cfgtypes.BasisPoints(s.percent.Load()) }

// SetHalted halts (true) or resumes (false) the split. While halted every
// request goes to stable, cohort rules included; only the force header is
// still honoured, so an operator can still reach the canary on purpose. The
// percentage is kept, so resuming restores the same assignment.
func (s *Splitter) SetHalted(h bool) { s.halted.Store(h) }

// Halted reports whether the split is halted.
func (s *Splitter) Halted() bool { return s.halted.Load() }

// ResponseHeader returns the header the proxy sets to the serving upstream's
// name, or "" when off.
func (s *Splitter) ResponseHeader() string { return s.responseHeader }

// ForceHeader returns the header that can force an upstream, or "" when off.
func (s *Splitter) ForceHeader() string { return s.forceHeader }

// Salt returns the salt in use (the route name unless configured).
func (s *Splitter) Salt() string { return s.salt }

// Key returns the key source.
func (s *Splitter) Key() KeySource { return s.key }

// Route returns the route name the splitter was compiled for.
func (s *Splitter) Route() string { return s.route }
