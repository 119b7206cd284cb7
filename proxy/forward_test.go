package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func TestURIForwardedExactly(t *testing.T) {
	got := make(chan string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.RequestURI })
	p := startProxy(t, simpleConfig(up.URL, ""))
	for _, uri := range []string{
		"/api/a%2Fb/c%20d?x=1&x=2&y=%20&z",
		"/double//slash/./dot/../x?q=%E2%82%AC&q=%e2%82%ac",
		"/plain",
		"/?a=b;c=d&&e",
	} {
		resp := rawRequest(t, p.Addr, "GET "+uri+" HTTP/1.1\r\nHost: example.test\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", uri, resp.StatusCode)
		}
		if u := <-got; u != uri {
			t.Errorf("upstream saw %q, want %q", u, uri)
		}
	}
}

func TestHopByHopRemovedAndForwardedHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	hosts := make(chan string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		hosts <- r.Host
		w.Header().Set("Connection", "X-Upstream-Hop")
		w.Header().Set("X-Upstream-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-End-To-End", "kept")
		io.WriteString(w, "ok")
	})
	p := startProxy(t, simpleConfig(up.URL, ""))
	resp := rawRequest(t, p.Addr, "GET /h HTTP/1.1\r\nHost: front.test:8080\r\n"+
		"Connection: keep-alive, X-Client-Hop\r\nX-Client-Hop: 1\r\nKeep-Alive: 300\r\n"+
		"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\n"+
		"Trailer: X-T\r\nX-Forwarded-For: 10.1.2.3\r\nVia: 1.0 edge\r\nX-Keep: yes\r\n\r\n")
	if resp.StatusCode != 200 || readBody(t, resp) != "ok" {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := <-seen
	for _, name := range []string{"Connection", "X-Client-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		if v, ok := h[http.CanonicalHeaderKey(name)]; ok {
			t.Errorf("upstream received hop-by-hop %s: %q", name, v)
		}
	}
	if h.Get("X-Keep") != "yes" {
		t.Errorf("end-to-end header lost: %v", h)
	}
	if got := h.Get("X-Forwarded-For"); got != "10.1.2.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := h.Values("X-Forwarded-For"); len(got) != 1 {
		t.Errorf("X-Forwarded-For must be one field, got %q", got)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if got := h.Get("X-Forwarded-Host"); got != "front.test:8080" {
		t.Errorf("X-Forwarded-Host = %q", got)
	}
	if got := h.Get("Via"); got != "1.0 edge, 1.1 shadowproxy" {
		t.Errorf("Via = %q", got)
	}
	if host := <-hosts; host != "front.test:8080" {
		t.Errorf("Host not preserved: %q", host)
	}
	for _, name := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("client received hop-by-hop %s: %q", name, v)
		}
	}
	if resp.Header.Get("X-End-To-End") != "kept" || resp.Header.Get("Via") != "1.1 shadowproxy" {
		t.Errorf("response headers: %v", resp.Header)
	}
}

func TestRewriteHost(t *testing.T) {
	hosts := make(chan string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })
	p := startProxy(t, simpleConfig(up.URL, "    rewrite_host: true"))
	rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: front.test\r\n\r\n")
	if h := <-hosts; h != up.Addr {
		t.Errorf("Host = %q, want %q", h, up.Addr)
	}
}

func TestUpstreamErrors(t *testing.T) {
	hang := make(chan struct{})
	var hits sync.WaitGroup
	var hangCount int
	var mu sync.Mutex
	slow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hangCount++
		mu.Unlock()
		hits.Done()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	defer close(hang)
	dead := "http://" + testkit.ClosedAddr(t)

	t.Run("closed port is 502", func(t *testing.T) {
		p := startProxy(t, simpleConfig(dead, ""))
		resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 502 || !strings.Contains(readBody(t, resp), "502 Bad Gateway") {
			t.Errorf("status %d", resp.StatusCode)
		}
		if v := testutil.ToFloat64(p.Met.UpstreamErrors.WithLabelValues("default", "stable", "connect")); v != 1 {
			t.Errorf("connect errors = %v", v)
		}
		if v := testutil.ToFloat64(p.Met.Requests.WithLabelValues("default", "stable", "502")); v != 1 {
			t.Errorf("requests{502} = %v", v)
		}
		if n := p.Logs.FilterMessage("upstream request failed").FilterField(zapString("reason", "connect")).Len(); n != 1 {
			t.Errorf("log lines = %d", n)
		}
	})
	t.Run("hanging upstream is 504 and not retried", func(t *testing.T) {
		hits.Add(1)
		p := startProxy(t, simpleConfig(slow.URL, "    timeout: 300ms"))
		resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 504 {
			t.Errorf("status %d", resp.StatusCode)
		}
		hits.Wait()
		mu.Lock()
		n := hangCount
		mu.Unlock()
		if n != 1 {
			t.Errorf("upstream saw %d attempts, want 1 (timeouts are never retried)", n)
		}
		if v := testutil.ToFloat64(p.Met.UpstreamErrors.WithLabelValues("default", "stable", "timeout")); v != 1 {
			t.Errorf("timeout errors = %v", v)
		}
	})
}

func TestRequestBodyTooLarge(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		t.Error("an oversized request reached the upstream")
	})
	p := startProxy(t, simpleConfig(up.URL, "")+"limits: {max_request_body: 1KiB}\n")
	body := strings.Repeat("x", 4096)
	resp := rawRequest(t, p.Addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4096\r\n\r\n"+body)
	if resp.StatusCode != 413 {
		t.Errorf("status %d, want 413", resp.StatusCode)
	}
	if v := testutil.ToFloat64(p.Met.RejectedRequests.WithLabelValues("body_too_large")); v != 1 {
		t.Errorf("rejected{body_too_large} = %v", v)
	}
}

func TestHeadersTooLarge(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := startProxy(t, simpleConfig(up.URL, "")+"limits: {max_header_size: 2KiB}\n")
	resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("y", 4096)+"\r\n\r\n")
	if resp.StatusCode != 431 {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	// The log names the setting to raise, not fasthttp's internals.
	entries := p.Logs.FilterMessage("request rejected before routing").All()
	if len(entries) != 1 {
		t.Fatalf("%d rejection log lines, want 1", len(entries))
	}
	f := entries[0].ContextMap()
	if f["setting"] != "limits.max_header_size" || strings.Contains(fmt.Sprint(f), "ReadBufferSize") {
		t.Errorf("rejection logged with %v, want setting limits.max_header_size and no fasthttp internals", f)
	}
}

func TestKeepAliveReuse(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := startProxy(t, simpleConfig(up.URL, ""))
	client := &http.Client{Timeout: 5 * time.Second}
	const n = 300
	loadLoop(t, client, p.URL+"/k", 4, n)
	if c := up.conns.Load(); c > 8 {
		t.Errorf("upstream accepted %d connections for %d requests; keep-alive is not reused", c, n)
	}
}

func TestRouteMatching(t *testing.T) {
	mk := func(name string) *upstreamServer {
		return startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	}
	a, b, c, d := mk("api"), mk("admin-host"), mk("wild"), mk("default")
	p := startProxy(t, `
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
upstreams:
  - {name: a, url: `+a.URL+`}
  - {name: b, url: `+b.URL+`}
  - {name: c, url: `+c.URL+`}
  - {name: d, url: `+d.URL+`}
routes:
  - name: api
    match: {path_prefix: /api/, methods: [GET, POST]}
    upstream: a
  - name: adminhost
    match: {host: Admin.Example.com}
    upstream: b
  - name: wild
    match: {host: "*.example.org", path_prefix: /w}
    upstream: c
  - name: default
    upstream: d
`)
	tests := []struct{ method, path, host, want string }{
		{"GET", "/api/x", "any", "api"},
		{"POST", "/api/x", "any", "api"},
		{"DELETE", "/api/x", "any", "default"},
		{"GET", "/apix", "any", "default"},
		{"GET", "/x", "admin.example.com:8443", "admin-host"},
		{"GET", "/x", "ADMIN.example.COM", "admin-host"},
		{"GET", "/w/1", "a.example.org", "wild"},
		{"GET", "/w/1", "example.org", "default"},
		{"GET", "/x", "a.example.org", "default"},
	}
	for _, tt := range tests {
		resp := rawRequest(t, p.Addr, tt.method+" "+tt.path+" HTTP/1.1\r\nHost: "+tt.host+"\r\nContent-Length: 0\r\n\r\n")
		if got := readBody(t, resp); got != tt.want {
			t.Errorf("%s %s host=%s went to %q, want %q", tt.method, tt.path, tt.host, got, tt.want)
		}
	}
}

func TestNoRouteIs404(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := startProxy(t, `
upstreams: [{name: s, url: `+up.URL+`}]
routes: [{name: only, match: {path_prefix: /only}, upstream: s}]
`)
	resp := rawRequest(t, p.Addr, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 404 || testutil.ToFloat64(p.Met.Unmatched) != 1 {
		t.Errorf("status %d unmatched %v", resp.StatusCode, testutil.ToFloat64(p.Met.Unmatched))
	}
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	started := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "finished")
	})
	p := startProxy(t, simpleConfig(up.URL, ""))
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(p.URL + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	<-started
	if !p.Srv.Ready() {
		t.Error("not ready while serving")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- p.Srv.Shutdown(ctx) }()
	r := <-res
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("in-flight request: %+v", r)
	}
	if err := <-shutdownErr; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if p.Srv.Ready() {
		t.Error("ready after shutdown")
	}
}
