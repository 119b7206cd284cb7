package proxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestHopSetCoversList pins hopAll to the hopByHop list it stands for.
func TestHopSetCoversList(t *testing.T) {
	if want := hopSet(1)<<len(hopByHop) - 1; hopAll != want {
		t.Fatalf("hopAll = %b, want %b for %d names", hopAll, want, len(hopByHop))
	}
	if hopBit([]byte("Connection")) != hopConnection || hopBit([]byte("Upgrade")) != hopUpgrade {
		t.Error("hopConnection or hopUpgrade is not its name's bit")
	}
	for i, name := range hopByHop {
		if got := hopBit([]byte(strings.ToUpper(name))); got != 1<<i {
			t.Errorf("hopBit(%q) = %b, want %b", strings.ToUpper(name), got, 1<<i)
		}
	}
	for _, name := range []string{"", "T", "Tf", "Connectio", "Connections", "Keep_Alive", "Upgrade ", "X-Upgrade", "Trailer@"} {
		if got := hopBit([]byte(name)); got != 0 {
			t.Errorf("hopBit(%q) = %b, want 0", name, got)
		}
	}
}

// hopFieldLines is every hop-by-hop field as a client or upstream may
// spell it, with a value the parser accepts in both directions.
var hopFieldLines = []string{
	"cOnNeCtIoN: keep-alive", "KEEP-ALIVE: 300", "proxy-connection: keep-alive",
	"Proxy-Authenticate: Basic", "PROXY-authorization: Basic Zm9v", "te: trailers",
	"Upgrade: websocket",
}

// TestRequestHopByHopRemoval: each hop-by-hop field is removed however it
// is spelled, alone or with the others, from a parsed request and from one
// built field by field (HTTP/2, which has no raw header block); other
// fields and the proxy's request id stay.
func TestRequestHopByHopRemoval(t *testing.T) {
	cases := [][]string{nil, hopFieldLines}
	for _, l := range hopFieldLines {
		cases = append(cases, []string{l})
	}
	for _, lines := range cases {
		for _, built := range []bool{false, true} {
			var ctx fasthttp.RequestCtx
			h := &ctx.Request.Header
			if built {
				h.SetMethod("GET")
				ctx.Request.SetRequestURI("/x")
				h.SetHost("a.test")
				for _, l := range lines {
					k, v, _ := strings.Cut(l, ": ")
					h.Add(k, v)
				}
				h.Add("X-Keep", "1")
			} else {
				head := "GET /x HTTP/1.1\r\nHost: a.test\r\n" + strings.Join(append(lines, "X-Keep: 1"), "\r\n") + "\r\n\r\n"
				if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
					t.Fatalf("%q: %v", head, err)
				}
			}
			var sc headerScratch
			if code, why := checkRequest(&ctx, &sc); code != 0 {
				t.Fatalf("%q (built %v): refused %d %s", lines, built, code, why)
			}
			h.Set("X-Request-Id", "id-1")
			if sc.removeRequestHopByHop(h, "X-Request-Id") {
				t.Errorf("%q: keep-alive request reported as closing", lines)
			}
			for _, name := range hopByHop {
				if v := h.Peek(name); v != nil {
					t.Errorf("%q (built %v): %s survived as %q", lines, built, name, v)
				}
			}
			if string(h.Peek("X-Keep")) != "1" || string(h.Peek("X-Request-Id")) != "id-1" {
				t.Errorf("%q (built %v): end-to-end fields lost:\n%s", lines, built, h.Header())
			}
			if h.EnableNormalizing() {
				t.Errorf("%q (built %v): header name normalizing left switched off", lines, built)
			}
		}
	}
}

// TestRawFieldScan: checkRequest's one pass over the raw header block
// finds the hop-by-hop and X-Shadowproxy-* fields in any case, and nothing
// else.
func TestRawFieldScan(t *testing.T) {
	tests := []struct {
		raw    string
		hops   hopSet
		marked bool
	}{
		{"Host: a\r\nX-Keep: 1\r\n", 0, false},
		{"Host: a\r\nconnection: close\r\nUPGRADE: ws\r\n", hopConnection | hopUpgrade, false},
		{"x-SHADOWPROXY-upstream: canary\r\n", 0, true},
		{"X-Shadowproxy: 1\r\nX-Shadowproxy_Upstream: 1\r\nX-Keep-Alive: 1\r\n", 0, false},
		{"te: trailers\nTrailer: X-T\n", hopBit([]byte("Te")) | hopBit([]byte("Trailer")), false},
	}
	for _, tt := range tests {
		hops, marked, ok := scanFieldNames([]byte(tt.raw))
		if !ok || hops != tt.hops || marked != tt.marked {
			t.Errorf("%q: hops %b marked %v ok %v, want %b %v true", tt.raw, hops, marked, ok, tt.hops, tt.marked)
		}
	}
	if _, _, ok := scanFieldNames([]byte("Host: a\r\nBad Name: 1\r\n")); ok {
		t.Error("a field name with a space passed")
	}
}

// TestResponseHopByHopRemoval is TestRequestHopByHopRemoval for an
// upstream's answer, Connection options and Transfer-Encoding included.
func TestResponseHopByHopRemoval(t *testing.T) {
	cases := [][]string{nil, append([]string{"connection: X-Up-Hop", "X-Up-Hop: 1"}, hopFieldLines[1:]...)}
	for _, l := range hopFieldLines {
		cases = append(cases, []string{l})
	}
	for _, lines := range cases {
		head := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + strings.Join(append(lines, "X-Keep: 1"), "\r\n") + "\r\n\r\n"
		var h fasthttp.ResponseHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			t.Fatalf("%q: %v", head, err)
		}
		var sc headerScratch
		sc.removeResponseHopByHop(&h)
		for _, name := range append(hopByHop, "X-Up-Hop") {
			if v := h.Peek(name); v != nil {
				t.Errorf("%q: %s survived as %q", lines, name, v)
			}
		}
		if string(h.Peek("X-Keep")) != "1" || h.ConnectionClose() {
			t.Errorf("%q: end-to-end fields lost or close kept:\n%s", lines, h.Header())
		}
		if h.EnableNormalizing() {
			t.Errorf("%q: header name normalizing left switched off", lines)
		}
	}
}

// addrConn is a connection with a given remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestClientIPKeptWithConnection: the X-Forwarded-For text of a served
// connection's address is formatted once and reused for its later
// requests, for IPv4 and IPv6 alike; a connection the proxy did not wrap
// (HTTP/2) is formatted every time.
func TestClientIPKeptWithConnection(t *testing.T) {
	for _, tc := range []struct {
		ip   net.IP
		want string
	}{
		{net.IPv4(192, 0, 2, 7), "192.0.2.7"},
		{net.ParseIP("2001:db8::1"), "2001:db8::1"},
		{net.ParseIP("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"), "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"},
	} {
		raw := addrConn{remote: &net.TCPAddr{IP: tc.ip, Port: 40000}}
		dc := newDeadlineConn(raw, time.Second).(*deadlineConn)
		var ctx fasthttp.RequestCtx
		ctx.Init2(dc, nil, false)
		for i := range 2 {
			if got := string(appendIP([]byte("x, "), &ctx)); got != "x, "+tc.want {
				t.Errorf("request %d from %v: got %q, want %q", i, tc.ip, got, "x, "+tc.want)
			}
		}
		if string(dc.ip[:dc.ipLen]) != tc.want {
			t.Errorf("%v: kept %q with the connection, want %q", tc.ip, dc.ip[:dc.ipLen], tc.want)
		}
		var plain fasthttp.RequestCtx
		plain.Init2(raw, nil, false)
		if got := string(appendIP(nil, &plain)); got != tc.want {
			t.Errorf("%v on an unwrapped connection: got %q", tc.ip, got)
		}
	}
}
