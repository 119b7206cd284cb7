package proxy

// Memory under hostile upstreams: an endless shadow and an endless primary
// must cost a bounded amount while they last and nothing once they are
// gone. Heap figures come from runtime.ReadMemStats (the process's own Go
// heap, which is what the proxy's buffers live in); the tests run serially
// (no t.Parallel) so that other tests' allocations do not blur them.

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// serveEndless answers each request with a chunked body that never ends:
// 64 KiB chunks until the reader goes away or limit has passed (bounded, so
// a test against a broken proxy still ends).
func serveEndless(limit time.Duration) func(c *wireConn) {
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("x", 64<<10))
	return func(c *wireConn) {
		if _, err := c.ReadRequest(); err != nil {
			return
		}
		c.SetWriteDeadline(time.Now().Add(limit))
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return
		}
		for {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// peakHeap samples HeapInuse every 5ms until stop is closed.
func peakHeap(stop <-chan struct{}) func() uint64 {
	var peak atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return func() uint64 { wg.Wait(); return peak.Load() }
}

const mib = 1 << 20

// TestMemoryEndlessShadow: 16 mirrored requests to a shadow that never stops
// sending. Each shadow answer is read up to shadow.max_body (1 MiB) and no
// further, whatever the upstream's max_response_body (32 MiB here; before,
// that was the bound, 16 x 32 MiB), counted as truncated, and the heap is
// back near its baseline afterwards.
func TestMemoryEndlessShadow(t *testing.T) {
	const n = 16
	primary, shadow := startWireUpstream(t, serveOK), startWireUpstream(t, serveEndless(5*time.Second))
	p, _ := startMirrorProxy(t, fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s}
  - {name: shadow, url: %s, max_response_body: 32MiB}
routes:
  - name: api
    upstream: primary
    shadow:
      targets: [shadow]
      max_body: 1MiB
      workers: %d
      timeout: 4s
`, primary.URL, shadow.URL, n))
	base := heapInUse()
	stop := make(chan struct{})
	peak := peakHeap(stop)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /m/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 3*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 200 {
				t.Errorf("request %d: %s", i, res)
			}
		}(i)
	}
	wg.Wait()
	eventually(t, "every shadow answer finished", func() bool {
		return shadowCount(p, "ok")+shadowCount(p, "error")+shadowCount(p, "timeout") == n
	})
	close(stop)
	top := peak()
	after := heapInUse()
	t.Logf("heap in use: baseline %.1f MiB, peak %.1f MiB, after %.1f MiB", float64(base)/mib, float64(top)/mib, float64(after)/mib)
	if v := shadowCount(p, "ok"); v != n {
		t.Errorf("shadow outcomes ok = %v, want %d (a cut answer still compares status and headers)", v, n)
	}
	if v := testutil.ToFloat64(p.Met.ShadowBodyTruncated.WithLabelValues("api", "shadow")); v != n {
		t.Errorf("shadow_body_truncated_total = %v, want %d", v, n)
	}
	// 16 answers of at most 1 MiB each, plus the read buffers' growth.
	if grew := int64(top) - int64(base); grew > 48*mib {
		t.Errorf("heap grew %.1f MiB during the burst, want under 48 MiB (16 x max_body 1 MiB and slack)", float64(grew)/mib)
	}
	if grew := int64(after) - int64(base); grew > 16*mib {
		t.Errorf("heap %.1f MiB above baseline after the burst, want under 16 MiB", float64(grew)/mib)
	}
}

// TestMemoryEndlessPrimary: four clients at once on a primary whose answer
// never ends. Each gets 502 once max_response_body (16 MiB) is passed; the
// buffers that grew to it are not kept for the next request (fasthttp
// pools response bodies), so after one collection the heap is back near its
// baseline.
func TestMemoryEndlessPrimary(t *testing.T) {
	const n = 4
	up := startWireUpstream(t, serveEndless(30*time.Second))
	p := startProxy(t, simpleConfig(up.URL, "    max_response_body: 16MiB\n    timeout: 30s"))
	base := heapInUse()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /e/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 25*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 502 {
				t.Errorf("request %d: %s, want 502", i, res)
			}
		}(i)
	}
	wg.Wait()
	after := heapInUse()
	t.Logf("heap in use: baseline %.1f MiB, after %.1f MiB", float64(base)/mib, float64(after)/mib)
	if grew := int64(after) - int64(base); grew > 16*mib {
		t.Errorf("heap %.1f MiB above baseline after four 502s, want under 16 MiB: the 16 MiB buffers were kept", float64(grew)/mib)
	}
}
