package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// versionServer answers its name, or 500 while failing is set.
type versionServer struct {
	url     string
	hits    atomic.Int64
	failing atomic.Bool
}

func startVersion(t testing.TB, name string) *versionServer {
	t.Helper()
	v := &versionServer{}
	v.url = testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.hits.Add(1)
		if v.failing.Load() {
			http.Error(w, "broken", 500)
			return
		}
		io.WriteString(w, name)
	}))
	return v
}

func rolloutConfig(stable, canary, stateFile, policy string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    rollout:
      interval: 100ms
      window: 3s
      min_samples: 30
      state_file: %s
%s
`, stable, canary, stateFile, policy)
}

// load sends requests with random users until stop is closed (bounded by
// max), counting answers by body.
type loadResult struct {
	mu     sync.Mutex
	bodies map[string]int
	failed int
}

func runLoad(t testing.TB, proxyURL string, stop <-chan struct{}, max int) *loadResult {
	res := &loadResult{bodies: map[string]int{}}
	var wg sync.WaitGroup
	var sent atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= int64(max) {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", proxyURL+"/buy", nil)
				req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", rand.IntN(100000)))
				resp, err := client.Do(req)
				if err != nil {
					res.mu.Lock()
					res.failed++
					res.mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.mu.Lock()
				res.bodies[strings.TrimSpace(string(b))]++
				res.mu.Unlock()
			}
		}()
	}
	go func() { wg.Wait() }()
	t.Cleanup(wg.Wait)
	return res
}

type rolloutStatus struct {
	Route   string  `json:"route"`
	State   string  `json:"state"`
	Step    int     `json:"step"`
	Percent float64 `json:"percent"`
}

func rollouts(t testing.TB, adminURL string) []rolloutStatus {
	var st []rolloutStatus
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &st)
	return st
}

func TestRolloutRollsBackFailingCanaryEndToEnd(t *testing.T) {
	stable, canary := startVersion(t, "stable"), startVersion(t, "canary")
	stateFile := filepath.Join(t.TempDir(), "shop.json")
	a := startApp(t, rolloutConfig(stable.url, canary.url, stateFile, `
      steps: [{percent: 50, hold: 1h}, {percent: 100}]
      rollback_when:
        - {metric: error_rate_5xx, above_baseline: 2x, for: 300ms}
`), Options{})
	adminURL := "http://" + a.AdminAddr()
	if st := rollouts(t, adminURL); len(st) != 1 || st[0].Percent != 50 || st[0].State != "progressing" {
		t.Fatalf("start: %+v", st)
	}
	stop := make(chan struct{})
	// The load runs until the rollback (bounded at 200,000 requests): the
	// sequential test needs evidence in its window when it decides, and a
	// 20,000 cap could run out first on a loaded machine.
	res := runLoad(t, "http://"+a.ProxyAddr(), stop, 200000)
	testkit.Eventually(t, "canary traffic", func() bool { return canary.hits.Load() > 100 })
	canary.failing.Store(true)
	testkit.Eventually(t, "rollback", func() bool { return rollouts(t, adminURL)[0].State == "rolled_back" })
	close(stop)
	time.Sleep(100 * time.Millisecond)

	// Every request after the rollback goes to stable.
	before := canary.hits.Load()
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest("GET", "http://"+a.ProxyAddr()+"/buy", nil)
		req.Header.Set("X-User-ID", fmt.Sprintf("after-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "stable" {
			t.Fatalf("request after rollback: %d %q", resp.StatusCode, b)
		}
	}
	if canary.hits.Load() != before {
		t.Errorf("canary got %d requests after the rollback", canary.hits.Load()-before)
	}
	b, err := os.ReadFile(stateFile)
	if err != nil || !strings.Contains(string(b), "rolled_back") {
		t.Errorf("state file %s: %s %v", stateFile, b, err)
	}
	if v := testutil.ToFloat64(a.Metrics().RolloutTransitions.WithLabelValues("shop", "rollback")); v != 1 {
		t.Errorf("rollback transitions = %v", v)
	}
	if v := testutil.ToFloat64(a.Metrics().SplitPercent.WithLabelValues("shop")); v != 0 {
		t.Errorf("split percent after rollback = %v", v)
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.failed != 0 {
		t.Errorf("%d requests failed at the transport level", res.failed)
	}
	// A reload keeps the rollback (the config still says 0%, but even a
	// config saying more must not undo it).
	if err := a.apply(mustConfig(t, rolloutConfig(stable.url, canary.url, stateFile, "      steps: [{percent: 50, hold: 1h}, {percent: 100}]"))); err != nil {
		t.Fatal(err)
	}
	if st := rollouts(t, adminURL); st[0].State != "rolled_back" || a.Proxy().Snapshot().Route("shop").CanaryPercent() != 0 {
		t.Errorf("after reload: %+v", st)
	}
}

func TestRolloutPromotesHealthyCanaryAndResumesAfterRestart(t *testing.T) {
	stable, canary := startVersion(t, "stable"), startVersion(t, "canary")
	stateFile := filepath.Join(t.TempDir(), "shop.json")
	cfgText := rolloutConfig(stable.url, canary.url, stateFile, `
      steps: [{percent: 10, hold: 300ms}, {percent: 50, hold: 1h}, {percent: 100}]
      promote_when:
        - {metric: error_rate_5xx, below: 1%}
`)
	a := startApp(t, cfgText, Options{})
	adminURL := "http://" + a.AdminAddr()
	stop := make(chan struct{})
	// The load runs until the promotion (bounded at 200,000 requests): the
	// gate needs min_samples in its 3s window at the moment it passes, so
	// a load that ran out first (as a 20,000 cap could on a loaded
	// machine) left the gate without data and the test timing out.
	runLoad(t, "http://"+a.ProxyAddr(), stop, 200000)
	testkit.Eventually(t, "promotion to 50%", func() bool { return rollouts(t, adminURL)[0].Step == 1 })
	close(stop)
	if p := a.Proxy().Snapshot().Route("shop").CanaryPercent(); p != 5000 {
		t.Errorf("split after promotion = %d bp", p)
	}
	// Pause through the API, then restart the process: same step, still paused.
	resp, err := adminPost(adminURL + "/api/v1/rollouts/shop/pause")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pause: %v %d", err, resp.StatusCode)
	}
	resp.Body.Close()
	a.Shutdown(context.Background())

	b := startApp(t, cfgText, Options{})
	st := rollouts(t, "http://"+b.AdminAddr())
	if st[0].Step != 1 || st[0].Percent != 50 || st[0].State != "paused" {
		t.Errorf("after restart: %+v", st)
	}
	if p := b.Proxy().Snapshot().Route("shop").CanaryPercent(); p != 5000 {
		t.Errorf("split after restart = %d bp, want the persisted 5000", p)
	}
	var raw json.RawMessage
	testkit.GetJSON(t, nil, "http://"+b.AdminAddr()+"/api/v1/routes", &raw)
	if !strings.Contains(string(raw), `"state": "paused"`) {
		t.Errorf("routes view lacks the rollout: %s", raw)
	}
	resp, _ = adminPost("http://" + b.AdminAddr() + "/api/v1/rollouts/shop/pause")
	if resp.StatusCode != 409 {
		t.Errorf("pausing a paused rollout: %d, want 409", resp.StatusCode)
	}
	resp.Body.Close()
	resp, _ = adminPost("http://" + b.AdminAddr() + "/api/v1/rollouts/nope/pause")
	if resp.StatusCode != 404 {
		t.Errorf("unknown route: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

// TestExternalMetricFromPrometheus: a promote condition on an external
// metric is answered by the configured Prometheus, with the cohort and
// window substituted into the declared query.
func TestExternalMetricFromPrometheus(t *testing.T) {
	queries := make(chan string, 100)
	prom := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case queries <- r.URL.Query().Get("query"):
		default:
		}
		io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.97"]}]}}`)
	}))
	stable, canary := startVersion(t, "stable"), startVersion(t, "canary")
	cfg := rolloutConfig(stable.url, canary.url, filepath.Join(t.TempDir(), "s.json"), `
      steps: [{percent: 10, hold: 100ms}, {percent: 100}]
      external_metrics:
        - name: conversion_rate
          unit: ratio
          query: conv{cohort="$cohort",route="$route"}[$window]
      promote_when:
        - {metric: conversion_rate, above: 90%}
`) + "prometheus: {url: " + prom + "}\n"
	a := startApp(t, cfg, Options{})
	testkit.Eventually(t, "promotion on the external metric", func() bool { return rollouts(t, "http://"+a.AdminAddr())[0].Percent == 100 })
	if q := <-queries; q != `conv{cohort="canary",route="shop"}[3s]` {
		t.Errorf("query sent: %s", q)
	}
}
