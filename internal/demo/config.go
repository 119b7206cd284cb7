package demo

import (
	"fmt"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// CheckoutPercent is the demo's starting canary share on /checkout/.
const CheckoutPercent = 10

// CheckoutUsers returns a user id that the checkout split sends to the
// canary and one it keeps on stable, computed with the same public recipe
// every instance uses (xxhash64(salt + ":" + key) % 10000).
func CheckoutUsers() (canary, stable string) {
	for i := 0; canary == "" || stable == ""; i++ {
		id := fmt.Sprintf("user-%d", i)
		if splitter.Bucket("checkout", []byte(id)) < CheckoutPercent*100 {
			if canary == "" {
				canary = id
			}
		} else if stable == "" {
			stable = id
		}
	}
	return canary, stable
}

// Pacing sets how long the demo's story takes.
type Pacing struct {
	// Hold is how long the rollout stays at each step before promoting.
	Hold time.Duration
}

// DefaultPacing lets a newcomer watch the story: the checkout canary walks
// 10% -> 25% -> 50% -> 100% holding 45s at each step (a little over two
// minutes), and with the demo's default -fail-v2-after 2m v2's checkout
// breaks at the 50% step and the guardrail rolls it back.
var DefaultPacing = Pacing{Hold: 45 * time.Second}

// FastPacing is for tests: the same story in seconds.
var FastPacing = Pacing{Hold: 3 * time.Second}

// ConfigYAML is the demo's configuration for the given backends and
// listeners, paced by DefaultPacing. It goes through the same loader and
// validation as a user's file.
func ConfigYAML(bs *Backends, listen, adminListen string) string {
	return ConfigYAMLPaced(bs, listen, adminListen, DefaultPacing)
}

// ConfigYAMLPaced is ConfigYAML with the rollout paced by p.
func ConfigYAMLPaced(bs *Backends, listen, adminListen string, p Pacing) string {
	hold := p.Hold
	if hold <= 0 {
		hold = DefaultPacing.Hold
	}
	return fmt.Sprintf(`# The built-in demo configuration (shadowproxy demo -print-config shows it).
listen: %s
admin_listen: %s
log: {level: info, format: console}
upstreams:
  - name: v1
    url: %s
    timeout: 5s
  - name: v1-twin
    url: %s
    timeout: 5s
  - name: v2
    url: %s
    timeout: 5s
routes:
  # A dark launch: every GET is served by v1 and mirrored to v2; v1-twin
  # (the same version as v1) teaches the proxy which fields are noise.
  - name: api
    match: {path_prefix: /api/}
    upstream: v1
    shadow:
      targets:
        - name: v2
          headers: {remove: [Authorization, Cookie]}
      percent: 100
      compare:
        secondary: v1-twin
        headers: [Content-Type]
        # The demo learns fast; the default (100 secondary answers per
        # endpoint before a verdict) suits real traffic better.
        noise: {min_observations: 20}
  # A canary: a sticky share of users (by X-User-ID) is served by v2;
  # internal users always are.
  - name: checkout
    match: {path_prefix: /checkout/}
    upstream: v1
    split:
      key: header:X-User-ID
      salt: checkout
      to: v2
      percent: %d
      response_header: X-Shadowproxy-Upstream
      cohorts:
        - name: internal
          when: {header: {X-Internal: "true"}}
          to: v2
    # The canary walks 10%% -> 25%% -> 50%% -> 100%%, holding %[7]s at each
    # step while it stays healthy; a burst of 5xx or failing health probes
    # rolls it back.
    rollout:
      interval: 2s
      window: 30s
      min_samples: 20
      steps:
        - {percent: 10, hold: %[7]s}
        - {percent: 25, hold: %[7]s}
        - {percent: 50, hold: %[7]s}
        - {percent: 100}
      promote_when:
        - {metric: error_rate_5xx, below: 1%%}
        - {metric: latency_p95, below: 250ms}
      rollback_when:
        - {metric: error_rate_5xx, above_baseline: 2x, for: 4s}
        - {metric: health_check_failures, consecutive: 3}
      health_check: {path: /healthz, interval: 2s, timeout: 1s}
  - name: default
    upstream: v1
`, listen, adminListen, bs.V1.URL, bs.Twin.URL, bs.V2.URL, CheckoutPercent, hold)
}
