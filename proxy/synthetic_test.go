package proxy

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// Synthetic requests are served like any other but reach neither the
// rollout observer nor the user-facing counters; they are counted apart.
func TestSyntheticRequestsAreKeptOutOfStatistics(t *testing.T) {
	stable := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "stable") })
	canary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "canary") })
	cfg := mustLoad(t, fmt.Sprintf(`
upstreams:
  - {name: stable, url: "%s"}
  - {name: canary, url: "%s"}
routes:
  - name: api
    upstream: stable
    split: {key: "header:X-User", to: canary, percent: 50}
    synthetic:
      - {header: {X-Synthetic: "true"}}
      - {key_in: [smoke-test-prod]}
`, stable.URL, canary.URL))
	rec := &cohortRecorder{}
	m := metrics.New("test")
	srv, err := New(cfg, Options{Logger: zap.NewNop(), Metrics: m, Observers: func(string) RequestObserver { return rec }})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, srv)
	send := func(user string, synthetic bool) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-User", user)
		if synthetic {
			req.Header.Set("X-Synthetic", "true")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || (string(body) != "stable" && string(body) != "canary") {
			t.Fatalf("synthetic=%v user=%s: %d %q; synthetic requests must still be served", synthetic, user, resp.StatusCode, body)
		}
	}
	for i := 0; i < 6; i++ {
		send(fmt.Sprintf("u%d", i), true)
	}
	for i := 0; i < 4; i++ {
		send("smoke-test-prod", false)
	}
	for i := 0; i < 7; i++ {
		send(fmt.Sprintf("real%d", i), false)
	}
	if got := len(rec.all()); got != 7 {
		t.Errorf("the rollout observer saw %d requests; want only the 7 real ones", got)
	}
	if got := testutil.ToFloat64(m.SyntheticRequests.WithLabelValues("api")); got != 10 {
		t.Errorf("synthetic_requests_total = %v; want 10", got)
	}
	total := m.NewStatusCounters("api", "stable").Total() + m.NewStatusCounters("api", "canary").Total()
	if total != 7 {
		t.Errorf("requests_total over both upstreams = %v; want 7 (synthetic requests counted apart)", total)
	}
	decisions := 0.0
	for _, up := range []string{"stable", "canary"} {
		decisions += testutil.ToFloat64(m.SplitDecisions.WithLabelValues("api", up, "percent"))
	}
	if decisions != 7 {
		t.Errorf("split_decisions_total = %v; want 7", decisions)
	}
}

// Synthetic requests are not mirrored unless shadow.include_synthetic.
func TestSyntheticRequestsAreNotMirrored(t *testing.T) {
	for _, include := range []bool{false, true} {
		t.Run(fmt.Sprintf("include_synthetic=%v", include), func(t *testing.T) {
			primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
			var synth, real atomic.Int64
			shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Synthetic") != "" {
					synth.Add(1)
				} else {
					real.Add(1)
				}
				fmt.Fprint(w, "ok")
			})
			p := startProxy(t, shadowConfig(primary.URL, shadow.URL, fmt.Sprintf("      targets: [shadow]\n      include_synthetic: %v\n    synthetic: [{header: {X-Synthetic: \"true\"}}]", include)))
			for i := 0; i < 8; i++ {
				req, _ := http.NewRequest("GET", p.URL+"/", nil)
				if i < 5 {
					req.Header.Set("X-Synthetic", "true")
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			wantSynth := int64(0)
			if include {
				wantSynth = 5
			}
			deadline := time.Now().Add(10 * time.Second)
			for (real.Load() < 3 || synth.Load() < wantSynth) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			p.stop() // waits for the mirror workers: nothing is still in flight
			if real.Load() != 3 || synth.Load() != wantSynth {
				t.Fatalf("shadow saw %d real and %d synthetic requests; want 3 and %d", real.Load(), synth.Load(), wantSynth)
			}
		})
	}
}
