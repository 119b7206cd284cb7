// Package analysis turns mirrored exchanges into verdicts: it runs the diff
// engine on primary vs shadow (and primary vs secondary for noise), filters
// learnt noise, aggregates match rates, field counts, latencies and samples
// per route and target, and updates the metrics. It implements
// proxy.Comparer and runs only on the proxy's comparison goroutines.
//
// Its per-route state (noise learnt, samples, rates) lives outside the
// configuration snapshot, so a reload that leaves a route's compare section
// unchanged keeps everything the route has learnt.
package analysis

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// ErrUnknownRoute is returned for a route without shadowing.
var ErrUnknownRoute = fmt.Errorf("no shadowed route with that name")

// Analyzer holds the comparison state of every shadowed route.
type Analyzer struct {
	metrics *metrics.Metrics
	log     *zap.Logger
	now     func() time.Time

	mu     sync.RWMutex
	routes map[string]*routeState
}

type routeState struct {
	name    string
	spec    diff.Spec
	rules   *diff.Rules
	hasSec  bool
	targets map[string]*targetState
	order   []string
	// endpoints are created on first sight, at most max_endpoints, then
	// everything else lands in "other" (counted in endpointsOther).
	epMu           sync.RWMutex
	endpoints      map[string]*endpointState
	epOrder        []string
	endpointsOther atomic.Uint64
	otherCounter   prometheus.Counter
	// onComparison feeds the rollout controller's match_rate; set by
	// SetComparisonHook, read on every comparison.
	onComparison atomic.Pointer[func(match bool)]
	noiseGauge   prometheus.Gauge
}

// endpointState is what one endpoint of a route has learnt and counted:
// noise is learnt per endpoint so that a rare endpoint is not diluted by a
// busy one and endpoints do not contaminate each other.
type endpointState struct {
	name  string
	noise *diff.NoiseTracker
	stats map[string]*diff.Stats // by target
	// outcomes[target][result] is shadowproxy_comparisons_total.
	outcomes map[string]*[diff.NumOutcomes]prometheus.Counter
}

type targetState struct {
	stats  *diff.Stats
	mu     sync.Mutex // guards fields: two comparison goroutines per route
	fields map[string]prometheus.Counter
	iv     interval
}

// New creates an empty Analyzer; Configure gives it routes.
func New(m *metrics.Metrics, log *zap.Logger, now func() time.Time) *Analyzer {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Analyzer{metrics: m, log: log, now: now, routes: map[string]*routeState{}}
}

// Configure creates state for every shadowed route of cfg, keeps the state
// of routes whose compare section and targets did not change, and forgets
// routes that no longer shadow. It is Plan then Apply.
func (a *Analyzer) Configure(cfg *config.Config) error {
	p, err := a.Plan(cfg)
	if err != nil {
		return err
	}
	a.Apply(p)
	return nil
}

// Plan is a compiled analyzer configuration not yet in force, so that a
// reload can compile everything first and apply all of it or nothing.
type Plan struct {
	routes map[string]*routeState
	fresh  []*routeState // states Apply must give metric children
}

// Plan compiles cfg's compare sections without changing anything in force
// (no rules swapped, no metric series created).
func (a *Analyzer) Plan(cfg *config.Config) (*Plan, error) {
	plan := &Plan{}
	next := map[string]*routeState{}
	a.mu.RLock()
	prev := a.routes
	a.mu.RUnlock()
	for _, rc := range cfg.Routes {
		if rc.Shadow == nil {
			continue
		}
		spec := *rc.Shadow.Compare
		var targets []string
		for _, t := range rc.Shadow.Targets {
			targets = append(targets, t.Name)
		}
		if old := prev[rc.Name]; old != nil && reflect.DeepEqual(old.spec, withDefaults(spec)) && reflect.DeepEqual(old.order, targets) {
			next[rc.Name] = old
			continue
		}
		rules, err := diff.CompileRules(spec)
		if err != nil {
			return nil, fmt.Errorf("route %q: compare: %w", rc.Name, err)
		}
		rs := &routeState{
			name: rc.Name, spec: rules.Spec(), rules: rules,
			hasSec: spec.Secondary != "", targets: map[string]*targetState{}, order: targets,
			endpoints: map[string]*endpointState{},
		}
		for _, t := range targets {
			rs.targets[t] = &targetState{stats: diff.NewStats(rules, a.now), fields: map[string]prometheus.Counter{}}
		}
		next[rc.Name] = rs
		plan.fresh = append(plan.fresh, rs)
	}
	plan.routes = next
	return plan, nil
}

// Apply puts a plan in force. Plans are applied in the order they were
// made (the caller serializes reloads).
func (a *Analyzer) Apply(p *Plan) {
	for _, rs := range p.fresh {
		rs.noiseGauge = a.metrics.NoiseFields.WithLabelValues(rs.name)
		rs.otherCounter = a.metrics.EndpointsOther.WithLabelValues(rs.name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, rs := range p.fresh {
		if old := a.routes[rs.name]; old != nil {
			rs.onComparison.Store(old.onComparison.Load())
		}
	}
	a.routes = p.routes
}

// SetComparisonHook registers f to receive every primary/shadow verdict of
// route (match or mismatch; uncomparable ones are not reported).
func (a *Analyzer) SetComparisonHook(route string, f func(match bool)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rs := a.routes[route]; rs != nil {
		rs.onComparison.Store(&f)
	}
}

func withDefaults(s diff.Spec) diff.Spec {
	s.ApplyDefaults()
	return s
}

// endpoint returns the state of the named endpoint, creating it while
// fewer than max_endpoints exist; beyond, "other" stands for the rest.
func (a *Analyzer) endpoint(rs *routeState, name string) *endpointState {
	rs.epMu.RLock()
	ep := rs.endpoints[name]
	rs.epMu.RUnlock()
	if ep != nil {
		return ep
	}
	rs.epMu.Lock()
	defer rs.epMu.Unlock()
	if ep = rs.endpoints[name]; ep != nil {
		return ep
	}
	if len(rs.endpoints) >= rs.spec.MaxEndpoints {
		rs.endpointsOther.Add(1)
		rs.otherCounter.Inc()
		name = diff.OtherEndpoint
		if ep = rs.endpoints[name]; ep != nil {
			return ep
		}
	}
	ep = &endpointState{name: name, noise: diff.NewNoiseTracker(rs.rules),
		stats: map[string]*diff.Stats{}, outcomes: map[string]*[diff.NumOutcomes]prometheus.Counter{}}
	for _, t := range rs.order {
		ep.stats[t] = diff.NewEndpointStats(rs.rules, a.now)
		var cs [diff.NumOutcomes]prometheus.Counter
		for o := range cs {
			cs[o] = a.metrics.Comparisons.WithLabelValues(rs.name, t, name, diff.Outcome(o).String())
		}
		ep.outcomes[t] = &cs
	}
	rs.endpoints[name] = ep
	rs.epOrder = append(rs.epOrder, name)
	return ep
}

func (rs *routeState) endpointList() []*endpointState {
	rs.epMu.RLock()
	defer rs.epMu.RUnlock()
	out := make([]*endpointState, 0, len(rs.epOrder))
	for _, n := range rs.epOrder {
		out = append(out, rs.endpoints[n])
	}
	return out
}

func (a *Analyzer) route(name string) *routeState {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.routes[name]
}

// Compare implements proxy.Comparer.
func (a *Analyzer) Compare(ex *proxy.Exchange) { a.compare(ex, nil) }

// compare judges every shadow of ex and reports each verdict to seen (when
// not nil): the judgement suite reads verdicts per request through it.
func (a *Analyzer) compare(ex *proxy.Exchange, seen func(target string, res diff.Result)) {
	rs := a.route(ex.Route)
	if rs == nil {
		return
	}
	ep := a.endpoint(rs, rs.rules.Endpoint(ex.Method, ex.URI))
	// The secondary's answer to this very request cancels noise per
	// request; a secondary that was not sent (the canary served the
	// request) or failed leaves the learnt rates to decide.
	var obs *diff.Observation
	if sec := ex.Secondary; sec != nil && sec.Outcome == proxy.ShadowOK && ex.Primary.Err == nil {
		obs = diff.ObserveSecondary(&ex.Primary, &sec.Capture, rs.rules)
		ep.noise.Observe(obs)
		n := 0
		for _, e := range rs.endpointList() {
			n += e.noise.NoisyCount()
		}
		rs.noiseGauge.Set(float64(n))
	}
	for i := range ex.Shadows {
		sh := &ex.Shadows[i]
		ts := rs.targets[sh.Target]
		if ts == nil || sh.Outcome == proxy.ShadowSkipped {
			continue
		}
		j := ep.noise.Judge(sh.Target, &ex.Primary, &sh.Capture, rs.rules, obs)
		res := j.Result
		ev := diff.Event{
			Time: ex.Time, Method: ex.Method, URI: ex.URI, RequestID: ex.RequestID,
			PrimaryStatus: ex.Primary.Status, ShadowStatus: sh.Capture.Status,
			PrimaryLatency: ex.PrimaryLatency, ShadowLatency: sh.Latency, Result: res, RawFields: j.Raw,
		}
		labels := ts.stats.Record(ev)
		ep.stats[sh.Target].Record(ev)
		ep.outcomes[sh.Target][res.Outcome].Inc()
		ts.iv.add(res.Outcome, ex.PrimaryLatency, sh.Latency)
		ts.countFields(a.metrics, rs.name, sh.Target, labels)
		if hook := rs.onComparison.Load(); hook != nil && (res.Outcome == diff.Match || res.Outcome == diff.Mismatch) {
			(*hook)(res.Outcome == diff.Match)
		}
		if seen != nil {
			seen(sh.Target, res)
		}
	}
}

func (ts *targetState) countFields(m *metrics.Metrics, route, target string, labels []string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, l := range labels {
		c := ts.fields[l]
		if c == nil {
			// Labels are capped per route by Stats, so this map is bounded.
			c = m.DiffFields.WithLabelValues(route, target, l)
			ts.fields[l] = c
		}
		c.Inc()
	}
}

// TargetSummary is the comparison view of one shadow target.
type TargetSummary struct {
	Target string `json:"target"`
	diff.Summary
}

// RouteSummary is the comparison view of one route.
type RouteSummary struct {
	Route     string          `json:"route"`
	Secondary bool            `json:"secondary"`
	Targets   []TargetSummary `json:"targets"`
	// Noise lists what every endpoint learnt, each entry naming its
	// endpoint.
	Noise       []EndpointNoise `json:"noise_fields"`
	AlwaysNoise []string        `json:"always_noise"`
	NeverNoise  []string        `json:"never_noise"`
	// Endpoints are the route's endpoints in order of first sight.
	Endpoints []EndpointSummary `json:"endpoints"`
	// EndpointsOther counts comparisons of endpoints beyond max_endpoints,
	// kept together as "other".
	EndpointsOther uint64 `json:"endpoints_other"`
}

// EndpointNoise is a learnt noise key of one endpoint.
type EndpointNoise struct {
	Endpoint string `json:"endpoint"`
	diff.NoiseField
}

// EndpointSummary is the comparison view of one endpoint.
type EndpointSummary struct {
	Endpoint string `json:"endpoint"`
	// Learning: fewer than noise.min_observations secondary answers so
	// far; its comparisons count as "learning", not in match rates.
	Learning bool `json:"learning"`
	// Observations are the secondary answers learnt from (since start or
	// the last reset); Skipped taught nothing (failed or other status).
	Observations uint64            `json:"observations"`
	Skipped      uint64            `json:"observations_skipped"`
	Targets      []EndpointTarget  `json:"targets"`
	Noise        []diff.NoiseField `json:"noise_fields"`
}

// EndpointTarget is one shadow target's view of an endpoint, with its most
// recent mismatches.
type EndpointTarget struct {
	Target string `json:"target"`
	diff.Summary
	Samples []diff.Sample `json:"samples"`
}

// endpointSamplesShown is how many recent mismatches an endpoint summary
// carries per target (GET /api/v1/diffs has the rest).
const endpointSamplesShown = 3

// Summary describes route, or returns ErrUnknownRoute.
func (a *Analyzer) Summary(route string) (RouteSummary, error) {
	rs := a.route(route)
	if rs == nil {
		return RouteSummary{}, ErrUnknownRoute
	}
	out := RouteSummary{Route: route, Secondary: rs.hasSec, Targets: []TargetSummary{}, Noise: []EndpointNoise{},
		AlwaysNoise: append([]string{}, rs.spec.AlwaysNoise...), NeverNoise: append([]string{}, rs.spec.NeverNoise...),
		Endpoints: []EndpointSummary{}, EndpointsOther: rs.endpointsOther.Load()}
	for _, t := range rs.order {
		out.Targets = append(out.Targets, TargetSummary{Target: t, Summary: rs.targets[t].stats.Summary()})
	}
	for _, ep := range rs.endpointList() {
		es := EndpointSummary{Endpoint: ep.name, Learning: ep.noise.Learning(), Noise: ep.noise.Fields(), Targets: []EndpointTarget{}}
		es.Observations, es.Skipped = ep.noise.Observations()
		for _, f := range es.Noise {
			out.Noise = append(out.Noise, EndpointNoise{Endpoint: ep.name, NoiseField: f})
		}
		for _, t := range rs.order {
			st := ep.stats[t]
			es.Targets = append(es.Targets, EndpointTarget{Target: t, Summary: st.Summary(), Samples: st.Samples(endpointSamplesShown, "")})
		}
		out.Endpoints = append(out.Endpoints, es)
	}
	return out, nil
}

// ResetNoise forgets the noise every endpoint of route has learnt; the
// endpoints are learning again. It returns ErrUnknownRoute for a route
// without shadowing.
func (a *Analyzer) ResetNoise(route string) error {
	rs := a.route(route)
	if rs == nil {
		return ErrUnknownRoute
	}
	for _, ep := range rs.endpointList() {
		ep.noise.Reset()
	}
	rs.noiseGauge.Set(0)
	a.log.Info("noise reset", zap.String("route", route))
	return nil
}

// Sample is a stored mismatch with the target it came from.
type Sample struct {
	Route  string `json:"route"`
	Target string `json:"target"`
	diff.Sample
}

// Diffs returns up to limit stored mismatches of route, newest first,
// optionally only those touching field (a JSON Pointer, "*" allowed).
func (a *Analyzer) Diffs(route string, limit int, field string) ([]Sample, error) {
	rs := a.route(route)
	if rs == nil {
		return nil, ErrUnknownRoute
	}
	out := []Sample{}
	for _, t := range rs.order {
		for _, s := range rs.targets[t].stats.Samples(limit, field) {
			out = append(out, Sample{Route: route, Target: t, Sample: s})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Routes lists the shadowed routes.
func (a *Analyzer) Routes() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	names := make([]string, 0, len(a.routes))
	for n := range a.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func sortPoints(ps []Point) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Time.Before(ps[j].Time) })
}
