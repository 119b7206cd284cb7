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
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// The browser first: the story starts with the proxy, and a slow
	// Chromium start must not make the page miss its first steps.
	b := newBrowser(t, ctx)
	defer b.close()
	adminURL, proxyURL, cfgText, bs := startDemo(t, demo.Pacing{Hold: 4 * time.Second})
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var trafficDone sync.WaitGroup
	trafficDone.Add(1)
	go func() {
		defer trafficDone.Done()
		// Bounded: at most 15000 requests, and it stops with the test.
		demo.Traffic(trafficCtx, proxyURL, 100, 15000)
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

	// The rollout first: with the test's fast pacing it promotes every
	// few seconds.
	b.do("loading the dashboard", chromedp.Navigate(adminURL+"/#checkout"))
	// The canary split of /checkout/: its share now and the requests each
	// upstream served since start, as the API reports them.
	split := b.poll("the checkout split", `(() => {
		const p = document.getElementById('split-percent');
		const rows = [...document.querySelectorAll('#split tbody tr')].map(tr => tr.children[0].textContent + '=' + tr.children[1].textContent);
		const head = [...document.querySelectorAll('#split thead th')].map(th => th.textContent).join(',');
		return p && rows.length === 2 ? [p.textContent, head].concat(rows) : null;
	})()`)
	// The share itself moves when a rollout promotes; its form does not.
	if !regexp.MustCompile(`^\d+(\.\d+)?%$`).MatchString(split[0]) || split[1] != "upstream,role,requests since start,share since start" ||
		!reflect.DeepEqual(split[2:], []string{"v1=stable", "v2=canary"}) {
		t.Errorf("checkout split shows %q, want a percentage, since-start columns, v1=stable and v2=canary", split)
	}

	if !strings.Contains(cfgText, "\n    rollout:") {
		t.Fatal("the demo configuration lost its rollout")
	}
	// The story, in three moments: the rollout promotes to steps[2] (50%),
	// named as the API and the configuration name it...
	// Each step first waits for its smoke gate, then for its hold and the
	// sequential promote test: two steps take longer than one poll.
	mid := b.pollFor("the rollout at steps[2]", `(() => {
		const s = document.getElementById('rollout-state'), st = document.getElementById('rollout-step');
		return s && st && s.textContent === 'progressing' && st.textContent.startsWith('steps[2] ') ? [st.textContent] : null;
	})()`, 90*time.Second)
	if ro := getRollout(t, adminURL, "checkout"); ro.Step < 2 || mid[0] != "steps[2] of steps[0]–steps[3]" {
		t.Errorf("page shows %q while the API says step %d", mid[0], ro.Step)
	}
	b.storyShot("dashboard-2-canary-rollout.png")

	// ...then v2's checkout breaks and the guardrail rolls it back.
	bs.V2.SetFailing(true)
	rb := b.pollFor("the rollback", `(() => {
		const s = document.getElementById('rollout-state');
		if (!s || s.textContent !== 'rolled_back') return null;
		const dd = [...document.querySelectorAll('#rollout dl dt')].map(d => d.textContent + '=' + d.nextSibling.textContent);
		return [dd.join(' | ')];
	})()`, 60*time.Second)
	if !strings.Contains(rb[0], "canary share now=0% (rolled back)") || !strings.Contains(rb[0], "rolled back=") || strings.Contains(rb[0], "hold") {
		t.Errorf("rolled-back rollout panel: %q; want 0%% (rolled back), the time since, no hold", rb[0])
	}
	b.storyShot("dashboard-3-rollback.png")
	bs.V2.SetFailing(false)

	// Resume from the page. The token is required, so the page must ask
	// for it, keep it and retry.
	b.poll("the resume button", `!document.getElementById('btn-resume').disabled && !document.getElementById('rollout-actions').hidden ? ['ok'] : null`)
	b.do("clicking resume", chromedp.Click(chromedp.ID("btn-resume")))
	b.poll("the token form", `!document.getElementById('auth').hidden ? ['ok'] : null`)
	b.do("entering the token",
		chromedp.SendKeys(chromedp.ID("token"), browserToken),
		chromedp.Click(chromedp.CSS(`#auth button[type="submit"]`)))
	b.poll("the progressing state", `(() => {
		const s = document.getElementById('rollout-state');
		return s && s.textContent === 'progressing' ? ['ok'] : null;
	})()`)
	if ro := getRollout(t, adminURL, "checkout"); ro.State != "progressing" {
		t.Errorf("GET /api/v1/rollouts: checkout is %q after clicking resume, want progressing", ro.State)
	}
	stored, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`sessionStorage.getItem('shadowproxy.admin-token') || ''`))
	if err != nil || stored != browserToken {
		t.Errorf("token kept in sessionStorage = %q, %v", stored, err)
	}

	// The dark launch, by now with a minute of data.
	b.do("opening route api", chromedp.Click(chromedp.CSS(`nav a[href="#api"]`)))

	// The match rate of v2 is a percentage, not the "—" of no data, and it
	// says which window it covers.
	rate := b.poll("a match rate", `(() => {
		const c = document.querySelector('.match-rate[data-target="v2"]');
		const v = c && c.querySelector('.value');
		return v && /^\d+(\.\d+)?%$/.test(v.textContent) ? [v.textContent, c.querySelector('.label').textContent] : null;
	})()`)
	if !strings.Contains(rate[1], "last 1m") && !strings.Contains(rate[1], "since start") {
		t.Errorf("match rate card %q does not say its window", rate[1])
	}
	t.Logf("match rate shown: %s (%s)", rate[0], rate[1])

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
	if want := realDiffs[row[0]]; row[1] != want[0] || row[2] != want[1] || row[3] != want[2] || !strings.HasPrefix(row[5], "GET /api/") {
		t.Errorf("sample row %q, want %s %v on a GET /api/ request", row, row[0], want)
	}
	t.Logf("diff sample shown: %s: %s -> %s (%s)", row[0], row[2], row[3], row[5])

	// Identical differences are grouped: every group differs from the
	// others, the counts add up to the samples fetched, and with three
	// kinds of real difference some group holds more than one sample.
	groups := b.poll("grouped diff samples", `(() => {
		const gs = [...document.querySelectorAll('#diffs .sample.group')];
		const m = (document.querySelector('#diffs > p.muted') || {}).textContent || '';
		const n = m.match(/newest (\d+) stored/);
		if (!gs.length || !n) return null;
		const counts = gs.map(g => Number(g.dataset.count));
		if (Math.max(...counts) < 2) return null;
		const sigs = gs.map(g => [g.querySelector('.target').textContent, g.querySelector('.status').textContent]
			.concat([...g.querySelectorAll('tbody tr')].map(tr => tr.children[0].textContent.replace(/\/\d+(?=\/|$)/g, '/*') + ' ' + tr.children[1].textContent).sort()).join('|'));
		return [String(counts.reduce((a, b) => a + b, 0)), n[1], String(new Set(sigs).size), String(gs.length),
			gs[0].querySelector('.count').textContent];
	})()`)
	if groups[0] != groups[1] || groups[2] != groups[3] || !strings.HasPrefix(groups[4], "×") {
		t.Errorf("groups: counts add to %s of %s samples, %s distinct of %s groups, badge %q", groups[0], groups[1], groups[2], groups[3], groups[4])
	}

	// The axis fits the data: the first point starts near the left edge,
	// not as a sliver at the right of an hour; "1h" shows the hour.
	b.poll("the match rate chart", `(() => {
		const p = document.querySelector('#match-chart path.series');
		return p && (p.getAttribute('d').match(/L/g) || []).length >= 3 ? ['ok'] : null;
	})()`)
	// Wait for more than the 30s the fitted axis shows at least.
	fit := b.pollFor("40s of history on the fitted axis", `(() => { const r = `+axisJS("match-chart")+`; return r && Number(r[0]) >= 40 ? r : null; })()`, 90*time.Second)
	if span, first := atof(t, fit[0]), atof(t, fit[1]); span > 600 || first > 0.15 {
		t.Errorf("fit to data: axis spans %vs with the first point at %.0f%% of the width; want it to start near the left", span, 100*first)
	}
	b.do("choosing 1h", chromedp.Click(chromedp.CSS(`#range button[data-range="3600"]`)))
	hour := b.poll("the 1h axis", `(() => { const r = `+axisJS("match-chart")+`; return r && r[0] === '3600' ? r : null; })()`)
	if first := atof(t, hour[1]); first < 0.8 {
		t.Errorf("1h: first point at %.0f%% of the width, want the right edge", 100*first)
	}
	b.do("back to fit", chromedp.Click(chromedp.CSS(`#range button[data-range="fit"]`)))

	// Latency: one quantile at a time, primary against the shadow, with a
	// legend carrying values and a hover read-out.
	lat := b.poll("the p95 latency lines", latencyJS)
	if lat[0] != "primary p95,shadow v2 p95" {
		t.Errorf("latency lines %q, want primary p95 and shadow v2 p95 only", lat[0])
	}
	b.do("choosing p50", chromedp.Click(chromedp.CSS(`#quantile button[data-q="p50"]`)))
	lat = b.poll("the p50 latency lines", `(() => { const r = `+latencyJS+`; return r && r[0].includes('p50') ? r : null; })()`)
	if lat[0] != "primary p50,shadow v2 p50" || !regexp.MustCompile(`primary p50 \d`).MatchString(lat[1]) {
		t.Errorf("latency after choosing p50: lines %q, legend %q", lat[0], lat[1])
	}
	tip := b.poll("the hover read-out", hoverJS("latency-chart"))
	if !strings.Contains(tip[0], "primary p50: ") || !strings.Contains(tip[0], "shadow v2 p50: ") {
		t.Errorf("hover read-out %q, want both series' values", tip[0])
	}

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
			out.push([...row.children].slice(0, 4).map(c => c.textContent).join(' | '));
		}
		return out;
	})()`)
	for _, row := range filtered {
		if row != "/items/1/price | changed | 25.5 | 24.99" {
			t.Errorf("filtered sample row = %q, want /items/1/price | changed | 25.5 | 24.99", row)
		}
	}
	// From the field: the exact line that ignores it.
	b.do("clicking ignore this field", chromedp.Click(chromedp.ID("ignore-field")))
	yaml := b.poll("the YAML line", `(() => {
		const l = document.getElementById('ignore-line'), c = document.getElementById('ignore-context');
		return l && c ? [l.textContent, c.textContent] : null;
	})()`)
	if yaml[0] != `- "/items/*/price"` || !strings.Contains(yaml[1], `- name: "api"   # routes[0]`) || !strings.HasSuffix(yaml[1], "ignore:\n          - \"/items/*/price\"") {
		t.Errorf("ignore snippet %q in %q", yaml[0], yaml[1])
	}
	// The line really ignores the field: the configuration with it loads.
	withIgnore := strings.Replace(cfgText, "        secondary: v1-twin\n", "        secondary: v1-twin\n        ignore:\n          "+yaml[0]+"\n", 1)
	if _, err := config.Load("demo.yaml", []byte(withIgnore), func(string) (string, bool) { return "", false }); err != nil || withIgnore == cfgText {
		t.Errorf("the demo configuration with the suggested line does not load: %v", err)
	}
	b.storyShot("dashboard-1-dark-launch.png")

	// Reset learnt noise, with the kept token: a proxy without the
	// endpoint is reported as such, not as a failure.
	b.poll("the reset button", `!document.getElementById('noise-actions').hidden ? ['ok'] : null`)
	b.do("arming reset", chromedp.Click(chromedp.ID("noise-reset")))
	b.do("confirming reset", chromedp.Click(chromedp.ID("noise-reset")))
	res := b.poll("the reset result", `(() => { const r = document.getElementById('noise-result'); return r ? [r.textContent] : null; })()`)
	if !strings.HasPrefix(res[0], "Learnt noise reset") && !strings.HasPrefix(res[0], "This proxy cannot reset learnt noise") {
		t.Errorf("reset learnt noise: %q", res[0])
	}
	b.checkConsole()
}

// axisJS returns a chart's x span in seconds and where its first series
// starts, as a fraction of the plot's width.
func axisJS(id string) string {
	return `(() => {
		const svg = document.querySelector('#` + id + ` svg');
		const p = svg && svg.querySelector('path.series');
		if (!p) return null;
		const x = Number(p.getAttribute('d').match(/^M([\d.]+)/)[1]);
		return [svg.dataset.span, String((x - 56) / (640 - 56 - 12))];
	})()`
}

// latencyJS returns the latency chart's line names and its legend.
const latencyJS = `(() => {
	const names = [...document.querySelectorAll('#latency-chart path.series')].map(p => p.dataset.series);
	const legend = [...document.querySelectorAll('#latency-chart .legend-item')].map(l => l.textContent);
	return names.length >= 2 ? [names.join(','), legend.join(' | ')] : null;
})()`

// hoverJS moves the mouse over the middle of a chart and returns its
// read-out.
func hoverJS(id string) string {
	return `(() => {
		const svg = document.querySelector('#` + id + ` svg');
		if (!svg) return null;
		const r = svg.getBoundingClientRect();
		svg.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + r.width * 0.9, clientY: r.top + r.height / 2, bubbles: true}));
		const tip = document.querySelector('#` + id + ` .tip');
		return tip && !tip.hidden ? [tip.textContent] : null;
	})()`
}

func atof(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return f
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
			"noise_fields": []map[string]any{{"path": "/" + hostile, "disagreements": 1, "observations": 5, "rate": 0.2, "noisy": false}},
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
	if ro[0] != hostile || ro[1] != "progressing | auto | steps[1] of steps[0]–steps[3] | 10% | 1m 15s of 5m 0s hold (3m 45s left) | "+hostile+" | rollback records" ||
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

// TestBrowserGuides serves the dashboard with known API answers and checks
// what it explains and offers: top fields without learnt noise, grouped
// samples with counts, the ignore advice for a JSON field and a header, no
// rollout buttons without a rollout, a rolled-back rollout described in its
// own words with the API's step numbering, the axis fitted to three minutes
// of history, and a noise reset sent with the admin header and reported
// when the proxy lacks the endpoint.
func TestBrowserGuides(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	lat := map[string]any{"count": 10, "p50": 0.002, "p95": 0.004, "p99": 0.008}
	routes := []map[string]any{{
		"route": "api", "upstream": "v1", "requests": 500, "split": nil, "rollout": nil,
		"shadow": map[string]any{"targets": []string{"v2"}, "outcomes": map[string]float64{"ok": 500}, "skipped": map[string]float64{}},
		"comparison": map[string]any{"route": "api", "secondary": true,
			"targets": []map[string]any{{
				"target": "v2", "match_rate_1m": 0.8, "match_rate_5m": 0.8, "match_rate_total": 0.8,
				"counts": map[string]int{"match": 400, "mismatch": 100, "uncomparable": 0, "learning": 7}, "counts_1m": map[string]int{"match": 40, "mismatch": 10},
				"top_fields": []map[string]any{{"field": "/request_id", "count": 90}, {"field": "/plan", "count": 60}, {"field": "header/Etag", "count": 5}},
				"latency":    map[string]any{"primary": lat, "shadow": lat},
			}},
			"noise_fields": []map[string]any{{"path": "/request_id", "disagreements": 50, "observations": 50, "rate": 1, "noisy": true}},
		},
	}, {
		"route": "checkout", "upstream": "v1", "requests": 300, "shadow": nil, "comparison": nil,
		"split": map[string]any{"percent": 0, "canary": "v2", "targets": []string{"v1", "v2"},
			"requests_by_upstream": map[string]float64{"v1": 105, "v2": 195}, "decisions_by_reason": map[string]float64{"percent": 300}},
	}}
	rolledBack := map[string]any{
		"route": "checkout", "mode": "auto", "state": "rolled_back", "step": 2, "steps": 4, "percent": 0,
		"time_in_step_seconds": 32, "hold_seconds": 20, "hold_remaining_seconds": 0,
		"last_action": "rollback", "last_action_by": "controller", "last_action_at": now.Add(-32 * time.Second),
		"last_evaluation": nil,
	}
	routes[1]["rollout"] = rolledBack
	sample := func(ago time.Duration, path, kind, primary, shadow string) map[string]any {
		return map[string]any{"route": "api", "target": "v2", "time": now.Add(-ago), "method": "GET", "uri": "/api/users/u5",
			"primary_status": 200, "shadow_status": 200,
			"differences": []map[string]any{{"path": path, "kind": kind, "primary": primary, "shadow": shadow}}}
	}
	samples := []map[string]any{
		sample(1*time.Second, "/plan", "changed", `"pro"`, `"professional"`),
		sample(2*time.Second, "/tier", "added", "", "1"),
		sample(3*time.Second, "/plan", "changed", `"pro"`, `"professional"`),
		sample(4*time.Second, "/tier", "added", "", "1"),
		sample(5*time.Second, "/plan", "changed", `"pro"`, `"professional"`),
	}
	var points []map[string]any
	for i := 18; i >= 0; i-- { // three minutes of 10-second points
		points = append(points, map[string]any{"time": now.Add(-time.Duration(i) * 10 * time.Second), "target": "v2", "match_rate": 0.8, "comparisons": 50,
			"primary_p50": 0.002, "primary_p95": 0.004, "primary_p99": 0.008, "shadow_p50": 0.003, "shadow_p95": 0.006, "shadow_p99": 0.012})
	}
	h := admin.Handler(admin.Options{
		Dashboard: admin.Dashboard(),
		Loopback:  true,
		Routes:    func() any { return routes },
		Rollouts:  func() any { return []any{rolledBack} },
		Diffs:     func(string, int, string) (any, error) { return samples, nil },
		History: func(string) (any, error) {
			return map[string]any{"route": "api", "interval_seconds": 10, "points": points}, nil
		},
	})
	// A proxy without the noise reset endpoint answers 404; record that
	// the page marked the request as its own.
	var resetHeader atomicString
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/routes/{route}/noise/reset", func(w http.ResponseWriter, r *http.Request) {
		resetHeader.Store(r.Header.Get("X-Shadowproxy-Admin") + " " + r.PathValue("route"))
		h.ServeHTTP(w, r)
	})
	mux.Handle("/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("loading the dashboard", chromedp.Navigate(srv.URL+"/#api"))

	fields := b.poll("the top fields", `(() => {
		const f = [...document.querySelectorAll('#top-fields .field-filter')].map(b => b.textContent);
		return f.length ? f : null;
	})()`)
	if !reflect.DeepEqual(fields, []string{"/plan", "header/Etag"}) {
		t.Errorf("top fields %q, want /plan and header/Etag: /request_id is learnt noise", fields)
	}
	counts := b.poll("the grouped samples", `(() => {
		const c = [...document.querySelectorAll('#diffs .group .count')].map(c => c.textContent);
		return c.length ? c.concat([...document.querySelectorAll('#diffs .group tbody tr td:first-child')].map(td => td.textContent)) : null;
	})()`)
	if !reflect.DeepEqual(counts, []string{"×3", "×2", "/plan", "/tier"}) {
		t.Errorf("groups %q, want ×3 /plan (newest first) and ×2 /tier", counts)
	}
	help := b.poll("the explanations", `(() => {
		const h = document.getElementById('overview-help').textContent;
		const c = document.querySelector('.match-rate');
		return h ? [h, c.className, c.title, document.querySelector('.card.comparisons .value').textContent] : null;
	})()`)
	if help[3] != "400 ✓  100 ✗  0 ?  7 ≈" {
		t.Errorf("comparisons card %q, want 400 ✓  100 ✗  0 ?  7 ≈", help[3])
	}
	for _, want := range []string{"✓ same answer", "✗ different answer", "? could not be compared", "≈ compared while noise was still being learnt", "Green from 99%, amber from 90%, red below 90%"} {
		if !strings.Contains(help[0], want) {
			t.Errorf("overview explanation %q lacks %q", help[0], want)
		}
	}
	if !strings.Contains(help[1], "bad") || !strings.Contains(help[2], "in the last minute") {
		t.Errorf("an 80%% match rate card: class %q, title %q; want red and its window explained", help[1], help[2])
	}
	// No rollout on api: no rollout buttons.
	hidden := b.poll("the rollout panel", `document.querySelector('#rollout p') ? [String(document.getElementById('rollout-actions').hidden), String(document.getElementById('btn-pause').offsetParent === null)] : null`)
	if hidden[0] != "true" || hidden[1] != "true" {
		t.Errorf("route without a rollout: actions hidden=%s, pause invisible=%s", hidden[0], hidden[1])
	}
	// Three minutes of history fill the axis.
	fit := b.poll("the fitted axis", axisJS("match-chart"))
	if span, first := atof(t, fit[0]), atof(t, fit[1]); span < 180 || span > 200 || first > 0.06 {
		t.Errorf("fit: %vs, first point at %.1f%%; want about 189s starting at the left", span, 100*first)
	}
	tip := b.poll("the hover read-out", hoverJS("latency-chart"))
	if !strings.Contains(tip[0], "primary p95: 4.00ms") || !strings.Contains(tip[0], "shadow v2 p95: 6.00ms") {
		t.Errorf("hover read-out %q", tip[0])
	}

	// Ignoring a header is advice, not a JSON Pointer line.
	b.do("ignore header/Etag", chromedp.Click(chromedp.JSPath(`[...document.querySelectorAll('#top-fields tr')].filter(tr => tr.textContent.startsWith('header/Etag'))[0].querySelector('.ignore-field')`)))
	adv := b.poll("the header advice", `(() => { const a = document.getElementById('ignore-advice'); return a ? [a.textContent] : null; })()`)
	if !strings.HasPrefix(adv[0], "Remove Etag from routes[0].shadow.compare.headers") {
		t.Errorf("header advice %q", adv[0])
	}
	b.do("ignore /plan", chromedp.Click(chromedp.JSPath(`[...document.querySelectorAll('#top-fields tr')].filter(tr => tr.textContent.startsWith('/plan'))[0].querySelector('.ignore-field')`)))
	line := b.poll("the /plan line", `(() => { const l = document.getElementById('ignore-line'); return l && l.textContent.includes('/plan') ? [l.textContent] : null; })()`)
	if line[0] != `- "/plan"` {
		t.Errorf("ignore line %q", line[0])
	}

	// Reset learnt noise from the field: arm, confirm; the stub proxy lacks
	// the endpoint.
	b.do("arming reset", chromedp.Click(chromedp.ID("field-reset-noise")))
	armed := b.poll("the armed reset", `(() => { const r = document.getElementById('field-reset-noise'); return r && r.textContent === 'confirm reset?' ? [document.getElementById('noise-reset').textContent] : null; })()`)
	if armed[0] != "confirm reset?" {
		t.Errorf("noise panel button %q while the reset is armed, want confirm reset?", armed[0])
	}
	b.do("confirming reset", chromedp.Click(chromedp.ID("field-reset-noise")))
	res := b.poll("the reset result", `(() => { const r = document.getElementById('noise-result'); return r ? [r.textContent] : null; })()`)
	if !strings.HasPrefix(res[0], "This proxy cannot reset learnt noise (POST /api/v1/routes/api/noise/reset answered 404)") {
		t.Errorf("reset result %q", res[0])
	}
	if got := resetHeader.Load(); got != "1 api" {
		t.Errorf("reset request: X-Shadowproxy-Admin and route %q, want \"1 api\"", got)
	}

	// A rolled-back rollout: the API's step numbering, no hold, the share now
	// against the shares since start.
	b.do("opening route checkout", chromedp.Click(chromedp.CSS(`nav a[href="#checkout"]`)))
	ro := b.poll("the rolled-back rollout", `(() => {
		const st = document.getElementById('rollout-step');
		if (!st) return null;
		const dd = [...document.querySelectorAll('#rollout dl dt')].map(d => d.textContent + '=' + d.nextSibling.textContent);
		const buttons = [...document.querySelectorAll('#rollout-panel .actions button')].map(b => b.dataset.action + '=' + !b.disabled);
		return [st.textContent, dd.join(' | '), buttons.join(' '), document.querySelector('#split p').textContent,
			String(document.getElementById('rollout-actions').hidden)];
	})()`)
	if ro[0] != "steps[2] of steps[0]–steps[3]" {
		t.Errorf("step %q, want the API's step 2 as steps[2]", ro[0])
	}
	if !regexp.MustCompile(`rolled back=3\ds ago`).MatchString(ro[1]) || strings.Contains(ro[1], "hold") || !strings.Contains(ro[1], "canary share now=0% (rolled back)") {
		t.Errorf("rolled-back panel %q", ro[1])
	}
	if ro[2] != "pause=false resume=true promote=false rollback=false" || ro[4] != "false" {
		t.Errorf("rolled-back buttons %q (hidden %s), want only resume", ro[2], ro[4])
	}
	if ro[3] != "Now: canary v2 gets 0% of keys (set by the rollout); stable is v1." {
		t.Errorf("split summary %q", ro[3])
	}
	b.checkConsole()
}

// atomicString is a string shared with a handler goroutine.
type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) Store(s string) { a.mu.Lock(); a.s = s; a.mu.Unlock() }
func (a *atomicString) Load() string   { a.mu.Lock(); defer a.mu.Unlock(); return a.s }

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
	if hidden := b.poll("the rollout actions", `[String(document.getElementById('rollout-actions').hidden)]`); hidden[0] != "true" {
		t.Error("a route without a rollout shows rollout buttons")
	}
	b.checkConsole()
}

// TestBrowserCrossSiteFormRefused: the attack that promoted a rollout. A
// page on another origin auto-submits a text/plain form (a "simple" request:
// no CORS preflight) to the loopback admin listener that has no token; and a
// page on a name that resolves to 127.0.0.1 (DNS rebinding) reads the API
// with its own name as Host. Both are refused and the command never runs;
// the dashboard's own request, from its origin with the X-Shadowproxy-Admin
// header app.js sends, still works.
func TestBrowserCrossSiteFormRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var calls []string
	api := admin.Handler(admin.Options{
		Loopback: true, Dashboard: admin.Dashboard(),
		Routes: func() any { return []any{} },
		RolloutCommand: func(route, action string) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, route+"/"+action)
			return map[string]string{"state": "promoted"}, nil
		},
	})
	adminSrv := httptest.NewServer(api)
	defer adminSrv.Close()
	target := adminSrv.URL + "/api/v1/rollouts/checkout/promote"
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><body><form id="f" method="POST" action="%s" enctype="text/plain">
<input name='{"x":"' value='"}'></form><script>document.getElementById('f').submit()</script></body>`, target)
	}))
	defer evil.Close()
	ran := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), calls...)
	}

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("opening the attacking page", chromedp.Navigate(evil.URL+"/"))
	answer := b.poll("the form's answer", `location.href.startsWith('`+adminSrv.URL+`') && document.body ? [document.body.textContent] : null`)
	if !strings.Contains(answer[0], admin.CSRFHeader) {
		t.Errorf("the cross-site form was answered %q, want the refusal naming %s", answer[0], admin.CSRFHeader)
	}
	if c := ran(); len(c) != 0 {
		t.Errorf("the cross-site form ran %v", c)
	}

	_, port, _ := strings.Cut(strings.TrimPrefix(adminSrv.URL, "http://"), ":")
	b.do("opening the API through a rebinding name", chromedp.Navigate("http://rebind.evil.example:"+port+"/api/v1/routes"))
	rebound := b.poll("the rebinding answer", `document.body && document.body.textContent ? [document.body.textContent] : null`)
	if !strings.Contains(rebound[0], "does not answer for host") {
		t.Errorf("the API read through a rebinding name answered %q, want 421", rebound[0])
	}

	// The control: the dashboard's origin, the dashboard's header.
	b.do("loading the dashboard", chromedp.Navigate(adminSrv.URL+"/"))
	st := b.poll("the dashboard origin's promote", `(() => {
		if (!window.__st) {
			window.__st = 'pending';
			fetch('/api/v1/rollouts/checkout/promote', {method: 'POST', headers: {'X-Shadowproxy-Admin': '1'}})
				.then(r => { window.__st = String(r.status); }, e => { window.__st = String(e); });
		}
		return window.__st === 'pending' ? null : [window.__st];
	})()`)
	if st[0] != "200" || fmt.Sprint(ran()) != "[checkout/promote]" {
		t.Errorf("the dashboard's own promote: %s, commands run %v", st[0], ran())
	}
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
		// The DNS-rebinding case: a foreign name that resolves to loopback,
		// without any lookup leaving the machine.
		chromedp.Flag("host-resolver-rules", "MAP rebind.evil.example 127.0.0.1"),
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
	return b.pollFor(what, expr, 30*time.Second)
}

// pollFor is poll with its own timeout.
func (b *browser) pollFor(what, expr string, timeout time.Duration) []string {
	b.t.Helper()
	var v []string
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		v, err = chromedp.Run(b.ctx, chromedp.Poll[[]string](expr,
			chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
		// A poll started while the page was still replacing its
		// JavaScript context loses that context: start it again.
		if err == nil || !strings.Contains(err.Error(), "Cannot find context with specified id") {
			break
		}
	}
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

// storyShot is a screenshot of a moment of the demo's story: saved like
// shot, and also to $SHADOWPROXY_SCREENSHOTS when set (make screenshots
// points it at docs/screenshots, where the README shows them).
func (b *browser) storyShot(name string) {
	b.shot(name)
	dir := os.Getenv("SHADOWPROXY_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

func (b *browser) checkConsole() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser console: %s", p)
	}
}

// startDemo runs the demo backends and a whole App on 127.0.0.1:0 ports, with
// an admin token and the given pacing, and returns the admin and proxy URLs,
// the config text and the backends.
func startDemo(t *testing.T, pacing demo.Pacing) (adminURL, proxyURL, cfgText string, bs *demo.Backends) {
	t.Helper()
	bs = apptest.DemoBackends(t)
	text := demo.ConfigYAMLPaced(bs, "127.0.0.1:0", "127.0.0.1:0", pacing)
	if strings.Contains(text, "\nadmin:") {
		t.Fatal("the demo configuration now has an admin section; set the token through it instead of adding one")
	}
	text = strings.Replace(text, "\nlog:", fmt.Sprintf("\nadmin: {token: %s}\nlog:", browserToken), 1)
	run := apptest.Start(t, text, app.Options{Version: "browser-test"})
	return run.AdminURL, run.ProxyURL, text, bs
}

type rolloutStatus struct {
	Route string `json:"route"`
	State string `json:"state"`
	Step  int    `json:"step"`
}

func getRollout(t *testing.T, adminURL, route string) rolloutStatus {
	t.Helper()
	for _, r := range getRollouts(t, adminURL) {
		if r.Route == route {
			return r
		}
	}
	t.Fatalf("GET /api/v1/rollouts lists no rollout for %s", route)
	return rolloutStatus{}
}

func getRollouts(t *testing.T, adminURL string) []rolloutStatus {
	t.Helper()
	var out []rolloutStatus
	testkit.GetJSON(t, &http.Client{Timeout: 5 * time.Second}, adminURL+"/api/v1/rollouts", &out)
	return out
}
