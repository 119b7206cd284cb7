package proxy

// Faults: broken upstreams, end to end on loopback. The primary path must
// answer 502 or 504 with the right reason counted, retry only what is safe
// to retry, and keep serving; a broken shadow must change nothing a client
// sees. Every case ends with a goroutine check against what was running
// before it started.

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// faultBehaviour is how a broken upstream treats each connection.
type faultBehaviour func(c *wireConn)

// readThenHold reads one request, writes answer (if any), then keeps the
// connection open without another byte until the proxy (or the test's
// cleanup) closes it, so that the proxy's error comes from what it read and
// not from a close.
func readThenHold(answer string) faultBehaviour {
	return func(c *wireConn) {
		if _, err := c.ReadRequest(); err != nil {
			return
		}
		if answer != "" {
			io.WriteString(c, answer)
		}
		io.Copy(io.Discard, c.R)
	}
}

// resetMidBody announces 1000 body bytes, sends 10 and resets the
// connection (SO_LINGER 0 turns Close into a RST).
func resetMidBody(c *wireConn) {
	if _, err := c.ReadRequest(); err != nil {
		return
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
	time.Sleep(20 * time.Millisecond)
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// closeWhenIdle answers one request with a keep-alive response, then closes
// the connection shortly after, as an upstream with a short idle timeout
// does: the proxy's pooled connection goes stale without it knowing.
func closeWhenIdle(c *wireConn) {
	if _, err := c.ReadRequest(); err != nil {
		return
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	time.Sleep(50 * time.Millisecond)
}

const (
	bigHead = "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\nok"
	// max_response_body is 1KiB in the fault configs.
	bigBody        = "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n%s"
	bigChunkedBody = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n%s\r\n0\r\n\r\n"
)

// faultCase is one way for an upstream to break.
type faultCase struct {
	name   string
	refuse bool // no listener at all
	handle faultBehaviour
	// status and reason are what the primary path must report.
	status int
	reason string
	// shadowOutcome is the shadow counter that must move.
	shadowOutcome string
}

func faultCases() []faultCase {
	return []faultCase{
		{name: "refuses connections", refuse: true, status: 502, reason: "connect", shadowOutcome: "error"},
		{name: "resets mid-body", handle: resetMidBody, status: 502, reason: "reset", shadowOutcome: "error"},
		{name: "hangs", handle: readThenHold(""), status: 504, reason: "timeout", shadowOutcome: "timeout"},
		{name: "answers malformed HTTP", handle: readThenHold("HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok"), status: 502, reason: "other", shadowOutcome: "error"},
		// Differing Content-Lengths: a proxy MUST discard the response and
		// answer 502 (RFC 9112 §6.3 item 5); forwarding either length
		// desynchronises the client connection.
		{name: "answers with differing Content-Lengths", handle: readThenHold("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 12\r\n\r\nok0123456789"), status: 502, reason: "other", shadowOutcome: "error"},
		{name: "answers with something else than HTTP", handle: readThenHold("SSH-2.0-OpenSSH_9.6\r\n"), status: 502, reason: "other", shadowOutcome: "error"},
		{name: "sends oversized headers", handle: readThenHold(fmt.Sprintf(bigHead, strings.Repeat("h", 64<<10))), status: 502, reason: "other", shadowOutcome: "error"},
		{name: "sends an oversized body", handle: readThenHold(fmt.Sprintf(bigBody, strings.Repeat("b", 4096))), status: 502, reason: "other", shadowOutcome: "error"},
		{name: "sends an oversized chunked body", handle: readThenHold(fmt.Sprintf(bigChunkedBody, strings.Repeat("b", 4096))), status: 502, reason: "other", shadowOutcome: "error"},
	}
}

// faultUpstreamURL starts the broken upstream of fc (or reserves a port
// nobody listens on) and returns its URL.
func faultUpstreamURL(t *testing.T, fc faultCase) (string, *wireUpstream) {
	if fc.refuse {
		return "http://" + testkit.ClosedAddr(t), nil
	}
	u := startWireUpstream(t, fc.handle)
	return u.URL, u
}

// checkNoLeak fails when goroutines started since baseline are still
// running after a bounded wait. It ignores only the process-wide goroutines
// and the fasthttp server's idle-worker cleaner (which sleeps 10s after
// Shutdown before it ends); upstream pool cleaners end within the 500ms
// max_idle_conn_duration of these configs and are waited for.
func checkNoLeak(t *testing.T, what string, baseline goleak.Option) {
	t.Helper()
	opts := append(processWide(), baseline,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: goroutines leaked: %v", what, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// faultProxyConfig: /ok goes to a healthy upstream, everything else to the
// broken one, which has a 400ms timeout and a 1KiB response body limit.
func faultProxyConfig(broken, healthy string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: broken, url: %s, timeout: 400ms, max_response_body: 1KiB, max_idle_conn_duration: 500ms}
  - {name: healthy, url: %s, max_idle_conn_duration: 500ms}
routes:
  - {name: ok, match: {path_prefix: /ok}, upstream: healthy}
  - {name: default, upstream: broken}
`, broken, healthy)
}

func TestFaultPrimary(t *testing.T) {
	for _, fc := range faultCases() {
		baseline := goleak.IgnoreCurrent()
		t.Run(fc.name, func(t *testing.T) {
			brokenURL, broken := faultUpstreamURL(t, fc)
			healthy := startWireUpstream(t, serveOK)
			p := startProxy(t, faultProxyConfig(brokenURL, healthy.URL))
			for i := 1; i <= 3; i++ {
				res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /x/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 3*time.Second)
				elapsed := res.FirstAfter
				if len(res.Status) != 1 || res.Status[0] != fc.status {
					t.Fatalf("request %d: client saw %s, want one %d", i, res, fc.status)
				}
				if fc.status == 504 && (elapsed < 400*time.Millisecond || elapsed > 1400*time.Millisecond) {
					t.Errorf("504 after %v, want at the 400ms upstream timeout", elapsed)
				}
				if strings.Contains(res.Bodies[0], "0123456789") || strings.Contains(res.Bodies[0], "SSH") || strings.Contains(res.Bodies[0], "bbbb") {
					t.Errorf("part of the broken answer reached the client: %q", res.Bodies[0])
				}
				// The healthy route is still served between failures.
				ok := rawClient(t, p.Addr, []string{"GET /ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 3*time.Second)
				if len(ok.Status) != 1 || ok.Status[0] != 200 || ok.Bodies[0] != "ok" {
					t.Errorf("healthy route after a failure: %s", ok)
				}
			}
			if v := testutil.ToFloat64(p.Met.UpstreamErrors.WithLabelValues("default", "broken", fc.reason)); v != 3 {
				t.Errorf("upstream_errors_total{reason=%q} = %v, want 3", fc.reason, v)
			}
			if v := testutil.ToFloat64(p.Met.Requests.WithLabelValues("default", "broken", fmt.Sprint(fc.status))); v != 3 {
				t.Errorf("requests_total{code=%d} = %v, want 3", fc.status, v)
			}
			// Only a stale pooled connection justifies a retry; none of these
			// is one, so each request reached the upstream exactly once.
			if broken != nil {
				if n := len(broken.Requests()); n != 3 {
					t.Errorf("the broken upstream received %d requests for 3 client requests (retried?)\n%s", n, broken.Raw())
				}
			}
		})
		checkNoLeak(t, "primary "+fc.name, baseline)
	}
}

// TestFaultPrimaryStaleConnection: the upstream closes idle keep-alive
// connections shortly after answering. A GET that lands on such a stale
// pooled connection is retried once on a new one (the upstream cannot have
// seen it); a POST never is: it gets 502 rather than risk running twice.
func TestFaultPrimaryStaleConnection(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	t.Run("GET is retried", func(t *testing.T) {
		up := startWireUpstream(t, closeWhenIdle)
		p := startProxy(t, faultProxyConfig(up.URL, up.URL))
		for i := 0; i < 3; i++ {
			res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /get/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 3*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 200 || res.Bodies[0] != "ok" {
				t.Fatalf("GET %d on a stale pooled connection: client saw %s, want 200 ok", i, res)
			}
			time.Sleep(200 * time.Millisecond) // the upstream closes the idle connection
		}
		if n := len(up.Requests()); n != 3 {
			t.Errorf("upstream read %d requests, want 3\n%s", n, up.Raw())
		}
		if v := testutil.ToFloat64(p.Met.Requests.WithLabelValues("default", "broken", "200")); v != 3 {
			t.Errorf("requests_total{code=200} = %v", v)
		}
	})
	t.Run("POST is not retried", func(t *testing.T) {
		up := startWireUpstream(t, closeWhenIdle)
		p := startProxy(t, faultProxyConfig(up.URL, up.URL))
		first := rawClient(t, p.Addr, []string{"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1"}, 0, 3*time.Second)
		if len(first.Status) != 1 || first.Status[0] != 200 {
			t.Fatalf("first POST: %s", first)
		}
		time.Sleep(200 * time.Millisecond) // the pooled connection is now stale
		res := rawClient(t, p.Addr, []string{"POST /second HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\n2"}, 0, 3*time.Second)
		seen := 0
		for _, r := range up.Requests() {
			if r.Target == "/second" {
				seen++
			}
		}
		if seen > 1 {
			t.Errorf("the upstream received the POST %d times: a non-idempotent request was retried\n%s", seen, up.Raw())
		}
		if len(res.Status) != 1 || res.Status[0] != 502 {
			t.Errorf("POST on a stale pooled connection: client saw %s, want 502 (not retried)", res)
		}
		if v := testutil.ToFloat64(p.Met.UpstreamErrors.WithLabelValues("default", "broken", "reset")); v != 1 {
			t.Errorf("upstream_errors_total{reason=reset} = %v, want 1", v)
		}
		// The next request gets a fresh connection and is served.
		next := rawClient(t, p.Addr, []string{"GET /next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 3*time.Second)
		if len(next.Status) != 1 || next.Status[0] != 200 {
			t.Errorf("request after the failed POST: %s", next)
		}
	})
	checkNoLeak(t, "stale connections", baseline)
}

// shadowFaultConfig mirrors every GET and POST of route api to the broken
// shadow; the primary is healthy.
func shadowFaultConfig(primary, shadow string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s, max_idle_conn_duration: 500ms}
  - {name: shadow, url: %s, max_response_body: 1KiB, max_idle_conn_duration: 500ms}
routes:
  - name: api
    upstream: primary
    shadow:
      targets: [shadow]
      methods: [GET, POST]
      timeout: 400ms
      workers: 4
      queue_size: 16
`, primary, shadow)
}

func TestFaultShadow(t *testing.T) {
	const n = 5
	cases := append(faultCases(), faultCase{name: "closes idle connections (GET retried)", handle: closeWhenIdle, shadowOutcome: "ok"})
	for _, fc := range cases {
		baseline := goleak.IgnoreCurrent()
		t.Run(fc.name, func(t *testing.T) {
			shadowURL, shadow := faultUpstreamURL(t, fc)
			primary := startWireUpstream(t, serveOK)
			p, _ := startMirrorProxy(t, shadowFaultConfig(primary.URL, shadowURL))
			for i := 0; i < n; i++ {
				res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /s/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 3*time.Second)
				// The client sees the primary's answer, and sees it at once:
				// nothing on its path waits for the shadow.
				if len(res.Status) != 1 || res.Status[0] != 200 || res.Bodies[0] != "ok" {
					t.Fatalf("request %d: client saw %s, want the primary's 200 ok", i, res)
				}
				if d := res.FirstAfter; d > 300*time.Millisecond {
					t.Errorf("request %d took %v behind a broken shadow", i, d)
				}
				if fc.handle != nil && fc.shadowOutcome == "ok" {
					time.Sleep(200 * time.Millisecond) // let the shadow's pooled connection go stale
				}
			}
			testkit.Eventually(t, "shadow outcomes counted", func() bool { return shadowCount(p, fc.shadowOutcome) == n })
			for _, other := range []string{"ok", "error", "timeout", "dropped"} {
				if v := shadowCount(p, other); other != fc.shadowOutcome && v != 0 {
					t.Errorf("shadow_requests_total{outcome=%q} = %v, want 0 (all %d should be %q)", other, v, n, fc.shadowOutcome)
				}
			}
			testkit.Eventually(t, "no shadow request in flight", func() bool {
				return testutil.ToFloat64(p.Met.ShadowInflight.WithLabelValues("api", "shadow", "shadow")) == 0
			})
			if shadow != nil && fc.shadowOutcome != "ok" {
				if got := len(shadow.Requests()); got != n {
					t.Errorf("the broken shadow received %d requests for %d mirrored (retried?)\n%s", got, n, shadow.Raw())
				}
			}
			// The proxy keeps serving.
			res := rawClient(t, p.Addr, []string{"GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 3*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 200 {
				t.Errorf("request after the shadow faults: %s", res)
			}
			p.stop()
		})
		checkNoLeak(t, "shadow "+fc.name, baseline)
	}
}

// TestFaultShadowStalePOST: a mirrored POST (opted in) that lands on a
// stale shadow connection is an error, never a second send.
func TestFaultShadowStalePOST(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	t.Run("POST", func(t *testing.T) {
		shadow := startWireUpstream(t, closeWhenIdle)
		primary := startWireUpstream(t, serveOK)
		p, _ := startMirrorProxy(t, shadowFaultConfig(primary.URL, shadow.URL))
		for i := 0; i < 2; i++ {
			res := rawClient(t, p.Addr, []string{fmt.Sprintf("POST /p/%d HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\n%d", i, i)}, 0, 3*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 200 || res.Bodies[0] != "ok" {
				t.Fatalf("POST %d: client saw %s", i, res)
			}
			testkit.Eventually(t, "shadow finished", func() bool { return shadowCount(p, "ok")+shadowCount(p, "error") == float64(i+1) })
			time.Sleep(200 * time.Millisecond) // the shadow connection goes stale
		}
		seen := map[string]int{}
		for _, r := range shadow.Requests() {
			seen[r.Target]++
		}
		if seen["/p/1"] > 1 {
			t.Errorf("the shadow received the second POST %d times: a non-idempotent mirror was retried\n%s", seen["/p/1"], shadow.Raw())
		}
		if ok, errs := shadowCount(p, "ok"), shadowCount(p, "error"); ok != 1 || errs != 1 {
			t.Errorf("shadow outcomes ok=%v error=%v, want 1 and 1 (the POST on the stale connection fails)", ok, errs)
		}
		p.stop()
	})
	checkNoLeak(t, "shadow stale POST", baseline)
}
