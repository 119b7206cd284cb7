package app

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/evidence"
	"github.com/shadowproxy/shadowproxy/internal/gates"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// evidenceSamples is how many redacted diff samples an evidence record
// carries.
const evidenceSamples = 3

// newEvidenceStore keeps records under state_dir/evidence/<route>, else
// next to the route's rollout state_file, else in memory.
func newEvidenceStore(a *App) *evidence.Store {
	return &evidence.Store{
		Dir: func(route string) string {
			cfg := a.pendingOrCurrentConfig()
			if cfg.StateDir != "" {
				return filepath.Join(cfg.StateDir, "evidence", route)
			}
			for _, rc := range cfg.Routes {
				if rc.Name == route && rc.Rollout != nil && rc.Rollout.StateFile != "" {
					return filepath.Join(filepath.Dir(rc.Rollout.StateFile), "evidence", route)
				}
			}
			return ""
		},
	}
}

// pipelineOptions adds the release-pipeline collaborators (smoke gates,
// webhooks, evidence) to the rollout controller's options.
func (m *rolloutManager) pipelineOptions(o *rollout.Options) {
	a, met := m.app, m.app.metrics
	o.Gates = &gates.Runner{Logger: m.log.Named("gates"), Targets: a.smokeTargets,
		OnWebhook: func(route, typ string, err error) {
			res := "pass"
			if err != nil {
				res = "fail"
			}
			met.GateWebhooks.WithLabelValues(route, typ, res).Inc()
		}}
	o.OnSmoke = func(route string, rep rollout.SmokeReport) { countSmoke(met, route, rep) }
	o.Evidence = a.evidence
	o.EvidenceExtra = a.completeEvidence
	o.OnEvidence = func(route string, err error) {
		res := "written"
		if err != nil {
			res = "failed"
		}
		met.Evidence.WithLabelValues(route, res).Inc()
	}
}

// countSmoke counts each canary result: pass, fail, or environment when
// stable failed the same check.
func countSmoke(met *metrics.Metrics, route string, rep rollout.SmokeReport) {
	stableFailed := map[string]bool{}
	for _, r := range rep.Results {
		if r.Target == "stable" && !r.Passed {
			stableFailed[r.Check] = true
		}
	}
	for _, r := range rep.Results {
		if r.Target != "canary" {
			continue
		}
		res := "pass"
		switch {
		case r.Passed:
		case stableFailed[r.Check]:
			res = "environment"
		default:
			res = "fail"
		}
		met.SmokeChecks.WithLabelValues(route, r.Check, res).Inc()
	}
}

// smokeTargets gives the canary and stable upstreams of a route (first
// endpoint of each), each with a client that uses the upstream's TLS
// settings.
func (a *App) smokeTargets(route string) (canary, stable gates.Target, ok bool) {
	cfg := a.pendingOrCurrentConfig()
	for _, rc := range cfg.Routes {
		if rc.Name != route || rc.Split == nil {
			continue
		}
		c, s := cfg.Upstream(rc.Split.To), cfg.Upstream(rc.Upstream)
		if c == nil || s == nil || len(c.Endpoints()) == 0 || len(s.Endpoints()) == 0 {
			return canary, stable, false
		}
		return smokeTarget(c), smokeTarget(s), true
	}
	return canary, stable, false
}

// completeEvidence adds what the diff engine knows (top differing fields,
// redacted samples) and the config hash to a record.
func (a *App) completeEvidence(e *rollout.Evidence) {
	e.ConfigHash = configHash(a.Config())
	if s, err := a.analyzer.Summary(e.Route); err == nil {
		for _, t := range s.Targets {
			for _, f := range t.TopFields {
				e.TopFields = append(e.TopFields, rollout.FieldCount{Path: t.Target + ":" + f.Field, Count: f.Count})
			}
		}
	}
	if samples, err := a.analyzer.Diffs(e.Route, evidenceSamples, ""); err == nil {
		for _, s := range samples {
			if b, err := json.Marshal(s); err == nil {
				e.Samples = append(e.Samples, b)
			}
		}
	}
}

// configHash identifies the configuration in force in evidence records.
func configHash(cfg *config.Config) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// evidenceAPI answers GET /api/v1/rollouts/{route}/evidence[/{id}].
func (a *App) evidenceAPI(route, id string) (any, error) {
	if id == "" {
		return a.evidence.List(route)
	}
	b, err := a.evidence.Get(route, id)
	if errors.Is(err, evidence.ErrNotFound) {
		return nil, fmt.Errorf("route %q: %w: %w", route, err, admin.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// reapply puts the current configuration in force again (after a cutover
// changed how it is transformed), one reload at a time.
func (a *App) reapply() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.cutovers.mu.Lock()
	base := a.cutovers.base
	a.cutovers.mu.Unlock()
	return a.apply(base)
}

// exportCompleted sets shadowproxy_rollout_completed_timestamp_seconds for
// every completed rollout.
func (m *rolloutManager) exportCompleted() {
	for _, st := range m.controller.Status() {
		if st.CompletedAt != nil {
			m.app.metrics.RolloutCompletedTimestamp.WithLabelValues(st.Route).Set(float64(st.CompletedAt.Unix()))
		}
	}
}

// smokeTarget is an upstream's first endpoint with a client configured like
// the proxy's pools: the upstream's TLS settings, no redirects, no kept
// connections (checks are rare; a client per call must not leave idle
// connections behind).
func smokeTarget(u *config.Upstream) gates.Target {
	t := gates.Target{Name: u.Name, URL: u.Endpoints()[0]}
	tlsCfg, err := proxy.UpstreamTLS(*u)
	if err != nil {
		// Validation read the CA file already; if it has gone since, the
		// check fails with the default client and says why.
		return t
	}
	t.Client = &http.Client{
		Transport:     &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return t
}
