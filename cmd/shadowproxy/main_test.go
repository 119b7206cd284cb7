package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
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
  - {name: stable, url: "http://127.0.0.1:9001", pipeline_conns: 4}
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
		!strings.Contains(out, "shadow 100% of GET,POST to canary") || !strings.Contains(out, "rollout auto: 5% -> 100%") || !strings.Contains(out, "mirrors non-safe methods POST") ||
		!strings.Contains(out, "timeout 10s, max_conns 512, GET/HEAD/OPTIONS pipelined on 4 connections (depth 32; head-of-line wait at most 6.25ms)") {
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
		// Asking for the usage is not an error: exit 0, like Go's tools.
		if code, _, errOut := runCLI(cmd, "-h"); code != 0 || !strings.Contains(errOut, "Usage: shadowproxy "+cmd) {
			t.Errorf("%s -h: %d %q", cmd, code, errOut)
		}
	}
	// A bad flag is a usage error: 2, for every command.
	for _, cmd := range []string{"run", "validate", "demo", "diff"} {
		if code, _, _ := runCLI(cmd, "-bogus-flag"); code != 2 {
			t.Errorf("%s -bogus-flag: exit %d, want 2", cmd, code)
		}
	}
	if code, out, _ := runCLI("-h"); code != 0 || !strings.Contains(out, "shadowproxy diff") {
		t.Errorf("-h: %d", code)
	}
}

// TestExitCodeConvention: every command that reads a file says which command
// failed and exits 2 when it cannot read it, 1 when it read it and the
// answer is no.
func TestExitCodeConvention(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	for _, cmd := range []string{"run", "validate"} {
		code, _, errOut := runCLI(cmd, "-config", missing)
		if code != 2 || !strings.HasPrefix(errOut, "shadowproxy "+cmd+": read config: ") {
			t.Errorf("%s of a missing file: exit %d, %q; want 2 and the command named", cmd, code, errOut)
		}
	}
	bad := writeFile(t, dir, "bad.yaml", "upstreams:\n  - {name: stable, url: 127.0.0.1:9001}\nroutes:\n  - {name: api, upstream: stable}\n")
	for _, cmd := range []string{"run", "validate"} {
		code, _, errOut := runCLI(cmd, "-config", bad)
		if code != 1 || !strings.Contains(errOut, `bad.yaml:2: upstreams[0].url: invalid url "127.0.0.1:9001": the scheme is missing; write http://127.0.0.1:9001`) {
			t.Errorf("%s of an invalid file: exit %d, %q; want 1 and the error", cmd, code, errOut)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"stamped wins", "v1.4.0", vcs("vcs.revision", "0123456789abcdef"), true, "v1.4.0"},
		{"go install m@v", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true, "v1.2.3"},
		{"go build in a checkout", "", vcs("vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), true, "devel-0123456789ab"},
		{"uncommitted changes", "", vcs("vcs.revision", "0123456789abcdef0123", "vcs.modified", "true"), true, "devel-0123456789ab-dirty"},
		{"no vcs", "", vcs(), true, "dev"},
		{"no build info", "", nil, false, "dev"},
	} {
		if got := buildVersion(tc.stamped, tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
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

// TestValidateSummaryLayout: a multi-URL upstream shows its URLs, and a long
// name keeps every line's columns aligned.
func TestValidateSummaryLayout(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "multi.yaml", `
upstreams:
  - {name: a-very-long-upstream-name-indeed, urls: ["http://127.0.0.1:9001", "http://127.0.0.1:9002"], balance: least_conn}
  - {name: v2, url: "http://127.0.0.1:9003"}
routes:
  - {name: checkout-with-a-long-route-name, match: {path_prefix: /checkout/}, upstream: v2}
  - {name: default, upstream: a-very-long-upstream-name-indeed}
`)
	code, out, errOut := runCLI("validate", "-config", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "http://127.0.0.1:9001, http://127.0.0.1:9002 (least_conn)") {
		t.Errorf("multi-URL upstream without its URLs:\n%s", out)
	}
	col := map[int]bool{}
	for _, line := range strings.Split(out, "\n") {
		for _, name := range []string{"a-very-long-upstream-name-indeed ", "v2 ", "checkout-with-a-long-route-name ", "default "} {
			if strings.HasPrefix(line, "  "+name) {
				rest := strings.TrimLeft(line[2+len(name):], " ")
				col[len(line)-len(rest)] = true
			}
		}
	}
	if len(col) != 1 {
		t.Errorf("second column starts at %d different offsets, want 1:\n%s", len(col), out)
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
