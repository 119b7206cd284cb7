package app

import (
	"context"
	"fmt"
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/gates"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// TestSmokeChecksUseUpstreamTLS: smoke checks reach an https canary
// through the canary upstream's tls settings, as the proxy's pools and the
// health probe do; the default client refuses the test server's CA.
func TestSmokeChecksUseUpstreamTLS(t *testing.T) {
	canary := startTLSCanary(t)
	stable := startVersion(t, "stable")
	ca := tlsCanaryCA(t, canary.srv)
	a := startApp(t, tlsCanaryConfig(stable.url, []*tlsCanary{canary}, fmt.Sprintf("{ca_file: %q, server_name: example.com}", ca), `
      steps: [{percent: 10, hold: 1h}, {percent: 100}]`), Options{})
	c, s, ok := a.smokeTargets("shop")
	if !ok {
		t.Fatal("no smoke targets for the route")
	}
	check := &rollout.Smoke{Checks: []rollout.SmokeCheck{{Name: "health", Request: rollout.SmokeRequest{Path: "/healthz"}}}}
	runner := &gates.Runner{Targets: func(string) (gates.Target, gates.Target, bool) { return c, s, true }}
	for _, r := range runner.Smoke(context.Background(), "shop", check) {
		if !r.Passed {
			t.Errorf("%s on %s: %+v", r.Check, r.Target, r)
		}
	}
	// The same check with the default client fails on the unknown CA, so
	// the pass above is the upstream's TLS settings at work.
	c.Client = nil
	runner.Targets = func(string) (gates.Target, gates.Target, bool) { return c, s, true }
	if r := runner.Smoke(context.Background(), "shop", check); r[0].Passed {
		t.Errorf("the canary passed without its ca_file: %+v", r[0])
	}
}
