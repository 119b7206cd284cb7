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
	noise   *diff.NoiseTracker
	hasSec  bool
	targets map[string]*targetState
	order   []string
	// onComparison feeds the rollout controller's match_rate; set by
	// SetComparisonHook, read on every comparison.
	onComparison atomic.Pointer[func(match bool)]
	noiseGauge   prometheus.Gauge
}

type targetState struct {
	stats    *diff.Stats
	outcomes [3]prometheus.Counter
	mu       sync.Mutex // guards fields: two comparison goroutines per route
	fields   map[string]prometheus.Counter
	iv       interval
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
		if old := prev[rc.Name]; old != nil && reflect.DeepEqual(old.spec, spec) && reflect.DeepEqual(old.order, targets) {
			next[rc.Name] = old
			continue
		}
		rules, err := diff.CompileRules(spec)
		if err != nil {
			return nil, fmt.Errorf("route %q: compare: %w", rc.Name, err)
		}
		rs := &routeState{
			name: rc.Name, spec: spec, rules: rules, noise: diff.NewNoiseTracker(rules),
			hasSec: spec.Secondary != "", targets: map[string]*targetState{}, order: targets,
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
		for t, ts := range rs.targets {
			for o := diff.Match; o <= diff.Uncomparable; o++ {
				ts.outcomes[o] = a.metrics.Comparisons.WithLabelValues(rs.name, t, o.String())
			}
		}
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

func (a *Analyzer) route(name string) *routeState {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.routes[name]
}

// Compare implements proxy.Comparer.
func (a *Analyzer) Compare(ex *proxy.Exchange) {
	rs := a.route(ex.Route)
	if rs == nil {
		return
	}
	if sec := ex.Secondary; sec != nil && sec.Outcome == proxy.OutcomeOK && ex.Primary.Err == nil {
		rs.noise.Observe(diff.Compare(&ex.Primary, &sec.Capture, rs.rules))
		rs.noiseGauge.Set(float64(rs.noise.NoisyCount()))
	}
	for i := range ex.Shadows {
		sh := &ex.Shadows[i]
		ts := rs.targets[sh.Target]
		if ts == nil || sh.Outcome == proxy.OutcomeSkipped {
			continue
		}
		res := rs.noise.Filter(diff.Compare(&ex.Primary, &sh.Capture, rs.rules))
		labels := ts.stats.Record(diff.Event{
			Time: ex.Time, Method: ex.Method, URI: ex.URI, RequestID: ex.RequestID,
			PrimaryStatus: ex.Primary.Status, ShadowStatus: sh.Capture.Status,
			PrimaryLatency: ex.PrimaryLatency, ShadowLatency: sh.Latency, Result: res,
		})
		ts.outcomes[res.Outcome].Inc()
		ts.iv.add(res.Outcome, ex.PrimaryLatency, sh.Latency)
		ts.countFields(a.metrics, rs.name, sh.Target, labels)
		if hook := rs.onComparison.Load(); hook != nil && res.Outcome != diff.Uncomparable {
			(*hook)(res.Outcome == diff.Match)
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
	diff.Snapshot
}

// RouteSummary is the comparison view of one route.
type RouteSummary struct {
	Route     string            `json:"route"`
	Secondary bool              `json:"secondary"`
	Targets   []TargetSummary   `json:"targets"`
	Noise     []diff.NoiseField `json:"noise_fields"`
}

// Summary describes route, or returns ErrUnknownRoute.
func (a *Analyzer) Summary(route string) (RouteSummary, error) {
	rs := a.route(route)
	if rs == nil {
		return RouteSummary{}, ErrUnknownRoute
	}
	out := RouteSummary{Route: route, Secondary: rs.hasSec, Noise: rs.noise.Snapshot(), Targets: []TargetSummary{}}
	for _, t := range rs.order {
		out.Targets = append(out.Targets, TargetSummary{Target: t, Snapshot: rs.targets[t].stats.Snapshot()})
	}
	return out, nil
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
