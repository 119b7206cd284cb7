//go:build !race

// Allocation counts only mean something without the race detector; `make
// test` runs these in its separate pass.

package tracing

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func requestAllocs(t *testing.T, c *fasthttp.HostClient, traceparent string) float64 {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	do := func() {
		req.Reset()
		req.SetRequestURI("http://proxy/api/items?page=2")
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("%v %d", err, resp.StatusCode())
		}
	}
	for i := 0; i < 200; i++ {
		do()
	}
	return testing.AllocsPerRun(500, do)
}

// TestUnsampledPathAllocs pins the request path with tracing on at zero
// allocations for requests that are not traced: without a parent at ratio
// 0, and with a parent that says "not sampled".
func TestUnsampledPathAllocs(t *testing.T) {
	rec := newReceiver(t)
	tr := newTracer(t, rec.srv.URL, 0, 64, nil)
	c := startProxy(t, simpleConfig(startFastUpstream(t)), tr)
	for _, tp := range []string{"", "00-" + clientTrace + "-00f067aa0ba902b7-00"} {
		if n := requestAllocs(t, c, tp); n > 0.5 {
			t.Errorf("traceparent %q: an untraced request allocates %.2f times with tracing on; want 0", tp, n)
		}
	}
}
