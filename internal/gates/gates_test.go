package gates

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func expectFrom(t *testing.T, y string) rollout.SmokeExpect {
	t.Helper()
	var e rollout.SmokeExpect
	if err := yaml.Unmarshal([]byte(y), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAssert(t *testing.T) {
	body := []byte(`{"status":"healthy","version":"2.1","build":{"n":3},"items":[{"id":7}]}`)
	cases := []struct {
		name, expect string
		status       int
		latency      time.Duration
		body         []byte
		pass         bool
		failing      string
	}{
		{"all good", `{status: 200, json: {/status: healthy, /version: {exists: true}, /build/n: 3, /items/0/id: 7}, max_latency: 500ms}`, 200, 10 * time.Millisecond, body, true, ""},
		{"wrong status", `{status: 200}`, 503, 0, body, false, "status"},
		{"too slow", `{max_latency: 100ms}`, 200, 300 * time.Millisecond, body, false, "latency"},
		{"wrong value", `{json: {/status: healthy}}`, 200, 0, []byte(`{"status":"degraded"}`), false, "json /status"},
		{"absent", `{json: {/version: {exists: true}}}`, 200, 0, []byte(`{}`), false, "json /version"},
		{"must be absent", `{json: {/debug: {exists: false}}}`, 200, 0, []byte(`{"debug":1}`), false, "json /debug"},
		{"not json", `{json: {/status: healthy}}`, 200, 0, []byte(`<html>`), false, "json /status"},
		{"number type", `{json: {/n: 3}}`, 200, 0, []byte(`{"n":"3"}`), false, "json /n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			as, ok := Assert(expectFrom(t, c.expect), c.status, c.latency, c.body)
			if ok != c.pass {
				t.Fatalf("pass=%v; want %v: %+v", ok, c.pass, as)
			}
			if c.failing != "" {
				found := false
				for _, a := range as {
					if !a.Passed && a.What == c.failing {
						found = true
					}
				}
				if !found {
					t.Fatalf("no failing assertion %q in %+v", c.failing, as)
				}
			}
		})
	}
}

// Checks go to both sides, marked synthetic; a failing check is retried
// and cleanup requests follow.
func TestSmokeBothSides(t *testing.T) {
	var canaryHits, cleanups atomic.Int64
	handler := func(healthy bool, hits *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodDelete {
				cleanups.Add(1)
				return
			}
			if r.Header.Get(SyntheticHeader) != "smoke" || r.Header.Get("X-User-ID") != "smoke-test-prod" {
				w.WriteHeader(400)
				return
			}
			if hits != nil {
				hits.Add(1)
			}
			if healthy {
				fmt.Fprint(w, `{"status":"healthy","version":"1"}`)
				return
			}
			w.WriteHeader(503)
			fmt.Fprint(w, `{"status":"down"}`)
		}
	}
	canary := serve(t, handler(false, &canaryHits))
	stable := serve(t, handler(true, nil))
	var s rollout.Smoke
	if err := yaml.Unmarshal([]byte(`
checks:
  - name: health
    request: {path: /api/health, headers: {X-User-ID: smoke-test-prod}}
    expect: {status: 200, json: {/status: healthy}}
retries: 2
cleanup: [{method: DELETE, path: /api/test-data}]
`), &s); err != nil {
		t.Fatal(err)
	}
	r := &Runner{Targets: func(string) (Target, Target, bool) {
		return Target{Name: "v2", URL: canary}, Target{Name: "v1", URL: stable}, true
	}}
	res := r.Smoke(context.Background(), "api", &s)
	if len(res) != 2 {
		t.Fatalf("%d results; want canary and stable: %+v", len(res), res)
	}
	c, st := res[0], res[1]
	if c.Target != "canary" || c.Passed || c.Attempts != 3 || c.Status != 503 || !strings.Contains(c.Excerpt, "down") {
		t.Fatalf("canary result %+v", c)
	}
	if st.Target != "stable" || !st.Passed || st.Attempts != 1 || st.Upstream != "v1" {
		t.Fatalf("stable result %+v", st)
	}
	if canaryHits.Load() != 3 || cleanups.Load() != 2 {
		t.Fatalf("canary hits %d cleanups %d; want 3 and 2", canaryHits.Load(), cleanups.Load())
	}
}

func TestWebhookRetriesAndReports(t *testing.T) {
	var calls atomic.Int64
	var code atomic.Int64
	code.Store(500)
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(int(code.Load()))
	})
	var reported []error
	r := &Runner{OnWebhook: func(_, _ string, err error) { reported = append(reported, err) }}
	two := 2
	w := rollout.GateWebhook{Type: rollout.WebhookPreStep, URL: url + "/gate?token=s3cret", Timeout: cfgtypes.Duration(2 * time.Second), Retries: &two}
	err := r.Webhook(context.Background(), "api", w, rollout.GatePayload{Route: "api"})
	if !errors.Is(err, ErrNot2xx) || calls.Load() != 3 || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err %v after %d calls; want not-2xx after 3", err, calls.Load())
	}
	code.Store(204)
	if err := r.Webhook(context.Background(), "api", w, rollout.GatePayload{Route: "api"}); err != nil {
		t.Fatalf("a 204 failed the gate: %v", err)
	}
	if len(reported) != 2 || reported[0] == nil || reported[1] != nil {
		t.Fatalf("reported %v", reported)
	}
	// An unreachable hook's error must not carry its token.
	w.URL = "http://127.0.0.1:1/gate?token=s3cret"
	zero := 0
	w.Retries = &zero
	if err := r.Webhook(context.Background(), "api", w, rollout.GatePayload{}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err %v", err)
	}
}
