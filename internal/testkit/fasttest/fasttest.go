// Package fasttest holds the fasthttp helpers that the proxy's tests and
// the tests of packages that run a proxy (tracing) share to measure the
// request path: a fasthttp upstream on loopback, a client for a server on
// an in-memory listener, and the request loops for allocation pins and
// benchmarks. It is imported only by _test.go files.
//
// It takes the server as an interface and imports nothing of the project,
// so that the proxy's own (internal) tests can import it without a cycle.
// Everything here is fasthttp end to end because counts and benchmarks are
// process-wide: a net/http client or upstream would add its own
// allocations.
package fasttest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// Body returns the ~1 KiB JSON answer of StartUpstream (the size the
// comparison harness uses), a fresh copy each call.
func Body() []byte {
	return []byte(`{"items":[` + strings.Repeat(`{"id":12345,"name":"widget","price":9.99},`, 24) + `{"id":0}]}`)
}

// URI is what every request of RequestAllocs and RunParallel asks for; the
// host is ignored by a client with its own Dial.
const URI = "http://proxy/api/items?page=2"

// Timeout bounds each request of RequestAllocs and RunParallel, so that a
// broken proxy fails the test instead of hanging it.
const Timeout = 5 * time.Second

// StartUpstream serves Body as application/json from a fasthttp server on
// a fresh 127.0.0.1 port until the test ends, and returns its base URL.
func StartUpstream(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	body := Body()
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}}
	go s.Serve(ln)
	tb.Cleanup(func() { s.Shutdown() })
	return "http://" + ln.Addr().String()
}

// Server is what ServeInMemory runs: proxy.Server, without importing it.
type Server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// ServeInMemory serves srv on an in-memory listener until the test ends
// (shutting srv down then, which stops its background workers too, not
// only the listener) and returns a client that talks to it with up to 64
// connections.
func ServeInMemory(tb testing.TB, srv Server) *fasthttp.HostClient {
	tb.Helper()
	ln := fasthttputil.NewInmemoryListener()
	go srv.Serve(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ln.Close()
	})
	return &fasthttp.HostClient{
		Addr:     "proxy",
		MaxConns: 64,
		Dial:     func(string) (net.Conn, error) { return ln.Dial() },
	}
}

// RequestAllocs sends warm GETs of URI through c (warming pools, buffers
// and metric children), then returns the average allocations per request
// over 500 more (the least of three such runs). prepare, when not nil, adds to each request after its URI
// is set. Counts are process-wide: client, server and upstream; they only
// mean something without the race detector. A transport error or a status
// other than 200 fails the test.
func RequestAllocs(t testing.TB, c *fasthttp.HostClient, warm int, prepare func(*fasthttp.Request)) float64 {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	do := func() {
		req.Reset()
		req.SetRequestURI(URI)
		if prepare != nil {
			prepare(req)
		}
		if err := c.DoTimeout(req, resp, Timeout); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("%v %d", err, resp.StatusCode())
		}
	}
	for i := 0; i < warm; i++ {
		do()
	}
	// The least of three runs: counts are process-wide, and a garbage
	// collection during a run empties sync.Pools that background goroutines
	// (mirror workers, fasthttp's own pools) then refill, which can add a
	// whole allocation per request to one run. A real regression shows in
	// every run.
	least := testing.AllocsPerRun(500, do)
	for range 2 {
		least = min(least, testing.AllocsPerRun(500, do))
	}
	return least
}

// RunParallel reports allocations and resets b's timer, then sends GETs of
// URI through c from b.RunParallel's goroutines until b.N are done.
// prepare, when not nil, adds to each request after its URI is set. A
// transport error or a status other than 200 fails the benchmark.
func RunParallel(b *testing.B, c *fasthttp.HostClient, prepare func(*fasthttp.Request)) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI(URI)
			if prepare != nil {
				prepare(req)
			}
			if err := c.DoTimeout(req, resp, Timeout); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				b.Fatalf("status %d", resp.StatusCode())
			}
		}
	})
}
