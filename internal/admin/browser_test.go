//go:build browser

// The browser test drives the dashboard in Debian's headless Chromium against
// a whole in-process shadowproxy (demo backends, proxy, admin listener) on
// loopback, as a person would use it: it reads the match rate, finds a diff
// sample naming a field that really differs, filters the samples by clicking
// a top field, and pauses the rollout through the token form.
//
// Run it with .ci/browser.sh, which installs Chromium when it is missing:
//
//	go test -tags browser -count=1 -run Browser ./admin/
//
// Screenshots go to $SHADOWPROXY_ARTIFACTS (default: a shadowproxy-artifacts
// folder in the system temporary directory).
package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/demo"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/internal/testkit/apptest"
)

const chromiumPath = "/usr/bin/chromium"

// browserToken protects the demo's mutating endpoints in this test, so that
// the rollout buttons have to go through the page's token form.
const browserToken = "browser-test-token"

func TestBrowserDashboard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	adminURL, proxyURL, cfgText := startDemo(t)
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var trafficDone sync.WaitGroup
	trafficDone.Add(1)
	go func() {
		defer trafficDone.Done()
		// Bounded: at most 4000 requests, and it stops with the test.
		demo.Traffic(trafficCtx, proxyURL, 100, 4000)
	}()
	defer func() { stopTraffic(); trafficDone.Wait() }()

	// The app must mount the dashboard on its admin listener.
	resp, err := http.Get(adminURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("GET / on the admin listener: %s %q; the app must set admin.Options.Dashboard to admin.Dashboard()", resp.Status, ct)
	}

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("loading the dashboard", chromedp.Navigate(adminURL+"/#api"))

	// The match rate of v2 is a percentage, not the "—" of no data.
	rate := b.poll("a match rate", `(() => {
		const v = document.querySelector('.match-rate[data-target="v2"] .value');
		return v && /^\d+(\.\d+)?%$/.test(v.textContent) ? [v.textContent] : null;
	})()`)
	t.Logf("match rate shown: %s", rate[0])

	// v2 really differs from v1 in three places (demo/backends.go): pro
	// users' plan is renamed, some users get a new "tier", and the second
	// product's price changed. A stored sample must show one of them with
	// both sides' values.
	realDiffs := map[string][3]string{
		"/plan":          {"changed", `"pro"`, `"professional"`},
		"/tier":          {"added", "absent", "1"},
		"/items/1/price": {"changed", "25.5", "24.99"},
	}
	row := b.poll("a diff sample naming a field v2 really changed", `(() => {
		for (const tr of document.querySelectorAll('#diffs .difftable tbody tr')) {
			const c = [...tr.children].map(td => td.textContent);
			if (['/plan', '/tier', '/items/1/price'].includes(c[0])) {
				return c.concat([tr.closest('.sample').querySelector('.request').textContent]);
			}
		}
		return null;
	})()`)
	if want := realDiffs[row[0]]; row[1] != want[0] || row[2] != want[1] || row[3] != want[2] || !strings.HasPrefix(row[4], "GET /api/") {
		t.Errorf("sample row %q, want %s %v on a GET /api/ request", row, row[0], want)
	}
	t.Logf("diff sample shown: %s: %s -> %s (%s)", row[0], row[2], row[3], row[4])
	// The match-rate chart draws a line once a few points exist.
	b.poll("the match rate chart", `(() => {
		const p = document.querySelector('#match-chart path.series');
		return p && (p.getAttribute('d').match(/L/g) || []).length >= 3 ? ['ok'] : null;
	})()`)
	b.shot("dashboard-api.png")

	// Clicking a top field filters the samples to that field: v2 changed the
	// second product's price from 25.5 to 24.99.
	b.poll("the /items/*/price top field", `[...document.querySelectorAll('#top-fields .field-filter')].some(b => b.textContent === '/items/*/price') ? ['ok'] : null`)
	b.do("clicking the /items/*/price field", chromedp.Click(chromedp.JSPath(
		`[...document.querySelectorAll('#top-fields .field-filter')].filter(b => b.textContent === '/items/*/price')`)))
	filtered := b.poll("samples filtered by /items/*/price", `(() => {
		if (document.getElementById('field').value !== '/items/*/price') return null;
		const samples = [...document.querySelectorAll('#diffs .sample')];
		if (!samples.length) return null;
		const out = [];
		for (const s of samples) {
			const row = s.querySelector('tr.selected');
			if (!row) return null; // not re-rendered yet, or a sample without the field
			out.push([...row.children].map(c => c.textContent).join(' | '));
		}
		return out;
	})()`)
	for _, row := range filtered {
		if row != "/items/1/price | changed | 25.5 | 24.99" {
			t.Errorf("filtered sample row = %q, want /items/1/price | changed | 25.5 | 24.99", row)
		}
	}

	// The canary split of /checkout/: its share and the requests each
	// upstream served, as the API reports them.
	b.do("opening route checkout", chromedp.Click(chromedp.CSS(`nav a[href="#checkout"]`)))
	split := b.poll("the checkout split", `(() => {
		const p = document.getElementById('split-percent');
		const rows = [...document.querySelectorAll('#split tbody tr')].map(tr => tr.children[0].textContent + '=' + tr.children[1].textContent);
		return p && rows.length === 2 ? [p.textContent].concat(rows) : null;
	})()`)
	// The share itself moves when a rollout promotes; its form does not.
	if !regexp.MustCompile(`^\d+(\.\d+)?%$`).MatchString(split[0]) || !reflect.DeepEqual(split[1:], []string{"v1=stable", "v2=canary"}) {
		t.Errorf("checkout split shows %q, want a percentage, v1=stable and v2=canary", split)
	}

	// The rollout: pause it from the page. The token is required, so the
	// page must ask for it, keep it and retry.
	wantRollout := strings.Contains(cfgText, "\n    rollout:")
	rollouts := getRollouts(t, adminURL)
	if wantRollout && len(rollouts) == 0 {
		t.Fatal("the demo configuration has a rollout but GET /api/v1/rollouts lists none")
	}
	if len(rollouts) > 0 {
		route := rollouts[0].Route
		b.do("opening route "+route, chromedp.Click(chromedp.CSS(`nav a[href="#`+route+`"]`)))
		b.poll("the rollout to progress", `(() => {
			const s = document.getElementById('rollout-state');
			const b = document.getElementById('btn-pause');
			return s && s.textContent === 'progressing' && !b.disabled ? ['ok'] : null;
		})()`)
		b.do("clicking pause", chromedp.Click(chromedp.ID("btn-pause")))
		b.poll("the token form", `!document.getElementById('auth').hidden ? ['ok'] : null`)
		b.do("entering the token",
			chromedp.SendKeys(chromedp.ID("token"), browserToken),
			chromedp.Click(chromedp.CSS(`#auth button[type="submit"]`)))
		b.poll("the paused state", `(() => {
			const s = document.getElementById('rollout-state');
			return s && s.textContent === 'paused' ? ['ok'] : null;
		})()`)
		var state string
		for _, r := range getRollouts(t, adminURL) {
			if r.Route == route {
				state = r.State
			}
		}
		if state != "paused" {
			t.Errorf("GET /api/v1/rollouts: route %s is %q after clicking pause, want paused", route, state)
		}
		stored, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`sessionStorage.getItem('shadowproxy.admin-token') || ''`))
		if err != nil || stored != browserToken {
			t.Errorf("token kept in sessionStorage = %q, %v", stored, err)
		}
		b.shot("dashboard-rollout.png")
	}
	b.checkConsole()
}

// hostile is what a malicious upstream could put in field paths and values.
const hostile = `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`

// TestBrowserEscapesHostileData serves the dashboard with API answers whose
// route, field paths and values are markup: the page must show them as text
// and run none of it.
func TestBrowserEscapesHostileData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rate := 0.5
	routes := []map[string]any{{
		"route": "api", "upstream": "v1", "requests": 10, "split": nil, "rollout": nil,
		"shadow": map[string]any{"targets": []string{hostile}, "outcomes": map[string]float64{"ok": 10}, "skipped": map[string]float64{}},
		"comparison": map[string]any{"route": "api", "secondary": true,
			"targets": []map[string]any{{
				"target": hostile, "match_rate_1m": rate, "match_rate_5m": rate, "match_rate_total": rate,
				"counts": map[string]int{"match": 5, "mismatch": 5}, "counts_1m": map[string]int{"match": 5, "mismatch": 5},
				"top_fields": []map[string]any{{"field": "/" + hostile, "count": 5}},
				"latency":    map[string]any{"primary": map[string]any{"count": 1, "p50": 0.001, "p95": 0.002, "p99": 0.003}, "shadow": map[string]any{"count": 1, "p50": 0.001, "p95": 0.002, "p99": 0.003}},
			}},
			"noise_fields": []map[string]any{{"path": "/" + hostile, "disagreements": 5, "observations": 5, "rate": 1, "noisy": true}},
		},
	}}
	rollout := map[string]any{
		"route": "api", "mode": "auto", "state": "progressing", "step": 1, "steps": 4, "percent": 10,
		"time_in_step_seconds": 75, "hold_seconds": 300, "hold_remaining_seconds": 225, "reason": hostile,
		"last_evaluation": map[string]any{
			"at": time.Now(), "decision": "hold", "reason": hostile,
			"samples": map[string]any{"window": "5m", "canary": 120, "control": 1080, "comparisons": 0},
			"promote": []map[string]any{{"condition": hostile, "metric": "error_rate", "unit": "ratio",
				"canary": 0.01, "control": 0.005, "verdict": "fail", "detail": hostile}},
			"rollback": []map[string]any{},
		},
	}
	routes[0]["rollout"] = rollout
	samples := []map[string]any{{
		"route": "api", "target": hostile, "time": time.Now(), "method": "GET", "uri": "/api/" + hostile, "request_id": hostile,
		"primary_status": 200, "shadow_status": 200, "note": hostile,
		"differences": []map[string]any{{"path": "/" + hostile, "kind": "changed", "primary": `"` + hostile + `"`, "shadow": hostile}},
	}}
	h := admin.Handler(admin.Options{
		Dashboard: admin.Dashboard(),
		Loopback:  true,
		Routes:    func() any { return routes },
		Rollouts:  func() any { return []any{rollout} },
		Diffs:     func(string, int, string) (any, error) { return samples, nil },
		History: func(string) (any, error) {
			return map[string]any{"route": "api", "interval_seconds": 10, "points": []map[string]any{
				{"time": time.Now().Add(-time.Minute), "target": hostile, "match_rate": 0.4, "comparisons": 3},
				{"time": time.Now(), "target": hostile, "match_rate": 0.6, "comparisons": 3},
			}}, nil
		},
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("loading the dashboard", chromedp.Navigate(srv.URL+"/#api"))
	got := b.poll("the hostile field as text", `(() => {
		const cell = document.querySelector('#diffs .diff-path');
		const field = document.querySelector('#top-fields .field-filter');
		return cell && field ? [cell.textContent, field.textContent,
			document.querySelector('#diffs .val.shadow').textContent,
			document.querySelector('#diffs .note').textContent] : null;
	})()`)
	want := []string{"/" + hostile, "/" + hostile, hostile, hostile}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("page shows %q, want the markup as text %q", got, want)
	}
	// The rollout panel: step, share, hold, the verdict's condition, and
	// only the commands a progressing rollout accepts.
	ro := b.poll("the rollout panel", `(() => {
		const c = document.querySelector('#rollout .conditions code');
		if (!c) return null;
		const dd = [...document.querySelectorAll('#rollout dl dd')].map(d => d.textContent);
		const buttons = [...document.querySelectorAll('#rollout-panel .actions button')].map(b => b.dataset.action + '=' + !b.disabled);
		return [c.textContent, dd.join(' | '), buttons.join(' ')];
	})()`)
	if ro[0] != hostile || ro[1] != "progressing | auto | 2 of 4 | 10% | 1m 15s of 5m 0s hold (3m 45s left) | "+hostile ||
		ro[2] != "pause=true resume=false promote=true rollback=true" {
		t.Errorf("rollout panel shows %q", ro)
	}
	b.shot("dashboard-hostile-data.png")
	// Let a poll or two re-render, then check nothing ran or was parsed.
	time.Sleep(2500 * time.Millisecond)
	res, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]any](`[String(window.pwned), document.querySelectorAll('main img, main script, nav img, nav script').length]`))
	if err != nil {
		t.Fatal(err)
	}
	if res[0] != "undefined" || res[1] != float64(0) {
		t.Errorf("hostile data became markup: window.pwned=%v, injected elements=%v", res[0], res[1])
	}
	b.checkConsole()
}

// TestBrowserAsksForTokenOnReads: with protect_reads, the first API read
// answers 401; the page asks for the token, keeps it for the tab, and shows
// the data. The dashboard's own files are served without the token (they
// hold no data), so the page can load to ask.
func TestBrowserAsksForTokenOnReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api := admin.Handler(admin.Options{
		Token: browserToken, ProtectReads: true, Loopback: true,
		Routes: func() any {
			return []map[string]any{{"route": "checkout", "upstream": "v1", "requests": 42, "split": map[string]any{
				"percent": 10, "canary": "v2", "targets": []string{"v1", "v2"},
				"requests_by_upstream": map[string]float64{"v1": 38, "v2": 4}, "decisions_by_reason": map[string]float64{"percent": 42},
			}, "shadow": nil, "comparison": nil, "rollout": nil}}
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/api/", api)
	mux.Handle("/", admin.Dashboard())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("loading the dashboard", chromedp.Navigate(srv.URL+"/"))
	b.poll("the token form", `!document.getElementById('auth').hidden ? ['ok'] : null`)
	b.do("entering the token",
		chromedp.SendKeys(chromedp.ID("token"), browserToken),
		chromedp.Click(chromedp.CSS(`#auth button[type="submit"]`)))
	got := b.poll("the split after the token", `(() => {
		const p = document.getElementById('split-percent');
		return p ? [p.textContent, String(document.getElementById('auth').hidden)] : null;
	})()`)
	if got[0] != "10%" || got[1] != "true" {
		t.Errorf("after the token: split %q, form hidden %s", got[0], got[1])
	}
	b.checkConsole()
}

// browser is one headless Chromium with a tab, the console watched.
type browser struct {
	t        *testing.T
	ctx      context.Context
	cancel   func()
	mu       sync.Mutex
	problems []string
	stop     func()
	done     chan struct{}
}

func newBrowser(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed at %s (.ci/browser.sh installs it): %v", chromiumPath, err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: bctx, cancel: func() { cancelBrowser(); cancelAlloc() }, done: make(chan struct{})}
	// Start the browser, then listen to the console before the page loads:
	// an exception, a CSP violation or a console error fails the test.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		b.cancel()
		t.Fatalf("starting Chromium: %v", err)
	}
	consoleCtx, stop := context.WithCancel(bctx)
	b.stop = stop
	messages := chromedp.Console(consoleCtx)
	go func() {
		defer close(b.done)
		for m, err := range messages {
			if err != nil {
				return
			}
			// Network errors are expected: the 401 that asks for a token.
			if m.IsException() || m.Source == "security" || m.Type == chromedp.ConsoleError && m.Source != "network" {
				b.mu.Lock()
				b.problems = append(b.problems, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) close() {
	if b.t.Failed() {
		b.shot(strings.ReplaceAll(b.t.Name(), "/", "_") + "-failure.png")
	}
	b.stop()
	<-b.done
	b.cancel()
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// poll waits until expr is truthy and returns it (a list of strings).
func (b *browser) poll(what, expr string) []string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Poll[[]string](expr,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
	return v
}

// shot saves a screenshot to $SHADOWPROXY_ARTIFACTS (or a
// shadowproxy-artifacts folder in the temporary directory) and logs it.
func (b *browser) shot(name string) {
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := os.Getenv("SHADOWPROXY_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "shadowproxy-artifacts")
	}
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot: %s", path)
}

func (b *browser) checkConsole() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser console: %s", p)
	}
}

// startDemo runs the demo backends and a whole App on 127.0.0.1:0 ports, with
// an admin token, and returns the admin and proxy URLs and the config text.
func startDemo(t *testing.T) (adminURL, proxyURL, cfgText string) {
	t.Helper()
	bs := apptest.DemoBackends(t)
	text := demo.ConfigYAML(bs, "127.0.0.1:0", "127.0.0.1:0")
	if strings.Contains(text, "\nadmin:") {
		t.Fatal("the demo configuration now has an admin section; set the token through it instead of adding one")
	}
	text = strings.Replace(text, "\nlog:", fmt.Sprintf("\nadmin: {token: %s}\nlog:", browserToken), 1)
	run := apptest.Start(t, text, app.Options{Version: "browser-test"})
	return run.AdminURL, run.ProxyURL, text
}

type rolloutStatus struct {
	Route string `json:"route"`
	State string `json:"state"`
}

func getRollouts(t *testing.T, adminURL string) []rolloutStatus {
	t.Helper()
	var out []rolloutStatus
	testkit.GetJSON(t, &http.Client{Timeout: 5 * time.Second}, adminURL+"/api/v1/rollouts", &out)
	return out
}
