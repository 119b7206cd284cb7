//go:build !race

// The race detector makes sync.Pool drop objects on purpose and instruments
// memory accesses, so allocation counts only mean something without it;
// `make test` runs these tests in a separate pass without -race.

package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// requestAllocs sends warm requests through client (warming pools, buffers
// and metric children), then returns the average allocations per request
// over 500 more. Counts are process-wide: client, proxy and upstream.
func requestAllocs(t *testing.T, client *fasthttp.HostClient, warm int) float64 {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	do := func() {
		req.Reset()
		req.SetRequestURI("http://proxy/api/items?page=2")
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("%v %d", err, resp.StatusCode())
		}
	}
	for i := 0; i < warm; i++ {
		do()
	}
	return testing.AllocsPerRun(500, do)
}

// TestPrimaryPathAllocs pins the proxy's own request path at zero
// allocations in steady state.
func TestPrimaryPathAllocs(t *testing.T) {
	client, _ := benchProxy(t, simpleConfig(startFastUpstream(t), ""))
	if n := requestAllocs(t, client, 200); n > 0.5 {
		t.Errorf("primary path allocates %.2f times per request; want 0", n)
	}
}

// TestMirrorEnqueueAllocs pins the mirror hand-off on the request path
// (copy into a pooled job, non-blocking enqueue, primary capture) and the
// shadow send at most one allocation per request amortized. The comparison
// stage (which builds strings for samples, off the request path) is left
// out with a nil Comparer, since counts are process-wide.
func TestMirrorEnqueueAllocs(t *testing.T) {
	primary, shadow := startFastUpstream(t), startFastUpstream(t)
	client, _ := benchProxyWith(t, shadowConfig(primary, shadow, "      targets: [shadow]\n      queue_size: 4096"), nil)
	if n := requestAllocs(t, client, 500); n > 1 {
		t.Errorf("a mirrored request allocates %.2f times; want at most 1", n)
	}
}

// TestPipelinedPathAllocs pins the pipelined primary path (pipeline_conns)
// at zero allocations too.
func TestPipelinedPathAllocs(t *testing.T) {
	client, _ := benchProxy(t, simpleConfig(startFastUpstream(t), "    pipeline_conns: 2"))
	if n := requestAllocs(t, client, 200); n > 0.5 {
		t.Errorf("pipelined path allocates %.2f times per request; want 0", n)
	}
}
