package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// checkRequest refuses what fasthttp's parser lets through but an upstream
// could read differently. It returns 0 when the request may be routed, or
// the status to answer with. It allocates nothing.
//
//   - Only HTTP/1.0 and HTTP/1.1 are spoken (505 otherwise); the proxy sends
//     its own version upstream (RFC 9110 §6.2).
//   - The effective host (absolute-form authority, else Host) must be one
//     valid uri-host[:port] with no userinfo (RFC 9110 §7.2, RFC 9112 §3.2):
//     fasthttp would turn "user:pass@host" into an Authorization field that
//     no shadow header rule could remove.
//   - An absolute-form target must carry no userinfo either (RFC 9110
//     §4.2.4 deprecates it; fasthttp would send it as Authorization).
//   - Connection lists at most maxConnectionTokens options.
//   - Every field name must be a token (RFC 9110 §5.1).
//
// The one pass over the raw header block also records in sc which
// hop-by-hop and X-Shadowproxy-* fields the request carries, for the
// checks and rewrites after it.
func checkRequest(ctx *fasthttp.RequestCtx, sc *headerScratch) (int, string) {
	h := &ctx.Request.Header
	raw := h.RawHeaders()
	ok := true
	if len(raw) == 0 {
		// Built field by field (HTTP/2): anything may be there.
		sc.hops, sc.marked = hopAll, true
	} else {
		sc.hops, sc.marked, ok = scanFieldNames(raw)
	}
	if p := h.Protocol(); !bytes.Equal(p, []byte("HTTP/1.1")) && !bytes.Equal(p, []byte("HTTP/1.0")) {
		return fasthttp.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are supported"
	}
	if bytes.IndexByte(h.Host(), '@') >= 0 {
		return fasthttp.StatusBadRequest, "invalid Host header"
	}
	if targetHasUserinfo(h.RequestURI()) {
		return fasthttp.StatusBadRequest, "credentials in the request target are not accepted"
	}
	if sc.hops&hopConnection != 0 && countTokens(h.PeekAll("Connection")) > maxConnectionTokens {
		return fasthttp.StatusBadRequest, "too many Connection options"
	}
	host := ctx.Host()
	if len(host) == 0 && h.IsHTTP11() || len(host) > 0 && !validHost(host) {
		return fasthttp.StatusBadRequest, "missing or invalid Host"
	}
	if !ok {
		return fasthttp.StatusBadRequest, "invalid header field name"
	}
	return 0, ""
}

// validHost accepts reg-name[:port] or [ip-literal][:port].
func validHost(b []byte) bool {
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 2 {
			return false
		}
		for _, c := range b[1:end] {
			if !(isHex(c) || c == ':' || c == '.') {
				return false
			}
		}
		return validPort(b[end+1:])
	}
	name, port := b, []byte(nil)
	if i := bytes.LastIndexByte(b, ':'); i >= 0 {
		name, port = b[:i], b[i:]
	}
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !(isAlnum(c) || bytes.IndexByte([]byte("-._~!$&'()*+,;=%"), c) >= 0) {
			return false
		}
	}
	return validPort(port)
}

func validPort(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if p[0] != ':' || len(p) > 6 {
		return false
	}
	for _, c := range p[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// scanFieldNames scans the raw header block ("Name: value\r\n" lines):
// ok requires every name to be a token; hops is the set of hop-by-hop
// fields named, and marked whether any name starts with markerPrefix.
func scanFieldNames(raw []byte) (hops hopSet, marked, ok bool) {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return hops, marked, false
		}
		name := line[:colon]
		for _, c := range name {
			if !cfgtypes.IsTokenByte(c) {
				return hops, marked, false
			}
		}
		hops |= hopBit(name)
		marked = marked || len(name) >= len(markerPrefix) && asciiEqualFold(name[:len(markerPrefix)], markerPrefix)
	}
	return hops, marked, true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// targetHasUserinfo reports an '@' in the authority of an absolute-form
// target ("http://user:pass@host/...").
func targetHasUserinfo(target []byte) bool {
	i := bytes.Index(target, []byte("://"))
	if i < 0 || len(target) == 0 || target[0] == '/' {
		return false
	}
	auth := target[i+3:]
	if end := bytes.IndexAny(auth, "/?#"); end >= 0 {
		auth = auth[:end]
	}
	return bytes.IndexByte(auth, '@') >= 0
}
