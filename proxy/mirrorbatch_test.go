package proxy

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// countingListener counts the reads that returned data on its connections.
type countingListener struct {
	net.Listener
	reads atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.l.reads.Add(1)
	}
	return n, err
}

// echoShadow answers "shadow:<uri>"; every closeEvery-th answer (0: never)
// closes its connection. It returns its URL, the request count and the
// count of reads that carried data.
func echoShadow(t *testing.T, closeEvery int64) (url string, requests, reads *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	var n atomic.Int64
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		i := n.Add(1)
		ctx.SetBodyString("shadow:" + string(ctx.RequestURI()))
		if closeEvery > 0 && i%closeEvery == 0 {
			ctx.SetConnectionClose()
		}
	}}
	go s.Serve(cl)
	t.Cleanup(func() { s.Shutdown() })
	return "http://" + ln.Addr().String(), &n, &cl.reads
}

// fireConcurrently sends total requests for /item/<i> from 16 goroutines,
// so mirrored requests queue up behind the single shadow worker. prepare,
// when not nil, adjusts request i (a method, a header); without it each is
// a plain GET. Any request failing or answered other than 200 fails the
// test.
func fireConcurrently(t *testing.T, addr string, total int, prepare func(i int, req *fasthttp.Request)) {
	t.Helper()
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 16}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := g; i < total; i += 16 {
				req.Reset()
				req.SetRequestURI(fmt.Sprintf("http://%s/item/%d", addr, i))
				if prepare != nil {
					prepare(i, req)
				}
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					failed.Add(1)
				}
			}
		}(g)
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d client requests failed", failed.Load())
	}
}

// checkPairs asserts every mirrored request was delivered and each shadow
// answer was paired with its own request.
func checkPairs(t *testing.T, rc *recordingComparer, total int) {
	t.Helper()
	testkit.Eventually(t, "every comparison", func() bool { return len(rc.snapshot()) == total })
	seen := map[string]bool{}
	for _, r := range rc.snapshot() {
		if r.shadowOutcome[0] != ShadowOK || r.shadowBody[0] != "shadow:"+r.uri || r.primaryBody != "primary:"+r.uri {
			t.Fatalf("%s: outcome %v, shadow %q, primary %q", r.uri, r.shadowOutcome[0], r.shadowBody[0], r.primaryBody)
		}
		seen[r.uri] = true
	}
	if len(seen) != total {
		t.Fatalf("%d distinct requests compared, want %d", len(seen), total)
	}
}

func echoPrimary(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "primary:"+r.RequestURI) }

// startBatchProxy mirrors an echoPrimary upstream to an echoShadow target
// (closing every closeEvery-th connection, 0: never) through a single
// shadow worker with room to queue, so that queued requests go out in
// batches. It returns the proxy, its comparer and the shadow's request and
// read counts.
func startBatchProxy(t *testing.T, closeEvery int64) (p *testProxy, rc *recordingComparer, requests, reads *atomic.Int64) {
	t.Helper()
	primary := startUpstream(t, echoPrimary)
	shadowURL, requests, reads := echoShadow(t, closeEvery)
	p, rc = startMirrorProxy(t, shadowConfig(primary.URL, shadowURL, "      targets: [shadow]\n      workers: 1\n      queue_size: 1024"))
	return p, rc, requests, reads
}

// TestShadowBatchPairsAnswers: with requests queued behind a busy worker and
// a fast target, several go out in one write (the shadow reads fewer times
// than it serves requests), and every answer still reaches the comparison
// of its own request.
func TestShadowBatchPairsAnswers(t *testing.T) {
	const total = 400
	p, rc, requests, reads := startBatchProxy(t, 0)
	fireConcurrently(t, p.Addr, total, nil)
	checkPairs(t, rc, total)
	if requests.Load() != total {
		t.Fatalf("shadow served %d requests, want %d", requests.Load(), total)
	}
	if reads.Load() >= total {
		t.Fatalf("shadow needed %d reads for %d requests: nothing was batched", reads.Load(), total)
	}
	t.Logf("%d requests in %d reads", total, reads.Load())
}

// TestShadowBatchSurvivesClosedConnection: a target that closes its
// connection in the middle of a batch leaves requests unanswered; each is
// sent again on a connection of its own and nothing is lost or mispaired.
func TestShadowBatchSurvivesClosedConnection(t *testing.T) {
	const total = 300
	p, rc, _, _ := startBatchProxy(t, 3)
	fireConcurrently(t, p.Addr, total, nil)
	checkPairs(t, rc, total)
	if n := shadowCount(p, "ok"); n != total {
		t.Fatalf("ok outcomes = %v, want %d", n, total)
	}
}

// TestShadowBatchingAdapts: a target is batched while its moving-average
// latency stays under batchLatency, not once it turns slow, and again
// once it is fast for long enough.
func TestShadowBatchingAdapts(t *testing.T) {
	p := startProxy(t, shadowConfig("http://127.0.0.1:1", "http://127.0.0.1:1", "      targets: [shadow]\n      percent: 0"))
	// One request, so the listener is serving before the cleanup shuts it
	// down (a shutdown racing Serve's start would leave it accepting).
	rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	mi := p.Srv.Snapshot().routes[0].mirror
	tgt := mi.targets[0]
	steps := []struct {
		latency time.Duration
		times   int
		want    bool
	}{
		{0, 0, false}, // no answer yet: not known to be fast
		{200 * time.Microsecond, 1, true},
		{200 * time.Microsecond, 50, true},
		{200 * time.Millisecond, 1, false}, // one 200 ms answer is enough
		{200 * time.Millisecond, 20, false},
		{200 * time.Microsecond, 10, false}, // not fast for long enough yet
		{200 * time.Microsecond, 60, true},
	}
	for i, s := range steps {
		for k := 0; k < s.times; k++ {
			tgt.observeLatency(s.latency)
		}
		if got := mi.batching(); got != s.want {
			t.Fatalf("step %d (%d x %v): batching = %v, want %v (average %v)", i, s.times, s.latency, got, s.want, time.Duration(tgt.latency.Load()))
		}
	}
}

// TestShadowBatchMixesHeadAndGet: a HEAD answer has no body whatever its
// Content-Length says; reading it as if it had one would swallow the
// answers pipelined behind it. GETs and HEADs batched together all
// complete and pair up.
func TestShadowBatchMixesHeadAndGet(t *testing.T) {
	const total = 200
	p, rc, requests, reads := startBatchProxy(t, 0)
	fireConcurrently(t, p.Addr, total, func(i int, req *fasthttp.Request) {
		if i%2 == 1 {
			req.Header.SetMethod(fasthttp.MethodHead)
		}
	})
	testkit.Eventually(t, "every comparison", func() bool { return len(rc.snapshot()) == total })
	for _, r := range rc.snapshot() {
		want := "shadow:" + r.uri
		if r.method == fasthttp.MethodHead {
			want = ""
		}
		if r.shadowOutcome[0] != ShadowOK || r.shadowBody[0] != want {
			t.Fatalf("%s %s: outcome %v, shadow body %q", r.method, r.uri, r.shadowOutcome[0], r.shadowBody[0])
		}
	}
	if requests.Load() != total || reads.Load() >= total {
		t.Fatalf("shadow served %d requests in %d reads; want %d in fewer reads (batched)", requests.Load(), reads.Load(), total)
	}
}

// TestShadowBatchKeepsSecondarySplitAware: batched sends still ask the
// secondary only about requests the stable upstream served; a canary-served
// request in a batch is skipped for it and counted.
func TestShadowBatchKeepsSecondarySplitAware(t *testing.T) {
	const total = 400
	primary := startUpstream(t, fastJSON(`{"v":1}`))
	canary := startUpstream(t, fastJSON(`{"v":2}`))
	shadowURL, _, _ := echoShadow(t, 0)
	twinURL, twinRequests, twinReads := echoShadow(t, 0)
	p, rc := startMirrorProxy(t, splitSecondaryConfig(primary.URL, canary.URL, shadowURL, twinURL, "workers: 1, queue_size: 1024, "))
	fireConcurrently(t, p.Addr, total, func(i int, req *fasthttp.Request) {
		req.Header.Set("X-User", fmt.Sprintf("u%d", i))
	})
	testkit.Eventually(t, "every comparison", func() bool { return len(rc.snapshot()) == total })
	stableServed := 0
	for _, r := range rc.snapshot() {
		switch r.primaryBody {
		case `{"v":1}`:
			stableServed++
			if r.secondaryOutcome != ShadowOK {
				t.Errorf("%s: stable-served, secondary %v", r.uri, r.secondaryOutcome)
			}
		case `{"v":2}`:
			if r.secondaryOutcome != ShadowSkipped {
				t.Errorf("%s: canary-served, secondary %v, want skipped", r.uri, r.secondaryOutcome)
			}
		}
	}
	if stableServed == 0 || stableServed == total {
		t.Fatalf("split did not send to both: %d of %d to stable", stableServed, total)
	}
	if got := twinRequests.Load(); got != int64(stableServed) {
		t.Errorf("secondary served %d requests, want the %d stable served", got, stableServed)
	}
	if twinReads.Load() >= twinRequests.Load() {
		t.Errorf("secondary needed %d reads for %d requests: nothing was batched", twinReads.Load(), twinRequests.Load())
	}
}
