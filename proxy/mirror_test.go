package proxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// recordingComparer keeps copies of what it was given.
type recordingComparer struct {
	mu  sync.Mutex
	got []recorded
}

type recorded struct {
	method, uri        string
	requestID          string
	primaryStatus      int
	primaryBody        string
	primaryErr         error
	shadowStatus       []int
	shadowBody         []string
	shadowOutcome      []ShadowOutcome
	secondaryBody      string
	secondaryOutcome   ShadowOutcome
	hasSecondary       bool
	primaryContentType string
}

func (c *recordingComparer) Compare(ex *Exchange) {
	r := recorded{method: ex.Method, uri: ex.URI, requestID: ex.RequestID, primaryStatus: ex.Primary.Status, primaryBody: string(ex.Primary.Body),
		primaryErr: ex.Primary.Err, primaryContentType: ex.Primary.ContentType}
	for _, s := range ex.Shadows {
		r.shadowStatus = append(r.shadowStatus, s.Capture.Status)
		r.shadowBody = append(r.shadowBody, string(s.Capture.Body))
		r.shadowOutcome = append(r.shadowOutcome, s.Outcome)
	}
	if ex.Secondary != nil {
		r.hasSecondary, r.secondaryBody, r.secondaryOutcome = true, string(ex.Secondary.Capture.Body), ex.Secondary.Outcome
	}
	c.mu.Lock()
	c.got = append(c.got, r)
	c.mu.Unlock()
}

func (c *recordingComparer) snapshot() []recorded {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]recorded(nil), c.got...)
}

// startMirrorProxy serves cfgText with a recording comparer.
func startMirrorProxy(t testing.TB, cfgText string) (*testProxy, *recordingComparer) {
	t.Helper()
	rc := &recordingComparer{}
	return startProxyWith(t, cfgText, rc), rc
}

func shadowConfig(primary, shadow, shadowBlock string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s}
  - {name: shadow, url: %s}
routes:
  - name: api
    upstream: primary
    shadow:
%s
`, primary, shadow, shadowBlock)
}

func shadowCount(p *testProxy, outcome string) float64 {
	return testutil.ToFloat64(p.Met.ShadowRequests.WithLabelValues("api", "shadow", "shadow", outcome))
}

func fastJSON(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

func TestMirrorDeliversAndCaptures(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{"v":1}`))
	shadow := startUpstream(t, fastJSON(`{"v":2}`))
	p, rc := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]"))
	for i := 0; i < 20; i++ {
		resp := rawRequest(t, p.Addr, fmt.Sprintf("GET /r/%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
		if body := readBody(t, resp); body != `{"v":1}` {
			t.Fatalf("client got the shadow's answer or garbage: %q", body)
		}
	}
	testkit.Eventually(t, "20 comparisons", func() bool { return len(rc.snapshot()) == 20 })
	for _, r := range rc.snapshot() {
		if r.primaryBody != `{"v":1}` || r.shadowBody[0] != `{"v":2}` || r.shadowStatus[0] != 200 || r.primaryContentType != "application/json" {
			t.Errorf("captured %+v", r)
		}
		if r.method != "GET" || !strings.HasPrefix(r.uri, "/r/") {
			t.Errorf("request summary %q %q", r.method, r.uri)
		}
	}
	if v := shadowCount(p, "ok"); v != 20 {
		t.Errorf("ok = %v", v)
	}
}

// Isolation 1: a shadow taking 2s per answer changes nothing a client sees;
// what exceeds the bound is dropped and counted.
func TestSlowShadowDoesNotSlowClients(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	release := make(chan struct{})
	var shadowHits atomic.Int64
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		shadowHits.Add(1)
		select {
		case <-time.After(2 * time.Second):
		case <-release:
		}
	})
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]\n      workers: 4\n      queue_size: 8\n      timeout: 5s"))
	slow := 0
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if time.Since(t0) > time.Second {
			slow++
		}
	}
	if slow != 0 {
		t.Errorf("%d client requests took longer than 1s behind a 2s shadow", slow)
	}
	dropped := shadowCount(p, "dropped")
	// At most workers in flight plus queue_size waiting can be accepted.
	if dropped < 200-4-8 {
		t.Errorf("dropped = %v, want at least %d", dropped, 200-12)
	}
	close(release)
	p.stop()
	if sent := shadowCount(p, "ok") + shadowCount(p, "error") + shadowCount(p, "timeout"); sent+dropped > 200 || sent > 12 {
		t.Errorf("sent %v + dropped %v", sent, dropped)
	}
}

// Isolation 2: a dead shadow (connection refused) is invisible to clients.
func TestDeadShadow(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	p, rc := startMirrorProxy(t, shadowConfig(primary.URL, "http://"+testkit.ClosedAddr(t), "      targets: [shadow]"))
	for i := 0; i < 50; i++ {
		if resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	testkit.Eventually(t, "50 shadow errors", func() bool { return shadowCount(p, "error") == 50 })
	testkit.Eventually(t, "50 comparisons", func() bool { return len(rc.snapshot()) == 50 })
	if rc.snapshot()[0].shadowOutcome[0] != ShadowError {
		t.Errorf("outcome %v", rc.snapshot()[0].shadowOutcome[0])
	}
}

// hangingListener accepts connections and never answers.
func hangingListener(t testing.TB) string {
	t.Helper()
	return serveConns(t, func(c net.Conn) { io.Copy(io.Discard, c) })
}

// Isolation 3: a shadow that accepts and never answers; timeouts are
// counted and goroutines return to the baseline afterwards.
func TestHangingShadowTimesOutAndLeaksNothing(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	hang := hangingListener(t)
	base := runtime.NumGoroutine()
	cfg := shadowConfig(primary.URL, hang, "      targets: [shadow]\n      timeout: 200ms\n      workers: 8")
	cfg = strings.Replace(cfg, "{name: shadow, url: "+hang+"}", "{name: shadow, url: "+hang+", max_idle_conn_duration: 1s}", 1)
	cfg = strings.Replace(cfg, "{name: primary, url: "+primary.URL+"}", "{name: primary, url: "+primary.URL+", max_idle_conn_duration: 1s}", 1)
	p, _ := startMirrorProxy(t, cfg)
	for i := 0; i < 40; i++ {
		if resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	testkit.Eventually(t, "timeouts counted", func() bool { return shadowCount(p, "timeout") > 0 })
	p.stop()
	testkit.Eventually(t, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= base+3
	})
}

// Isolation 4: concurrent body-carrying POSTs (the route opts in); every
// captured body equals what its upstream sent, so no buffer is aliased.
func TestConcurrentPostsNoAliasing(t *testing.T) {
	echo := func(prefix string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, prefix+string(b))
		}
	}
	primary, shadow := startUpstream(t, echo("P:")), startUpstream(t, echo("S:"))
	p, rc := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]\n      methods: [POST]\n      queue_size: 4096"))
	client := &http.Client{Timeout: 10 * time.Second}
	const workers, per = 8, 40
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				body := fmt.Sprintf("w%d-i%d-%s", w, i, strings.Repeat(string(rune('a'+(w+i)%26)), 100+i*37))
				resp, err := client.Post(p.URL+"/post", "text/plain", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != "P:"+body {
					t.Errorf("client body mismatch")
				}
			}
		}(w)
	}
	wg.Wait()
	testkit.Eventually(t, "all comparisons", func() bool { return len(rc.snapshot()) == workers*per })
	for _, r := range rc.snapshot() {
		sent := strings.TrimPrefix(r.primaryBody, "P:")
		if r.shadowBody[0] != "S:"+sent {
			t.Fatalf("aliasing: primary %q.. vs shadow %q..", head(r.primaryBody), head(r.shadowBody[0]))
		}
	}
}

func head(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}

// Isolation 5: the shadow sees the marker and no credentials when
// configured; the primary still gets them.
func TestShadowHeaderRules(t *testing.T) {
	primaryHeaders := make(chan http.Header, 1)
	shadowHeaders := make(chan http.Header, 1)
	shadowHost := make(chan string, 1)
	primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { primaryHeaders <- r.Header.Clone() })
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { shadowHeaders <- r.Header.Clone(); shadowHost <- r.Host })
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, `      targets:
        - name: shadow
          headers: {set: {X-Shadow-Request: "1"}, remove: [Authorization, Cookie]}
          host: shadow.internal`))
	rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: front\r\nAuthorization: Bearer secret\r\nCookie: session=abc\r\n\r\n")
	ph, sh := <-primaryHeaders, <-shadowHeaders
	if ph.Get("Authorization") == "" || ph.Get("Cookie") == "" || ph.Get("X-Shadowproxy-Shadow") != "" {
		t.Errorf("primary headers changed: %v", ph)
	}
	if sh.Get("Authorization") != "" || sh.Get("Cookie") != "" {
		t.Errorf("shadow got credentials: %v", sh)
	}
	if sh.Get("X-Shadow-Request") != "1" || sh.Get("X-Shadowproxy-Shadow") != "1" {
		t.Errorf("shadow markers missing: %v", sh)
	}
	if h := <-shadowHost; h != "shadow.internal" {
		t.Errorf("shadow host %q", h)
	}
}

func TestUnsafeMethodsNotMirroredByDefault(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	var shadowHits atomic.Int64
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { shadowHits.Add(1) })
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]"))
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		rawRequest(t, p.Addr, m+" /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
	}
	rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	testkit.Eventually(t, "the GET mirrored", func() bool { return shadowHits.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := shadowHits.Load(); n != 1 {
		t.Errorf("shadow saw %d requests, want only the GET", n)
	}
	if v := testutil.ToFloat64(p.Met.ShadowSkipped.WithLabelValues("api", "method")); v != 4 {
		t.Errorf("skipped{method} = %v", v)
	}
}

func TestShadowSamplingIsStickyPerUser(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	var mu sync.Mutex
	seen := map[string]int{}
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-User")]++
		mu.Unlock()
	})
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]\n      percent: 50\n      key: header:X-User"))
	// The public recipe says which users are sampled: bucket < 5000 with
	// the default shadow salt "<route>:shadow".
	want := map[string]bool{}
	for u := 0; u < 40; u++ {
		id := fmt.Sprintf("user-%d", u)
		if splitter.Bucket("api:shadow", []byte(id)) < 5000 {
			want[id] = true
		}
	}
	if len(want) == 0 || len(want) == 40 {
		t.Fatalf("degenerate sample: %d of 40", len(want))
	}
	for round := 0; round < 3; round++ {
		for u := 0; u < 40; u++ {
			rawRequest(t, p.Addr, fmt.Sprintf("GET /x HTTP/1.1\r\nHost: a\r\nX-User: user-%d\r\n\r\n", u))
		}
	}
	testkit.Eventually(t, "every sampled request mirrored", func() bool { return int(shadowCount(p, "ok")) == 3*len(want) })
	mu.Lock()
	defer mu.Unlock()
	for u, n := range seen {
		if !want[u] || n != 3 {
			t.Errorf("user %s shadowed %d of 3 times (sampled: %v); sampling must be sticky and follow the recipe", u, n, want[u])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d users shadowed, want %d", len(seen), len(want))
	}
}

func TestOversizedBodyNotMirrored(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{}`))
	var shadowHits atomic.Int64
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { shadowHits.Add(1) })
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]\n      methods: [POST]\n      max_body: 1KiB"))
	resp := rawRequest(t, p.Addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n"+strings.Repeat("x", 2048))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if v := testutil.ToFloat64(p.Met.ShadowSkipped.WithLabelValues("api", "body_too_large")); v != 1 {
		t.Errorf("skipped{body_too_large} = %v", v)
	}
	if shadowHits.Load() != 0 {
		t.Error("oversized body mirrored")
	}
}

func TestSecondaryGetsEveryMirroredRequest(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{"v":"p"}`))
	shadow := startUpstream(t, fastJSON(`{"v":"s"}`))
	twin := startUpstream(t, fastJSON(`{"v":"twin"}`))
	p, rc := startMirrorProxy(t, fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s}
  - {name: shadow, url: %s}
  - {name: twin, url: %s}
routes:
  - name: api
    upstream: primary
    shadow: {targets: [shadow], compare: {secondary: twin}}
`, primary.URL, shadow.URL, twin.URL))
	for i := 0; i < 10; i++ {
		rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	testkit.Eventually(t, "10 comparisons", func() bool { return len(rc.snapshot()) == 10 })
	for _, r := range rc.snapshot() {
		if !r.hasSecondary || r.secondaryBody != `{"v":"twin"}` || r.shadowBody[0] != `{"v":"s"}` {
			t.Errorf("%+v", r)
		}
	}
}

// Memory: with a hanging shadow and 50,000 requests, the heap stays bounded
// by the queue and body limits.
func TestMirrorMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Log("short mode: 5,000 requests instead of 50,000")
	}
	n := 50000
	if testing.Short() || raceEnabled {
		// The race detector makes each request ~10x slower; the bound is the
		// same, the evidence smaller.
		n = 10000
	}
	body := strings.Repeat("b", 4096)
	primary := startUpstream(t, fastJSON(body))
	hang := hangingListener(t)
	p, _ := startMirrorProxy(t, shadowConfig(primary.URL, hang, "      targets: [shadow]\n      timeout: 30s\n      workers: 16\n      queue_size: 256"))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	do := func(k int) { loadLoop(t, client, p.URL+"/m", 16, k) }
	do(2000) // warm up: the queue fills and the workers hang
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	do(n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// Queue (256) + in flight (16) jobs of ~4 KiB captured bodies is ~1 MiB;
	// 16 MiB is generous and still far below 50,000 unbounded copies (200 MiB).
	if growth > 16<<20 {
		t.Errorf("heap grew %d MiB over %d requests", growth>>20, n)
	}
	if d := shadowCount(p, "dropped"); d < float64(n)*0.9 {
		t.Errorf("dropped = %v of %d", d, n)
	}
}

func TestCompressedBodiesComparedByContent(t *testing.T) {
	gz := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, `{"a":1}`)
		zw.Close()
	}
	primary := startUpstream(t, gz)
	shadow := startUpstream(t, fastJSON(`{"a":1}`))
	p, rc := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]"))
	rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")
	testkit.Eventually(t, "comparison", func() bool { return len(rc.snapshot()) == 1 })
	if r := rc.snapshot()[0]; r.primaryBody != `{"a":1}` {
		t.Errorf("primary body not decoded for comparison: %q", r.primaryBody)
	}
}

func TestDecodeBodyBounded(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(bytes.Repeat([]byte("a"), 1<<20))
	zw.Close()
	bomb := map[string][]byte{"gzip": buf.Bytes()}
	var bb bytes.Buffer
	bw := brotli.NewWriter(&bb)
	bw.Write(bytes.Repeat([]byte("a"), 1<<20))
	bw.Close()
	bomb["br"] = bb.Bytes()
	zw2, _ := zstd.NewWriter(nil)
	bomb["zstd"] = zw2.EncodeAll(bytes.Repeat([]byte("a"), 1<<20), nil)
	for enc, body := range bomb {
		out, cut, err := decodeBody(enc, body, 1000)
		if err != nil || !cut || len(out) != 1000 {
			t.Errorf("%s: len %d cut %v err %v", enc, len(out), cut, err)
		}
	}
	small := zw2.EncodeAll([]byte(`{"a":1}`), nil)
	if out, cut, err := decodeBody("zstd", small, 1000); err != nil || cut || string(out) != `{"a":1}` {
		t.Errorf("zstd: %q %v %v", out, cut, err)
	}
	if _, _, err := decodeBody("compress", []byte("x"), 10); err == nil {
		t.Error("unknown encoding accepted")
	}
	if _, _, err := decodeBody("zstd", []byte("not zstd"), 10); err == nil {
		t.Error("corrupt zstd accepted")
	}
}

// splitSecondaryConfig is route api on primary, split 50% to canary by
// X-User, shadowed to shadow with twin as the secondary; shadowOpts ("" or
// "key: value, " pairs) adds to the shadow's settings.
func splitSecondaryConfig(primary, canary, shadow, twin, shadowOpts string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s}
  - {name: canary, url: %s}
  - {name: shadow, url: %s}
  - {name: twin, url: %s}
routes:
  - name: api
    upstream: primary
    split: {key: "header:X-User", to: canary, percent: 50}
    shadow: {targets: [shadow], %scompare: {secondary: twin}}
`, primary, canary, shadow, twin, shadowOpts)
}

// TestSecondarySkipsCanaryServedRequests: with a split and a secondary, the
// secondary (stable version) is only asked about requests the stable
// upstream served; otherwise it would be compared with the canary's answer
// and learn the real differences as noise.
func TestSecondarySkipsCanaryServedRequests(t *testing.T) {
	primary := startUpstream(t, fastJSON(`{"v":1}`))
	canary := startUpstream(t, fastJSON(`{"v":2}`))
	shadow := startUpstream(t, fastJSON(`{"v":2}`))
	twin := startUpstream(t, fastJSON(`{"v":1}`))
	p, rc := startMirrorProxy(t, splitSecondaryConfig(primary.URL, canary.URL, shadow.URL, twin.URL, ""))
	const n = 40
	for i := 0; i < n; i++ {
		rawRequest(t, p.Addr, fmt.Sprintf("GET /x HTTP/1.1\r\nHost: a\r\nX-User: u%d\r\n\r\n", i))
	}
	testkit.Eventually(t, "comparisons", func() bool { return len(rc.snapshot()) == n })
	served := map[string]int{}
	for _, r := range rc.snapshot() {
		served[r.primaryBody]++
		switch r.primaryBody {
		case `{"v":1}`:
			if r.secondaryOutcome != ShadowOK || r.secondaryBody != `{"v":1}` {
				t.Errorf("stable-served request: secondary %v %q", r.secondaryOutcome, r.secondaryBody)
			}
		case `{"v":2}`:
			if r.secondaryOutcome != ShadowSkipped {
				t.Errorf("canary-served request: secondary %v, want skipped", r.secondaryOutcome)
			}
		}
	}
	if served[`{"v":1}`] == 0 || served[`{"v":2}`] == 0 {
		t.Fatalf("split did not send to both: %v", served)
	}
	if v := testutil.ToFloat64(p.Met.ShadowSkipped.WithLabelValues("api", SkipSecondaryCanaryServed.String())); v != float64(served[`{"v":2}`]) {
		t.Errorf("skipped{%s} = %v, want %d", SkipSecondaryCanaryServed, v, served[`{"v":2}`])
	}
}
