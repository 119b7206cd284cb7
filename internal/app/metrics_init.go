package app

import (
	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// initRouteMetrics creates every configured route's fixed-label series at
// zero, on start and after each reload, so that the documented metrics exist
// before their first event.
func initRouteMetrics(m *metrics.Metrics, cfg *config.Config) {
	for _, r := range cfg.Routes {
		rs := metrics.RouteSeries{Route: r.Name, Rollout: r.Rollout != nil}
		if r.Shadow != nil {
			for _, t := range r.Shadow.Targets {
				rs.Shadows = append(rs.Shadows, t.Name)
			}
		}
		m.InitRoute(rs)
	}
}
