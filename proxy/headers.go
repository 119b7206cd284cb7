package proxy

import (
	"bytes"
	"crypto/tls"
	"net"

	"github.com/valyala/fasthttp"
)

// hopByHop lists the fields RFC 9110 §7.6.1 says a proxy must not forward,
// plus Proxy-Connection and Keep-Alive which old clients still send. The
// Connection header itself, and every field it names, are removed too.
//
// The names are in fasthttp's normalized form ("Te", not "TE"), the form
// parsed field names are stored in: they are deleted with normalizing
// switched off, which finds the same fields without case-folding every name
// on every request.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// hopSet is a set of hopByHop entries, bit i for hopByHop[i].
type hopSet uint16

const (
	hopConnection hopSet = 1 << 0
	hopUpgrade    hopSet = 1 << 8
	// hopAll is every entry; TestHopSetCoversList pins it to the list.
	hopAll hopSet = 1<<9 - 1
)

// hopBit is name's bit in hopSet (compared case-insensitively), 0 for a
// field that is not hop-by-hop.
func hopBit(name []byte) hopSet {
	for i, h := range hopByHop {
		if len(h) == len(name) && asciiEqualFold(name, h) {
			return 1 << i
		}
	}
	return 0
}

// asciiEqualFold is bytes.EqualFold for an ASCII s of b's length, without
// converting s.
func asciiEqualFold(b []byte, s string) bool {
	for i := range len(b) {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		// Only letters fold ('@'|0x20 is '`').
		if c |= 0x20; c != d|0x20 || c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// delHopByHop deletes the hopByHop fields in set from h.
func delHopByHop(h interface {
	Del(string)
	DisableNormalizing() bool
	EnableNormalizing() bool
}, set hopSet) {
	if set == 0 {
		return
	}
	wasOff := h.DisableNormalizing()
	for i, name := range hopByHop {
		if set&(1<<i) != 0 {
			h.Del(name)
		}
	}
	if !wasOff {
		h.EnableNormalizing()
	}
}

// viaValue is what this proxy appends to Via (RFC 9110 §7.6.3: a proxy MUST
// send Via; the pseudonym keeps internal host names out of responses).
var viaValue = []byte("1.1 shadowproxy")

// maxConnectionTokens bounds the options one request's Connection fields
// may list; more is answered 400. Every listed field is removed before
// forwarding, so the bound only caps the work a client can ask for.
const maxConnectionTokens = 64

// markerPrefix starts every field the proxy itself sends (the shadow marker,
// the split's force and response headers by convention); a client's are
// removed before forwarding so an upstream can trust them.
const markerPrefix = "X-Shadowproxy-"

// headerScratch holds reusable buffers for one request's header rewriting.
type headerScratch struct {
	tokens [][]byte
	ends   []int
	buf    []byte
	reqID  []byte
	// body holds a request body read before routing (bufferOrStream).
	body []byte
	// stream is the request's streamed body, when it has one.
	stream *clientBody
	// clientFault: the request failed on the client's side (its streamed
	// body), so no cohort is charged with it.
	clientFault bool
	// trace is the request's trace when tracing is on and sampled it.
	trace RequestTrace
	// synthetic: the route's synthetic rules marked the request, so it is
	// counted apart and not mirrored (unless the shadow includes it).
	synthetic bool
	// hops is the set of hop-by-hop fields the request carries, and marked
	// whether it carries an X-Shadowproxy-* field, as checkRequest found
	// them (every one, and true, for a request built without a raw header
	// block).
	hops   hopSet
	marked bool
}

// connectionTokens collects the field names listed in every Connection
// field (values) into sc.tokens, copied, since the header is about to change.
// PeekAll reuses a buffer inside the header, so this does not allocate once
// the scratch buffers have grown.
func (sc *headerScratch) connectionTokens(values [][]byte) {
	sc.tokens = sc.tokens[:0]
	sc.buf = sc.buf[:0]
	sc.ends = sc.ends[:0]
	for _, v := range values {
		for len(v) > 0 {
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
			sc.ends = append(sc.ends, len(sc.buf))
		}
	}
	start := 0
	for _, end := range sc.ends {
		sc.tokens = append(sc.tokens, sc.buf[start:end])
		start = end
	}
}

// countTokens counts the non-empty comma-separated elements of values.
func countTokens(values [][]byte) int {
	n := 0
	for _, v := range values {
		for len(v) > 0 {
			tok := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			if len(bytes.TrimSpace(tok)) > 0 {
				n++
			}
		}
	}
	return n
}

// dropRequestTrailers removes every field that arrived in, or was announced
// for, a chunked request's trailer section. fasthttp keeps trailer values
// beside the header fields, Peek reads both, and deleting the Trailer field
// moves them into the header section: a trailer would then route, split and
// reach the upstream as a header. RFC 9110 §6.5.1 lets a proxy discard
// trailers; a header-section field of the same name goes too, since the two
// cannot be told apart afterwards.
func dropRequestTrailers(h *fasthttp.RequestHeader) {
	for _, k := range h.PeekTrailerKeys() {
		h.DelBytes(k)
	}
	h.Del("Trailer")
}

// dropResponseTrailers is dropRequestTrailers for an upstream's answer: its
// trailer fields must not reach the client as headers.
func dropResponseTrailers(h *fasthttp.ResponseHeader) {
	for _, k := range h.PeekTrailerKeys() {
		h.DelBytes(k)
	}
	h.Del("Trailer")
}

// removeRequestHopByHop strips hop-by-hop fields from a request about to be
// forwarded. The client's wish to close its own connection is kept in
// clientClose so the server can honour it after the response. keep names a
// field the proxy set itself (the request id), which a client's Connection
// list must not remove.
//
// Only the hop-by-hop fields the client sent (sc.hops, from checkRequest's
// pass over the raw header block) are deleted, since each Del scans every
// field.
func (sc *headerScratch) removeRequestHopByHop(h *fasthttp.RequestHeader, keep string) (clientClose bool) {
	// keep was set by the proxy, after parsing.
	present := sc.hops | hopBit([]byte(keep))
	if present&hopConnection != 0 || h.ConnectionClose() {
		sc.connectionTokens(h.PeekAll("Connection"))
		for _, tok := range sc.tokens {
			if !isEndToEndSpecial(tok) && !(keep != "" && bytes.EqualFold(tok, []byte(keep))) {
				h.DelBytes(tok)
			}
		}
	}
	clientClose = h.ConnectionClose()
	delHopByHop(h, present)
	// Del("Connection") clears the close flag; the upstream connection is
	// pooled, so "close" must not travel to it.
	h.ResetConnectionClose()
	return clientClose
}

// stripClientMarkers removes X-Shadowproxy-* fields the client sent: an
// upstream reading the shadow marker, or a split header, must be able to
// trust that the proxy set it. The raw header block lists the names as
// received; names are copied to sc before deleting.
func (sc *headerScratch) stripClientMarkers(h *fasthttp.RequestHeader) {
	raw := h.RawHeaders()
	sc.buf, sc.ends = sc.buf[:0], sc.ends[:0]
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < len(markerPrefix) || !bytes.EqualFold(line[:len(markerPrefix)], []byte(markerPrefix)) {
			continue
		}
		sc.buf = append(sc.buf, line[:colon]...)
		sc.ends = append(sc.ends, len(sc.buf))
	}
	start := 0
	for _, end := range sc.ends {
		h.DelBytes(sc.buf[start:end])
		start = end
	}
}

// removeResponseHopByHop strips hop-by-hop fields from an upstream response.
// An upstream closing its connection to us must not close the client's.
//
// Only the hop-by-hop fields present are deleted (each Del scans every
// field); one pass over the fields finds them. An answer with trailers
// takes the full path.
func (sc *headerScratch) removeResponseHopByHop(h *fasthttp.ResponseHeader) {
	present := hopAll
	if len(h.PeekTrailerKeys()) == 0 {
		present = 0
		for k := range h.All() {
			present |= hopBit(k)
		}
	}
	if present&hopConnection != 0 {
		sc.connectionTokens(h.PeekAll("Connection"))
		for _, tok := range sc.tokens {
			if !isEndToEndSpecial(tok) {
				h.DelBytes(tok)
			}
		}
	}
	if present == hopAll {
		dropResponseTrailers(h)
	}
	delHopByHop(h, present)
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
//
// The names are written in fasthttp's normalized form and looked up with
// normalizing switched off (see hopByHop).
func (sc *headerScratch) appendForwarded(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	wasOff := h.DisableNormalizing()
	sc.buf = sc.buf[:0]
	// Every line, in order, as one list (RFC 9110 §5.3): appending to the
	// first line only would leave a later line, the attacker's, rightmost.
	prior := h.PeekAll("X-Forwarded-For")
	for _, v := range prior {
		if v = bytes.TrimSpace(v); len(v) > 0 {
			sc.buf = append(sc.buf, v...)
			sc.buf = append(sc.buf, ", "...)
		}
	}
	sc.buf = appendIP(sc.buf, ctx)
	if len(prior) > 1 {
		h.Del("X-Forwarded-For")
	}
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
	sc.buf = appendVia(sc.buf[:0], h.Peek("Via"))
	h.SetBytesV("Via", sc.buf)
	if !wasOff {
		h.EnableNormalizing()
	}
}

// addResponseVia adds this hop to an upstream answer's Via.
func (sc *headerScratch) addResponseVia(h *fasthttp.ResponseHeader) {
	wasOff := h.DisableNormalizing()
	sc.buf = appendVia(sc.buf[:0], h.Peek("Via"))
	h.SetBytesV("Via", sc.buf)
	if !wasOff {
		h.EnableNormalizing()
	}
}

// appendVia appends prior, if any, and this hop to dst.
func appendVia(dst, prior []byte) []byte {
	if len(prior) > 0 {
		dst = append(dst, prior...)
		dst = append(dst, ", "...)
	}
	return append(dst, viaValue...)
}

// appendIP appends the client's address. On a connection the proxy
// accepted it is formatted once and kept with the connection
// (deadlineConn.ip): looking it up and formatting it was a third of
// appendForwarded's time.
func appendIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	c := ctx.Conn()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	dc, ok := c.(*deadlineConn)
	if !ok {
		return appendRemoteIP(dst, ctx.RemoteIP())
	}
	if dc.ipLen == 0 {
		// The text fits the array unless the address is malformed; then
		// append has moved it elsewhere and it is formatted every time.
		if b := appendRemoteIP(dc.ip[:0], ctx.RemoteIP()); len(b) <= len(dc.ip) {
			dc.ipLen = uint8(len(b))
		} else {
			return append(dst, b...)
		}
	}
	return append(dst, dc.ip[:dc.ipLen]...)
}

func appendRemoteIP(dst []byte, ip net.IP) []byte {
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
