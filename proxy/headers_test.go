package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestHopSetCoversList pins hopAll to the hopByHop list it stands for.
func TestHopSetCoversList(t *testing.T) {
	if want := hopSet(1)<<len(hopByHop) - 1; hopAll != want {
		t.Fatalf("hopAll = %b, want %b for %d names", hopAll, want, len(hopByHop))
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
			var h fasthttp.RequestHeader
			if built {
				h.SetMethod("GET")
				h.SetRequestURI("/x")
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
			h.Set("X-Request-Id", "id-1")
			var sc headerScratch
			if sc.removeRequestHopByHop(&h, "X-Request-Id") {
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
