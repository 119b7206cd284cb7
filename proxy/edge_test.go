package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func TestRequestIDKeptOrGenerated(t *testing.T) {
	ids := make(chan string, 4)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { ids <- r.Header.Get("X-Request-Id") })
	p := startProxy(t, simpleConfig(up.URL, ""))

	resp := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-abc.123\r\n\r\n")
	if got := <-ids; got != "client-abc.123" || resp.Header.Get("X-Request-Id") != "client-abc.123" {
		t.Errorf("valid client id not kept: upstream %q client %q", got, resp.Header.Get("X-Request-Id"))
	}
	seen := map[string]bool{}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 300), "semi;colon"} {
		hdr := ""
		if bad != "" {
			hdr = "X-Request-Id: " + bad + "\r\n"
		}
		resp := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n"+hdr+"\r\n")
		got := <-ids
		if got == bad || !validRequestID([]byte(got)) || resp.Header.Get("X-Request-Id") != got || seen[got] {
			t.Errorf("for %q: upstream got %q, client got %q", bad, got, resp.Header.Get("X-Request-Id"))
		}
		seen[got] = true
	}
}

// A request_id.header configured in any case finds the client's id, sent
// in any case (the request path looks names up in normalized form).
func TestRequestIDHeaderAnyCase(t *testing.T) {
	ids := make(chan []string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { ids <- r.Header.Values("X-Trace-Token") })
	p := startProxy(t, simpleConfig(up.URL, "")+"request_id: {header: x-TRACE-token}\n")
	resp := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\nX-TRACE-TOKEN: client-abc.123\r\n\r\n")
	if got := <-ids; len(got) != 1 || got[0] != "client-abc.123" || resp.Header.Get("X-Trace-Token") != "client-abc.123" {
		t.Errorf("client id not kept: upstream %q, client %q", got, resp.Header.Values("X-Trace-Token"))
	}
}

// The id reaches the shadow and the recorded exchange under whatever header
// request_id.header names, not only under the default one.
func TestRequestIDReachesShadowAndSamples(t *testing.T) {
	for _, tc := range []struct{ name, header, extra string }{
		{"default header", "X-Request-Id", ""},
		{"custom header", "X-Trace-Token", "request_id: {header: X-Trace-Token}\n"},
		// Looked up in normalized form on the request path.
		{"lower-case header", "x-trace-token", "request_id: {header: x-trace-token}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shadowIDs := make(chan string, 1)
			primary := startUpstream(t, fastJSON(`{"a":1}`))
			shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				shadowIDs <- r.Header.Get(tc.header)
				fastJSON(`{"a":2}`)(w, r)
			})
			p, rc := startMirrorProxy(t, shadowConfig(primary.URL, shadow.URL, "      targets: [shadow]")+tc.extra)
			resp := rawRequest(t, p.Addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
			id := resp.Header.Get(tc.header)
			if got := <-shadowIDs; got != id || id == "" {
				t.Errorf("shadow saw id %q, client got %q", got, id)
			}
			testkit.Eventually(t, "comparison", func() bool { return len(rc.snapshot()) == 1 })
			if got := rc.snapshot()[0].requestID; got != id {
				t.Errorf("the recorded exchange carries id %q, the client got %q", got, id)
			}
		})
	}
}

func TestAccessLogSampledAndRedacted(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(500)
		}
		io.WriteString(w, "hello")
	})
	p := startProxy(t, simpleConfig(up.URL, "")+"access_log: {enabled: true, sample: 0, redact_query: [session]}\n")
	rawRequest(t, p.Addr, "GET /ok?token=abc&session=s1&page=2 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer topsecret\r\nCookie: c=1\r\n\r\n")
	rawRequest(t, p.Addr, "GET /fail?token=abc&session=s1&page=2 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer topsecret\r\n\r\n")
	lines := p.Logs.FilterMessage("request").All()
	if len(lines) != 1 {
		t.Fatalf("sample 0 must log only the 5xx, got %d lines", len(lines))
	}
	fields := lines[0].ContextMap()
	if fields["path"] != "/fail?token=REDACTED&session=REDACTED&page=2" || fields["status"] != int64(500) ||
		fields["route"] != "default" || fields["upstream"] != "stable" || fields["request_id"] == "" || fields["bytes"] != int64(5) {
		t.Errorf("fields %v", fields)
	}
	for _, e := range p.Logs.All() {
		for _, f := range e.Context {
			if f.Type == zapcore.StringType && (strings.Contains(f.String, "topsecret") || strings.Contains(f.String, "c=1")) {
				t.Errorf("a secret reached the log: %v", f)
			}
		}
	}
}

// wsUpstream accepts an upgrade with 101 and then echoes bytes back
// upper-cased; it answers 426 to requests without Upgrade.
func wsUpstream(t testing.TB, sawRequest chan<- string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(line)
					if line == "\r\n" {
						break
					}
				}
				if sawRequest != nil {
					sawRequest <- head.String()
				}
				if !strings.Contains(strings.ToLower(head.String()), "upgrade: websocket") {
					io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello ")
				buf := make([]byte, 1024)
				for {
					n, err := br.Read(buf)
					if err != nil {
						return
					}
					c.Write([]byte(strings.ToUpper(string(buf[:n]))))
				}
			}(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

const wsRequest = "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func TestUpgradeTunnelled(t *testing.T) {
	saw := make(chan string, 2)
	p := startProxy(t, simpleConfig(wsUpstream(t, saw), ""))
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, wsRequest)
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("status line %q", status)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	head := <-saw
	if !strings.Contains(head, "Upgrade: websocket") || !strings.Contains(head, "X-Forwarded-For: 127.0.0.1") {
		t.Errorf("upstream saw head %q", head)
	}
	io.WriteString(c, "ping")
	got := make([]byte, len("hello PING"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello PING" {
		t.Errorf("tunnel echoed %q, %v", got, err)
	}
	if v := testutil.ToFloat64(p.Met.Upgrades.WithLabelValues("default", "tunnelled")); v != 1 {
		t.Errorf("upgrades{tunnelled} = %v", v)
	}
	testkit.Eventually(t, "active tunnel", func() bool { return testutil.ToFloat64(p.Met.ActiveTunnels) == 1 })
	c.Close()
	testkit.Eventually(t, "tunnel closed", func() bool { return testutil.ToFloat64(p.Met.ActiveTunnels) == 0 })
}

func TestUpgradeDeclinedDisabledIdle(t *testing.T) {
	t.Run("upstream declines", func(t *testing.T) {
		p := startProxy(t, simpleConfig(wsUpstream(t, nil), ""))
		resp := rawRequest(t, p.Addr, strings.Replace(wsRequest, "Upgrade: websocket", "Upgrade: h2c", 1))
		if resp.StatusCode != 426 || readBody(t, resp) != "nope" {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("disabled answers 501", func(t *testing.T) {
		p := startProxy(t, simpleConfig(wsUpstream(t, nil), "")+"upgrades: {disabled: true}\n")
		resp := rawRequest(t, p.Addr, wsRequest)
		if resp.StatusCode != 501 || testutil.ToFloat64(p.Met.Upgrades.WithLabelValues("default", "refused")) != 1 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("idle tunnel closed", func(t *testing.T) {
		p := startProxy(t, simpleConfig(wsUpstream(t, nil), "")+"upgrades: {idle_timeout: 200ms}\n")
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, wsRequest)
		b, err := io.ReadAll(c) // returns when the proxy closes the idle tunnel
		if err != nil || !strings.Contains(string(b), "101") {
			t.Errorf("read %q, %v", b, err)
		}
	})
	t.Run("never mirrored", func(t *testing.T) {
		var shadowHits atomic.Int64
		shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { shadowHits.Add(1) })
		p, _ := startMirrorProxy(t, shadowConfig(wsUpstream(t, nil), shadow.URL, "      targets: [shadow]"))
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, wsRequest)
		bufio.NewReader(c).ReadString('\n')
		c.Close()
		time.Sleep(100 * time.Millisecond)
		if shadowHits.Load() != 0 {
			t.Error("an upgrade was mirrored")
		}
	})
}

func multiConfig(urls []string, extra string) string {
	return fmt.Sprintf(`
upstreams:
  - name: pool
    urls: [%s]
%s
routes:
  - {name: default, upstream: pool}
`, strings.Join(urls, ", "), extra)
}

func countingUpstream(t testing.TB, name string, counts *sync.Map) string {
	return startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		v, _ := counts.LoadOrStore(name, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		io.WriteString(w, name)
	}).URL
}

func TestRoundRobinAndLeastConn(t *testing.T) {
	for _, balance := range []string{"round_robin", "least_conn"} {
		t.Run(balance, func(t *testing.T) {
			var counts sync.Map
			urls := []string{countingUpstream(t, "a", &counts), countingUpstream(t, "b", &counts), countingUpstream(t, "c", &counts)}
			p := startProxy(t, multiConfig(urls, "    balance: "+balance))
			for i := 0; i < 90; i++ {
				rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			}
			for _, n := range []string{"a", "b", "c"} {
				v, _ := counts.Load(n)
				if v == nil || v.(*atomic.Int64).Load() < 15 {
					t.Errorf("endpoint %s got %v of 90 requests", n, v)
				}
			}
		})
	}
}

func TestEjectionAndRetryOnAnotherEndpoint(t *testing.T) {
	var counts sync.Map
	live := countingUpstream(t, "live", &counts)
	dead := "http://" + testkit.ClosedAddr(t)
	p := startProxy(t, multiConfig([]string{dead, live}, "    health: {max_failures: 2, ejection: 1m}"))
	for i := 0; i < 10; i++ {
		resp := rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || readBody(t, resp) != "live" {
			t.Fatalf("GET %d: status %d (a connect error must be retried on the other endpoint)", i, resp.StatusCode)
		}
	}
	if v := testutil.ToFloat64(p.Met.EndpointEjections.WithLabelValues("pool", dead)); v != 1 {
		t.Errorf("ejections = %v", v)
	}
	if v := testutil.ToFloat64(p.Met.EndpointUp.WithLabelValues("pool", dead)); v != 0 {
		t.Errorf("dead endpoint up = %v", v)
	}
	if v := testutil.ToFloat64(p.Met.EndpointUp.WithLabelValues("pool", live)); v != 1 {
		t.Errorf("live endpoint up = %v", v)
	}
}

func TestPostNeverRetriedOnAnotherEndpoint(t *testing.T) {
	var counts sync.Map
	live := countingUpstream(t, "live", &counts)
	dead := "http://" + testkit.ClosedAddr(t)
	p := startProxy(t, multiConfig([]string{dead, live}, "    health: {max_failures: 100}"))
	codes := map[int]int{}
	for i := 0; i < 6; i++ {
		codes[rawRequest(t, p.Addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx").StatusCode]++
	}
	if codes[502] != 3 || codes[200] != 3 {
		t.Errorf("POST answers %v; round robin over one dead endpoint must fail half of them", codes)
	}
}

func TestActiveHealthCheckEjects(t *testing.T) {
	var counts sync.Map
	var sick atomic.Bool
	sick.Store(true)
	sickURL := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && sick.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "sick")
	}).URL
	well := countingUpstream(t, "well", &counts)
	p := startProxy(t, multiConfig([]string{sickURL, well}, "    health: {path: /health, interval: 50ms, timeout: 40ms}"))
	testkit.Eventually(t, "probe marks the endpoint down", func() bool {
		return testutil.ToFloat64(p.Met.EndpointUp.WithLabelValues("pool", sickURL)) == 0
	})
	for i := 0; i < 10; i++ {
		if body := readBody(t, rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")); body != "well" {
			t.Fatalf("request %d went to the endpoint failing its health check", i)
		}
	}
	sick.Store(false)
	testkit.Eventually(t, "probe marks the endpoint up again", func() bool {
		return testutil.ToFloat64(p.Met.EndpointUp.WithLabelValues("pool", sickURL)) == 1
	})
}

// testCA makes a CA and a leaf certificate for 127.0.0.1, written as PEM
// files in dir.
func testCA(t testing.TB, dir, name string) (caFile, certFile, keyFile string, leaf tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"backend.test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(file, typ string, b []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile = write(name+"-ca.pem", "CERTIFICATE", caDER)
	certFile = write(name+"-cert.pem", "CERTIFICATE", der)
	keyFile = write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	leaf, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return caFile, certFile, keyFile, leaf
}

func TestTLSListenerAndCertificateReload(t *testing.T) {
	dir := t.TempDir()
	ca1, cert1, key1, _ := testCA(t, dir, "one")
	ca2, cert2, key2, _ := testCA(t, dir, "two")
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})
	cfgText := func(cert, key string) string {
		return simpleConfig(up.URL, "") + fmt.Sprintf("tls: {cert_file: %s, key_file: %s}\n", cert, key)
	}
	p := startProxy(t, cfgText(cert1, key1))
	get := func(caFile string) (string, error) {
		pool := x509.NewCertPool()
		b, _ := os.ReadFile(caFile)
		pool.AppendCertsFromPEM(b)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get("https://" + p.Addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.Proto != "HTTP/1.1" {
			t.Errorf("proto %s", resp.Proto)
		}
		b, _ = io.ReadAll(resp.Body)
		return string(b), nil
	}
	if body, err := get(ca1); err != nil || body != "https" {
		t.Fatalf("TLS request: %q, %v", body, err)
	}
	// A connection opened before the reload keeps working after it.
	conn, err := tls.Dial("tcp", p.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg2 := mustLoad(t, cfgText(cert2, key2))
	if err := p.Srv.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	if _, err := get(ca1); err == nil {
		t.Error("old certificate still served after reload")
	}
	if body, err := get(ca2); err != nil || body != "https" {
		t.Errorf("new certificate: %q, %v", body, err)
	}
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("connection from before the reload: %v", err)
	}
}

func TestHTTPSUpstreamWithCAFile(t *testing.T) {
	dir := t.TempDir()
	caFile, _, _, leaf := testCA(t, dir, "backend")
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	backend.StartTLS()
	defer backend.Close()
	p := startProxy(t, simpleConfig(backend.URL, "    tls: {ca_file: "+caFile+"}"))
	if body := readBody(t, rawRequest(t, p.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")); body != "secure" {
		t.Errorf("body %q", body)
	}
	// Without the CA the certificate is not trusted: 502, never plain text.
	p2 := startProxy(t, simpleConfig(backend.URL, ""))
	if resp := rawRequest(t, p2.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 502 {
		t.Errorf("untrusted upstream certificate: status %d", resp.StatusCode)
	}
	p3 := startProxy(t, simpleConfig(strings.Replace(backend.URL, "127.0.0.1", "localhost", 1), "    tls: {ca_file: "+caFile+", server_name: backend.test}"))
	if body := readBody(t, rawRequest(t, p3.Addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")); body != "secure" {
		t.Errorf("server_name override: body %q", body)
	}
}
