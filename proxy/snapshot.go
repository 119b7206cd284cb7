package proxy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/metrics"
)

// Snapshot is the immutable runtime form of one configuration: compiled
// routes, upstream pools and pre-resolved metric children. A request loads
// one Snapshot and uses it from start to end; a reload builds a new one and
// swaps the pointer.
type Snapshot struct {
	Config    *config.Config
	routes    []*Route
	upstreams map[string]*Upstream
}

// Routes returns the compiled routes in match order.
func (s *Snapshot) Routes() []*Route { return s.routes }

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
	// cohort targets after it.
	targets []*target
}

// target is an upstream as seen from one route, with its metric children
// resolved once at build time so the request path does no label lookups.
type target struct {
	up       *Upstream
	requests *metrics.StatusCounters
	duration prometheus.Observer
	errors   [numReasons]prometheus.Counter
}

// buildSnapshot compiles cfg. Upstreams whose settings did not change are
// taken over from prev (nil on first start) so a reload does not reconnect.
func buildSnapshot(cfg *config.Config, prev *Snapshot, m *metrics.Metrics) (*Snapshot, error) {
	s := &Snapshot{Config: cfg, upstreams: make(map[string]*Upstream, len(cfg.Upstreams))}
	for _, uc := range cfg.Upstreams {
		if prev != nil {
			if old := prev.upstreams[uc.Name]; old != nil && old.sameConfig(uc) {
				s.upstreams[uc.Name] = old
				continue
			}
		}
		up, err := newUpstream(uc, shadowPoolSize(cfg, uc.Name))
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", uc.Name, err)
		}
		s.upstreams[uc.Name] = up
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
		r.targets = append(r.targets, newTarget(m, rc.Name, s.upstreams[rc.Upstream]))
		s.routes = append(s.routes, r)
	}
	return s, nil
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

// shadowPoolSize is the connection bound of an upstream's shadow pool: the
// sum of the worker bounds of the routes that mirror to it.
func shadowPoolSize(cfg *config.Config, upstream string) int {
	return 64
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
