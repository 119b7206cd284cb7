package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// hopByHop lists the fields RFC 9110 §7.6.1 says a proxy must not forward,
// plus Proxy-Connection and Keep-Alive which old clients still send. The
// Connection header itself, and every field it names, are removed too.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
}

// viaValue is what this proxy appends to Via (RFC 9110 §7.6.3: a proxy MUST
// send Via; the pseudonym keeps internal host names out of responses).
var viaValue = []byte("1.1 shadowproxy")

// headerScratch holds reusable buffers for one request's header rewriting.
type headerScratch struct {
	tokens [][]byte
	buf    []byte
	reqID  []byte
	// trace is the request's trace when tracing is on and sampled it.
	trace RequestTrace
}

// connectionTokens collects the field names listed in every Connection
// field (values) into sc.tokens, copied, since the header is about to change.
// PeekAll reuses a buffer inside the header, so this does not allocate.
func (sc *headerScratch) connectionTokens(values [][]byte) {
	sc.tokens = sc.tokens[:0]
	sc.buf = sc.buf[:0]
	var ends [16]int
	n := 0
	for _, v := range values {
		for len(v) > 0 && n < len(ends) {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			if tok = bytes.TrimSpace(tok); len(tok) == 0 {
				continue
			}
			sc.buf = append(sc.buf, tok...)
			ends[n] = len(sc.buf)
			n++
		}
	}
	start := 0
	for i := 0; i < n; i++ {
		sc.tokens = append(sc.tokens, sc.buf[start:ends[i]])
		start = ends[i]
	}
}

// removeRequestHopByHop strips hop-by-hop fields from a request about to be
// forwarded. The client's wish to close its own connection is kept in
// clientClose so the server can honour it after the response.
func (sc *headerScratch) removeRequestHopByHop(h *fasthttp.RequestHeader) (clientClose bool) {
	sc.connectionTokens(h.PeekAll("Connection"))
	for _, tok := range sc.tokens {
		if !isEndToEndSpecial(tok) {
			h.DelBytes(tok)
		}
	}
	clientClose = h.ConnectionClose()
	for _, name := range hopByHop {
		h.Del(name)
	}
	// Del("Connection") clears the close flag; the upstream connection is
	// pooled, so "close" must not travel to it.
	h.ResetConnectionClose()
	return clientClose
}

// removeResponseHopByHop strips hop-by-hop fields from an upstream response.
// An upstream closing its connection to us must not close the client's.
func (sc *headerScratch) removeResponseHopByHop(h *fasthttp.ResponseHeader) {
	sc.connectionTokens(h.PeekAll("Connection"))
	for _, tok := range sc.tokens {
		if !isEndToEndSpecial(tok) {
			h.DelBytes(tok)
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
	h.ResetConnectionClose()
}

// isEndToEndSpecial protects fields fasthttp manages itself (a malicious
// "Connection: Content-Length" must not strip framing the proxy relies on).
func isEndToEndSpecial(tok []byte) bool {
	return bytes.EqualFold(tok, []byte("Content-Length")) ||
		bytes.EqualFold(tok, []byte("Host")) ||
		bytes.EqualFold(tok, []byte("Content-Type"))
}

// appendForwarded adds the client address to X-Forwarded-For (appending to
// a value from an earlier proxy), sets X-Forwarded-Proto and -Host, and adds
// this hop to Via.
func (sc *headerScratch) appendForwarded(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	sc.buf = sc.buf[:0]
	if prior := h.Peek("X-Forwarded-For"); len(prior) > 0 {
		sc.buf = append(sc.buf, prior...)
		sc.buf = append(sc.buf, ", "...)
	}
	sc.buf = appendIP(sc.buf, ctx)
	h.SetBytesV("X-Forwarded-For", sc.buf)
	if ctx.IsTLS() {
		h.Set("X-Forwarded-Proto", "https")
	} else {
		h.Set("X-Forwarded-Proto", "http")
	}
	// The host the request is routed by: for an absolute-form target its
	// authority, not the Host field (RFC 9112 §3.2.2).
	if host := ctx.Host(); len(host) > 0 {
		h.SetBytesV("X-Forwarded-Host", host)
	}
	appendVia(sc, h.Peek("Via"), func(v []byte) { h.SetBytesV("Via", v) })
}

func appendVia(sc *headerScratch, prior []byte, set func([]byte)) {
	sc.buf = sc.buf[:0]
	if len(prior) > 0 {
		sc.buf = append(sc.buf, prior...)
		sc.buf = append(sc.buf, ", "...)
	}
	sc.buf = append(sc.buf, viaValue...)
	set(sc.buf)
}

func appendIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	ip := ctx.RemoteIP()
	if v4 := ip.To4(); v4 != nil {
		return appendIPv4(dst, v4)
	}
	return append(dst, ip.String()...)
}

func appendIPv4(dst []byte, ip []byte) []byte {
	for i, b := range ip[:4] {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = fasthttp.AppendUint(dst, int(b))
	}
	return dst
}
