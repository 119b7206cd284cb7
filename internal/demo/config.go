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
    # GETs to v1 share 4 pipelined connections, with head-of-line blocking
    # bounded at 5ms (the recommended production setting; see
    # shadowproxy_upstream_pipeline_requests_total on /metrics).
    pipeline_conns: 4
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
        # Single-digit user ids (u1) are not folded to {id} automatically
        # (v2 would be folded too); naming the endpoint groups them.
        endpoints: ["GET /api/users/{id}"]
    # When v2 has matched v1 on at least 99%% of comparisons for 10 minutes
    # (over 2000 comparisons), the dashboard's Cutover panel says it is
    # ready and offers the button: v2 then serves and v1 becomes the shadow.
    # (The demo's v2 has a real price difference, so it shows "not ready"
    # with the numbers behind it until that is fixed.)
    cutover:
      when: {match_rate: {at_least: 99%%, for: 10m}, min_comparisons: 2000}
      retire_after: 168h
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
    # Test traffic (the smoke checks' account, or anything sending
    # X-Synthetic: true) is served normally but kept out of the numbers.
    synthetic:
      - {key_in: [smoke-test-prod]}
      - {header: {X-Synthetic: "true"}}
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
      # Promotion waits until a sequential test shows the canary below
      # each threshold: about 100 clean canary requests for 5%%, 500 for 1%%.
      promote_when:
        - {metric: error_rate_5xx, below: 5%%}
        - {metric: latency_p95, below: 250ms}
      rollback_when:
        - {metric: error_rate_5xx, above_baseline: 2x, for: 4s}
        - {metric: health_check_failures, consecutive: 3}
      health_check: {path: /healthz, interval: 2s, timeout: 1s}
      # Before each step gets traffic, and again after each promotion, the
      # proxy sends this check to v2 and to v1; a v2 failure rolls back.
      smoke:
        checks:
          - name: checkout-health
            request: {path: /healthz, headers: {X-User-ID: smoke-test-prod}}
            expect: {status: 200, max_latency: 1s}
        retries: 1
  - name: default
    upstream: v1
`, listen, adminListen, bs.V1.URL, bs.Twin.URL, bs.V2.URL, CheckoutPercent, hold)
}
