package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pipelineConfig(route string) string {
	return `
upstreams:
  - {name: v1, url: "http://127.0.0.1:9001"}
  - {name: v2, url: "http://127.0.0.1:9002"}
routes:
` + route
}

// Every new key of the release pipeline has a validate message with its
// field path and a fix.
func TestPipelineValidation(t *testing.T) {
	cases := []struct{ name, route, want string }{
		{"synthetic empty rule", `
  - name: api
    upstream: v1
    synthetic: [{}]`, "routes[0].synthetic[0]: empty"},
		{"synthetic key_in without split", `
  - name: api
    upstream: v1
    synthetic: [{key_in: [smoke-test-prod]}]`, "routes[0].synthetic[0].key_in: the route has no split"},
		{"cutover without shadow", `
  - name: api
    upstream: v1
    cutover: {when: {match_rate: {at_least: 99%}}}`, "routes[0].cutover: a cutover swaps the route's upstream with its first shadow target"},
		{"cutover without rate", `
  - name: api
    upstream: v1
    shadow: {targets: [v2]}
    cutover: {when: {min_comparisons: 10}}`, "routes[0].cutover.when.match_rate.at_least: required"},
		{"smoke write", `
  - name: api
    upstream: v1
    split: {key: "header:X-User", to: v2}
    rollout:
      smoke: {checks: [{name: c, request: {method: DELETE, path: /x}}]}`, "routes[0].rollout.smoke.checks[0].request.method: DELETE changes data"},
		{"webhook type", `
  - name: api
    upstream: v1
    split: {key: "header:X-User", to: v2}
    rollout:
      webhooks: [{type: after, url: "http://127.0.0.1:1/"}]`, "routes[0].rollout.webhooks[0].type: unknown type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load("t.yaml", []byte(pipelineConfig(c.route)), func(string) (string, bool) { return "", false })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want one containing %q", err, c.want)
			}
		})
	}
}

func TestStateDirDefaultsStateFileAndWarnsForCutover(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Load("t.yaml", []byte(fmt.Sprintf("state_dir: %s\n", dir)+pipelineConfig(`
  - name: api
    upstream: v1
    split: {key: "header:X-User", to: v2}
    rollout: {}`)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Routes[0].Rollout.StateFile, filepath.Join(dir, "rollout-api.json"); got != want {
		t.Fatalf("state_file %q; want %q", got, want)
	}
	cfg, err = Load("t.yaml", []byte(pipelineConfig(`
  - name: api
    upstream: v1
    shadow: {targets: [v2]}
    cutover: {when: {match_rate: {at_least: 99%}}}`)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "state_dir is not set") {
		t.Fatalf("warnings %q", w)
	}
	if c := cfg.Routes[0].Cutover; c.When.MatchRate.For.D() != DefaultCutoverFor || c.When.MinComparisons != DefaultCutoverMinComparisons || c.RetireAfter.D() != DefaultRetireAfter {
		t.Fatalf("defaults %+v", c)
	}
}

// A rollout completed longer than stale_after ago is named with the exact
// change that finishes it; a recent one is not.
func TestStaleSplitWarning(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Load("t.yaml", []byte(fmt.Sprintf("state_dir: %s\n", dir)+pipelineConfig(`
  - name: api
    upstream: v1
    split: {key: "header:X-User", to: v2}
    rollout: {stale_after: 336h}`)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	completed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	state := fmt.Sprintf(`{"version": 1, "route": "api", "state": "completed", "step": 3, "percent_bp": 10000,
  "step_started_at": %q, "paused_ns": 0, "data_since": %q, "updated_at": %q, "completed_at": %q}`,
		completed.Format(time.RFC3339), completed.Format(time.RFC3339), completed.Format(time.RFC3339), completed.Format(time.RFC3339))
	if err := os.WriteFile(cfg.Routes[0].Rollout.StateFile, []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	if w := cfg.StaleSplitWarnings(completed.Add(13 * 24 * time.Hour)); len(w) != 0 {
		t.Fatalf("warned before stale_after: %v", w)
	}
	w := cfg.StaleSplitWarnings(completed.Add(20 * 24 * time.Hour))
	if len(w) != 1 || !strings.Contains(w[0], "completed 20d ago (stale_after 14d)") ||
		!strings.Contains(w[0], "routes[0].upstream: v2 and removing routes[0].split and routes[0].rollout") {
		t.Fatalf("warnings %v", w)
	}
}
