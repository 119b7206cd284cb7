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
func checkRequest(ctx *fasthttp.RequestCtx) (int, string) {
	h := &ctx.Request.Header
	if p := h.Protocol(); !bytes.Equal(p, []byte("HTTP/1.1")) && !bytes.Equal(p, []byte("HTTP/1.0")) {
		return fasthttp.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are supported"
	}
	if bytes.IndexByte(h.Host(), '@') >= 0 {
		return fasthttp.StatusBadRequest, "invalid Host header"
	}
	if targetHasUserinfo(h.RequestURI()) {
		return fasthttp.StatusBadRequest, "credentials in the request target are not accepted"
	}
	if countTokens(h.PeekAll("Connection")) > maxConnectionTokens {
		return fasthttp.StatusBadRequest, "too many Connection options"
	}
	host := ctx.Host()
	if len(host) == 0 && h.IsHTTP11() || len(host) > 0 && !validHost(host) {
		return fasthttp.StatusBadRequest, "missing or invalid Host"
	}
	if !validFieldNames(h.RawHeaders()) {
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

// validFieldNames scans the raw header block ("Name: value\r\n" lines) and
// requires every name to be a token.
func validFieldNames(raw []byte) bool {
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
			return false
		}
		for _, c := range line[:colon] {
			if !cfgtypes.IsTokenByte(c) {
				return false
			}
		}
	}
	return true
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
