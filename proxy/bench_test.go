package proxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// benchBody is a ~1 KiB JSON answer, the size the comparison harness uses.
var benchBody = []byte(`{"items":[` + strings.Repeat(`{"id":12345,"name":"widget","price":9.99},`, 24) + `{"id":0}]}`)

// startFastUpstream serves benchBody from a fasthttp server on loopback.
func startFastUpstream(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(benchBody)
	}}
	go s.Serve(ln)
	tb.Cleanup(func() { s.Shutdown() })
	return "http://" + ln.Addr().String()
}

// benchProxy serves cfgText on an in-memory listener and returns a client
// that talks to it.
func benchProxy(tb testing.TB, cfgText string) (*fasthttp.HostClient, *Server) {
	return benchProxyWith(tb, cfgText, nopComparer{})
}

// benchProxyWith is benchProxy with a given comparer (nil: shadow outcomes
// are counted but nothing is compared).
func benchProxyWith(tb testing.TB, cfgText string, comparer Comparer) (*fasthttp.HostClient, *Server) {
	tb.Helper()
	cfg, err := config.Load("bench.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: zap.NewNop(), Metrics: metrics.New("bench"), Comparer: comparer})
	if err != nil {
		tb.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	go srv.Serve(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // stops mirror workers too, not only the listener
		ln.Close()
	})
	client := &fasthttp.HostClient{
		Addr:     "proxy",
		MaxConns: 64,
		Dial:     func(string) (net.Conn, error) { return ln.Dial() },
	}
	return client, srv
}

func benchPrimary(b *testing.B, cfgText string, prepare func(*fasthttp.Request)) {
	client, _ := benchProxy(b, cfgText)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI("http://proxy/api/items?page=2")
			req.Header.Set("X-User-ID", "user-1234")
			req.Header.Set("X-Forwarded-For", "10.0.0.1")
			if prepare != nil {
				prepare(req)
			}
			if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				b.Fatalf("status %d", resp.StatusCode())
			}
		}
	})
}

// BenchmarkPrimaryPath measures a whole proxied request: client -> proxy
// (in memory) -> upstream (loopback TCP) and back. Allocations reported are
// the whole process's, client and upstream included; all three are
// fasthttp, which does not allocate in steady state.
func BenchmarkPrimaryPath(b *testing.B) {
	benchPrimary(b, simpleConfig(startFastUpstream(b), ""), nil)
}

// BenchmarkPrimaryWithShadow is BenchmarkPrimaryPath with every request
// mirrored to a second fast upstream and compared (no-op comparer): the
// client-visible cost of shadowing. Run side by side with
// BenchmarkPrimaryPath.
func BenchmarkPrimaryWithShadow(b *testing.B) {
	primary, shadow := startFastUpstream(b), startFastUpstream(b)
	benchPrimary(b, shadowConfig(primary, shadow, "      targets: [shadow]\n      queue_size: 4096\n      workers: 64"), nil)
}

// BenchmarkPrimaryWithSynthetic is BenchmarkPrimaryPath on a route with
// two synthetic rules that the request does not match (every rule is
// tried): the cost of the synthetic check. Run side by side with
// BenchmarkPrimaryPath.
func BenchmarkPrimaryWithSynthetic(b *testing.B) {
	cfg := simpleConfig(startFastUpstream(b), "") + `    synthetic:
      - {header: {X-Synthetic: "true"}}
      - {header_regex: {X-Probe: "^smoke-[0-9]+$"}}
`
	benchPrimary(b, cfg, nil)
}

type nopComparer struct{}

func (nopComparer) Compare(*Exchange) {}

// BenchmarkPrimaryPathPipelined is BenchmarkPrimaryPath with
// pipeline_conns: 4 on the upstream.
func BenchmarkPrimaryPathPipelined(b *testing.B) {
	benchPrimary(b, simpleConfig(startFastUpstream(b), "    pipeline_conns: 4"), nil)
}
