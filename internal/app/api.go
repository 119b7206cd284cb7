package app

import (
	"errors"
	"fmt"

	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/analysis"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// RouteView is one entry of GET /api/v1/routes.
type RouteView struct {
	Route      string                 `json:"route"`
	Upstream   string                 `json:"upstream"`
	Requests   float64                `json:"requests"`
	Split      *SplitView             `json:"split"`
	Shadow     *ShadowView            `json:"shadow"`
	Comparison *analysis.RouteSummary `json:"comparison"`
	Rollout    *rollout.RouteStatus   `json:"rollout"`
}

// SplitView is a route's traffic split.
type SplitView struct {
	Percent  float64            `json:"percent"`
	Canary   string             `json:"canary"`
	Targets  []string           `json:"targets"`
	Requests map[string]float64 `json:"requests_by_upstream"`
	// Decisions has one entry per splitter.Reason.
	Decisions map[string]float64 `json:"decisions_by_reason"`
}

// ShadowView is a route's mirroring counters.
type ShadowView struct {
	Targets []string `json:"targets"`
	// Outcomes has one entry per proxy.Outcome, Skipped one per
	// proxy.SkipReason.
	Outcomes map[string]float64 `json:"outcomes"`
	Skipped  map[string]float64 `json:"skipped"`
}

// routeViews answers GET /api/v1/routes from one snapshot: its config and
// its compiled routes belong together, whatever reloads run meanwhile.
func (a *App) routeViews() []RouteView {
	snap := a.proxy.Snapshot()
	cfg := snap.Config
	out := make([]RouteView, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		v := RouteView{Route: rc.Name, Upstream: rc.Upstream}
		r := snap.Route(rc.Name)
		if r == nil {
			out = append(out, v)
			continue
		}
		st := r.Stats()
		v.Requests = st.Requests
		if rc.Split != nil {
			v.Split = &SplitView{Percent: r.CanaryPercent().Percent(), Canary: rc.Split.To, Targets: r.Targets(),
				Requests: st.RequestsByUpstream, Decisions: st.Decisions}
		}
		if st.Shadow != nil {
			v.Shadow = &ShadowView{Targets: st.Shadow.Targets, Outcomes: st.Shadow.Outcomes, Skipped: st.Shadow.Skipped}
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
