package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDiffCommand(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.json", `{"id":1,"price":10,"ts":"2024","items":[{"id":"x","n":1}]}`)
	b := writeFile(t, dir, "b.json", `{"price":10.0,"id":1,"ts":"2025","items":[{"id":"y","n":1}]}`)
	code, out, _ := runCLI("diff", a, b)
	if code != 1 || !strings.Contains(out, "/ts") || !strings.Contains(out, "/items/0/id") || strings.Contains(out, "/price") {
		t.Errorf("diff: code %d out %q", code, out)
	}
	code, out, _ = runCLI("diff", "-ignore", "/ts", "-ignore", "/items/*/id", a, b)
	if code != 0 {
		t.Errorf("with ignores: code %d out %q", code, out)
	}
	if code, _, errOut := runCLI("diff", "-ignore", "no-slash", a, b); code != 2 || errOut == "" {
		t.Errorf("bad pattern: code %d", code)
	}
	if code, _, _ := runCLI("diff", a); code != 2 {
		t.Errorf("one file: code %d", code)
	}
	if code, _, _ := runCLI("diff", a, filepath.Join(dir, "missing.json")); code != 2 {
		t.Errorf("missing file: code %d", code)
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", `
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: canary, url: "http://127.0.0.1:9002"}
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: stable
    split: {key: "header:X-User", to: canary, percent: 5}
    shadow: {targets: [canary], methods: [GET, POST]}
    rollout: {steps: [{percent: 5, hold: 1m}, {percent: 100}]}
`)
	code, out, _ := runCLI("validate", "-config", good)
	if code != 0 || !strings.Contains(out, "valid") || !strings.Contains(out, "split 5% of header:X-User to canary") ||
		!strings.Contains(out, "shadow 100% of GET,POST to canary") || !strings.Contains(out, "rollout auto: 5% -> 100%") || !strings.Contains(out, "mirrors non-safe methods POST") {
		t.Errorf("code %d out:\n%s", code, out)
	}
	bad := writeFile(t, dir, "bad.yaml", "upstreams:\n  - {name: stable, url: \"http://127.0.0.1:9001\"}\nroutes:\n  - {name: api, upstream: stabel}\n  - {name: b, upstream: x, bogus: 1}\n")
	code, _, errOut := runCLI("validate", "-config", bad)
	if code != 1 || !strings.Contains(errOut, `bad.yaml:4: routes[0].upstream: unknown upstream "stabel" (did you mean "stable"?)`) ||
		!strings.Contains(errOut, "bad.yaml:5: routes[1].bogus: unknown field") || !strings.Contains(errOut, "3 error(s)") {
		t.Errorf("code %d err:\n%s", code, errOut)
	}
}

func TestUsageAndVersion(t *testing.T) {
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "shadowproxy ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := runCLI("bogus"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("bogus: %d %q", code, errOut)
	}
	for _, cmd := range []string{"run", "validate", "demo", "diff"} {
		if code, _, errOut := runCLI(cmd, "-h"); code != 2 || !strings.Contains(errOut, "Usage: shadowproxy "+cmd) {
			t.Errorf("%s -h: %d %q", cmd, code, errOut)
		}
	}
	if code, out, _ := runCLI("-h"); code != 0 || !strings.Contains(out, "shadowproxy diff") {
		t.Errorf("-h: %d", code)
	}
}

// TestDiffCommandDetectsJSONLikeTheProxy: top-level scalars and a UTF-8 BOM
// are JSON to the proxy when declared; the CLI compares files the same way.
func TestDiffCommandDetectsJSONLikeTheProxy(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "1.0", 0},
		{"\uFEFF{\"a\":1}", `{"a":1.0}`, 0},
		{`"x"`, `"\u0078"`, 0},
		{"1", "2", 1},
		{"hello", "hello", 0},
		{"hello", "world", 1},
	}
	for i, tt := range tests {
		a := writeFile(t, dir, fmt.Sprintf("a%d", i), tt.a)
		b := writeFile(t, dir, fmt.Sprintf("b%d", i), tt.b)
		if code, out, errOut := runCLI("diff", a, b); code != tt.want {
			t.Errorf("%q vs %q: exit %d, want %d\n%s%s", tt.a, tt.b, code, tt.want, out, errOut)
		}
	}
}

// TestValidateSaysSecondaryIsSplitAware: with a split and a secondary, the
// summary says plainly that canary-served requests are not sent to it.
func TestValidateSaysSecondaryIsSplitAware(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.yaml", `
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: twin, url: "http://127.0.0.1:9003"}
  - {name: canary, url: "http://127.0.0.1:9002"}
routes:
  - name: api
    upstream: stable
    split: {key: "header:X-User", to: canary, percent: 10}
    shadow: {targets: [canary], compare: {secondary: twin, endpoints: ["GET /users/{id}"]}}
`)
	code, out, errOut := runCLI("validate", "-config", cfg)
	if code != 0 || !strings.Contains(out, "noise learnt from secondary twin on requests stable served only (the canary's share, now 10%, is skipped)") {
		t.Errorf("code %d out:\n%s%s", code, out, errOut)
	}
	bad := writeFile(t, dir, "bad.yaml", `
upstreams: [{name: stable, url: "http://127.0.0.1:9001"}, {name: c, url: "http://127.0.0.1:9002"}]
routes:
  - name: api
    upstream: stable
    shadow: {targets: [c], compare: {endpoints: ["users/{id}"], always_noise: [status]}}
`)
	code, _, errOut = runCLI("validate", "-config", bad)
	if code != 1 || !strings.Contains(errOut, "routes[0].shadow.compare.endpoints[0]: invalid endpoint") ||
		!strings.Contains(errOut, `routes[0].shadow.compare.always_noise[0]: "status" is never noise`) {
		t.Errorf("code %d err:\n%s", code, errOut)
	}
}
