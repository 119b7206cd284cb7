package app

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/analysis"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// RouteView is one entry of GET /api/v1/routes.
type RouteView struct {
	Route      string                 `json:"route"`
	Upstream   string                 `json:"upstream"`
	Requests   float64                `json:"requests"`
	Split      *SplitView             `json:"split"`
	Shadow     *ShadowView            `json:"shadow"`
	Comparison *analysis.RouteSummary `json:"comparison"`
	Rollout    any                    `json:"rollout"`
}

// SplitView is a route's traffic split.
type SplitView struct {
	Percent   float64            `json:"percent"`
	Canary    string             `json:"canary"`
	Targets   []string           `json:"targets"`
	Requests  map[string]float64 `json:"requests_by_upstream"`
	Decisions map[string]float64 `json:"decisions_by_reason"`
}

// ShadowView is a route's mirroring counters.
type ShadowView struct {
	Targets  []string           `json:"targets"`
	Outcomes map[string]float64 `json:"outcomes"`
	Skipped  map[string]float64 `json:"skipped"`
}

func (a *App) routeViews() []RouteView {
	cfg := a.Config()
	snap := a.proxy.Snapshot()
	m := a.metrics
	out := make([]RouteView, 0, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		v := RouteView{Route: rc.Name, Upstream: rc.Upstream,
			Requests: metrics.Sum(m.Requests, prometheus.Labels{"route": rc.Name})}
		if rc.Split != nil && i < len(snap.Routes()) {
			r := snap.Routes()[i]
			sv := &SplitView{Percent: r.CanaryPercent().Percent(), Canary: rc.Split.To, Targets: r.Targets(),
				Requests: map[string]float64{}, Decisions: map[string]float64{}}
			for _, t := range sv.Targets {
				sv.Requests[t] = metrics.Sum(m.Requests, prometheus.Labels{"route": rc.Name, "upstream": t})
			}
			for _, reason := range []string{"percent", "cohort", "missing_key", "forced", "halted"} {
				sv.Decisions[reason] = metrics.Sum(m.SplitDecisions, prometheus.Labels{"route": rc.Name, "reason": reason})
			}
			v.Split = sv
		}
		if rc.Shadow != nil {
			sv := &ShadowView{Outcomes: map[string]float64{}, Skipped: map[string]float64{}}
			for _, t := range rc.Shadow.Targets {
				sv.Targets = append(sv.Targets, t.Name)
			}
			for _, o := range []string{"ok", "dropped", "error", "timeout", "skipped"} {
				sv.Outcomes[o] = shadowOutcomes(m, rc, o)
			}
			for _, r := range []string{"method", "body_too_large", "compare_queue_full", proxy.SkipSecondaryCanaryServed} {
				sv.Skipped[r] = metrics.Sum(m.ShadowSkipped, prometheus.Labels{"route": rc.Name, "reason": r})
			}
			v.Shadow = sv
			if s, err := a.analyzer.Summary(rc.Name); err == nil {
				v.Comparison = &s
			}
		}
		if a.rollouts != nil {
			v.Rollout = a.rollouts.routeStatus(rc.Name)
		}
		out = append(out, v)
	}
	return out
}

// shadowOutcomes counts a route's shadow targets only (not the secondary).
func shadowOutcomes(m *metrics.Metrics, rc config.Route, outcome string) float64 {
	var n float64
	for _, t := range rc.Shadow.Targets {
		n += metrics.Sum(m.ShadowRequests, prometheus.Labels{"route": rc.Name, "target": t.Name, "outcome": outcome})
	}
	return n
}

func (a *App) diffs(route string, limit int, field string) (any, error) {
	if err := a.checkShadowRoute(route); err != nil {
		return nil, err
	}
	return a.analyzer.Diffs(route, limit, field)
}

func (a *App) history(route string) (any, error) {
	if err := a.checkShadowRoute(route); err != nil {
		return nil, err
	}
	return a.analyzer.History(route)
}

func (a *App) checkShadowRoute(route string) error {
	if route == "" {
		return fmt.Errorf("the route parameter is required (shadowed routes: %v)", a.analyzer.Routes())
	}
	if _, err := a.analyzer.Summary(route); errors.Is(err, analysis.ErrUnknownRoute) {
		return fmt.Errorf("route %q does not shadow (shadowed routes: %v): %w", route, a.analyzer.Routes(), admin.ErrNotFound)
	}
	return nil
}

func (a *App) noiseReset(route string) (any, error) {
	if err := a.checkShadowRoute(route); err != nil {
		return nil, err
	}
	if err := a.analyzer.ResetNoise(route); err != nil {
		return nil, err
	}
	return map[string]string{"result": "noise reset", "route": route}, nil
}
