package demo_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/demo"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/internal/testkit/apptest"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// TestDemoEndToEnd runs the built-in demo configuration with bounded
// traffic and checks that it shows what the README promises: a split with
// both sides served, a shadow with learnt noise and real differences, and
// an active rollout.
func TestDemoEndToEnd(t *testing.T) {
	bs := apptest.DemoBackends(t)
	run := apptest.Start(t, demo.ConfigYAML(bs, "127.0.0.1:0", "127.0.0.1:0"), app.Options{})
	proxyURL, adminURL := run.ProxyURL, run.AdminURL

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := demo.Traffic(ctx, proxyURL, 400, 600)
	if err != nil || st.Sent != 600 || st.Failed != 0 {
		t.Fatalf("traffic %+v %v", st, err)
	}

	canaryUser, stableUser := demo.CheckoutUsers()
	if splitter.Bucket("checkout", []byte(canaryUser)) >= demo.CheckoutPercent*100 || splitter.Bucket("checkout", []byte(stableUser)) < demo.CheckoutPercent*100 {
		t.Errorf("CheckoutUsers are on the wrong sides: %s %s", canaryUser, stableUser)
	}
	for user, want := range map[string]string{canaryUser: "v2", stableUser: "v1"} {
		req, _ := http.NewRequest("GET", proxyURL+"/checkout/cart", nil)
		req.Header.Set("X-User-ID", user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Shadowproxy-Upstream"); got != want {
			t.Errorf("user %s served by %q, want %s", user, got, want)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		var routes []app.RouteView
		testkit.GetJSON(t, nil, adminURL+"/api/v1/routes", &routes)
		api := routes[0]
		if api.Comparison != nil && len(api.Comparison.Targets) == 1 {
			tg := api.Comparison.Targets[0]
			noisy := 0
			for _, n := range api.Comparison.Noise {
				if n.Noisy {
					noisy++
				}
			}
			fields := map[string]bool{}
			for _, f := range tg.TopFields {
				fields[f.Field] = true
			}
			if noisy >= 2 && fields["/items/*/price"] && tg.MatchRateTotal != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo never showed learnt noise and real differences: %+v", api.Comparison)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rollouts []struct{ Route, State string }
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &rollouts)
	if len(rollouts) != 1 || rollouts[0].Route != "checkout" || rollouts[0].State != "progressing" {
		t.Errorf("rollouts %+v", rollouts)
	}
	// The smoke checks gated the first step and passed on both sides.
	var full []struct {
		LastSmoke *struct {
			Verdict string
			Results []struct{ Target, Upstream string }
		} `json:"last_smoke"`
	}
	testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &full)
	if len(full) != 1 || full[0].LastSmoke == nil || full[0].LastSmoke.Verdict != "pass" || len(full[0].LastSmoke.Results) != 2 {
		t.Errorf("the demo's smoke checks: %+v", full)
	}
	// v1's GETs went over its pipelined connections.
	mresp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !regexp.MustCompile(`shadowproxy_upstream_pipeline_requests_total\{result="answered",upstream="v1"\} [1-9]`).Match(metricsText) {
		t.Errorf("no GET to v1 was answered on a pipelined connection")
	}
	// The dark launch reports its cutover readiness with the numbers.
	var co app.CutoverStatus
	testkit.GetJSON(t, nil, adminURL+"/api/v1/routes/api/cutover", &co)
	if co.Serving != "v1" || co.Shadow != "v2" || co.AtLeast != 0.99 || co.Reason == "" || co.CutOver {
		t.Errorf("cutover readiness %+v", co)
	}
}

// TestDemoStory plays the demo's whole story with FastPacing: the checkout
// canary promotes step by step, then v2's checkout breaks and the guardrail
// rolls it back, while the dark launch keeps being compared. Bounded: at
// most 20000 requests and 90 seconds.
func TestDemoStory(t *testing.T) {
	bs := apptest.DemoBackends(t)
	text := demo.ConfigYAMLPaced(bs, "127.0.0.1:0", "127.0.0.1:0", demo.FastPacing)
	cfg := apptest.Load(t, "demo.yaml", text)
	for i, st := range cfg.Routes[1].Rollout.Steps[:3] {
		if st.Hold.D() != demo.FastPacing.Hold {
			t.Errorf("steps[%d].hold = %v, want the pacing's %v", i, st.Hold.D(), demo.FastPacing.Hold)
		}
	}
	run := apptest.Start(t, text, app.Options{})
	proxyURL, adminURL := run.ProxyURL, run.AdminURL
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); demo.Traffic(ctx, proxyURL, 200, 20000) }()
	defer func() { cancel(); <-done }()

	type status struct {
		Route, State string
		Step         int
		Percent      float64
	}
	wait := func(what string, ok func(status) bool) status {
		t.Helper()
		for ctx.Err() == nil {
			var rs []status
			testkit.GetJSON(t, nil, adminURL+"/api/v1/rollouts", &rs)
			if len(rs) == 1 && ok(rs[0]) {
				return rs[0]
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
		return status{}
	}
	wait("the 50% step", func(s status) bool { return s.State == "progressing" && s.Step == 2 && s.Percent == 50 })
	bs.V2.SetFailing(true)
	got := wait("the rollback", func(s status) bool { return s.State != "progressing" })
	if got.State != "rolled_back" || got.Percent != 0 {
		t.Errorf("after v2's checkout broke: %+v, want rolled_back at 0%%", got)
	}
	// The dark launch is untouched by the checkout bug: v2 still answers /api/.
	resp, err := http.Get(bs.V2.URL + "/api/products")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("failing v2 answers /api/products with %d, want 200 (only checkout breaks)", resp.StatusCode)
	}
}
