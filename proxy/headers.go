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
}

// connectionTokens collects the field names listed in every Connection
// header into sc.tokens (copied, since the header is about to change).
func (sc *headerScratch) connectionTokens(each func(yield func(k, v []byte) bool)) {
	sc.tokens = sc.tokens[:0]
	sc.buf = sc.buf[:0]
	type span struct{ start, end int }
	var spans [16]span
	n := 0
	each(func(k, v []byte) bool {
		if !bytes.EqualFold(k, []byte("Connection")) {
			return true
		}
		for len(v) > 0 {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 || n == len(spans) {
				continue
			}
			start := len(sc.buf)
			sc.buf = append(sc.buf, tok...)
			spans[n] = span{start, len(sc.buf)}
			n++
		}
		return true
	})
	for i := 0; i < n; i++ {
		sc.tokens = append(sc.tokens, sc.buf[spans[i].start:spans[i].end])
	}
}

// removeRequestHopByHop strips hop-by-hop fields from a request about to be
// forwarded. The client's wish to close its own connection is kept in
// clientClose so the server can honour it after the response.
func (sc *headerScratch) removeRequestHopByHop(h *fasthttp.RequestHeader) (clientClose bool) {
	sc.connectionTokens(h.All())
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
	sc.connectionTokens(h.All())
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
	if host := h.Host(); len(host) > 0 {
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
