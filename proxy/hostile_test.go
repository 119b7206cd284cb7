package proxy

// Hostile input: request smuggling, malformed framing and slow clients,
// sent by a raw TCP client, with raw upstreams that record exactly the bytes
// they receive and insist on unambiguous HTTP/1.1 framing. The proxy sits in
// front of every request, so whatever a client sends must either be refused
// (a 4xx or a closed connection) or reach the upstream as exactly one
// request that no HTTP/1.1 implementation could read differently.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// ---------------------------------------------------------------------------
// A strict reader of requests as they arrive at an upstream.

// wireRequest is one request exactly as a raw upstream read it.
type wireRequest struct {
	Method, Target, Proto string
	Header                [][2]string // in order, names as sent
	Body                  []byte
}

// Values returns the values of every field called name (case-insensitive).
func (r *wireRequest) Values(name string) []string {
	var out []string
	for _, kv := range r.Header {
		if strings.EqualFold(kv[0], name) {
			out = append(out, kv[1])
		}
	}
	return out
}

func (r *wireRequest) String() string {
	return fmt.Sprintf("%s %s %s (%d fields, %d body bytes)", r.Method, r.Target, r.Proto, len(r.Header), len(r.Body))
}

// errWireFraming marks input that is not unambiguous HTTP/1.1.
var errWireFraming = errors.New("ambiguous or malformed framing")

func framingErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errWireFraming, fmt.Sprintf(format, args...))
}

const wireMaxHead = 1 << 20

// wireHostRE is RFC 9110's Host value: uri-host [ ":" port ], where uri-host
// is a reg-name (no userinfo: no '@') or a bracketed IP literal.
var wireHostRE = regexp.MustCompile(`^([A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]*)?$`)

// readWireLine reads one line and requires it to end in CRLF with no other
// CR, LF or NUL in it.
func readWireLine(br *bufio.Reader, budget *int) (string, error) {
	line, err := br.ReadString('\n')
	*budget -= len(line)
	if err != nil {
		if err == io.EOF && line != "" {
			return "", framingErr("connection ended inside a line: %q", line)
		}
		return "", err
	}
	if *budget < 0 {
		return "", framingErr("request head longer than %d bytes", wireMaxHead)
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", framingErr("bare LF line ending in %q", line)
	}
	line = line[:len(line)-2]
	if i := strings.IndexAny(line, "\r\n\x00"); i >= 0 {
		return "", framingErr("CR, LF or NUL inside a line: %q", line)
	}
	return line, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// readWireRequest reads one request from br and insists on framing that
// every HTTP/1.1 implementation reads the same way (RFC 9112): CRLF line
// ends only; no bare CR, LF or NUL; a three-part request line; token field
// names directly followed by a colon; no obs-fold; exactly one Host; at most
// one Content-Length, made of digits; version HTTP/1.1; Transfer-Encoding only as exactly
// "chunked" and never together with Content-Length. io.EOF means the
// connection ended cleanly between requests.
func readWireRequest(br *bufio.Reader) (*wireRequest, error) {
	budget := wireMaxHead
	line, err := readWireLine(br, &budget)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(line, " ")
	// Only HTTP/1.1: a proxy sends its own version, whatever the client's
	// (RFC 9110 §6.2).
	if len(parts) != 3 || !isToken(parts[0]) || parts[1] == "" || parts[2] != "HTTP/1.1" {
		return nil, framingErr("request line %q", line)
	}
	r := &wireRequest{Method: parts[0], Target: parts[1], Proto: parts[2]}
	for {
		line, err := readWireLine(br, &budget)
		if err != nil {
			if err == io.EOF {
				return nil, framingErr("connection ended inside the head of %s", r)
			}
			return nil, err
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, framingErr("obs-fold line %q", line)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return nil, framingErr("field line %q", line)
		}
		r.Header = append(r.Header, [2]string{name, strings.Trim(value, " \t")})
	}
	if hosts := r.Values("Host"); len(hosts) != 1 || !wireHostRE.MatchString(hosts[0]) {
		return nil, framingErr("Host fields %q in %s: want exactly one host[:port]", hosts, r)
	}
	cls, tes := r.Values("Content-Length"), r.Values("Transfer-Encoding")
	switch {
	case len(tes) > 0 && len(cls) > 0:
		return nil, framingErr("both Content-Length %q and Transfer-Encoding %q", cls, tes)
	case len(tes) > 0:
		if len(tes) != 1 || !strings.EqualFold(tes[0], "chunked") {
			return nil, framingErr("Transfer-Encoding %q", tes)
		}
		r.Body, err = readWireChunked(br)
		return r, err
	case len(cls) > 1:
		return nil, framingErr("%d Content-Length fields %q", len(cls), cls)
	case len(cls) == 1:
		n, err := strconv.ParseUint(cls[0], 10, 31)
		if err != nil || strings.TrimLeft(cls[0], "0123456789") != "" {
			return nil, framingErr("Content-Length %q", cls[0])
		}
		r.Body = make([]byte, n)
		if _, err := io.ReadFull(br, r.Body); err != nil {
			return nil, framingErr("body shorter than Content-Length %d: %v", n, err)
		}
	}
	return r, nil
}

func readWireChunked(br *bufio.Reader) ([]byte, error) {
	var body []byte
	budget := wireMaxHead
	for {
		line, err := readWireLine(br, &budget)
		if err != nil {
			return nil, framingErr("chunk size line: %v", err)
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseUint(size, 16, 31)
		if err != nil {
			return nil, framingErr("chunk size %q", line)
		}
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil || !bytes.HasSuffix(chunk, []byte("\r\n")) {
			return nil, framingErr("chunk of %d bytes not followed by CRLF", n)
		}
		body = append(body, chunk[:n]...)
	}
	for { // trailer section
		line, err := readWireLine(br, &budget)
		if err != nil {
			return nil, framingErr("trailer: %v", err)
		}
		if line == "" {
			return body, nil
		}
	}
}

// ---------------------------------------------------------------------------
// A raw upstream.

// wireUpstream is a TCP server on 127.0.0.1 that records every byte each
// connection delivers and hands connections to a behaviour. The default
// behaviour reads requests strictly and answers each with "200 ok"; a
// request it cannot read strictly is recorded as a violation.
type wireUpstream struct {
	Addr, URL string
	ln        net.Listener
	handle    func(c *wireConn)

	mu         sync.Mutex
	raw        []*bytes.Buffer
	reqs       []*wireRequest
	violations []string
	live       map[net.Conn]bool
	wg         sync.WaitGroup
}

// wireConn is one accepted connection: R reads through the recorder.
type wireConn struct {
	net.Conn
	R     *bufio.Reader
	Index int // accept order, from 0
	up    *wireUpstream
}

type recordingReader struct {
	r   io.Reader
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (rr recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.mu.Lock()
	rr.buf.Write(p[:n])
	rr.mu.Unlock()
	return n, err
}

// ReadRequest reads one request strictly and records it, or records why it
// could not.
func (c *wireConn) ReadRequest() (*wireRequest, error) {
	r, err := readWireRequest(c.R)
	c.up.mu.Lock()
	defer c.up.mu.Unlock()
	switch {
	case err == nil:
		c.up.reqs = append(c.up.reqs, r)
	case errors.Is(err, errWireFraming):
		c.up.violations = append(c.up.violations, err.Error())
	}
	return r, err
}

// serveOK answers every well-framed request with 200 "ok" until the
// connection ends or carries something ambiguous.
func serveOK(c *wireConn) {
	for {
		if _, err := c.ReadRequest(); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func startWireUpstream(t testing.TB, handle func(c *wireConn)) *wireUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &wireUpstream{Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String(), ln: ln, handle: handle, live: map[net.Conn]bool{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			buf := &bytes.Buffer{}
			u.raw = append(u.raw, buf)
			u.live[c] = true
			wc := &wireConn{Conn: c, Index: len(u.raw) - 1, up: u}
			u.mu.Unlock()
			wc.R = bufio.NewReader(recordingReader{r: c, mu: &u.mu, buf: buf})
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.handle(wc)
				c.Close()
				u.mu.Lock()
				delete(u.live, c)
				u.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(u.close)
	return u
}

// close stops accepting, closes every connection and waits for the
// behaviours to return.
func (u *wireUpstream) close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.live {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

func (u *wireUpstream) Requests() []*wireRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*wireRequest(nil), u.reqs...)
}

func (u *wireUpstream) Violations() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.violations...)
}

// Conns is how many connections the upstream accepted.
func (u *wireUpstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.raw)
}

// Raw is everything the upstream received, connection by connection.
func (u *wireUpstream) Raw() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var b strings.Builder
	for i, buf := range u.raw {
		fmt.Fprintf(&b, "[conn %d] %q\n", i, buf.String())
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// A raw client.

// clientResult is what a raw client saw on one connection.
type clientResult struct {
	Status []int    // every response, in order
	Bodies []string // their bodies
	// Closed: the proxy closed the connection (EOF or reset) before the
	// wait ended. Otherwise it was still open when the client gave up.
	Closed bool
	// ClosedAfter is the time from the first byte sent to the close.
	ClosedAfter time.Duration
	// FirstAfter is the time from the first byte sent to the first
	// response.
	FirstAfter time.Duration
	// ReadErr is a response the client could not parse.
	ReadErr error
}

func (r clientResult) String() string {
	return fmt.Sprintf("responses %v, closed %v after %v, read error %v", r.Status, r.Closed, r.ClosedAfter.Round(time.Millisecond), r.ReadErr)
}

// rawClient sends the pieces on one connection, gap apart (writes stop once
// the proxy has closed), and reads responses until the proxy closes the
// connection or wait has passed since the last response.
func rawClient(t testing.TB, addr string, pieces []string, gap, wait time.Duration) clientResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	done := make(chan clientResult, 1)
	go func() {
		var res clientResult
		br := bufio.NewReader(c)
		for {
			c.SetReadDeadline(time.Now().Add(wait))
			// Peek first: http.ReadResponse reports a clean close as
			// io.ErrUnexpectedEOF, indistinguishable from a cut response.
			if _, err := br.Peek(1); err != nil {
				var ne net.Error
				switch {
				case errors.As(err, &ne) && ne.Timeout():
				case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
					res.Closed, res.ClosedAfter = true, time.Since(start)
				default:
					res.ReadErr = err
				}
				done <- res
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				res.ReadErr = err
				done <- res
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if res.Status == nil {
				res.FirstAfter = time.Since(start)
			}
			res.Status = append(res.Status, resp.StatusCode)
			res.Bodies = append(res.Bodies, string(b))
			if err != nil {
				res.ReadErr = fmt.Errorf("body: %w", err)
				done <- res
				return
			}
		}
	}()
	for i, p := range pieces {
		if i > 0 && gap > 0 {
			select {
			case res := <-done:
				return res
			case <-time.After(gap):
			}
		}
		if _, err := io.WriteString(c, p); err != nil {
			break // the proxy closed the connection: the reader reports it
		}
	}
	return <-done
}

// ---------------------------------------------------------------------------
// The tests.

// hostileProxy starts two strict upstreams and a proxy routing Host
// evil.test and paths under /admin/ to the first and everything else to the
// second. read_timeout is short so that a request the proxy keeps waiting
// for ends within the test.
func hostileProxy(t *testing.T, limits string) (p *testProxy, evil, good *wireUpstream) {
	evil, good = startWireUpstream(t, serveOK), startWireUpstream(t, serveOK)
	if limits == "" {
		limits = "{read_timeout: 1s, max_header_size: 4KiB}"
	}
	p = startProxy(t, fmt.Sprintf(`
upstreams:
  - {name: evil, url: %s}
  - {name: good, url: %s}
routes:
  - name: evil
    match: {host: evil.test}
    upstream: evil
  - name: admin
    match: {path_prefix: /admin/}
    upstream: evil
  - name: default
    upstream: good
limits: %s
`, evil.URL, good.URL, limits))
	return p, evil, good
}

// hostileCase is one hostile request. With forwardOK nil the proxy must
// refuse it: a 4xx answer or a closed connection, and no byte of it at any
// upstream. Where the RFC allows a proxy to repair or accept the message
// instead (obs-fold, bare CR or LF, NUL, CL+TE, absolute-form, OPTIONS *,
// HTTP/1.0, an upgrade with a body), forwardOK judges the single request
// that reached an upstream; it must be well-framed (the upstreams check
// that) and mean what the proxy routed.
type hostileCase struct {
	name string
	req  string
	// forwardOK returns "" when what reached the upstreams is an acceptable
	// repair of the input.
	forwardOK func(evil, good []*wireRequest) string
	// closeAfterForward: even when repaired and forwarded, the connection
	// must then be closed (RFC 9112 §6.1 for CL+TE: the rest of the stream
	// cannot be trusted).
	closeAfterForward bool
	// statuses lists the only acceptable refusals, when narrower than 4xx
	// (or, like 505, outside it).
	statuses []int
}

// forwardedOnce accepts exactly one request at the default upstream that
// check approves.
func forwardedOnce(check func(r *wireRequest) string) func(evil, good []*wireRequest) string {
	return func(evil, good []*wireRequest) string {
		if len(evil) != 0 || len(good) != 1 {
			return fmt.Sprintf("want exactly one request at the default upstream, got %d there and %d at evil", len(good), len(evil))
		}
		return check(good[0])
	}
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"

func TestHostileInput(t *testing.T) {
	long := strings.Repeat("a", 8<<10)
	cases := []hostileCase{
		{
			// RFC 9112 §6.1: a server MAY reject this or process it by
			// Transfer-Encoding alone, and either way MUST close the
			// connection afterwards. A proxy that keeps the connection open
			// lets the smuggled request through as a second request.
			name: "Content-Length and Transfer-Encoding",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Target != "/a" || len(r.Body) != 0 {
					return "forwarded " + r.String() + ", want POST /a with the empty chunked body"
				}
				return ""
			}),
			closeAfterForward: true,
		},
		{
			name: "Transfer-Encoding and Content-Length",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\n" + smuggled,
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Target != "/a" || len(r.Body) != 0 {
					return "forwarded " + r.String() + ", want POST /a with the empty chunked body"
				}
				return ""
			}),
			closeAfterForward: true,
		},
		{
			// A coding other than chunked last in a request: the length
			// cannot be determined (RFC 9112 §6.3), 400 and close.
			name: "Transfer-Encoding not chunked",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc" + smuggled,
		},
		{
			name: "Transfer-Encoding chunked then identity",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		},
		{
			// Whitespace between a field name and the colon MUST be
			// rejected with 400 (RFC 9112 §5.1): it is the classic way to
			// hide Transfer-Encoding from one parser and not another.
			name: "space before colon in Transfer-Encoding",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled,
		},
		{
			name: "space before colon in Content-Length",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length : 3\r\n\r\nabc",
		},
		{
			// Differing Content-Length values are an unrecoverable framing
			// error: 400 and close (RFC 9112 §6.3 item 5).
			name: "duplicate differing Content-Length",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 44\r\n\r\nabc" + smuggled,
		},
		{
			name: "Content-Length list with differing values",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3, 44\r\n\r\nabc" + smuggled,
		},
		{
			name: "Content-Length with a sign",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: +3\r\n\r\nabc",
		},
		{
			name: "invalid chunk size",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		},
		{
			name: "chunk size overflowing 64 bits",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n",
		},
		{
			name: "negative chunk size",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
		},
		{
			name: "chunk longer than its size",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
		},
		{
			// A bare LF may be taken as a line end by one parser and as part
			// of a value by another: here it hides a Content-Length. RFC 9112
			// §2.2 lets a recipient read a lone LF as a line end, so a proxy
			// may repair it, but then what it forwards must be the two
			// fields it saw, each on its own CRLF line.
			name: "bare LF hiding a header",
			req:  "POST /a HTTP/1.1\r\nHost: a.test\r\nX-A: 1\nContent-Length: 3\r\n\r\nabc",
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if a := r.Values("X-A"); len(a) != 1 || a[0] != "1" || string(r.Body) != "abc" {
					return fmt.Sprintf("forwarded X-A %q body %q, want X-A 1 and body abc", a, r.Body)
				}
				return ""
			}),
		},
		{
			name: "bare LF line endings throughout",
			req:  "GET /a HTTP/1.1\nHost: a.test\nX-A: 1\n\n",
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Target != "/a" || len(r.Values("X-A")) != 1 {
					return "forwarded " + r.String()
				}
				return ""
			}),
		},
		{
			name: "header name with a space",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nX Forwarded: 1\r\n\r\n",
		},
		{
			// A bare CR inside a value: reject, or replace it with SP before
			// forwarding (RFC 9112 §2.2, RFC 9110 §5.5).
			name:      "bare CR in a header value",
			req:       "GET /a HTTP/1.1\r\nHost: a.test\r\nX-A: 1\rContent-Length: 3\r\n\r\nabc",
			forwardOK: forwardedOnce(noCRLFIn("X-A")),
		},
		{
			// obs-fold: reject, or replace it with SP (RFC 9112 §5.2).
			name:      "obs-fold continuation line",
			req:       "GET /a HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
			forwardOK: forwardedOnce(noCRLFIn("X-A")),
		},
		{
			name:      "NUL in a header value",
			req:       "GET /a HTTP/1.1\r\nHost: a.test\r\nX-A: 1\x00Content-Length: 3\r\n\r\n",
			forwardOK: forwardedOnce(noCRLFIn("X-A")),
		},
		{
			// HTTP/1.1 without Host, or with two: 400 (RFC 9112 §3.2). The
			// routes match on Host, so two Hosts could route by one and be
			// served by the other.
			name: "missing Host",
			req:  "GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n",
		},
		{
			name: "two Host fields",
			req:  "GET /a HTTP/1.1\r\nHost: good.test\r\nHost: evil.test\r\n\r\n",
		},
		{
			// An invalid Host value MUST get 400 (RFC 9112 §3.2). Here the
			// bad port also costs the parsed request its path, so the
			// /admin/ route does not match and the default upstream is
			// handed /admin/x.
			name: "Host with a non-numeric port",
			req:  "GET /admin/x HTTP/1.1\r\nHost: a.test:abc\r\n\r\n",
		},
		{
			// userinfo is not allowed in Host (RFC 9110 §7.2), so 400. Read
			// as a URI authority instead, it routes by what follows the '@'
			// and the userinfo turns into an Authorization field that no
			// header rule (a shadow's "remove: [Authorization]") removes.
			name: "Host with userinfo",
			req:  "GET /a HTTP/1.1\r\nHost: good.test@evil.test\r\n\r\n",
		},
		{
			name: "Host with invalid characters",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\"<x>\r\n\r\n",
		},
		{
			// An http URI with an empty host MUST be rejected as invalid
			// (RFC 9110 §4.2.1); taken as the authority it would leave the
			// forwarded request without any Host.
			name: "absolute-form with an empty authority",
			req:  "GET http:///x HTTP/1.1\r\nHost: a.test\r\n\r\n",
		},
		{
			// absolute-form: RFC 9112 §3.2.2 says the authority in the target
			// wins over Host. The proxy may refuse it (it is not a forward
			// proxy), or route and forward it by evil.test, in origin-form
			// with Host evil.test. What it must never do is route by one
			// host and hand the upstream the other.
			name: "absolute-form target",
			req:  "GET http://evil.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n",
			forwardOK: func(evil, good []*wireRequest) string {
				if len(good) != 0 || len(evil) != 1 {
					return fmt.Sprintf("%d requests at the good.test upstream and %d at evil.test: the route and the target disagree", len(good), len(evil))
				}
				r := evil[0]
				if r.Target != "/x" || r.Values("Host")[0] != "evil.test" {
					return "evil.test upstream got " + r.String() + " Host " + r.Values("Host")[0] + ", want origin-form /x with Host evil.test"
				}
				// X-Forwarded-Host is the host the client asked for; an
				// application building links or checking tenants from it
				// must read the host the proxy routed by, not the ignored
				// Host field.
				if xfh := r.Values("X-Forwarded-Host"); len(xfh) != 1 || xfh[0] != "evil.test" {
					return fmt.Sprintf("routed and forwarded as evil.test, but X-Forwarded-Host is %q: the upstream reads a different host than the proxy routed by", xfh)
				}
				return ""
			},
		},
		{
			// OPTIONS * is valid (RFC 9112 §3.2.4): refuse it, or forward it
			// as exactly "*" (never "/*" or "/", which mean something else).
			name: "asterisk-form OPTIONS",
			req:  "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Method != "OPTIONS" || r.Target != "*" {
					return "forwarded " + r.String() + ", want OPTIONS *"
				}
				return ""
			}),
		},
		{
			name: "asterisk-form with GET",
			req:  "GET * HTTP/1.1\r\nHost: a.test\r\n\r\n",
		},
		{
			name:     "over-long request line",
			req:      "GET /" + long + " HTTP/1.1\r\nHost: a.test\r\n\r\n",
			statuses: []int{414, 431},
		},
		{
			name:     "over-long header",
			req:      "GET /a HTTP/1.1\r\nHost: a.test\r\nX-Big: " + long + "\r\n\r\n",
			statuses: []int{431},
		},
		{
			name:     "too many headers",
			req:      "GET /a HTTP/1.1\r\nHost: a.test\r\n" + strings.Repeat("X-H: 1\r\n", 1000) + "\r\n",
			statuses: []int{431},
		},
		{
			// An HTTP/1.0 client is served, but the proxy speaks HTTP/1.1 to
			// the upstream (RFC 9110 §6.2: intermediaries send their own
			// version); the strict upstream rejects anything else.
			name: "HTTP/1.0 request",
			req:  "GET /a HTTP/1.0\r\nHost: a.test\r\n\r\n",
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Target != "/a" {
					return "forwarded " + r.String()
				}
				return ""
			}),
		},
		{
			// A version the proxy does not speak: 505 or 400, never
			// forwarded as it is.
			name:     "unknown HTTP version",
			req:      "GET /a HTTP/0.0\r\nHost: a.test\r\n\r\n",
			statuses: []int{400, 505},
		},
		{
			name:     "HTTP/2 version on an HTTP/1 connection",
			req:      "GET /a HTTP/2.0\r\nHost: a.test\r\n\r\n",
			statuses: []int{400, 505},
		},
		{
			// An upgrade request is tunnelled as raw bytes, so its body must
			// reach the upstream framed exactly as the proxy read it. Here
			// the chunked body decodes to bytes that end a chunked body and
			// start a second request: re-sent under the original
			// Transfer-Encoding without re-encoding, they smuggle it.
			name: "upgrade request with a chunked body",
			req: "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n" +
				fmt.Sprintf("%x\r\n", len("0\r\n\r\n"+smuggled)) + "0\r\n\r\n" + smuggled + "\r\n0\r\n\r\n",
			forwardOK: forwardedOnce(func(r *wireRequest) string {
				if r.Target != "/ws" || string(r.Body) != "0\r\n\r\n"+smuggled {
					return fmt.Sprintf("forwarded %s with body %q, want GET /ws with the decoded body", r, r.Body)
				}
				return ""
			}),
		},
		{
			name: "invalid method token",
			req:  "G(T /a HTTP/1.1\r\nHost: a.test\r\n\r\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, evil, good := hostileProxy(t, "")
			res := rawClient(t, p.Addr, []string{tc.req}, 0, 1500*time.Millisecond)
			checkHostile(t, tc, res, evil, good)

			// The proxy keeps serving: a clean request on a new connection.
			ok := rawClient(t, p.Addr, []string{"GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 2*time.Second)
			if len(ok.Status) != 1 || ok.Status[0] != 200 {
				t.Errorf("the next clean request got %s", ok)
			}
		})
	}
}

func noCRLFIn(name string) func(r *wireRequest) string {
	return func(r *wireRequest) string {
		for _, v := range r.Values(name) {
			if strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Sprintf("forwarded %s: %q", name, v)
			}
		}
		if len(r.Values("Transfer-Encoding")) > 0 || len(r.Body) > 0 {
			return "a field hidden in a value reached the upstream as framing: " + r.String()
		}
		return ""
	}
}

func checkHostile(t *testing.T, tc hostileCase, res clientResult, evil, good *wireUpstream) {
	t.Helper()
	// Give a forwarded request time to land before judging the upstreams.
	time.Sleep(50 * time.Millisecond)
	for _, u := range []*wireUpstream{evil, good} {
		if v := u.Violations(); len(v) > 0 {
			t.Errorf("an upstream received something it could read differently: %v\nreceived: %s", v, u.Raw())
		}
		for _, r := range u.Requests() {
			if strings.Contains(r.Target, "smuggled") {
				t.Errorf("the smuggled request reached an upstream: %s\nclient saw %s", r, res)
			}
		}
	}
	if res.ReadErr != nil {
		t.Errorf("the client got an unreadable answer: %v (%s)", res.ReadErr, res)
	}
	ev, gd := evil.Requests(), good.Requests()
	refused := len(res.Status) == 0 && res.Closed
	if len(res.Status) > 0 && (res.Status[0] >= 400 && res.Status[0] < 500 || containsInt(tc.statuses, res.Status[0])) {
		refused = true
		if len(tc.statuses) > 0 && !containsInt(tc.statuses, res.Status[0]) {
			t.Errorf("refused with %d, want one of %v", res.Status[0], tc.statuses)
		}
	}
	if refused {
		if len(ev)+len(gd) > 0 {
			t.Errorf("refused (%s) but the upstreams still received:\n%s%s", res, evil.Raw(), good.Raw())
		}
		return
	}
	if tc.forwardOK == nil {
		t.Errorf("%q must be refused with a 4xx or a closed connection; the client saw %s\nupstreams received:\n%s%s",
			tc.req, res, evil.Raw(), good.Raw())
		return
	}
	if msg := tc.forwardOK(ev, gd); msg != "" {
		t.Errorf("%s\nclient saw %s\nupstreams received:\n%s%s", msg, res, evil.Raw(), good.Raw())
	}
	if len(res.Status) != 1 || res.Status[0] != 200 {
		t.Errorf("forwarded, so the client should see exactly the upstream's one 200; it saw %s", res)
	}
	if tc.closeAfterForward && !res.Closed {
		t.Errorf("the connection stayed open after a request with ambiguous framing (RFC 9112 §6.1 requires closing it); client saw %s", res)
	}
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// TestHostileControl pins the recorder itself: well-formed pipelined
// requests, one with a chunked body, reach the upstream as exactly those
// requests, re-framed with Content-Length. Without this the refusals above
// could pass because nothing ever reached an upstream.
func TestHostileControl(t *testing.T) {
	p, evil, good := hostileProxy(t, "")
	res := rawClient(t, p.Addr, []string{
		"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n" +
			"POST /two HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" +
			"GET /three HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
	}, 0, 2*time.Second)
	if fmt.Sprint(res.Status) != "[200 200 200]" || !res.Closed {
		t.Fatalf("client saw %s", res)
	}
	gd, ev := good.Requests(), evil.Requests()
	if len(gd) != 2 || gd[0].Target != "/one" || gd[1].Target != "/two" || string(gd[1].Body) != "abcde" {
		t.Errorf("default upstream got %v\n%s", gd, good.Raw())
	}
	if len(gd) == 2 && (len(gd[1].Values("Transfer-Encoding")) != 0 || fmt.Sprint(gd[1].Values("Content-Length")) != "[5]") {
		t.Errorf("the chunked body was not re-framed with Content-Length: %v", gd[1].Header)
	}
	if len(ev) != 1 || ev[0].Target != "/three" {
		t.Errorf("evil.test upstream got %v", ev)
	}
	if v := append(good.Violations(), evil.Violations()...); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}

// TestHostileSlowClients: a client trickling its head (slowloris) or its
// body one byte at a time is cut off once read_timeout has passed since its
// request began, whatever it keeps sending, and nothing reaches the
// upstream.
func TestHostileSlowClients(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	tests := []struct {
		name   string
		head   string
		trickl string
	}{
		{"slow headers", "GET /a HTTP/1.1\r\nHost: a.test\r\n", strings.Repeat("X-Slow: 1\r\n", 10)},
		{"slow body", "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n", strings.Repeat("b", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, evil, good := hostileProxy(t, "{read_timeout: 500ms, idle_timeout: 5s}")
			pieces := []string{tt.head}
			for i := 0; i < len(tt.trickl); i++ {
				pieces = append(pieces, tt.trickl[i:i+1])
			}
			// 100ms between bytes: the whole request would take 5-10s.
			res := rawClient(t, p.Addr, pieces, 100*time.Millisecond, 3*time.Second)
			if !res.Closed {
				t.Fatalf("a client trickling bytes kept its connection past read_timeout %v: %s", readTimeout, res)
			}
			if res.ClosedAfter > readTimeout+time.Second {
				t.Errorf("closed after %v, want about read_timeout %v", res.ClosedAfter, readTimeout)
			}
			if len(res.Status) > 0 && res.Status[0] != 408 {
				t.Errorf("answered %v, want 408 or no answer", res.Status)
			}
			if n := len(evil.Requests()) + len(good.Requests()) + evil.Conns() + good.Conns(); n != 0 {
				t.Errorf("a request that never arrived in full reached an upstream:\n%s", good.Raw())
			}
			if v := testutil.ToFloat64(p.Met.RejectedRequests.WithLabelValues("timeout")); len(res.Status) > 0 && v != 1 {
				t.Errorf("rejected{timeout} = %v after a 408", v)
			}
		})
	}
}

// TestHostileNoFieldsInvented: what reaches the upstream carries no field
// the client did not send, other than the documented X-Forwarded-*, Via
// and X-Request-Id.
// A Content-Type the client never sent changes how the upstream reads the
// body (a form parser, a JSON decoder, a WAF rule), and a User-Agent
// replaces the client's absence of one with the proxy's name.
func TestHostileNoFieldsInvented(t *testing.T) {
	p, _, good := hostileProxy(t, "")
	res := rawClient(t, p.Addr, []string{"POST /raw HTTP/1.1\r\nHost: a.test\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2"}, 0, 2*time.Second)
	if len(res.Status) != 1 || res.Status[0] != 200 {
		t.Fatalf("client saw %s", res)
	}
	reqs := good.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests", len(reqs))
	}
	allowed := map[string]bool{"host": true, "content-length": true, "x-forwarded-for": true, "x-forwarded-proto": true, "x-forwarded-host": true, "via": true, "x-request-id": true}
	for _, kv := range reqs[0].Header {
		if !allowed[strings.ToLower(kv[0])] {
			t.Errorf("the proxy added %s: %s, which the client did not send", kv[0], kv[1])
		}
	}
	if string(reqs[0].Body) != "a=1&b=2" {
		t.Errorf("body %q", reqs[0].Body)
	}
}

// TestHostileShadowCredentialsFromHost: a shadow target configured to drop
// credentials must not receive any, however the client sends them. A Host
// with userinfo ("user:secret@a.test") must be refused (400) before it can
// turn into an Authorization field that the client library adds on send,
// after the target's header rules ran.
func TestHostileShadowCredentialsFromHost(t *testing.T) {
	primary, shadow := startWireUpstream(t, serveOK), startWireUpstream(t, serveOK)
	p, _ := startMirrorProxy(t, fmt.Sprintf(`
upstreams:
  - {name: primary, url: %s}
  - {name: shadow, url: %s}
routes:
  - name: api
    upstream: primary
    shadow:
      targets: [{name: shadow, headers: {remove: [Authorization, Cookie]}}]
`, primary.URL, shadow.URL))
	res := rawClient(t, p.Addr, []string{"GET /a HTTP/1.1\r\nHost: user:secret@a.test\r\nConnection: close\r\n\r\n"}, 0, 2*time.Second)
	// A mirrored request, if any, has had time to arrive.
	time.Sleep(300 * time.Millisecond)
	for _, r := range shadow.Requests() {
		if v := r.Values("Authorization"); len(v) > 0 {
			t.Errorf("the shadow, configured to remove Authorization, received Authorization %q\nclient saw %s", v, res)
		}
	}
	if len(res.Status) == 0 || res.Status[0] != 400 {
		t.Errorf("a Host with userinfo got %s, want 400\nprimary received: %s", res, primary.Raw())
	}
}

// ---------------------------------------------------------------------------
// Edge hardening (issue 17): what surrounds the framing core.

// serveUpgrading answers a request that asks for an upgrade with 101 and then
// keeps reading HTTP/1.1 requests on the same connection, as an h2c-capable
// or careless upstream would. Anything else gets "200 ok".
func serveUpgrading(c *wireConn) {
	for {
		r, err := c.ReadRequest()
		if err != nil {
			return
		}
		if len(r.Values("Upgrade")) > 0 {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+r.Values("Upgrade")[0]+"\r\n\r\n")
			continue
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

// TestHostileUpgradeAllowlist: only the upgrades in upgrades.allow
// (websocket by default) are tunnelled. An h2c or unknown upgrade is
// forwarded as a plain request without Upgrade, so the bytes the client sends
// next are read, routed and forwarded by the proxy, never spliced raw to the
// first request's upstream.
func TestHostileUpgradeAllowlist(t *testing.T) {
	for _, proto := range []string{"h2c", "foo/1", "websocket, h2c"} {
		t.Run(proto, func(t *testing.T) {
			evil, good := startWireUpstream(t, serveOK), startWireUpstream(t, serveUpgrading)
			p := startProxy(t, fmt.Sprintf(`
upstreams:
  - {name: evil, url: %s}
  - {name: good, url: %s}
routes:
  - {name: admin, match: {path_prefix: /admin/}, upstream: evil}
  - {name: default, upstream: good}
limits: {read_timeout: 1s}
`, evil.URL, good.URL))
			res := rawClient(t, p.Addr, []string{
				"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: " + proto + "\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
				"DELETE /admin/users/1 HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
			}, 200*time.Millisecond, 2*time.Second)
			time.Sleep(50 * time.Millisecond)
			gd, ev := good.Requests(), evil.Requests()
			if len(gd) != 1 || gd[0].Target != "/" || len(gd[0].Values("Upgrade")) != 0 || len(gd[0].Values("HTTP2-Settings")) != 0 {
				t.Errorf("the / upstream must see one plain GET /, without Upgrade; it received:\n%s", good.Raw())
			}
			if len(ev) != 1 || ev[0].Method != "DELETE" || fmt.Sprint(ev[0].Values("X-Forwarded-For")) != "[6.6.6.6, 127.0.0.1]" {
				t.Errorf("the second request must be routed by the proxy to the /admin/ upstream with the client address appended; it received:\n%s\nand the / upstream:\n%s", evil.Raw(), good.Raw())
			}
			if fmt.Sprint(res.Status) != "[200 200]" {
				t.Errorf("client saw %s, want two 200s", res)
			}
			if v := testutil.ToFloat64(p.Met.Upgrades.WithLabelValues("default", "not_allowed")); v != 1 {
				t.Errorf("upgrades_total{result=not_allowed} = %v, want 1", v)
			}
		})
	}
}

// TestHostileUnaskedSwitchingProtocols: an upstream answering a plain GET
// with 101 and then more bytes. The client gets 502 and that upstream
// connection is closed, so the injected bytes never reach the next client
// (before: they were read as the next request's response, and every later
// client got the previous one's answer).
func TestHostileUnaskedSwitchingProtocols(t *testing.T) {
	up := startWireUpstream(t, func(c *wireConn) {
		for n := 0; ; n++ {
			r, err := c.ReadRequest()
			if err != nil {
				return
			}
			if r.Target == "/evil" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"+
					"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected")
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.Target), r.Target)
		}
	})
	// One pooled connection: the next request would reuse the poisoned one.
	p := startProxy(t, simpleConfig(up.URL, "    max_conns: 1"))
	first := rawClient(t, p.Addr, []string{"GET /evil HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 2*time.Second)
	if len(first.Status) != 1 || first.Status[0] != 502 {
		t.Errorf("a 101 to a request that asked for no upgrade: client saw %s, want 502", first)
	}
	for _, path := range []string{"/b", "/c"} {
		res := rawClient(t, p.Addr, []string{"GET " + path + " HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"}, 0, 2*time.Second)
		if len(res.Status) != 1 || res.Status[0] != 200 || res.Bodies[0] != path {
			t.Errorf("GET %s after the rogue 101: client saw %s bodies %q, want 200 %q\nupstream received:\n%s", path, res, res.Bodies, path, up.Raw())
		}
	}
	if up.Conns() < 2 {
		t.Errorf("the connection that carried the 101 was reused (%d connections in all)", up.Conns())
	}
}

// TestHostileEdgeFields: field handling around forwarding, each judged on
// the exact request the upstream read.
func TestHostileEdgeFields(t *testing.T) {
	var manyTokens, manyFields []string
	for i := 0; i < 20; i++ {
		manyTokens = append(manyTokens, fmt.Sprintf("X-Hop-%d", i))
		manyFields = append(manyFields, fmt.Sprintf("X-Hop-%d: secret\r\n", i))
	}
	var tooMany []string
	for i := 0; i < 65; i++ {
		tooMany = append(tooMany, fmt.Sprintf("x%d", i))
	}
	one := func(want func(r *wireRequest) string) func(res clientResult, evil, good []*wireRequest) string {
		return func(res clientResult, evil, good []*wireRequest) string {
			if len(good) != 1 || len(evil) != 0 || len(res.Status) != 1 || res.Status[0] != 200 {
				return fmt.Sprintf("want one request at the default upstream and a 200; client saw %s", res)
			}
			return want(good[0])
		}
	}
	refused := func(code int) func(res clientResult, evil, good []*wireRequest) string {
		return func(res clientResult, evil, good []*wireRequest) string {
			if len(res.Status) == 0 || res.Status[0] != code || len(good)+len(evil) != 0 {
				return fmt.Sprintf("want %d and nothing forwarded; client saw %s, %d requests forwarded", code, res, len(good)+len(evil))
			}
			return ""
		}
	}
	cases := []struct {
		name  string
		req   string
		check func(res clientResult, evil, good []*wireRequest) string
	}{
		{
			// An upstream trusting the rightmost entry must read the
			// client's real address, whatever the client put on which line.
			name: "X-Forwarded-For on two lines",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
			check: one(func(r *wireRequest) string {
				if v := r.Values("X-Forwarded-For"); fmt.Sprint(v) != "[1.1.1.1, 6.6.6.6, 127.0.0.1]" {
					return fmt.Sprintf("X-Forwarded-For lines %q, want one: 1.1.1.1, 6.6.6.6, 127.0.0.1", v)
				}
				return ""
			}),
		},
		{
			// fasthttp turns URI userinfo into Authorization, past every
			// shadow header rule, and the URI with the password would be
			// stored with diff samples.
			name:  "userinfo in an absolute-form target",
			req:   "GET http://alice:s3cret@a.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
			check: refused(400),
		},
		{
			name: "client-sent X-Shadowproxy markers",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nX-Shadowproxy-Shadow: 1\r\nx-shadowproxy-upstream: canary\r\nConnection: close\r\n\r\n",
			check: one(func(r *wireRequest) string {
				for _, kv := range r.Header {
					if strings.HasPrefix(strings.ToLower(kv[0]), "x-shadowproxy-") {
						return fmt.Sprintf("the client's %s: %s reached the primary", kv[0], kv[1])
					}
				}
				return ""
			}),
		},
		{
			name: "twenty Connection tokens",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: " + strings.Join(manyTokens, ", ") + "\r\n" + strings.Join(manyFields, "") + "\r\n",
			check: one(func(r *wireRequest) string {
				for _, kv := range r.Header {
					if strings.HasPrefix(kv[0], "X-Hop-") {
						return fmt.Sprintf("%s, listed in Connection, reached the upstream", kv[0])
					}
				}
				return ""
			}),
		},
		{
			name:  "more Connection tokens than the limit",
			req:   "GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: " + strings.Join(tooMany, ", ") + "\r\n\r\n",
			check: refused(400),
		},
		{
			name: "Connection naming the request id",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: abc-1\r\nConnection: X-Request-Id, close\r\n\r\n",
			check: one(func(r *wireRequest) string {
				if v := r.Values("X-Request-Id"); fmt.Sprint(v) != "[abc-1]" {
					return fmt.Sprintf("X-Request-Id at the upstream %q, want [abc-1]", v)
				}
				return ""
			}),
		},
		{
			name: "two X-Request-Id lines",
			req:  "GET /a HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: abc-1\r\nX-Request-Id: evil-2\r\nConnection: close\r\n\r\n",
			check: one(func(r *wireRequest) string {
				if v := r.Values("X-Request-Id"); len(v) != 1 {
					return fmt.Sprintf("X-Request-Id at the upstream %q, want exactly one", v)
				}
				return ""
			}),
		},
		{
			// The client waits for 100 before sending the body; it must
			// learn at once that the body is too large, not after sending it.
			name:  "Expect 100-continue over the body limit",
			req:   "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
			check: refused(413),
		},
		{
			name: "chunked trailer fields",
			req: "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Internal, X-Shadowproxy-Upstream\r\nConnection: close\r\n\r\n" +
				"3\r\nabc\r\n0\r\nX-Internal: true\r\nX-Shadowproxy-Upstream: canary\r\nX-Trace: t\r\n\r\n",
			check: one(func(r *wireRequest) string {
				for _, name := range []string{"X-Internal", "X-Shadowproxy-Upstream", "X-Trace", "Trailer"} {
					if v := r.Values(name); len(v) > 0 {
						return fmt.Sprintf("trailer field %s: %q reached the upstream as a header", name, v)
					}
				}
				if string(r.Body) != "abc" {
					return fmt.Sprintf("body %q, want abc", r.Body)
				}
				return ""
			}),
		},
		{
			name: "upgrade with an absolute-form target and a conflicting Host",
			req:  "GET http://evil.test/ws HTTP/1.1\r\nHost: good.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			check: func(res clientResult, evil, good []*wireRequest) string {
				if len(good) != 0 || len(evil) != 1 {
					return fmt.Sprintf("%d requests at good, %d at evil: routed by one host and sent to another", len(good), len(evil))
				}
				if r := evil[0]; r.Target != "/ws" || fmt.Sprint(r.Values("Host")) != "[evil.test]" {
					return fmt.Sprintf("evil.test upstream got %s Host %q, want /ws with Host evil.test", r, r.Values("Host"))
				}
				return ""
			},
		},
		{
			name: "upgrade with a hop-by-hop field listed in Connection",
			req:  "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, X-Secret\r\nX-Secret: s3cret\r\nUpgrade: websocket\r\n\r\n",
			check: func(res clientResult, evil, good []*wireRequest) string {
				if len(good) != 1 {
					return fmt.Sprintf("%d requests at good", len(good))
				}
				r := good[0]
				if len(r.Values("X-Secret")) > 0 || fmt.Sprint(r.Values("Connection")) != "[Upgrade]" || fmt.Sprint(r.Values("Upgrade")) != "[websocket]" {
					return fmt.Sprintf("upstream got X-Secret %q, Connection %q, Upgrade %q; want no X-Secret, Connection: Upgrade, Upgrade: websocket", r.Values("X-Secret"), r.Values("Connection"), r.Values("Upgrade"))
				}
				return ""
			},
		},
		{
			name: "upgrade with a body and no Content-Type",
			req:  "POST /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc",
			check: func(res clientResult, evil, good []*wireRequest) string {
				if len(good) != 1 {
					return fmt.Sprintf("%d requests at good", len(good))
				}
				if v := good[0].Values("Content-Type"); len(v) > 0 {
					return fmt.Sprintf("the proxy invented Content-Type %q", v)
				}
				return ""
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, evil, good := hostileProxy(t, "{read_timeout: 1s, max_header_size: 4KiB, max_request_body: 1KiB}")
			res := rawClient(t, p.Addr, []string{tc.req}, 0, 1500*time.Millisecond)
			time.Sleep(50 * time.Millisecond)
			if v := append(evil.Violations(), good.Violations()...); len(v) > 0 {
				t.Errorf("violations: %v", v)
			}
			if msg := tc.check(res, evil.Requests(), good.Requests()); msg != "" {
				t.Errorf("%s\nupstreams received:\n%s%s", msg, evil.Raw(), good.Raw())
			}
		})
	}
}

// cohortRecorder is a RequestObserver that keeps what it was told.
type cohortRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (c *cohortRecorder) ObserveRequest(cohort splitter.Arm, status int, upstreamErr bool, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, fmt.Sprintf("cohort=%d status=%d upstream_error=%v", cohort, status, upstreamErr))
}

func (c *cohortRecorder) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

// splitProxy serves a route splitting between stable and canary (percent
// pct, key header X-User, force header X-Shadowproxy-Upstream, a cohort for
// X-Internal: true) with obs observing it.
func splitProxy(t *testing.T, pct string, obs RequestObserver) (addr string, stable, canary *wireUpstream) {
	stable, canary = startWireUpstream(t, serveOK), startWireUpstream(t, serveOK)
	cfg := mustLoad(t, fmt.Sprintf(`
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
routes:
  - name: api
    upstream: stable
    split:
      key: header:X-User
      to: canary
      percent: %s
      force_header: X-Shadowproxy-Upstream
      cohorts: [{name: internal, when: {header: {X-Internal: "true"}}, to: canary}]
limits: {read_timeout: 1s}
`, stable.URL, canary.URL, pct))
	srv, err := New(cfg, Options{Logger: zap.NewNop(), Metrics: metrics.New("test"), Observers: func(string) RequestObserver { return obs }})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ = serveLoopback(t, srv)
	return addr, stable, canary
}

// TestHostileTrailersNeverSplit: a chunked trailer naming the force header
// or a cohort's header changes nothing: the request goes where its header
// section sends it, and neither field reaches the upstream.
func TestHostileTrailersNeverSplit(t *testing.T) {
	addr, stable, canary := splitProxy(t, "0", nil)
	res := rawClient(t, addr, []string{"POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Shadowproxy-Upstream, X-Internal\r\nConnection: close\r\n\r\n" +
		"3\r\nabc\r\n0\r\nX-Shadowproxy-Upstream: canary\r\nX-Internal: true\r\n\r\n"}, 0, 2*time.Second)
	time.Sleep(50 * time.Millisecond)
	if len(canary.Requests()) != 0 || len(stable.Requests()) != 1 {
		t.Fatalf("trailers chose the upstream: stable got %d, canary %d requests; client saw %s\n%s", len(stable.Requests()), len(canary.Requests()), res, canary.Raw())
	}
	r := stable.Requests()[0]
	if len(r.Values("X-Internal"))+len(r.Values("X-Shadowproxy-Upstream")) > 0 {
		t.Errorf("trailer fields reached the upstream as headers:\n%s", stable.Raw())
	}
}

// TestHostileClientFaultsNotCounted: requests the client got wrong never
// count against a cohort. An HTTP/1.0 request without Host whose key lands
// in the canary used to fail inside the proxy with 502 "missing required
// host header", recorded as the canary's upstream error (31 of them rolled a
// canary back); a malformed request is refused before routing.
func TestHostileClientFaultsNotCounted(t *testing.T) {
	rec := &cohortRecorder{}
	addr, stable, canary := splitProxy(t, "100", rec)
	res := rawClient(t, addr, []string{"GET /a HTTP/1.0\r\nX-User: u1\r\n\r\n"}, 0, 2*time.Second)
	bad := rawClient(t, addr, []string{"GET /a HTTP/1.1\r\nX-User: u1\r\n\r\n"}, 0, 2*time.Second)
	time.Sleep(50 * time.Millisecond)
	if len(res.Status) != 1 || res.Status[0] != 200 || len(canary.Requests()) != 1 {
		t.Errorf("HTTP/1.0 without Host: client saw %s, canary got %d requests (want it served: the proxy names the upstream in Host)\n%s", res, len(canary.Requests()), canary.Raw())
	}
	if len(bad.Status) != 1 || bad.Status[0] != 400 {
		t.Errorf("HTTP/1.1 without Host: client saw %s, want 400", bad)
	}
	for _, s := range rec.all() {
		if strings.Contains(s, "upstream_error=true") || !strings.Contains(s, "status=200") {
			t.Errorf("a client-side fault was recorded against a cohort: %s", s)
		}
	}
	if n := len(rec.all()); n != 1 {
		t.Errorf("observer saw %d requests %v, want only the served one", n, rec.all())
	}
	_ = stable
}

// TestHostileStreamedUploadStalls: a client that declares 8 MiB (over
// limits.buffer_body, so the body streams to the upstream as it arrives),
// sends 2 MiB and stalls. At read_timeout it gets 408 and its connection
// closes; the failure is the client's, so it is not an upstream error; and
// the upstream never sees a request that looks complete.
func TestHostileStreamedUploadStalls(t *testing.T) {
	var received atomic.Int64
	up := bulkUpstream(t, &received)
	p := startProxy(t, fmt.Sprintf(`
upstreams:
  - {name: stable, url: %s}
routes:
  - {name: default, upstream: stable}
limits: {read_timeout: 1s, max_request_body: 16MiB}
`, up))
	res := rawClient(t, p.Addr, []string{"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 8388608\r\n\r\n" + strings.Repeat("u", 2<<20)}, 0, 4*time.Second)
	if len(res.Status) != 1 || res.Status[0] != 408 || !res.Closed {
		t.Errorf("stalled streamed upload: client saw %s, want 408 and a closed connection", res)
	}
	if v := testutil.ToFloat64(p.Met.RejectedRequests.WithLabelValues("timeout")); v != 1 {
		t.Errorf("rejected_requests_total{reason=timeout} = %v, want 1", v)
	}
	for _, reason := range []string{"connect", "timeout", "reset", "other"} {
		if v := testutil.ToFloat64(p.Met.UpstreamErrors.WithLabelValues("default", "stable", reason)); v != 0 {
			t.Errorf("upstream_errors_total{reason=%s} = %v: the client's stall was charged to the upstream", reason, v)
		}
	}
	if got := received.Load(); got >= 8<<20 {
		t.Errorf("the upstream read %d bytes: a complete-looking body", got)
	}
}
