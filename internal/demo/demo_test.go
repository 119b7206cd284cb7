package demo_test

import (
	"context"
	"io"
	"net/http"
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
}
