package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
)

// h2Recorder is an upstream that records what it received.
type h2Recorder struct {
	mu   sync.Mutex
	reqs []h2Received
}

type h2Received struct {
	proto, method, uri, host, body string
	header                         http.Header
}

func (r *h2Recorder) handler(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, h2Received{req.Proto, req.Method, req.RequestURI, req.Host, string(b), req.Header.Clone()})
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Upstream", "yes")
	w.Write([]byte(`{"echo":"` + req.Method + `"}`))
}

func (r *h2Recorder) last(t *testing.T) h2Received {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return r.reqs[len(r.reqs)-1]
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p}}
}

func tlsClient(t *testing.T, caFile string, h2 bool) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	var p http.Protocols
	p.SetHTTP1(!h2)
	p.SetHTTP2(h2)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// TestHTTP2OverTLS: ALPN offers h2 and http/1.1 on the TLS listener; an
// HTTP/2 client and an HTTP/1.1 client both go through the same routing,
// mirroring and metrics, and the upstream gets HTTP/1.1.
func TestHTTP2OverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, _ := testCA(t, dir, "proxy")
	rec, shadow := &h2Recorder{}, &h2Recorder{}
	up := startUpstream(t, rec.handler)
	sh := startUpstream(t, shadow.handler)
	p := startProxy(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
tls: {cert_file: %s, key_file: %s}
http2: {enabled: true}
upstreams:
  - {name: stable, url: "%s"}
  - {name: shadow, url: "%s"}
routes:
  - name: api
    upstream: stable
    shadow: {targets: [shadow], percent: 100, methods: [GET, POST]}
`, cert, key, up.URL, sh.URL))
	url := "https://" + p.Addr + "/api/items?page=2"

	for _, h2 := range []bool{true, false} {
		c := tlsClient(t, ca, h2)
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"n":1}`))
		req.Header.Set("X-User-ID", "u-42")
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantProto := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]
		if resp.Proto != wantProto || resp.StatusCode != 200 || string(body) != `{"echo":"POST"}` ||
			resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("h2=%v: %s %d %q %v", h2, resp.Proto, resp.StatusCode, body, resp.Header)
		}
		got := rec.last(t)
		if got.proto != "HTTP/1.1" || got.method != "POST" || got.uri != "/api/items?page=2" || got.body != `{"n":1}` ||
			got.header.Get("X-User-ID") != "u-42" || got.header.Get("X-Forwarded-Proto") != "https" ||
			got.header.Get("X-Forwarded-For") != "127.0.0.1" || got.host != p.Addr || got.header.Get("X-Request-Id") != resp.Header.Get("X-Request-Id") {
			t.Errorf("h2=%v: upstream received %+v", h2, got)
		}
	}
	// Mirrored and counted like any request.
	waitUntil(t, "both requests mirrored", func() bool {
		shadow.mu.Lock()
		defer shadow.mu.Unlock()
		return len(shadow.reqs) == 2
	})
	if n := testutil.ToFloat64(p.Met.Requests.WithLabelValues("api", "stable", "200")); n != 2 {
		t.Errorf("requests_total{api,stable,200} = %v, want 2", n)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func h2cConfig(upURL, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
http2: {enabled: true, h2c: true, max_concurrent_streams: 4}
limits: {max_request_body: 1KiB, max_header_size: 4KiB}
%s
upstreams:
  - {name: stable, url: "%s"}
routes:
  - {name: default, upstream: stable}
`, extra, upURL)
}

// TestH2CPriorKnowledge: h2c with prior knowledge, HTTP/1.1 on the same
// port, and an HTTP/1.1 Upgrade to h2c that is not honoured.
func TestH2CPriorKnowledge(t *testing.T) {
	rec := &h2Recorder{}
	up := startUpstream(t, rec.handler)
	p := startProxy(t, h2cConfig(up.URL, ""))

	resp, err := h2cClient().Get(p.URL + "/a?b=c")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 || body != `{"echo":"GET"}` {
		t.Errorf("h2c: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	if got := rec.last(t); got.uri != "/a?b=c" || got.header.Get("X-Forwarded-Proto") != "http" || got.proto != "HTTP/1.1" {
		t.Errorf("upstream received %+v", got)
	}
	// HEAD keeps the upstream's length and sends no body.
	hresp, err := h2cClient().Head(p.URL + "/a")
	if err != nil || hresp.StatusCode != 200 || hresp.ContentLength != int64(len(`{"echo":"HEAD"}`)) {
		t.Errorf("HEAD over h2c: %v %+v", err, hresp)
	}

	// An HTTP/2 CONNECT would open a tunnel: refused.
	creq, _ := http.NewRequest(http.MethodConnect, p.URL, nil)
	creq.Host = "example.com:443"
	cresp, err := h2cClient().Do(creq)
	if err != nil {
		t.Fatal(err)
	}
	if text := readBody(t, cresp); cresp.StatusCode != 405 || !strings.Contains(text, "CONNECT tunnels are not supported") {
		t.Errorf("CONNECT over h2c: %d %q, want 405", cresp.StatusCode, text)
	}

	// Plain HTTP/1.1 on the same listener.
	resp, err = http.Get(p.URL + "/h1")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.Proto != "HTTP/1.1" || body != `{"echo":"GET"}` {
		t.Errorf("HTTP/1.1 beside h2c: %s %q", resp.Proto, body)
	}

	// The Upgrade dance is never honoured: no 101, and the request is not
	// served as HTTP/2.
	raw := rawRequest(t, p.Addr, "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	readBody(t, raw)
	if raw.StatusCode == http.StatusSwitchingProtocols || raw.Proto != "HTTP/1.1" {
		t.Errorf("Upgrade: h2c answered %d %s; must never switch", raw.StatusCode, raw.Proto)
	}
}

// TestHTTP2Limits: body and header list limits answer as for HTTP/1.1,
// and the stream limit is advertised.
func TestHTTP2Limits(t *testing.T) {
	rec := &h2Recorder{}
	up := startUpstream(t, rec.handler)
	p := startProxy(t, h2cConfig(up.URL, ""))
	c := h2cClient()

	for _, known := range []bool{true, false} {
		body := io.Reader(bytes.NewReader(bytes.Repeat([]byte("x"), 2048)))
		if !known {
			body = io.MultiReader(body) // length unknown: streamed
		}
		resp, err := c.Post(p.URL+"/big", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		if text := readBody(t, resp); resp.StatusCode != 413 || !strings.Contains(text, "request body exceeds the configured limit") {
			t.Errorf("length known=%v: body over max_request_body: %d %q", known, resp.StatusCode, text)
		}
	}
	if n := testutil.ToFloat64(p.Met.RejectedRequests.WithLabelValues("body_too_large")); n != 2 {
		t.Errorf("rejected_requests_total{body_too_large} = %v, want 2", n)
	}
	// Go's client refuses to send a header list over the advertised
	// limit, so this one is written by hand.
	var many [][2]string
	for i := 0; i < 40; i++ {
		many = append(many, [2]string{fmt.Sprintf("x-h%d", i), strings.Repeat("a", 200)})
	}
	if code := rawH2Status(t, p.Addr, many...); code != "431" {
		t.Errorf("header list over max_header_size: %s, want 431", code)
	}
	// One field longer than the whole limit is a decoding error: the
	// connection ends (GOAWAY), with nothing forwarded.
	if code := rawH2Status(t, p.Addr, [2]string{"x-big", strings.Repeat("a", 8<<10)}); code != "" {
		t.Errorf("a single 8 KiB field: answered %s, want the connection closed", code)
	}
	rec.mu.Lock()
	n := len(rec.reqs)
	rec.mu.Unlock()
	if n != 0 {
		t.Errorf("the upstream received %d over-limit requests", n)
	}

	// SETTINGS_MAX_CONCURRENT_STREAMS and _MAX_HEADER_LIST_SIZE as configured.
	conn, fr := rawH2(t, p.Addr)
	defer conn.Close()
	settings := map[http2.SettingID]uint32{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			sf.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			break
		}
	}
	if settings[http2.SettingMaxConcurrentStreams] != 4 || settings[http2.SettingMaxHeaderListSize] < 4<<10 || settings[http2.SettingMaxHeaderListSize] > 8<<10 {
		t.Errorf("server settings %v, want 4 concurrent streams and a header list limit near 4 KiB", settings)
	}
}

// rawH2Status sends one GET with extra header fields over a raw h2c
// connection and returns the response's :status ("" when the server
// closes the connection instead).
func rawH2Status(t *testing.T, addr string, extra ...[2]string) string {
	t.Helper()
	conn, fr := rawH2(t, addr)
	defer conn.Close()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range append([][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "proxy"}, {":path", "/h"}}, extra...) {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "" // connection closed without an answer
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == 1 {
			return mh.PseudoValue("status")
		}
	}
}

// rawH2 opens an h2c connection with prior knowledge and a framer on it.
func rawH2(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(h2Preface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return conn, fr
}

// TestHTTP2RapidReset: a client that opens streams and resets them at
// once (CVE-2023-44487) cannot make the proxy run more requests at a time
// than max_concurrent_streams, and is disconnected.
func TestHTTP2RapidReset(t *testing.T) {
	var inflight, peak, total atomic.Int64
	release := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		total.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		inflight.Add(-1)
	})
	p := startProxy(t, h2cConfig(up.URL, ""))
	defer close(release)

	conn, fr := rawH2(t, p.Addr)
	defer conn.Close()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	const streams = 2000
	sent := 0
	var werr error
	for id := uint32(1); sent < streams; id += 2 {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "proxy"}, {":path", "/r"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true}); werr != nil {
			break
		}
		if werr = fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
		sent++
	}
	// The server ends the connection (GOAWAY, then close) long before
	// 2000 handlers ran.
	goaway := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			goaway = true
		}
	}
	t.Logf("sent %d goaway %v werr %v peak %d total %d", sent, goaway, werr, peak.Load(), total.Load())
	if !goaway && werr == nil {
		t.Errorf("sent %d HEADERS+RST_STREAM pairs without being disconnected", sent)
	}
	if pk := peak.Load(); pk > 4 {
		t.Errorf("%d requests reached the upstream at once; max_concurrent_streams is 4", pk)
	}
	if n := total.Load(); n >= streams/2 {
		t.Errorf("%d of %d reset streams reached the upstream", n, streams)
	}
}

// BenchmarkClientProtocols measures a whole proxied GET from Go's net/http
// client over HTTP/1.1 and over h2c (one connection, multiplexed), to a
// fasthttp upstream on loopback. Compare the two as a ratio.
func BenchmarkClientProtocols(b *testing.B) {
	up := fasttest.StartUpstream(b)
	p := startProxy(b, fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
http2: {enabled: true, h2c: true}
upstreams: [{name: stable, url: "%s"}]
routes: [{name: default, upstream: stable}]
`, up))
	for _, bc := range []struct {
		name   string
		client *http.Client
	}{
		{"http1", &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}},
		{"h2c", h2cClient()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := bc.client.Get(p.URL + "/api/items?page=2")
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatal(resp.StatusCode)
					}
				}
			})
		})
	}
}

func TestHTTP2SettingsNeedRestart(t *testing.T) {
	up := startUpstream(t, (&h2Recorder{}).handler)
	p := startProxy(t, h2cConfig(up.URL, ""))
	err := p.Srv.Reload(mustLoad(t, simpleConfig(up.URL, "")))
	if err == nil || !strings.Contains(err.Error(), "http2 settings cannot change on reload") {
		t.Errorf("reload turning http2 off: %v", err)
	}
	// Still serving HTTP/2.
	resp, err := h2cClient().Get(p.URL + "/x")
	if err != nil || resp.Proto != "HTTP/2.0" {
		t.Fatalf("after the rejected reload: %v", err)
	}
	readBody(t, resp)
}

// TestHTTP2PendingConnectionsBounded: connections that have not yet shown
// their protocol count against max_connections, so idle sockets cannot
// pile up goroutines until read_timeout.
func TestHTTP2PendingConnectionsBounded(t *testing.T) {
	up := startUpstream(t, (&h2Recorder{}).handler)
	p := startProxy(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
http2: {enabled: true, h2c: true}
limits: {max_connections: 2, read_timeout: 60s}
upstreams: [{name: stable, url: "%s"}]
routes: [{name: default, upstream: stable}]
`, up.URL))
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		// Idle: not a byte sent. Wait until the proxy has accepted it.
		waitUntil(t, "the connection accepted", func() bool { return p.Srv.h2.pending.Load() == int64(min(i+1, 2)) || i == 2 })
	}
	// The third is closed at once (long before read_timeout), the first
	// two are still waiting for their first bytes.
	conns[2].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[2].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("third idle connection: read %v, want EOF (closed by the proxy)", err)
	}
	conns[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := conns[0].Read(make([]byte, 1)); err == io.EOF {
		t.Error("the first idle connection was closed before read_timeout")
	}
	if n := testutil.ToFloat64(p.Met.RejectedRequests.WithLabelValues("too_many_connections")); n != 1 {
		t.Errorf("too_many_connections = %v, want 1", n)
	}
}
