package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// Well-formed request parts (RFC 9110/9112/3986), for which the matcher's
// answer is compared with the documented semantics. Anything else must only
// not crash the matcher.
var (
	fuzzPathRE = regexp.MustCompile(`^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$`)
	fuzzHostRE = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`)
)

// referenceRoute is the README's route semantics written as plainly as
// possible: routes in order; the first whose methods (exact), path prefix
// (of the path as sent, without the query) and host (without port,
// case-insensitive; "*.x" matches strict subdomains of x) all match wins.
func referenceRoute(cfg *config.Config, method, host, target string) string {
	hostNoPort, _, _ := strings.Cut(host, ":")
	path, _, _ := strings.Cut(target, "?")
	for _, r := range cfg.Routes {
		if len(r.Match.Methods) > 0 && !slices.Contains(r.Match.Methods, method) {
			continue
		}
		if !strings.HasPrefix(path, r.Match.PathPrefix) {
			continue
		}
		if h := r.Match.Host; h != "" {
			if suffix, wild := strings.CutPrefix(h, "*"); wild {
				if len(hostNoPort) <= len(suffix) || !strings.EqualFold(hostNoPort[len(hostNoPort)-len(suffix):], suffix) {
					continue
				}
			} else if !strings.EqualFold(hostNoPort, h) {
				continue
			}
		}
		return r.Name
	}
	return ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzRouteMatch compiles a snapshot whose first route's host and path
// prefix come from the fuzzer, parses a request line and Host from the
// fuzzer the way the server does, and matches it. The matcher must never
// panic, a config that validates must compile, and for well-formed requests
// the chosen route must be the one referenceRoute picks.
func FuzzRouteMatch(f *testing.F) {
	seeds := [][5]string{
		// method, host, path, route host, route prefix
		{"GET", "admin.example.com", "/x", "", "/"},
		{"GET", "ADMIN.example.COM:8443", "/x", "admin.example.com", ""},
		{"POST", "a.example.org", "/w/1", "*.example.org", "/w"},
		{"GET", "example.org", "/w/1", "*.example.org", "/w"},
		{"DELETE", "any", "/api/x?y=1", "", "/api/"},
		{"GET", "any", "/apix", "", "/api/"},
		{"get", "any", "/api/x", "", "/api/"},
		{"GET", "h:80", "/%61pi/x", "", "/api/"},
		{"GET", "h", "/a?/api/", "", "/api/"},
		{"GET", "[::1]:80", "/", "", ""},
		{"GET", "x.example.org.", "/w", "*.example.org", ""},
		{"PUT", ".example.org", "/w", "", ""},
		{"PUT", "A.EXAMPLE.ORG:1", "/wx", "", ""},
		{"OPTIONS", "h", "*", "", "/"},
		{"GET", "h", "http://evil.test/x", "evil.test", ""},
		{"GET", "h", "//evil.test/x", "evil.test", ""},
		{"GET", "h@evil.test", "/", "evil.test", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	deps := buildDeps{metrics: metrics.New("fuzz"), log: zap.NewNop()}
	f.Fuzz(func(t *testing.T, method, host, target, routeHost, routePrefix string) {
		cfg := &config.Config{
			Upstreams: []config.Upstream{{Name: "a", URL: "http://127.0.0.1:1"}, {Name: "b", URL: "http://127.0.0.1:2"}},
			Routes: []config.Route{
				{Name: "fuzzed", Match: config.Match{Host: routeHost, PathPrefix: routePrefix, Methods: []string{"GET", "POST"}}, Upstream: "a"},
				{Name: "wild", Match: config.Match{Host: "*.example.org", PathPrefix: "/w"}, Upstream: "b"},
				{Name: "exact", Match: config.Match{Host: "Admin.Example.com"}, Upstream: "b"},
				{Name: "api", Match: config.Match{PathPrefix: "/api/", Methods: []string{"DELETE"}}, Upstream: "a"},
			},
		}
		cfg.ApplyDefaults()
		if errs := cfg.Validate(); len(errs) > 0 {
			return
		}
		snap, err := buildSnapshot(cfg, nil, deps)
		if err != nil {
			t.Fatalf("a config that validates does not compile: %v", err)
		}
		defer snap.closeUnused(nil)

		raw := method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		var ctx fasthttp.RequestCtx
		if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return // the server answers 400 before routing
		}
		r := snap.match(&ctx)
		got := ""
		if r != nil {
			got = r.Name
		}
		if !isToken(method) || !fuzzPathRE.MatchString(target) || !fuzzHostRE.MatchString(host) || !isASCII(routeHost) {
			return
		}
		if want := referenceRoute(cfg, method, host, target); got != want {
			t.Errorf("%s %s Host %s with route host %q prefix %q: matched %q, want %q", method, target, host, routeHost, routePrefix, got, want)
		}
	})
}

// FuzzRequestPath sends arbitrary bytes through a running proxy to a strict
// raw upstream. Whatever a client sends, the proxy must not crash, must
// keep serving, and everything that reaches the upstream must be
// unambiguous HTTP/1.1 (readWireRequest's rules). The proxy listens on
// loopback rather than an in-memory listener so that the client can
// half-close: the proxy then sees the end of the input at once instead of
// waiting for read_timeout, which keeps an iteration near a millisecond.
func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /api/x?y=1 HTTP/1.1\r\nHost: evil.test\r\n\r\nGET /two HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc",
		"POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 44\r\n\r\nabc" + smuggled,
		"GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: Content-Length, Host\r\nContent-Length: 3\r\n\r\nabc",
		"GET /a HTTP/1.1\nHost: a.test\n\n",
		"GET http://evil.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n 2\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	up := startWireUpstream(f, serveOK)
	p := startProxy(f, fmt.Sprintf(`
upstreams:
  - {name: up, url: %s, timeout: 2s}
routes:
  - {name: evil, match: {host: evil.test}, upstream: up}
  - {name: admin, match: {path_prefix: /admin/}, upstream: up}
  - {name: default, upstream: up}
limits: {read_timeout: 1s, max_header_size: 4KiB, max_request_body: 64KiB}
`, up.URL))
	f.Fuzz(func(t *testing.T, input []byte) {
		before := len(up.Violations())
		c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(input)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()

		// Everything the upstream read so far must have been well-framed.
		if v := up.Violations(); len(v) > before {
			t.Fatalf("input %q reached the upstream in an ambiguous form: %v", input, v[before:])
		}
		// And the proxy still serves.
		res := rawClient(t, p.Addr, []string{"GET /health HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 3*time.Second)
		if len(res.Status) != 1 || res.Status[0] != 200 {
			t.Fatalf("after input %q the proxy no longer serves: %s", input, res)
		}
	})
}

// FuzzCompileConfig: every configuration config.Load accepts must compile
// into a snapshot. Validation is the only gate an operator sees (shadowproxy
// validate, a reload's answer); a config that passes it and then fails to
// compile is rejected with an error the validator never explained.
func FuzzCompileConfig(f *testing.F) {
	for _, s := range []string{
		"upstreams: [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: s}]\n",
		`trusted_proxies: [10.0.0.0/8, "::1"]
upstreams:
  - {name: s, url: "http://127.0.0.1:1"}
  - {name: c, url: "https://localhost:2"}
routes:
  - name: r
    match: {host: "*.a.test", path_prefix: /api/, methods: [get, POST]}
    upstream: s
    split:
      key: cookie:uid
      to: c
      percent: 12.5
      response_header: X-Up
      cohorts: [{name: i, when: {header: {X-Internal: "true"}}, to: c}]
  - name: m
    upstream: s
    shadow:
      targets: [c, {name: s, host: shadow.test, headers: {set: {X-A: b}, remove: [Cookie]}}]
      percent: 50
      key: ip
      workers: 2
      queue_size: 4
      compare: {secondary: s}
`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Load("fuzz.yaml", data, func(string) (string, bool) { return "", false })
		if err != nil {
			return
		}
		snap, err := buildSnapshot(cfg, nil, buildDeps{metrics: metrics.New("fuzz"), log: zap.NewNop()})
		if err != nil {
			t.Fatalf("config.Load accepted %q but it does not compile: %v", data, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		snap.closeMirrors()
		snap.waitMirrors(ctx)
		snap.closeUnused(nil)
	})
}
