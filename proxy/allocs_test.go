//go:build !race

// The race detector makes sync.Pool drop objects on purpose and instruments
// memory accesses, so allocation counts only mean something without it;
// `make test` runs these tests in a separate pass without -race.

package proxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
)

// requestAllocs is fasttest.RequestAllocs with a client address on every
// request, as a proxy behind a load balancer sees them.
func requestAllocs(t *testing.T, client *fasthttp.HostClient, warm int) float64 {
	t.Helper()
	return fasttest.RequestAllocs(t, client, warm, func(req *fasthttp.Request) {
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
	})
}

// TestPrimaryPathAllocs pins the proxy's own request path at zero
// allocations in steady state.
func TestPrimaryPathAllocs(t *testing.T) {
	client, _ := benchProxy(t, simpleConfig(fasttest.StartUpstream(t), ""))
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
	primary, shadow := fasttest.StartUpstream(t), fasttest.StartUpstream(t)
	client, _ := benchProxyWith(t, shadowConfig(primary, shadow, "      targets: [shadow]\n      queue_size: 4096"), nil)
	if n := requestAllocs(t, client, 500); n > 1 {
		t.Errorf("a mirrored request allocates %.2f times; want at most 1", n)
	}
}

// TestPipelinedPathAllocs pins the pipelined primary path (pipeline_conns)
// at zero allocations too.
func TestPipelinedPathAllocs(t *testing.T) {
	client, _ := benchProxy(t, simpleConfig(fasttest.StartUpstream(t), "    pipeline_conns: 2"))
	if n := requestAllocs(t, client, 200); n > 0.5 {
		t.Errorf("pipelined path allocates %.2f times per request; want 0", n)
	}
}

// TestChunkedAnswerAllocs pins the primary path at zero allocations for a
// chunked answer under limits.buffer_body too: it is read through the
// stream transport's pooled body and buffered, not streamed. The upstream
// is a raw loop writing one constant chunked answer per request head, so
// that it allocates nothing itself (counts are process-wide).
func TestChunkedAnswerAllocs(t *testing.T) {
	answer := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n",
		len(benchBody), benchBody, len(benchBody), benchBody))
	up := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) == 2 { // the blank line ending a head (GETs carry no body)
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}
	})
	client, _ := benchProxy(t, simpleConfig(up, ""))
	if n := requestAllocs(t, client, 200); n > 0.5 {
		t.Errorf("a chunked answer allocates %.2f times per request; want 0", n)
	}
}

// TestSyntheticMarkAllocs pins the synthetic check (rules on a header and
// on the split key) at zero allocations on the primary path.
func TestSyntheticMarkAllocs(t *testing.T) {
	up := fasttest.StartUpstream(t)
	cfg := fmt.Sprintf(`
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
routes:
  - name: default
    upstream: stable
    split: {key: "header:X-Forwarded-For", to: canary, percent: 0}
    synthetic:
      - {header: {X-Synthetic: "true"}}
      - {key_in: [smoke-test-prod], header_regex: {X-Probe: "^p[0-9]+$"}}
`, up, up)
	client, _ := benchProxy(t, cfg)
	if n := requestAllocs(t, client, 200); n > 0.5 {
		t.Errorf("a request checked against synthetic rules allocates %.2f times; want 0", n)
	}
}
