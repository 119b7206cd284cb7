package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// pipelineCount reads upstream_pipeline_requests_total for the stable
// upstream of simpleConfig.
func pipelineCount(p *testProxy, result string) int {
	return int(testutil.ToFloat64(p.Met.UpstreamPipeline.WithLabelValues("stable", result)))
}

// pipelineTotal is every request that went the pipelined way, whatever
// became of it.
func pipelineTotal(p *testProxy) int {
	return pipelineCount(p, "answered") + pipelineCount(p, "bypassed") + pipelineCount(p, "rescued") + pipelineCount(p, "retried")
}

// getAll sends n GETs from workers goroutines and checks that each answer
// is its own (the upstream echoes method and URI).
func getAll(t *testing.T, url string, workers, n int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				uri := fmt.Sprintf("/g?w=%d&i=%d", w, i)
				resp, err := client.Get(url + uri)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "GET "+uri+" " {
					t.Errorf("pipelined answer mixed up: asked %s, got %d %q", uri, resp.StatusCode, b)
					return
				}
			}
		}(w)
	}
	wg.Wait()
}

// holdingUpstream echoes every request, but holds those for path until
// release is closed; seen counts them.
func holdingUpstream(t *testing.T, path string) (up *upstreamServer, release chan struct{}, seen *atomic.Int32) {
	release, seen = make(chan struct{}), new(atomic.Int32)
	up = startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			seen.Add(1)
			<-release
		}
		echo(w, r)
	})
	return up, release, seen
}

// getLater GETs url in the background; the channel gets the answer's body,
// or the error.
func getLater(url string) <-chan string {
	c := make(chan string, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			c <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c <- string(b)
	}()
	return c
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
}

// TestPipelinedUpstream: with pipeline_conns, concurrent GETs are answered
// correctly, each accounted for once; POSTs still work (on the pool); a
// hanging answer is still a 504 at the timeout.
func TestPipelinedUpstream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		echo(w, r)
	})
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 2\n    timeout: 2s\n    pipeline_max_wait: 500ms"))
	getAll(t, p.URL, 8, 50)
	if got := pipelineTotal(p); got != 400 {
		t.Errorf("pipeline results add up to %d, want the 400 GETs", got)
	}
	if pipelineCount(p, "answered") == 0 {
		t.Error("no GET was answered on a pipelined connection")
	}
	if extra := pipelineCount(p, "bypassed") + pipelineCount(p, "rescued") + pipelineCount(p, "retried"); extra == 0 {
		if c := up.conns.Load(); c > 2 {
			t.Errorf("%d upstream connections with every GET pipelined, want at most pipeline_conns (2)", c)
		}
	}
	resp, err := http.Post(p.URL+"/p", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "POST /p body" {
		t.Errorf("POST answer %q", b)
	}
	if resp := rawRequest(t, p.Addr, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 504 {
		t.Errorf("hanging pipelined request: %d, want 504", resp.StatusCode)
	}
}

// TestPipelineBoundsHeadOfLineBlocking: requests queued behind a slow
// answer are sent again on the pool after pipeline_max_wait, so they are
// answered while the slow one is still pending (the slow answer is only
// released once they all have been), and the slow request itself still
// gets its own answer.
func TestPipelineBoundsHeadOfLineBlocking(t *testing.T) {
	up, release, slowSeen := holdingUpstream(t, "/slow")
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 1\n    timeout: 20s\n    pipeline_max_wait: 100ms"))
	slow := getLater(p.URL + "/slow")
	testkit.Eventually(t, "/slow at the upstream", func() bool { return slowSeen.Load() > 0 })
	// The one pipelined connection now holds /slow; these queue behind it
	// (the upstream is still fast on average), wait pipeline_max_wait, and
	// must be answered although /slow is not.
	getAll(t, p.URL, 4, 1)
	close(release)
	if got := <-slow; got != "GET /slow " {
		t.Fatalf("slow request answered %q", got)
	}
	if r := pipelineCount(p, "rescued"); r < 1 {
		t.Errorf("rescued = %d, want the requests queued behind /slow", r)
	}
	if got := pipelineTotal(p); got != 5 {
		t.Errorf("pipeline results add up to %d, want 5", got)
	}
}

// TestPipelineRetriesWhenTheUpstreamCloses: an upstream that closes its
// connection after every third answer (Connection: close) loses the
// requests pipelined behind; they are sent again on the pool and every
// client still gets its own answer.
func TestPipelineRetriesWhenTheUpstreamCloses(t *testing.T) {
	var n atomic.Int32
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			w.Header().Set("Connection", "close")
		}
		echo(w, r)
	})
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 2"))
	getAll(t, p.URL, 16, 20)
	if got := pipelineTotal(p); got != 320 {
		t.Errorf("pipeline results add up to %d, want 320", got)
	}
	if up.conns.Load() < 20 {
		t.Errorf("upstream saw %d connections; closing after every third answer should have forced more", up.conns.Load())
	}
}

// TestPipelineStaysOffASlowUpstream: once the upstream's answers take
// longer than a quarter of pipeline_max_wait, requests no longer queue
// behind others: they go to an idle pipelined connection or the pool, and
// nothing waits long enough to need a rescue.
func TestPipelineStaysOffASlowUpstream(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(60 * time.Millisecond)
		echo(w, r)
	})
	// Queueing stops above 40 ms (a quarter of pipeline_max_wait); ten
	// sequential answers of 60 ms bring the moving average past it.
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 2\n    pipeline_max_wait: 160ms"))
	getAll(t, p.URL, 1, 10)
	getAll(t, p.URL, 8, 4)
	if b := pipelineCount(p, "bypassed"); b == 0 {
		t.Error("no request bypassed the pipeline to a 60 ms upstream with 8 clients and 2 pipelined connections")
	}
	if r := pipelineCount(p, "rescued"); r != 0 {
		t.Errorf("%d rescues: requests queued behind a slow upstream", r)
	}
}

// TestPipelineRescueBudget: rescues are limited, so an upstream that stalls
// everything is not sent each request twice.
func TestPipelineRescueBudget(t *testing.T) {
	p := newPipeline("127.0.0.1:1", nil, nil, 1, 64, time.Millisecond, time.Minute, 1<<20, pipelineCounters{})
	spent := 0
	for p.spend() {
		spent++
	}
	if spent != 64 {
		t.Fatalf("a fresh budget with 1 connection of depth 64 allows %d rescues, want 64 (one per queued request)", spent)
	}
	for i := 0; i < 25; i++ {
		p.earn()
	}
	if spent := countSpends(p); spent != 2 {
		t.Errorf("25 answers earned %d rescues, want 2 (10%%)", spent)
	}
}

func countSpends(p *pipeline) int {
	n := 0
	for p.spend() {
		n++
	}
	return n
}

// TestPipelineAnswersWithoutBodies: HEAD answers carry a Content-Length but
// no body; the next pipelined answer on the connection must still parse.
func TestPipelineAnswersWithoutBodies(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		if r.Method != http.MethodHead {
			io.WriteString(w, "hello")
		}
	})
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 1"))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var resp fasthttp.Response
	br := bufio.NewReader(c)
	for i, method := range []string{"HEAD", "GET", "HEAD", "OPTIONS", "GET"} {
		fmt.Fprintf(c, "%s /x HTTP/1.1\r\nHost: a\r\n\r\n", method)
		resp.Reset()
		resp.SkipBody = method == "HEAD"
		if err := resp.Read(br); err != nil {
			t.Fatalf("answer %d (%s): %v", i, method, err)
		}
		if resp.StatusCode() != 200 || method != "HEAD" && string(resp.Body()) != "hello" {
			t.Fatalf("answer %d (%s): %d %q", i, method, resp.StatusCode(), resp.Body())
		}
	}
	if a := pipelineCount(p, "answered"); a != 5 {
		t.Errorf("answered = %d, want 5", a)
	}
}

// TestPipelineSkipsInterimAnswers: a 103 Early Hints before each answer is
// not taken for the answer, which would shift every later answer on the
// connection onto the wrong request.
func TestPipelineSkipsInterimAnswers(t *testing.T) {
	up := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			uri, err := readRequestURI(br)
			if err != nil {
				return
			}
			body := "GET " + uri + " "
			fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	p := startProxy(t, simpleConfig(up, "    pipeline_conns: 1"))
	getAll(t, p.URL, 8, 25)
	if a := pipelineCount(p, "answered"); a == 0 {
		t.Error("no request was answered on the pipelined connection")
	}
}

// TestPipelineClosesAfterASwitch: a 101 to a pipelined GET is answered 502
// and its connection dropped, so the bytes after it (here an injected
// answer) never become another request's answer.
func TestPipelineClosesAfterASwitch(t *testing.T) {
	up := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			uri, err := readRequestURI(br)
			if err != nil {
				return
			}
			if uri == "/evil" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ninject")
				continue
			}
			body := "GET " + uri + " "
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	p := startProxy(t, simpleConfig(up, "    pipeline_conns: 1"))
	if resp := rawRequest(t, p.Addr, "GET /evil HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 502 {
		t.Fatalf("unasked 101: %d, want 502", resp.StatusCode)
	}
	getAll(t, p.URL, 1, 5)
}

// TestPipelineRescuesTheOldestWhenTheUpstreamHoldsABatch: an upstream that
// sends a batch's answers only once all of them are ready (fasthttp servers
// do) delays a fast request ahead of a slow one as well as one behind it;
// the oldest request on the connection is rescued too. Each round sends a
// fast and a slow request at once, so they share a batch in either order
// (queueing is kept on between rounds); the fast one must come back (its
// answer, or a rescue to the pool) while the slow one is still held.
func TestPipelineRescuesTheOldestWhenTheUpstreamHoldsABatch(t *testing.T) {
	const rounds = 20
	var releases [rounds]chan struct{}
	for i := range releases {
		releases[i] = make(chan struct{})
	}
	up := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var pending []byte
		hold := -1
		for {
			uri, err := readRequestURI(br)
			if err != nil {
				return
			}
			var r int
			if _, err := fmt.Sscanf(uri, "/slow/%d", &r); err == nil {
				hold = r
			}
			body := "GET " + uri + " "
			pending = fmt.Appendf(pending, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			if br.Buffered() > 0 {
				continue // more of the batch to answer first
			}
			if hold >= 0 {
				select {
				case <-releases[hold]:
				case <-time.After(20 * time.Second):
					return
				}
			}
			if _, err := c.Write(pending); err != nil {
				return
			}
			pending, hold = pending[:0], -1
		}
	})
	counter := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}) }
	p := newPipeline(strings.TrimPrefix(up, "http://"), func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
		nil, 1, 32, 20*time.Millisecond, time.Minute, 1<<20,
		pipelineCounters{answered: counter(), bypassed: counter(), rescued: counter(), retried: counter(), rescueDenied: counter()})
	p.backoff = 0
	defer p.close()
	do := func(uri string) (err error, fallback bool) {
		var req fasthttp.Request
		var resp fasthttp.Response
		req.SetRequestURI(uri)
		req.Header.SetHost("a")
		err, fallback, _ = p.do(&req, &resp, 30*time.Second)
		if err == nil && !fallback && string(resp.Body()) != "GET "+uri+" " {
			err = fmt.Errorf("%s answered %q", uri, resp.Body())
		}
		return err, fallback
	}
	do("/warm")
	for r := 0; r < rounds; r++ {
		p.budget.Store(p.bank)
		start := make(chan struct{})
		slow, fast := make(chan error, 1), make(chan error, 1)
		go func() { <-start; err, _ := do(fmt.Sprintf("/slow/%d", r)); slow <- err }()
		go func() { <-start; err, _ := do(fmt.Sprintf("/fast/%d", r)); fast <- err }()
		close(start)
		select {
		case err := <-fast:
			if err != nil {
				t.Fatalf("round %d: fast request: %v", r, err)
			}
		case <-time.After(5 * time.Second): // 250 times pipeline_max_wait
			close(releases[r])
			t.Fatalf("round %d: the fast request was held with the slow one", r)
		}
		close(releases[r])
		if err := <-slow; err != nil {
			t.Fatalf("round %d: slow request: %v", r, err)
		}
		for p.queueOff.Load() { // the watchdog turns queueing back on at once
			time.Sleep(time.Millisecond)
		}
	}
}

// TestPipelineHoldsDialsAfterAFailure: after a failed dial the pipeline
// sends requests to the pool without dialing again for dialBackoff, so an
// unreachable upstream costs a request one connect timeout (the pool's),
// not two.
func TestPipelineHoldsDialsAfterAFailure(t *testing.T) {
	var dials atomic.Int32
	refuse := func(string) (net.Conn, error) {
		dials.Add(1)
		return nil, fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	}
	counter := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}) }
	p := newPipeline("127.0.0.1:1", refuse, nil, 4, 32, 5*time.Millisecond, time.Minute, 1<<20,
		pipelineCounters{answered: counter(), bypassed: counter(), rescued: counter(), retried: counter(), rescueDenied: counter()})
	defer p.close()
	for i := 0; i < 5; i++ {
		var req fasthttp.Request
		var resp fasthttp.Response
		req.SetRequestURI("/x")
		req.Header.SetHost("a")
		if err, fallback, left := p.do(&req, &resp, time.Second); err != nil || !fallback || left != time.Second {
			t.Fatalf("request %d: err %v, fallback %v, left %v; want the pool with the whole timeout", i, err, fallback, left)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials for 5 requests after the first failed, want 1", n)
	}
}

// readRequestURI reads one bodiless request head from br and returns its
// target, for the raw upstreams above.
func readRequestURI(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if h == "\r\n" {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", fmt.Errorf("bad request line %q", line)
	}
	return f[1], nil
}

// TestPipelineSurvivesAReload: a reload that replaces the upstream closes
// its pipelined connections only once their requests are answered; a
// request held on one still gets its own answer, and new requests use the
// new upstream's connections.
func TestPipelineSurvivesAReload(t *testing.T) {
	up, release, held := holdingUpstream(t, "/held")
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 1\n    pipeline_max_wait: 2s"))
	done := getLater(p.URL + "/held")
	testkit.Eventually(t, "/held at the upstream", func() bool { return held.Load() > 0 })
	// A different pipeline_depth makes a new upstream; the old one closes.
	if err := p.Srv.Reload(mustLoad(t, simpleConfig(up.URL, "    pipeline_conns: 1\n    pipeline_max_wait: 2s\n    pipeline_depth: 8"))); err != nil {
		t.Fatal(err)
	}
	getAll(t, p.URL, 2, 5)
	close(release)
	if got := <-done; got != "GET /held " {
		t.Fatalf("request held across the reload answered %q", got)
	}
	if n := held.Load(); n != 1 {
		t.Errorf("the upstream saw /held %d times; its pipelined connection was closed under it and the request sent again", n)
	}
}
