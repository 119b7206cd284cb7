package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The seed policy on a route of 50 req/s: plan prints the whole rollout
// and names the steps whose conditions can never reach min_samples.
func TestPlanCommandSeedPolicyAt50RPS(t *testing.T) {
	seed, err := os.ReadFile("../../internal/rollout/testdata/seed-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var policy strings.Builder
	for _, line := range strings.Split(string(seed), "\n") {
		if strings.HasPrefix(line, "state_file:") {
			line = "state_file: " + filepath.Join(t.TempDir(), "state.json")
		}
		policy.WriteString("      " + line + "\n")
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "seed.yaml", `
prometheus: {url: "http://127.0.0.1:9090"}
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: canary, url: "http://127.0.0.1:9002"}
routes:
  - name: checkout
    match: {path_prefix: /checkout/}
    upstream: stable
    split: {key: "header:X-User", to: canary, percent: 1}
    rollout:
      expected_rps: 50
`+policy.String())
	code, out, errOut := runCLI("plan", "-config", cfg)
	if code != 0 {
		t.Fatalf("plan: %d %s", code, errOut)
	}
	golden := filepath.Join("testdata", "plan-seed-50rps.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("plan output differs from %s (go test -run Plan -update to accept):\n%s", golden, out)
	}
	for _, s := range []string{
		"steps[0] (1%): min_samples 1000 in 5m needs >= 334 req/s on this route, expected_rps is 50",
		"steps[1]: 10%, hold 2h; needs >= 34 req/s on this route\n",
		"steps that expected_rps cannot carry (1):",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("plan lacks %q:\n%s", s, out)
		}
	}
	// validate carries the same news as a warning.
	if _, out, _ := runCLI("validate", "-config", cfg); !strings.Contains(out, "steps[0] (1%): min_samples 1000 in 5m needs >= 334 req/s") {
		t.Errorf("validate does not warn:\n%s", out)
	}
	if code, _, errOut := runCLI("plan", "-h"); code != 2 || !strings.Contains(errOut, "Usage: shadowproxy plan") {
		t.Errorf("plan -h: %d %q", code, errOut)
	}
}
