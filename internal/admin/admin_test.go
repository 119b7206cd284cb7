package admin

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func do(t *testing.T, srv *httptest.Server, method, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// As the dashboard and the CLI send it.
	req.Header.Set(CSRFHeader, "1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndReady(t *testing.T) {
	ready := true
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "shadowproxy_test_total", Help: "h"})
	reg.MustRegister(c)
	c.Inc()
	srv := httptest.NewServer(Handler(Options{Registry: reg, Ready: func() bool { return ready }, Loopback: true}))
	defer srv.Close()
	if code, _ := do(t, srv, "GET", "/healthz", ""); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _ := do(t, srv, "GET", "/readyz", ""); code != 200 {
		t.Errorf("readyz %d", code)
	}
	ready = false
	if code, _ := do(t, srv, "GET", "/readyz", ""); code != 503 {
		t.Errorf("readyz while draining %d", code)
	}
	if code, body := do(t, srv, "GET", "/metrics", ""); code != 200 || !strings.Contains(body, "shadowproxy_test_total 1") {
		t.Errorf("metrics %d %q", code, body)
	}
}

func TestMutationsNeedToken(t *testing.T) {
	var calls []string
	cmd := func(route, action string) (any, error) {
		calls = append(calls, route+"/"+action)
		if route == "nope" {
			return nil, fmt.Errorf("route %q: %w", route, ErrNotFound)
		}
		return map[string]string{"state": "paused"}, nil
	}
	tests := []struct {
		name     string
		opts     Options
		token    string
		path     string
		wantCode int
	}{
		{"loopback without token allows", Options{Loopback: true}, "", "/api/v1/rollouts/api/pause", 200},
		{"public without token refuses", Options{Loopback: false}, "", "/api/v1/rollouts/api/pause", 401},
		{"token required and missing", Options{Token: "s3", Loopback: true}, "", "/api/v1/rollouts/api/pause", 401},
		{"token wrong", Options{Token: "s3"}, "nope", "/api/v1/rollouts/api/pause", 401},
		{"token right", Options{Token: "s3"}, "s3", "/api/v1/rollouts/api/pause", 200},
		{"unknown action", Options{Loopback: true}, "", "/api/v1/rollouts/api/explode", 400},
		{"unknown route", Options{Loopback: true}, "", "/api/v1/rollouts/nope/pause", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.RolloutCommand = cmd
			srv := httptest.NewServer(Handler(tt.opts))
			defer srv.Close()
			if code, body := do(t, srv, "POST", tt.path, tt.token); code != tt.wantCode {
				t.Errorf("code %d want %d: %s", code, tt.wantCode, body)
			}
		})
	}
	if len(calls) != 3 || calls[0] != "api/pause" {
		t.Errorf("command calls = %v", calls)
	}
}

func TestProtectReads(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Token: "s3", ProtectReads: true, Routes: func() any { return []string{"r"} }}))
	defer srv.Close()
	if code, _ := do(t, srv, "GET", "/api/v1/routes", ""); code != 401 {
		t.Errorf("unauthenticated read %d", code)
	}
	if code, body := do(t, srv, "GET", "/api/v1/routes", "s3"); code != 200 || !strings.Contains(body, `"r"`) {
		t.Errorf("authenticated read %d %s", code, body)
	}
	if code, _ := do(t, srv, "GET", "/healthz", ""); code != 200 {
		t.Errorf("healthz must stay open for probes: %d", code)
	}
}

func TestDiffsLimitValidation(t *testing.T) {
	var gotLimit int
	var gotRoute, gotField string
	srv := httptest.NewServer(Handler(Options{Diffs: func(route string, limit int, field string) (any, error) {
		gotRoute, gotLimit, gotField = route, limit, field
		return []string{}, nil
	}}))
	defer srv.Close()
	if code, _ := do(t, srv, "GET", "/api/v1/diffs?route=api&limit=0", ""); code != 400 {
		t.Errorf("limit=0 accepted: %d", code)
	}
	if code, _ := do(t, srv, "GET", "/api/v1/diffs?route=api&limit=7&field=/price", ""); code != 200 || gotLimit != 7 || gotRoute != "api" || gotField != "/price" {
		t.Errorf("code %d limit %d route %q field %q", code, gotLimit, gotRoute, gotField)
	}
}

func TestReloadErrorsListed(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Loopback: true, Reload: func() (any, error) {
		return nil, fmt.Errorf("a.yaml:3: listen: bad\na.yaml:9: routes[0].upstream: unknown")
	}}))
	defer srv.Close()
	code, body := do(t, srv, "POST", "/api/v1/reload", "")
	if code != 422 || !strings.Contains(body, "routes[0].upstream: unknown") {
		t.Errorf("%d %s", code, body)
	}
}

// TestPprofOffUnlessConfigured: profiles expose memory contents; they exist
// only with admin.pprof and then always need the token, loopback or not.
func TestPprofOffUnlessConfigured(t *testing.T) {
	for _, tt := range []struct {
		opts  Options
		token string
		want  int
	}{
		{Options{Loopback: true}, "", 404},
		{Options{Token: "s3"}, "s3", 404},
		{Options{Loopback: true, Pprof: true}, "", 401},
		{Options{Token: "s3", Loopback: true, Pprof: true}, "", 401},
		{Options{Token: "s3", Pprof: true}, "nope", 401},
		{Options{Token: "s3", Pprof: true}, "s3", 200},
	} {
		srv := httptest.NewServer(Handler(tt.opts))
		if code, _ := do(t, srv, "GET", "/debug/pprof/goroutine?debug=1", tt.token); code != tt.want {
			t.Errorf("pprof %v, token %q: %d, want %d", tt.opts.Pprof, tt.token, code, tt.want)
		}
		srv.Close()
	}
}

// TestForeignHostRefused: DNS rebinding. A page on rebind.evil.example whose
// name resolves to 127.0.0.1 makes the browser send Host:
// rebind.evil.example; such a request gets 421 for reads, writes and
// probes alike. Loopback names, the connection's own address, admin_listen's
// host and admin.hosts entries are served.
func TestForeignHostRefused(t *testing.T) {
	var calls int
	o := Options{Loopback: true, ListenAddr: "admin.internal:9901", Hosts: []string{"Ops.Example.Com"},
		Routes:         func() any { return []string{"r"} },
		RolloutCommand: func(string, string) (any, error) { calls++; return "ok", nil }}
	srv := httptest.NewServer(Handler(o))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	for _, tt := range []struct {
		host, method, path string
		want               int
	}{
		{"rebind.evil.example", "GET", "/api/v1/routes", 421},
		{"rebind.evil.example:" + port, "POST", "/api/v1/rollouts/api/promote", 421},
		{"rebind.evil.example", "GET", "/metrics", 421},
		{"rebind.evil.example", "GET", "/healthz", 421},
		{"localhost." + "evil.example", "GET", "/api/v1/routes", 421},
		{"127.0.0.1:" + port, "GET", "/api/v1/routes", 200},
		{"localhost:" + port, "GET", "/api/v1/routes", 200},
		{"[::1]:" + port, "GET", "/api/v1/routes", 200},
		{"admin.internal:9901", "GET", "/api/v1/routes", 200},
		{"ops.example.com", "GET", "/api/v1/routes", 200},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		req.Host = tt.host
		req.Header.Set(CSRFHeader, "1")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s with Host %q: %d %s, want %d", tt.method, tt.path, tt.host, resp.StatusCode, body, tt.want)
		}
	}
	if calls != 0 {
		t.Errorf("a foreign-host mutation ran %d times", calls)
	}
}

// TestMutationCSRF: on a loopback listener without a token, a mutation
// needs the CSRF header and no foreign Origin. A page's auto-submitted form
// (POST, text/plain, Origin of the page) has neither; the dashboard's fetch
// has both.
func TestMutationCSRF(t *testing.T) {
	var calls int
	srv := httptest.NewServer(Handler(Options{Loopback: true,
		RolloutCommand: func(string, string) (any, error) { calls++; return "ok", nil }}))
	defer srv.Close()
	for _, tt := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"form post from another origin", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403},
		{"no CSRF header, no Origin", map[string]string{"Content-Type": "text/plain"}, 403},
		{"CSRF header, foreign Origin", map[string]string{CSRFHeader: "1", "Origin": "http://evil.example"}, 403},
		{"CSRF header, other port", map[string]string{CSRFHeader: "1", "Origin": "http://127.0.0.1:1"}, 403},
		{"CSRF header, null Origin", map[string]string{CSRFHeader: "1", "Origin": "null"}, 403},
		{"CSRF header, same Origin", map[string]string{CSRFHeader: "1", "Origin": srv.URL}, 200},
		{"CSRF header, no Origin (curl)", map[string]string{CSRFHeader: "1"}, 200},
	} {
		before := calls
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/rollouts/api/promote", strings.NewReader("x=y"))
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want || (tt.want == 403) != (calls == before) {
			t.Errorf("%s: %d (command ran: %v), want %d", tt.name, resp.StatusCode, calls != before, tt.want)
		}
	}
}

// TestUnknownPathsAndMethods: the API answers what it does not serve in
// JSON too: 405 with Allow for a known path and the wrong method, 404
// otherwise, with or without the dashboard mounted.
func TestUnknownPathsAndMethods(t *testing.T) {
	for _, dash := range []bool{false, true} {
		o := Options{Loopback: true, Routes: func() any { return []any{} }}
		if dash {
			o.Dashboard = Dashboard()
		}
		srv := httptest.NewServer(Handler(o))
		for _, tc := range []struct {
			method, path string
			code         int
			allow        string
		}{
			{"GET", "/api/v1/nope", 404, ""},
			{"POST", "/api/v1/nope", 404, ""},
			{"DELETE", "/api/v1/routes", 405, "GET, HEAD"},
			{"POST", "/api/v1/routes", 405, "GET, HEAD"},
			{"GET", "/api/v1/reload", 405, "POST"},
			{"GET", "/api/v1/rollouts/checkout/pause", 405, "POST"},
			{"POST", "/healthz", 405, "GET, HEAD"},
		} {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || resp.Header.Get("Allow") != tc.allow ||
				resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(b), `"error"`) {
				t.Errorf("dashboard %v: %s %s = %d Allow %q %s %s; want %d Allow %q and a JSON error",
					dash, tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), b, tc.code, tc.allow)
			}
		}
		srv.Close()
	}
}

// TestNoiseResetIsAMutation: resetting learnt noise changes verdicts, so it
// is guarded like every other mutation.
func TestNoiseResetIsAMutation(t *testing.T) {
	var calls []string
	reset := func(route string) (any, error) {
		calls = append(calls, route)
		if route == "nope" {
			return nil, fmt.Errorf("route %q: %w", route, ErrNotFound)
		}
		return map[string]string{"result": "noise reset"}, nil
	}
	for _, tt := range []struct {
		opts  Options
		token string
		path  string
		want  int
	}{
		{Options{Loopback: false}, "", "/api/v1/routes/api/noise/reset", 401},
		{Options{Token: "s3", Loopback: true}, "", "/api/v1/routes/api/noise/reset", 401},
		{Options{Token: "s3"}, "s3", "/api/v1/routes/api/noise/reset", 200},
		{Options{Loopback: true}, "", "/api/v1/routes/nope/noise/reset", 404},
	} {
		tt.opts.NoiseReset = reset
		srv := httptest.NewServer(Handler(tt.opts))
		if code, body := do(t, srv, "POST", tt.path, tt.token); code != tt.want {
			t.Errorf("%s with %+v: code %d want %d: %s", tt.path, tt.opts, code, tt.want, body)
		}
		srv.Close()
	}
	if len(calls) != 2 || calls[0] != "api" {
		t.Errorf("reset calls = %v", calls)
	}
	srv := httptest.NewServer(Handler(Options{Loopback: true, NoiseReset: reset}))
	defer srv.Close()
	if code, _ := do(t, srv, "GET", "/api/v1/routes/api/noise/reset", ""); code != 405 {
		t.Errorf("GET on the reset endpoint = %d, want 405", code)
	}
}
