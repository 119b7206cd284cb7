package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// Snapshot is the immutable runtime form of one configuration: compiled
// routes, upstream pools and pre-resolved metric children. A request loads
// one Snapshot and uses it from start to end; a reload builds a new one and
// swaps the pointer.
type Snapshot struct {
	Config    *config.Config
	routes    []*Route
	upstreams map[string]*Upstream
	edge      *edgeSettings
}

// Routes returns the compiled routes in match order.
func (s *Snapshot) Routes() []*Route { return s.routes }

// Route returns the named route or nil.
func (s *Snapshot) Route(name string) *Route {
	for _, r := range s.routes {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Upstream returns the named upstream or nil.
func (s *Snapshot) Upstream(name string) *Upstream { return s.upstreams[name] }

// Route is a compiled route.
type Route struct {
	Name string

	host         []byte // lower case, without "*."
	hostWildcard bool
	prefix       []byte
	methods      [][]byte

	// targets[0] is the stable upstream; a splitter adds the canary and
	// cohort targets after it, in the order of splitter.Targets.
	targets []*target

	split         *splitter.Splitter
	splitCounters [][]prometheus.Counter // [target][reason]
	splitPercent  prometheus.Gauge
	splitHeader   string
	mirror        *mirror
	observer      RequestObserver

	// synthetic marks test traffic (nil: none); syntheticCount counts it
	// in place of the user-facing counters; mirrorSynthetic is
	// shadow.include_synthetic.
	synthetic       *splitter.Marker
	syntheticCount  prometheus.Counter
	mirrorSynthetic bool
}

// RequestObserver receives every primary request's outcome of a route, on
// the request path: implementations must be cheap and must not block.
type RequestObserver interface {
	ObserveRequest(c splitter.Arm, status int, upstreamErr bool, latency time.Duration)
}

// SetCanaryPercent changes the route's canary share; the rollout controller
// calls it. Safe for concurrent use with requests.
func (r *Route) SetCanaryPercent(bp cfgtypes.BasisPoints) {
	if r.split == nil {
		return
	}
	r.split.SetPercent(bp)
	r.splitPercent.Set(bp.Percent())
}

// SetHalted sends every request of the route to stable (cohort rules
// included) while halted; a rollback sets it.
func (r *Route) SetHalted(halted bool) {
	if r.split != nil {
		r.split.SetHalted(halted)
	}
}

// CanaryPercent is the current canary share (0 without a split).
func (r *Route) CanaryPercent() cfgtypes.BasisPoints {
	if r.split == nil {
		return 0
	}
	return r.split.Percent()
}

// HasSplit reports whether the route splits traffic.
func (r *Route) HasSplit() bool { return r.split != nil }

// Targets names the route's upstreams: stable first, then canary and cohort
// targets.
func (r *Route) Targets() []string {
	names := make([]string, len(r.targets))
	for i, t := range r.targets {
		names[i] = t.up.Name
	}
	return names
}

// target is an upstream as seen from one route, with its metric children
// resolved once at build time so the request path does no label lookups.
type target struct {
	up       *Upstream
	requests *metrics.StatusCounters
	duration prometheus.Observer
	errors   [numReasons]prometheus.Counter
}

// buildDeps are what compiling a snapshot needs besides the config.
type buildDeps struct {
	metrics   *metrics.Metrics
	log       *zap.Logger
	comparer  Comparer
	observers func(route string) RequestObserver
	override  func(route string) (cfgtypes.BasisPoints, bool, bool)
}

// buildSnapshot compiles cfg. Upstreams whose settings did not change are
// taken over from prev (nil on first start) so a reload does not reconnect.
func buildSnapshot(cfg *config.Config, prev *Snapshot, d buildDeps) (s *Snapshot, err error) {
	s = &Snapshot{Config: cfg, upstreams: make(map[string]*Upstream, len(cfg.Upstreams)), edge: newEdgeSettings(cfg, d.log)}
	defer func() {
		if err != nil {
			s.closeMirrors()
			s.closeUnused(prev)
		}
	}()
	tp, tpErrs := splitter.ParseTrustedProxies(cfg.TrustedProxies)
	if len(tpErrs) > 0 {
		return nil, fmt.Errorf("trusted_proxies: %w", errors.Join(tpErrs...))
	}
	for _, uc := range cfg.Upstreams {
		sp := shadowPoolFor(cfg, uc.Name)
		if prev != nil {
			if old := prev.upstreams[uc.Name]; old != nil && old.sameConfig(uc, sp, int(cfg.Limits.BufferBody)) {
				s.upstreams[uc.Name] = old
				continue
			}
		}
		up, err := newUpstream(uc, sp, int(cfg.Limits.BufferBody), d.metrics, d.log)
		if err != nil {
			return s, fmt.Errorf("upstream %q: %w", uc.Name, err)
		}
		s.upstreams[uc.Name] = up
		if err := up.startProbes(); err != nil {
			return s, fmt.Errorf("upstream %q: %w", uc.Name, err)
		}
	}
	for _, rc := range cfg.Routes {
		r := &Route{Name: rc.Name}
		if h := strings.ToLower(rc.Match.Host); h != "" {
			r.hostWildcard = strings.HasPrefix(h, "*.")
			r.host = []byte(strings.TrimPrefix(h, "*"))
		}
		if rc.Match.PathPrefix != "" {
			r.prefix = []byte(rc.Match.PathPrefix)
		}
		for _, meth := range rc.Match.Methods {
			r.methods = append(r.methods, []byte(meth))
		}
		if err := s.compileRoute(r, rc, tp, d); err != nil {
			return s, fmt.Errorf("route %q: %w", rc.Name, err)
		}
		s.routes = append(s.routes, r)
	}
	return s, nil
}

func (s *Snapshot) compileRoute(r *Route, rc config.Route, tp *splitter.TrustedProxies, d buildDeps) error {
	m := d.metrics
	if rc.Split == nil {
		r.targets = append(r.targets, newTarget(m, rc.Name, s.upstreams[rc.Upstream]))
	} else {
		sp, err := splitter.Compile(*rc.Split, rc.Name, rc.Upstream, tp)
		if err != nil {
			return fmt.Errorf("split: %w", err)
		}
		r.split = sp
		r.splitHeader = sp.ResponseHeader()
		r.splitPercent = m.SplitPercent.WithLabelValues(rc.Name)
		if d.override != nil {
			if bp, halted, ok := d.override(rc.Name); ok {
				sp.SetPercent(bp)
				sp.SetHalted(halted)
			}
		}
		r.splitPercent.Set(sp.Percent().Percent())
		reasons := splitter.Reasons()
		for _, name := range sp.Targets() {
			up := s.upstreams[name]
			if up == nil {
				return fmt.Errorf("split target %q is not an upstream", name)
			}
			r.targets = append(r.targets, newTarget(m, rc.Name, up))
			counters := make([]prometheus.Counter, len(reasons))
			for _, reason := range reasons {
				counters[reason] = m.SplitDecisions.WithLabelValues(rc.Name, name, reason.String())
			}
			r.splitCounters = append(r.splitCounters, counters)
		}
	}
	if len(rc.Synthetic) > 0 {
		var key *splitter.KeySource
		if rc.Split != nil {
			k, err := splitter.ParseKeySource(rc.Split.Key)
			if err != nil {
				return fmt.Errorf("synthetic: %w", err)
			}
			key = &k
		}
		r.synthetic = splitter.NewMarker(rc.Synthetic, key, tp)
		r.syntheticCount = m.SyntheticRequests.WithLabelValues(rc.Name)
	}
	if rc.Shadow != nil {
		r.mirrorSynthetic = rc.Shadow.IncludeSynthetic
		splitKey := ""
		if rc.Split != nil {
			splitKey = rc.Split.Key
		}
		mi, err := newMirror(rc.Name, rc.Shadow, splitKey, s.upstreams[rc.Upstream], s, tp, m, d.log, d.comparer)
		if err != nil {
			return fmt.Errorf("shadow: %w", err)
		}
		r.mirror = mi
	}
	if d.observers != nil {
		r.observer = d.observers(rc.Name)
	}
	return nil
}

// waitMirrors waits until the mirror workers have ended (each finishes the
// shadow request it is sending, bounded by the shadow timeout) or ctx ends.
func (s *Snapshot) waitMirrors(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		for _, r := range s.routes {
			if r.mirror != nil {
				r.mirror.wait()
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// closeMirrors stops the mirror workers of every route; requests still
// running on this snapshot then skip mirroring.
func (s *Snapshot) closeMirrors() {
	for _, r := range s.routes {
		if r.mirror != nil {
			r.mirror.close()
		}
	}
}

func newTarget(m *metrics.Metrics, route string, up *Upstream) *target {
	t := &target{
		up:       up,
		requests: m.NewStatusCounters(route, up.Name),
		duration: m.RequestDuration.WithLabelValues(route, up.Name),
	}
	for r := ErrorReason(0); r < numReasons; r++ {
		t.errors[r] = m.UpstreamErrors.WithLabelValues(route, up.Name, r.String())
	}
	return t
}

// shadowPoolFor sizes an upstream's shadow pool from the routes that mirror
// to it (as a target or as the secondary): their workers summed, their
// largest max_body.
func shadowPoolFor(cfg *config.Config, upstream string) shadowPool {
	var sp shadowPool
	for _, r := range cfg.Routes {
		if r.Shadow == nil {
			continue
		}
		uses := r.Shadow.Compare != nil && r.Shadow.Compare.Secondary == upstream
		for _, t := range r.Shadow.Targets {
			uses = uses || t.Name == upstream
		}
		if uses {
			sp.conns += r.Shadow.Workers
			sp.maxBody = max(sp.maxBody, int64(r.Shadow.MaxBody))
		}
	}
	return sp
}

// closeUnused releases the pools of upstreams in s that next does not use.
func (s *Snapshot) closeUnused(next *Snapshot) {
	for name, up := range s.upstreams {
		if next == nil || next.upstreams[name] != up {
			up.close()
		}
	}
}

// match returns the first route matching the request, or nil.
func (s *Snapshot) match(ctx *fasthttp.RequestCtx) *Route {
	for _, r := range s.routes {
		if r.matches(ctx) {
			return r
		}
	}
	return nil
}

func (r *Route) matches(ctx *fasthttp.RequestCtx) bool {
	if len(r.methods) > 0 {
		method := ctx.Method()
		ok := false
		for _, m := range r.methods {
			if bytes.Equal(m, method) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.prefix != nil && !bytes.HasPrefix(ctx.URI().PathOriginal(), r.prefix) {
		return false
	}
	if r.host != nil && !hostMatches(ctx.Host(), r.host, r.hostWildcard) {
		return false
	}
	return true
}

// hostMatches compares the Host header without its port, ignoring case.
// With wildcard, want is ".example.com" and matches any subdomain.
func hostMatches(host, want []byte, wildcard bool) bool {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.Contains(host[i:], []byte("]")) {
		host = host[:i]
	}
	if wildcard {
		return len(host) > len(want) && bytes.EqualFold(host[len(host)-len(want):], want)
	}
	return bytes.EqualFold(host, want)
}
