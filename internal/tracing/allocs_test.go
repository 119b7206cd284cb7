//go:build !race

// Allocation counts only mean something without the race detector; `make
// test` runs these in its separate pass.

package tracing

import (
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
)

// requestAllocs is fasttest.RequestAllocs with traceparent on every
// request ("" sends none).
func requestAllocs(t *testing.T, c *fasthttp.HostClient, traceparent string) float64 {
	t.Helper()
	return fasttest.RequestAllocs(t, c, 200, func(req *fasthttp.Request) {
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
	})
}

// TestUnsampledPathAllocs pins the request path with tracing on at zero
// allocations for requests that are not traced: without a parent at ratio
// 0, and with a parent that says "not sampled".
func TestUnsampledPathAllocs(t *testing.T) {
	rec := newReceiver(t)
	tr := newTracer(t, rec.srv.URL, 0, 64, nil)
	c := startProxy(t, simpleConfig(fasttest.StartUpstream(t)), tr)
	for _, tp := range []string{"", "00-" + clientTrace + "-00f067aa0ba902b7-00"} {
		if n := requestAllocs(t, c, tp); n > 0.5 {
			t.Errorf("traceparent %q: an untraced request allocates %.2f times with tracing on; want 0", tp, n)
		}
	}
}
