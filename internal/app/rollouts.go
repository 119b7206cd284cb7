package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/healthcheck"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/notify"
	"github.com/shadowproxy/shadowproxy/internal/promsource"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/proxy"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// rolloutManager connects the rollout controller to the proxy: one
// recorder per rollout route (kept across reloads so history survives),
// route handles that always address the route in the snapshot in force,
// webhooks, canary health probes and the rollout metrics.
type rolloutManager struct {
	app        *App
	log        *zap.Logger
	controller *rollout.Controller
	notifier   *notify.Dispatcher

	// external is the Prometheus source in force (nil: none configured);
	// a reload swaps it.
	external atomic.Pointer[promsource.Source]

	// fleet is set in fleet mode (see fleet.go).
	fleet *fleetManager

	mu        sync.Mutex
	recorders map[string]*rollout.Recorder
	windows   map[string]time.Duration
	managed   map[string]bool
	// pending is the plan of the reload being applied, if any.
	pending *rolloutPlan
}

func newRolloutManager(a *App) *rolloutManager {
	m := &rolloutManager{app: a, log: a.log, recorders: map[string]*rollout.Recorder{},
		windows: map[string]time.Duration{}, managed: map[string]bool{}}
	m.notifier = notify.New(notify.Options{Logger: a.log.Named("notify")})
	registerNotifyMetrics(a.metrics, m.notifier)
	met := a.metrics
	ropts := rollout.Options{
		Logger:   m.log,
		Notifier: rollout.NotifierFunc(m.notify),
		OnTransition: func(route, action string, step int, bp cfgtypes.BasisPoints) {
			if m.fleet != nil && m.fleet.coordinated(route) {
				return // counted once per fleet transition, in fleetManager.onState
			}
			met.RolloutPercent.WithLabelValues(route).Set(bp.Percent())
			met.RolloutStep.WithLabelValues(route).Set(float64(step))
			met.RolloutTransitions.WithLabelValues(route, action).Inc()
		},
		HealthProbe: m.healthProbe,
		External:    externalSource{m},
		StateStore:  m.stateStore,
	}
	m.pipelineOptions(&ropts)
	m.controller = rollout.NewController(ropts)
	return m
}

// externalSource forwards to the Prometheus source in force.
type externalSource struct{ m *rolloutManager }

func (e externalSource) Value(ctx context.Context, metric string, c splitter.Arm, window time.Duration) (float64, error) {
	src := e.m.external.Load()
	if src == nil {
		return 0, fmt.Errorf("external metric %q: no prometheus.url is configured", metric)
	}
	return src.Value(ctx, metric, c, window)
}

func registerNotifyMetrics(m *metrics.Metrics, d *notify.Dispatcher) {
	m.RegisterNotifications(func() metrics.NotifyStats {
		s := d.Stats()
		return metrics.NotifyStats{Delivered: s.Delivered, Failed: s.Failed, Dropped: s.Dropped}
	})
}

// rolloutPlan is the rollout side of a configuration not yet in force: the
// Prometheus source and the recorders it needs.
type rolloutPlan struct {
	source    *promsource.Source // nil: no prometheus.url
	recorders map[string]*rollout.Recorder
	windows   map[string]time.Duration
}

// plan builds what cfg needs (a new recorder where a rollout route has none
// or needs a longer window) without changing anything in force. Until
// commit or abort, observer() hands the proxy's snapshot build the planned
// recorders.
func (m *rolloutManager) plan(cfg *config.Config) (*rolloutPlan, error) {
	p := &rolloutPlan{recorders: map[string]*rollout.Recorder{}, windows: map[string]time.Duration{}}
	if cfg.Prometheus.URL != "" {
		src, err := promsource.New(cfg.Prometheus.URL, cfg.Prometheus.Timeout.D())
		if err != nil {
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		p.source = src
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rc := range cfg.Routes {
		if rc.Rollout == nil {
			continue
		}
		w := rc.Rollout.LongestWindow()
		if old := m.recorders[rc.Name]; old != nil && m.windows[rc.Name] >= w {
			continue
		}
		p.recorders[rc.Name] = rollout.NewRecorder(time.Now, rc.Rollout.RecorderOptions()...)
		p.windows[rc.Name] = w
	}
	m.pending = p
	return p, nil
}

// commit puts a plan in force.
func (m *rolloutManager) commit(p *rolloutPlan) {
	m.external.Store(p.source)
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, rec := range p.recorders {
		m.recorders[name] = rec
		m.windows[name] = p.windows[name]
	}
	m.pending = nil
}

// abort forgets a plan.
func (m *rolloutManager) abort() {
	m.mu.Lock()
	m.pending = nil
	m.mu.Unlock()
}

// observer is proxy.Options.Observers.
func (m *rolloutManager) observer(route string) proxy.RequestObserver {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.recorders[route]
	if m.pending != nil && m.pending.recorders[route] != nil {
		rec = m.pending.recorders[route]
	}
	if ro := m.rolloutOf(route); rec != nil && ro != nil {
		return recorderObserver{rec: rec, includeCohort: ro.IncludesCohort()}
	}
	return nil
}

// rolloutOf returns the route's rollout section in the config being
// applied (or in force), or nil.
func (m *rolloutManager) rolloutOf(route string) *rollout.Spec {
	for _, rc := range m.app.pendingOrCurrentConfig().Routes {
		if rc.Name == route {
			return rc.Rollout
		}
	}
	return nil
}

// splitOverride is proxy.Options.SplitOverride: a snapshot being built
// starts from the controller's share, never from the config's percentage,
// so a reload cannot briefly undo a rollback or a promotion.
func (m *rolloutManager) splitOverride(route string) (cfgtypes.BasisPoints, bool, bool) {
	if m.fleet != nil {
		if bp, halted, ok := m.fleet.override(route); ok {
			return bp, halted, true
		}
	}
	st, ok := m.controller.RouteStatus(route)
	if !ok || st.Mode == rollout.ModeDryRun {
		return 0, false, false
	}
	return st.PercentBP, st.State == rollout.StateRolledBack, true
}

// sync registers every rollout route of cfg with the controller (a second
// AddRoute of a name is a reload that keeps its step and hold clock) and
// removes routes that lost their rollout.
func (m *rolloutManager) sync(cfg *config.Config) error {
	want := map[string]bool{}
	var errs []error
	for _, rc := range cfg.Routes {
		if rc.Rollout == nil {
			continue
		}
		want[rc.Name] = true
		m.mu.Lock()
		rec := m.recorders[rc.Name]
		m.mu.Unlock()
		if err := m.addRoute(rc.Name, *rc.Rollout, rec); err != nil {
			errs = append(errs, fmt.Errorf("route %q: rollout: %w", rc.Name, err))
			continue
		}
		m.app.analyzer.SetComparisonHook(rc.Name, rec.ObserveComparison)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.managed {
		if !want[name] {
			m.controller.RemoveRoute(name)
			delete(m.recorders, name)
			delete(m.windows, name)
		}
	}
	m.managed = want
	return errors.Join(errs...)
}

// healthProbe starts active probes of every endpoint of the route's canary
// upstream, wired exactly as the upstream's own health probes (TLS settings
// included); the rollout sees the worst endpoint's consecutive failures.
func (m *rolloutManager) healthProbe(route string, hc rollout.HealthCheck) (rollout.HealthProber, error) {
	cfg := m.app.pendingOrCurrentConfig()
	var canary *config.Upstream
	for _, rc := range cfg.Routes {
		if rc.Name == route && rc.Split != nil {
			canary = cfg.Upstream(rc.Split.To)
		}
	}
	if canary == nil || len(canary.Endpoints()) == 0 {
		return nil, fmt.Errorf("route %q has no canary upstream to probe", route)
	}
	g, err := proxy.ProbeUpstream(*canary, hc, healthcheck.Config{Logger: m.log}, nil)
	if err != nil {
		return nil, fmt.Errorf("route %q: canary %q: %w", route, canary.Name, err)
	}
	g.Start()
	return g, nil
}

func (m *rolloutManager) routeStatus(route string) *rollout.RouteStatus {
	if st, ok := m.controller.RouteStatus(route); ok {
		return &st
	}
	return nil
}

func (m *rolloutManager) status() any { return m.controller.Status() }

func (m *rolloutManager) command(route, action string) (any, error) {
	if m.fleet != nil {
		if _, ok := m.fleet.dec.Policies()[route]; ok {
			return m.fleet.command(route, action)
		}
	}
	err := m.controller.Command(route, action)
	switch {
	case errors.Is(err, rollout.ErrUnknownRoute):
		return nil, fmt.Errorf("%w: %w", err, admin.ErrNotFound)
	case errors.Is(err, rollout.ErrInvalidTransition):
		return nil, fmt.Errorf("%w: %w", err, admin.ErrConflict)
	case err != nil:
		return nil, err
	}
	st, _ := m.controller.RouteStatus(route)
	return st, nil
}

func (m *rolloutManager) close(ctx context.Context) {
	m.controller.Close()
	m.notifier.Close(ctx)
}

// routeHandle addresses a route by name in whatever snapshot is in force,
// so a controller decision made after a reload lands on the new route.
type routeHandle struct {
	app  *App
	name string
}

func (h routeHandle) SetCanaryPercent(bp cfgtypes.BasisPoints) {
	if r := h.app.proxy.Snapshot().Route(h.name); r != nil {
		r.SetCanaryPercent(bp)
	}
}

func (h routeHandle) SetHalted(halted bool) {
	if r := h.app.proxy.Snapshot().Route(h.name); r != nil {
		r.SetHalted(halted)
	}
}

// recorderObserver feeds the proxy's per-request outcomes to a recorder.
// With includeCohort (analysis: {include: [percent, cohort]}) traffic
// routed by a cohort rule is analysed on the side it went to.
type recorderObserver struct {
	rec           *rollout.Recorder
	includeCohort bool
}

func (o recorderObserver) ObserveRequest(c splitter.Arm, status int, upstreamErr bool, d time.Duration) {
	o.rec.ObserveRequest(o.cohort(c), status, upstreamErr, d)
}

func (o recorderObserver) cohort(c splitter.Arm) splitter.Arm {
	switch c {
	case splitter.ArmCanary:
		return splitter.ArmCanary
	case splitter.ArmExcluded:
		if o.includeCohort {
			return splitter.ArmControl
		}
		return splitter.ArmExcluded
	case splitter.ArmExcludedCanary:
		if o.includeCohort {
			return splitter.ArmCanary
		}
		return splitter.ArmExcluded
	}
	return splitter.ArmControl
}
