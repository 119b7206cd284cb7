package proxy

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// Request heads the header benchmarks rewrite: wrk's minimal one, and a
// browser's behind a load balancer.
var benchRequestHeads = []struct{ name, head string }{
	{"minimal", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"},
	{"browser", "GET /api/items?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0\r\n" +
		"Accept: application/json\r\nAccept-Encoding: gzip, br\r\nAccept-Language: en\r\n" +
		"Cookie: session=abc; theme=dark\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive\r\n\r\n"},
}

// benchResponseHead is the comparison harness's upstream answer.
const benchResponseHead = "HTTP/1.1 200 OK\r\nServer: bench-backend\r\nDate: Tue, 01 Dec 2026 16:47:06 GMT\r\n" +
	"Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"

// BenchmarkRequestHeaderRewrite measures what the request path does to a
// parsed request head before sending it: checkRequest, hop-by-hop removal,
// client marker stripping, X-Forwarded-* and Via. The parse is included (the same in
// every variant); compare ns/op between commits.
func BenchmarkRequestHeaderRewrite(b *testing.B) {
	for _, tc := range benchRequestHeads {
		head := []byte(tc.head)
		b.Run(tc.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Init(&ctx.Request, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}, nil)
			var sc headerScratch
			rd := bytes.NewReader(nil)
			br := bufio.NewReader(rd)
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(head)
				br.Reset(rd)
				ctx.Request.Header.Reset()
				if err := ctx.Request.Header.Read(br); err != nil {
					b.Fatal(err)
				}
				if code, _ := checkRequest(&ctx, &sc); code != 0 {
					b.Fatal(code)
				}
				sc.removeRequestHopByHop(&ctx.Request.Header, "X-Request-Id")
				if sc.marked {
					sc.stripClientMarkers(&ctx.Request.Header)
				}
				sc.appendForwarded(&ctx)
			}
		})
	}
}

// BenchmarkResponseHeaderRewrite is BenchmarkRequestHeaderRewrite for an
// upstream's answer: hop-by-hop removal and Via.
func BenchmarkResponseHeaderRewrite(b *testing.B) {
	var h fasthttp.ResponseHeader
	var sc headerScratch
	head := []byte(benchResponseHead)
	rd := bytes.NewReader(nil)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(head)
		br.Reset(rd)
		h.Reset()
		if err := h.Read(br); err != nil {
			b.Fatal(err)
		}
		sc.removeResponseHopByHop(&h)
		sc.addResponseVia(&h)
	}
}
