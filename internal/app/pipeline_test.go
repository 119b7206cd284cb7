package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/internal/gates"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// healthServer answers /api/health (healthy or 503) and anything else with
// its name; it counts the requests that were not smoke checks.
type healthServer struct {
	url      string
	real     atomic.Int64
	smoke    atomic.Int64
	unhealth atomic.Bool
}

func startHealth(t testing.TB, name string) *healthServer {
	h := &healthServer{}
	h.url = testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gates.SyntheticHeader) != "" {
			h.smoke.Add(1)
		} else {
			h.real.Add(1)
		}
		if r.URL.Path == "/api/health" {
			w.Header().Set("Content-Type", "application/json")
			if h.unhealth.Load() {
				w.WriteHeader(503)
				io.WriteString(w, `{"status":"down"}`)
				return
			}
			io.WriteString(w, `{"status":"healthy","version":"`+name+`"}`)
			return
		}
		io.WriteString(w, name)
	}))
	return h
}

func smokeConfig(stable, canary, stateDir, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
state_dir: %s
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    synthetic:
      - {header: {X-Synthetic: "true"}}
      - {key_in: [smoke-test-prod]}
    rollout:
      interval: 100ms
      window: 3s
      min_samples: 30
      steps: [{percent: 50, hold: 1h}, {percent: 100}]
%s
`, stateDir, stable, canary, extra)
}

const failingSmoke = `
      smoke:
        checks:
          - name: health
            request: {path: /api/health, headers: {X-User-ID: smoke-test-prod}}
            expect: {status: 200, json: {/status: healthy, /version: {exists: true}}, max_latency: 2s}
        retries: 0
`

// A canary whose smoke check fails is rolled back before its first step
// gets any real traffic; the rollback leaves evidence with the smoke
// results, served by the admin API, and the checks are counted.
func TestSmokeFailureRollsBackBeforeRealTrafficEndToEnd(t *testing.T) {
	stable, canary := startHealth(t, "stable"), startHealth(t, "canary")
	canary.unhealth.Store(true)
	stateDir := t.TempDir()
	a := startApp(t, smokeConfig(stable.url, canary.url, stateDir, failingSmoke), Options{})
	adminURL := "http://" + a.AdminAddr()
	stop := make(chan struct{})
	res := runLoad(t, "http://"+a.ProxyAddr(), stop, 3000)
	testkit.Eventually(t, "rollback by the smoke check", func() bool { return rollouts(t, adminURL)[0].State == "rolled_back" })
	close(stop)
	if n := canary.real.Load(); n != 0 {
		t.Fatalf("the canary served %d real requests before its smoke check rolled it back; want 0", n)
	}
	if canary.smoke.Load() == 0 || stable.smoke.Load() == 0 {
		t.Fatalf("smoke checks sent: canary %d stable %d; want both", canary.smoke.Load(), stable.smoke.Load())
	}
	res.mu.Lock()
	if res.bodies["canary"] != 0 {
		t.Fatalf("clients saw the canary %d times", res.bodies["canary"])
	}
	res.mu.Unlock()
	if got := testutil.ToFloat64(a.metrics.SmokeChecks.WithLabelValues("shop", "health", "fail")); got < 1 {
		t.Fatalf("smoke_checks_total{result=fail} = %v", got)
	}
	var full []rollout.RouteStatus
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &full)
	if full[0].LastSmoke == nil || full[0].LastSmoke.Verdict != rollout.SmokeFail {
		t.Fatalf("/api/v1/rollouts lacks the smoke results: %+v", full[0].LastSmoke)
	}
	var list []struct{ ID, Kind string }
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts/shop/evidence", &list)
	if len(list) != 1 || list[0].Kind != "rollback" {
		t.Fatalf("evidence list %+v", list)
	}
	var rec rollout.Evidence
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts/shop/evidence/"+list[0].ID, &rec)
	if rec.Smoke == nil || len(rec.Smoke.Results) != 2 || rec.ConfigHash == "" || !strings.Contains(rec.Reason, "smoke") {
		t.Fatalf("evidence %+v", rec)
	}
	if _, err := filepath.Glob(filepath.Join(stateDir, "evidence", "shop", "*.json")); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(stateDir, "evidence", "shop", "*.json")); len(m) != 1 {
		t.Fatalf("evidence files on disk: %v", m)
	}
	resp, err := http.Get(adminURL + "/api/v1/rollouts/shop/evidence/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown evidence id: %d; want 404", resp.StatusCode)
	}
}

// Synthetic requests are routed but leave the rollout's numbers as they
// were.
func TestSyntheticTrafficLeavesRolloutNumbersUnchanged(t *testing.T) {
	stable, canary := startHealth(t, "stable"), startHealth(t, "canary")
	a := startApp(t, smokeConfig(stable.url, canary.url, t.TempDir(), ""), Options{})
	rec := a.rollouts.recorders["shop"]
	send := func(n int, synthetic bool) {
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest("GET", "http://"+a.ProxyAddr()+"/buy", nil)
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", i))
			if synthetic {
				req.Header.Set("X-Synthetic", "true")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	total := func() uint64 {
		w := rec.Window(time.Minute)
		return w.Canary.Requests + w.Control.Requests + w.Excluded.Requests
	}
	send(40, true)
	if got := total(); got != 0 {
		t.Fatalf("40 synthetic requests moved the rollout numbers to %d", got)
	}
	if stable.real.Load()+canary.real.Load() != 40 {
		t.Fatalf("synthetic requests were not served: %d", stable.real.Load()+canary.real.Load())
	}
	send(10, false)
	if got := total(); got != 10 {
		t.Fatalf("rollout numbers after 10 real requests: %d; want 10", got)
	}
	if got := testutil.ToFloat64(a.metrics.SyntheticRequests.WithLabelValues("shop")); got != 40 {
		t.Fatalf("synthetic_requests_total = %v; want 40", got)
	}
}

// A pre_step webhook answering 500 holds the first step: no traffic for
// the canary, and the rollout says why.
func TestPreStepWebhook500HoldsEndToEnd(t *testing.T) {
	stable, canary := startHealth(t, "stable"), startHealth(t, "canary")
	var calls atomic.Int64
	hook := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(500)
	}))
	a := startApp(t, smokeConfig(stable.url, canary.url, t.TempDir(), fmt.Sprintf(`
      webhooks: [{type: pre_step, url: "%s/gate", timeout: 1s, retries: 0}]
`, hook)), Options{})
	adminURL := "http://" + a.AdminAddr()
	testkit.Eventually(t, "webhook called", func() bool { return calls.Load() >= 2 })
	stop := make(chan struct{})
	runLoad(t, "http://"+a.ProxyAddr(), stop, 200)
	var full []rollout.RouteStatus
	testkit.Eventually(t, "held", func() bool {
		testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &full)
		return full[0].GatePending && strings.Contains(full[0].Gate, "500")
	})
	close(stop)
	if full[0].State != rollout.StateProgressing || full[0].Percent != 0 {
		t.Fatalf("status %+v", full[0])
	}
	if canary.real.Load() != 0 {
		t.Fatalf("the canary got %d requests while pre_step failed", canary.real.Load())
	}
	if got := testutil.ToFloat64(a.metrics.GateWebhooks.WithLabelValues("shop", "pre_step", "fail")); got < 1 {
		t.Fatalf("rollout_gate_webhooks_total{fail} = %v", got)
	}
}

func darkLaunchConfig(v1, v2, stateDir string, auto bool) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
state_dir: %s
upstreams:
  - {name: v1, url: %s}
  - {name: v2, url: %s}
routes:
  - name: search
    upstream: v1
    shadow:
      targets: [v2]
    cutover:
      when: {match_rate: {at_least: 99%%, for: 1h}, min_comparisons: 20}
      auto: %v
      retire_after: 168h
`, stateDir, v1, v2, auto)
}

// jsonTwin answers the same JSON body as its twin, naming itself in a
// header the comparison does not look at.
type jsonTwin struct {
	url  string
	hits atomic.Int64
}

func startTwin(t testing.TB, name string) *jsonTwin {
	j := &jsonTwin{}
	j.url = testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", name)
		io.WriteString(w, `{"results":[1,2,3],"total":3}`)
	}))
	return j
}

func servedBy(t *testing.T, proxyAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + proxyAddr + "/search?q=x")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Served-By")
}

func cutoverStatus(t *testing.T, adminURL string) CutoverStatus {
	var st CutoverStatus
	testkit.GetJSON(t, nil, adminURL+"/api/v1/routes/search/cutover", &st)
	return st
}

// A dark launch reaches its criterion, cuts over (v2 serves, v1 is the
// shadow, comparisons continue), and a restart keeps it cut over; revert
// swaps back.
func TestCutoverEndToEndSurvivesRestart(t *testing.T) {
	v1, v2 := startTwin(t, "v1"), startTwin(t, "v2")
	stateDir := t.TempDir()
	cfgText := darkLaunchConfig(v1.url, v2.url, stateDir, false)
	a := startApp(t, cfgText, Options{})
	clock := testkit.NewClock(time.Now())
	a.cutovers.setClock(clock.Now)
	adminURL := "http://" + a.AdminAddr()
	comparisons := func(target string) uint64 {
		s, err := a.analyzer.Summary("search")
		if err != nil {
			return 0
		}
		for _, ts := range s.Targets {
			if ts.Target == target {
				return ts.Counts.Match + ts.Counts.Mismatch
			}
		}
		return 0
	}
	for i := 0; i < 30; i++ {
		if by := servedBy(t, a.ProxyAddr()); by != "v1" {
			t.Fatalf("before the cutover %q served", by)
		}
	}
	testkit.Eventually(t, "comparisons", func() bool { return comparisons("v2") >= 30 })
	a.cutovers.tick(clock.Now())
	if st := cutoverStatus(t, adminURL); st.Ready || st.StreakComparisons != 30 || st.MatchRate == nil || *st.MatchRate != 1 {
		t.Fatalf("readiness right after the first measure: %+v", st)
	}
	resp, err := adminPost(adminURL + "/api/v1/routes/search/cutover")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("cutover before the criterion holds: %d; want 409", resp.StatusCode)
	}
	a.cutovers.tick(clock.Advance(time.Hour + time.Second))
	st := cutoverStatus(t, adminURL)
	if !st.Ready || st.Serving != "v1" || st.Shadow != "v2" || !strings.Contains(st.Reason, "ready") {
		t.Fatalf("readiness after an hour at 100%%: %+v", st)
	}
	resp, err = http.Post(adminURL+"/api/v1/routes/search/cutover", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cutover without the admin header: %d; want 403", resp.StatusCode)
	}
	resp, err = adminPost(adminURL + "/api/v1/routes/search/cutover")
	if err != nil {
		t.Fatal(err)
	}
	var after CutoverStatus
	json.NewDecoder(resp.Body).Decode(&after)
	resp.Body.Close()
	if resp.StatusCode != 200 || !after.CutOver || after.Serving != "v2" || after.Shadow != "v1" || after.Evidence == "" {
		t.Fatalf("cutover: %d %+v", resp.StatusCode, after)
	}
	for i := 0; i < 25; i++ {
		if by := servedBy(t, a.ProxyAddr()); by != "v2" {
			t.Fatalf("after the cutover %q served", by)
		}
	}
	testkit.Eventually(t, "reversed comparisons", func() bool { return comparisons("v1") >= 25 })
	a.cutovers.tick(clock.Now())
	if st := cutoverStatus(t, adminURL); st.StreakComparisons != 25 || st.RetireReady || !strings.Contains(st.Reason, "retire_after") {
		t.Fatalf("after the cutover: %+v", st)
	}
	var rec rollout.Evidence
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts/search/evidence/"+after.Evidence, &rec)
	if rec.Kind != rollout.EvidenceCutover || rec.Extra == nil {
		t.Fatalf("cutover evidence %+v", rec)
	}

	// A restart keeps it cut over.
	a.Shutdown(context.Background())
	b := startApp(t, cfgText, Options{})
	if by := servedBy(t, b.ProxyAddr()); by != "v2" {
		t.Fatalf("after a restart %q served; the cutover was lost", by)
	}
	// So does a reload.
	if err := b.apply(mustConfig(t, cfgText)); err != nil {
		t.Fatal(err)
	}
	if by := servedBy(t, b.ProxyAddr()); by != "v2" {
		t.Fatalf("after a reload %q served", by)
	}
	resp, err = adminPost("http://" + b.AdminAddr() + "/api/v1/routes/search/revert")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revert: %d", resp.StatusCode)
	}
	if by := servedBy(t, b.ProxyAddr()); by != "v1" {
		t.Fatalf("after revert %q served", by)
	}
}

// auto: true cuts over by itself once the criterion holds.
func TestAutoCutover(t *testing.T) {
	v1, v2 := startTwin(t, "v1"), startTwin(t, "v2")
	a := startApp(t, darkLaunchConfig(v1.url, v2.url, t.TempDir(), true), Options{})
	clock := testkit.NewClock(time.Now())
	a.cutovers.setClock(clock.Now)
	for i := 0; i < 25; i++ {
		servedBy(t, a.ProxyAddr())
	}
	testkit.Eventually(t, "comparisons", func() bool {
		s, _ := a.analyzer.Summary("search")
		return len(s.Targets) > 0 && s.Targets[0].Counts.Match >= 25
	})
	a.cutovers.tick(clock.Now())
	if by := servedBy(t, a.ProxyAddr()); by != "v1" {
		t.Fatalf("cut over before the criterion held: %q served", by)
	}
	a.cutovers.tick(clock.Advance(2 * time.Hour))
	if by := servedBy(t, a.ProxyAddr()); by != "v2" {
		t.Fatalf("auto did not cut over: %q served", by)
	}
	if got := testutil.ToFloat64(a.metrics.CutoverActive.WithLabelValues("search")); got != 1 {
		t.Fatalf("cutover_active = %v", got)
	}
}
