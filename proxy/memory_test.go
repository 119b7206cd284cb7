package proxy

// Memory under hostile upstreams: an endless shadow and an endless primary
// must cost a bounded amount while they last and nothing once they are
// gone. Heap figures come from runtime.ReadMemStats (the process's own Go
// heap, which is what the proxy's buffers live in); the tests run serially
// (no t.Parallel) so that other tests' allocations do not blur them.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
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

// heapDuring runs work while sampling the heap and returns the live heap
// before it, the peak while it ran and the live heap once it returned.
func heapDuring(work func()) (base, top, after uint64) {
	base = heapInUse()
	stop := make(chan struct{})
	peak := peakHeap(stop)
	work()
	close(stop)
	top = peak()
	return base, top, heapInUse()
}

// clientsAtOnce runs client(i) for i from 0 to n-1, all at once, and waits
// for every one to return.
func clientsAtOnce(n int, client func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			client(i)
		}(i)
	}
	wg.Wait()
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
	base, top, after := heapDuring(func() {
		clientsAtOnce(n, func(i int) {
			res := rawClient(t, p.Addr, []string{fmt.Sprintf("GET /m/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i)}, 0, 3*time.Second)
			if len(res.Status) != 1 || res.Status[0] != 200 {
				t.Errorf("request %d: %s", i, res)
			}
		})
		testkit.Eventually(t, "every shadow answer finished", func() bool {
			return shadowCount(p, "ok")+shadowCount(p, "error")+shadowCount(p, "timeout") == n
		})
	})
	t.Logf("heap in use: baseline %.1f MiB, peak %.1f MiB, after %.1f MiB", float64(base)/mib, float64(top)/mib, float64(after)/mib)
	if v := shadowCount(p, "ok"); v != n {
		t.Errorf("shadow outcomes ok = %v, want %d (a cut answer still compares status and headers)", v, n)
	}
	if v := testutil.ToFloat64(p.Met.ShadowBodyTruncated.WithLabelValues("api", "shadow", "shadow")); v != n {
		t.Errorf("shadow_body_truncated_total = %v, want %d", v, n)
	}
	// 16 answers of at most 1 MiB each, read buffers growing by doubling,
	// and churn not yet collected; before, up to 16 x 32 MiB.
	if grew := int64(top) - int64(base); grew > 64*mib {
		t.Errorf("heap grew %.1f MiB during the burst, want under 64 MiB (16 x max_body 1 MiB and slack)", float64(grew)/mib)
	}
	if grew := int64(after) - int64(base); grew > 16*mib {
		t.Errorf("heap %.1f MiB above baseline after the burst, want under 16 MiB", float64(grew)/mib)
	}
}

// TestMemoryEndlessPrimary: four clients at once on a primary whose chunked
// answer never ends. It streams (it is longer than limits.buffer_body), so
// each client gets the 200 and then a connection cut at max_response_body
// (16 MiB), never a complete-looking body. Before streaming, each answer was
// buffered up to max_response_body, 502'd, and the grown buffers stayed in
// fasthttp's pools (~224 MiB held after four). Now neither the peak nor what
// remains afterwards comes near that.
func TestMemoryEndlessPrimary(t *testing.T) {
	const n = 4
	up := startWireUpstream(t, serveEndless(30*time.Second))
	p := startProxy(t, simpleConfig(up.URL, "    max_response_body: 16MiB\n    timeout: 30s"))
	base, top, after := heapDuring(func() {
		clientsAtOnce(n, func(i int) {
			status, n, err := discardingClient(t, p.Addr, fmt.Sprintf("GET /e/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", i), nil, 0)
			if status != 200 || err == nil || n != 16*mib {
				t.Errorf("request %d: %d, %d bytes, error %v; want the 200 cut short (a read error) at max_response_body, never a complete body", i, status, n, err)
			}
		})
	})
	t.Logf("heap in use: baseline %.1f MiB, peak %.1f MiB, after %.1f MiB", float64(base)/mib, float64(top)/mib, float64(after)/mib)
	// Each stream holds at most buffer_body (1 MiB, the part read before
	// it turned out longer) and its read buffers; allocation churn that is
	// not yet collected counts too.
	if grew := int64(top) - int64(base); grew > 40*mib {
		t.Errorf("heap grew %.1f MiB while four endless answers streamed, want under 40 MiB (buffered whole they took 4 x 16 MiB and more)", float64(grew)/mib)
	}
	if grew := int64(after) - int64(base); grew > 8*mib {
		t.Errorf("heap %.1f MiB above baseline after four endless answers, want under 8 MiB", float64(grew)/mib)
	}
}

// discardingClient sends head (then bodyLen bytes of body from body, if
// any) on a new connection and reads the answer, discarding its body as it
// arrives so the client itself holds no memory. It returns the status, the
// body bytes read and the error that ended the body (nil at its proper end).
func discardingClient(t testing.TB, addr, head string, body io.Reader, bodyLen int64) (int, int64, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(c, head); err != nil {
		return 0, 0, err
	}
	if body != nil {
		if _, err := io.CopyN(c, body, bodyLen); err != nil {
			return 0, 0, err
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, n, err
}

// rssBytes is the process's resident set size (Linux /proc/self/statm).
func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("reading RSS: %v", err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		t.Fatalf("parsing /proc/self/statm %q: %v", b, err)
	}
	return resident * int64(os.Getpagesize())
}

// peakRSS samples the RSS every 10ms until stop is closed.
func peakRSS(t testing.TB, stop <-chan struct{}) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			if r := rssBytes(t); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return func() int64 { <-done; return peak.Load() }
}

// bulkUpstream serves GET /download/N with N bytes (Content-Length) and
// reads any request body to the end, counting it in received, without
// holding either in memory.
func bulkUpstream(t testing.TB, received *atomic.Int64) string {
	t.Helper()
	chunk := []byte(strings.Repeat("0123456789abcdef", 4096)) // 64 KiB
	return serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, req.Body)
			received.Add(n)
			var size int64
			fmt.Sscanf(req.URL.Path, "/download/%d", &size)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size); err != nil {
				return
			}
			for left := size; left > 0; {
				k := min(left, int64(len(chunk)))
				if _, err := c.Write(chunk[:k]); err != nil {
					return
				}
				left -= k
			}
		}
	})
}

// zeros reads as an endless run of a repeated pattern.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}

// TestStreamingLargeTransfers: a 1 GiB download and a 1 GiB upload (with a
// Content-Length, and chunked) pass through the proxy with the process's RSS
// growing less than 64 MiB: bodies longer than limits.buffer_body stream
// both ways. The upload is not mirrored (shadow_skipped_total{reason=
// "streamed"}). Under the race detector, whose own memory grows with every
// byte copied, the transfers are 128 MiB.
func TestStreamingLargeTransfers(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled {
		size = 128 << 20
	}
	var received atomic.Int64
	primary := bulkUpstream(t, &received)
	var shadowHits atomic.Int64
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		shadowHits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	p, _ := startMirrorProxy(t, fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s, max_response_body: 2GiB, timeout: 60s}
  - {name: shadow, url: %s}
routes:
  - name: api
    upstream: primary
    shadow: {targets: [shadow], methods: [GET, POST]}
limits: {max_request_body: 2GiB, read_timeout: 5m, write_timeout: 5m}
`, primary, shadow.URL))
	runtime.GC()
	base := rssBytes(t)
	stop := make(chan struct{})
	peak := peakRSS(t, stop)

	status, n, err := discardingClient(t, p.Addr, fmt.Sprintf("GET /download/%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", size), nil, 0)
	if status != 200 || n != size || err != nil {
		t.Errorf("download: status %d, %d of %d bytes, error %v", status, n, size, err)
	}
	status, _, err = discardingClient(t, p.Addr, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size), zeros{}, size)
	if status != 200 || err != nil || received.Load() != size {
		t.Errorf("upload with Content-Length: status %d, error %v, the upstream received %d of %d bytes", status, err, received.Load(), size)
	}
	// Chunked: the first buffer_body is read before it turns out longer.
	received.Store(0)
	chunked := &chunkedBody{left: size / 8}
	status, _, err = discardingClient(t, p.Addr, "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", chunked, chunked.wireLen())
	if status != 200 || err != nil || received.Load() != size/8 {
		t.Errorf("chunked upload: status %d, error %v, the upstream received %d of %d bytes", status, err, received.Load(), size/8)
	}
	close(stop)
	top := peak()
	t.Logf("RSS: baseline %.1f MiB, peak %.1f MiB (transfers of %d MiB)", float64(base)/mib, float64(top)/mib, size>>20)
	if grew := top - base; grew > 64*mib {
		t.Errorf("RSS grew %.1f MiB during the transfers, want under 64 MiB", float64(grew)/mib)
	}
	testkit.Eventually(t, "the mirrored download's shadow request", func() bool { return shadowHits.Load() == 1 })
	if v := testutil.ToFloat64(p.Met.ShadowSkipped.WithLabelValues("api", "streamed")); v != 2 {
		t.Errorf("shadow_skipped_total{reason=streamed} = %v, want 2 (both uploads)", v)
	}
}

// chunkedBody encodes left bytes as 64 KiB chunks and the last chunk.
type chunkedBody struct {
	left    int64
	pending []byte
	done    bool
}

const chunkSize = 64 << 10

func (c *chunkedBody) wireLen() int64 {
	full, rest := c.left/chunkSize, c.left%chunkSize
	n := full * int64(len(fmt.Sprintf("%x\r\n", chunkSize))+chunkSize+2)
	if rest > 0 {
		n += int64(len(fmt.Sprintf("%x\r\n", rest))) + rest + 2
	}
	return n + 5 // "0\r\n\r\n"
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		switch {
		case c.left > 0:
			k := min(c.left, chunkSize)
			c.pending = append(c.pending[:0], fmt.Sprintf("%x\r\n", k)...)
			c.pending = append(c.pending, bytes.Repeat([]byte{'c'}, int(k))...)
			c.pending = append(c.pending, "\r\n"...)
			c.left -= k
		case !c.done:
			c.pending, c.done = []byte("0\r\n\r\n"), true
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// TestStreamingOverHTTP2: an HTTP/2 client's download longer than
// limits.buffer_body is copied through as it arrives too, not read into
// memory first.
func TestStreamingOverHTTP2(t *testing.T) {
	const size = 64 << 20
	var received atomic.Int64
	p := startProxy(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
http2: {enabled: true, h2c: true}
upstreams:
  - {name: stable, url: "%s", max_response_body: 1GiB}
routes:
  - {name: default, upstream: stable}
`, bulkUpstream(t, &received)))
	var resp *http.Response
	var n int64
	var err error
	base, top, _ := heapDuring(func() {
		resp, err = h2cClient().Get(fmt.Sprintf("%s/download/%d", p.URL, size))
		if err != nil {
			return
		}
		n, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
	if resp == nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || n != size || err != nil {
		t.Errorf("HTTP/2 download: %s, %d of %d bytes, %v", resp.Proto, n, size, err)
	}
	t.Logf("heap in use: baseline %.1f MiB, peak %.1f MiB (a %d MiB answer)", float64(base)/mib, float64(top)/mib, size>>20)
	if grew := int64(top) - int64(base); grew > 32*mib {
		t.Errorf("heap grew %.1f MiB for a %d MiB answer over HTTP/2: it was buffered", float64(grew)/mib, size>>20)
	}
}
