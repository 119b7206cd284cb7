package config

import (
	"strings"
	"testing"
	"time"
)

const policiesYAML = `
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: canary, url: "http://127.0.0.1:9002"}
rollout_policies:
  careful:
    interval: 30s
    steps: [{percent: 1, hold: 1h}, {percent: 100}]
    rollback_when: [{metric: error_rate_5xx, above_baseline: 1.5x, for: 2m}]
routes:
  - name: api
    upstream: stable
    split: {key: "header:X-User", to: canary}
    rollout: {policy: careful, state_file: /tmp/api.json}
  - name: web
    upstream: stable
    split: {key: "header:X-User", to: canary}
    rollout:
      policy: careful
      state_file: /tmp/web.json
      interval: 5s
      rollback_when: []
`

// A named policy is defined once and used by many routes; each route's
// own fields override it, an empty list included.
func TestRolloutPoliciesWithOverrides(t *testing.T) {
	cfg, err := Load("p.yaml", []byte(policiesYAML), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	api, web := cfg.Routes[0].Rollout, cfg.Routes[1].Rollout
	if api.Interval.D() != 30*time.Second || len(api.Steps) != 2 || api.Steps[0].Hold.D() != time.Hour ||
		len(api.RollbackWhen) != 1 || api.StateFile != "/tmp/api.json" {
		t.Errorf("api: %+v", api)
	}
	if web.Interval.D() != 5*time.Second || len(web.Steps) != 2 || web.RollbackWhen == nil || len(web.RollbackWhen) != 0 {
		t.Errorf("web: %+v", web)
	}
	// The policy itself is untouched by the routes' overrides and defaults.
	if p := cfg.RolloutPolicies["careful"]; p.Interval.D() != 30*time.Second || p.StateFile != "" || p.MinSamples != 0 {
		t.Errorf("policy changed: %+v", p)
	}
}

func TestRolloutPolicyErrors(t *testing.T) {
	bad := strings.Replace(policiesYAML, "rollout: {policy: careful, state_file: /tmp/api.json}", "rollout: {policy: carefull, state_file: /tmp/web.json}", 1)
	bad = strings.Replace(bad, "    interval: 30s\n", "    interval: 30s\n    policy: other\n    alpha: 0.7\n", 1)
	_, err := Load("p.yaml", []byte(bad), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`routes[0].rollout.policy: unknown rollout policy "carefull" (did you mean "careful"?)`,
		`rollout_policies.careful.policy: a policy cannot use another policy`,
		`rollout_policies.careful.alpha: must be between 0 and 0.5`,
		`routes[1].rollout.state_file: /tmp/web.json is also the state_file of routes[0]`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}
