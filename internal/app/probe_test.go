package app

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/healthcheck"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// tlsCanary is an https endpoint on loopback whose /healthz answers the
// status held in health.
type tlsCanary struct {
	srv    *httptest.Server
	health atomic.Int32
	probes atomic.Int64
}

func startTLSCanary(t *testing.T) *tlsCanary {
	c := &tlsCanary{}
	c.health.Store(http.StatusOK)
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			c.probes.Add(1)
			w.WriteHeader(int(c.health.Load()))
			return
		}
		fmt.Fprint(w, "canary")
	}))
	// The cases with a wrong trust or name fail handshakes on purpose.
	c.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	return c
}

// tlsCanaryCA writes the PEM of the certificate every httptest TLS server uses
// (valid for example.com and 127.0.0.1) and returns its path.
func tlsCanaryCA(t *testing.T, srv *httptest.Server) string {
	path := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tlsCanaryConfig(stable string, canaries []*tlsCanary, tlsBlock, policy string) string {
	var urls []string
	for _, c := range canaries {
		urls = append(urls, c.srv.URL)
	}
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams:
  - {name: stable, url: %s}
  - name: canary
    urls: [%s]
    tls: %s
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    rollout:
      interval: 100ms
      window: 3s
      min_samples: 30
%s
`, stable, strings.Join(urls, ", "), tlsBlock, policy)
}

// The canary's health probe goes through the canary upstream's TLS settings
// to every endpoint: with its ca_file and server_name it reaches https
// endpoints that a default client would refuse, a wrong server_name fails,
// and an endpoint other than the first is probed too.
func TestCanaryProbeUsesUpstreamTLSAndEveryEndpoint(t *testing.T) {
	stable := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	first, second := startTLSCanary(t), startTLSCanary(t)
	ca := tlsCanaryCA(t, first.srv)
	// Generous: a TLS handshake under -race on a busy machine is slow, and
	// the first probe of each endpoint is sent at once anyway.
	hc := rollout.HealthCheck{Path: "/healthz", Interval: cfgtypes.Duration(5 * time.Second),
		Timeout: cfgtypes.Duration(5 * time.Second), ExpectStatus: 200}

	for _, tc := range []struct {
		name        string
		tlsBlock    string
		secondAns   int
		wantFailing []bool // per endpoint
	}{
		{"ca_file and the certificate's own name", fmt.Sprintf("{ca_file: %s}", ca), 200, []bool{false, false}},
		{"ca_file and server_name", fmt.Sprintf("{ca_file: %s, server_name: example.com}", ca), 200, []bool{false, false}},
		{"without ca_file the certificate is unknown", "{}", 200, []bool{true, true}},
		{"a server_name the certificate lacks", fmt.Sprintf("{ca_file: %s, server_name: wrong.test}", ca), 200, []bool{true, true}},
		{"the second endpoint failing", fmt.Sprintf("{ca_file: %s}", ca), 503, []bool{false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			second.health.Store(int32(tc.secondAns))
			a := startApp(t, tlsCanaryConfig(stable, []*tlsCanary{first, second}, tc.tlsBlock, ""), Options{})
			p, err := a.rollouts.healthProbe("shop", hc)
			if err != nil {
				t.Fatal(err)
			}
			defer p.(interface{ Close() error }).Close()
			g := p.(*healthcheck.Group)
			testkit.Eventually(t, "a probe of each endpoint", func() bool {
				st := g.Status()
				return len(st) == 2 && st[0].Checks >= 1 && st[1].Checks >= 1
			})
			worst := 0
			for i, st := range g.Status() {
				if failing := st.ConsecutiveFailures > 0; failing != tc.wantFailing[i] {
					t.Errorf("endpoint %d (%s): %d consecutive failures (%q), want failing %v", i, st.URL, st.ConsecutiveFailures, st.LastError, tc.wantFailing[i])
				}
				worst = max(worst, st.ConsecutiveFailures)
			}
			if got := p.ConsecutiveFailures(); got != worst {
				t.Errorf("the prober reports %d consecutive failures, the worst endpoint %d", got, worst)
			}
		})
	}
}

// End to end: an https canary with two endpoints, of which only the second
// fails its health check, is rolled back by health_check_failures.
func TestRolloutRollsBackOnSecondCanaryEndpointHealth(t *testing.T) {
	stable := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	first, second := startTLSCanary(t), startTLSCanary(t)
	ca := tlsCanaryCA(t, first.srv)
	policy := `      steps: [{percent: 10, hold: 1h}, {percent: 100}]
      rollback_when:
        - {metric: health_check_failures, consecutive: 2}
      health_check: {path: /healthz, interval: 1s, timeout: 1s}`
	a := startApp(t, tlsCanaryConfig(stable, []*tlsCanary{first, second}, fmt.Sprintf("{ca_file: %s, server_name: example.com}", ca), policy), Options{})
	adminURL := "http://" + a.AdminAddr()
	testkit.Eventually(t, "probes of both endpoints", func() bool { return first.probes.Load() >= 2 && second.probes.Load() >= 2 })
	if st := rollouts(t, adminURL); st[0].State != "progressing" {
		t.Fatalf("rolled back while every endpoint was healthy: %+v", st)
	}
	second.health.Store(http.StatusServiceUnavailable)
	testkit.Eventually(t, "rollback", func() bool { return rollouts(t, adminURL)[0].State == "rolled_back" })
	if first.health.Load() != http.StatusOK {
		t.Fatal("the first endpoint was meant to stay healthy")
	}
}
