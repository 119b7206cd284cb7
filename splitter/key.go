package splitter

import (
	"fmt"
	"net"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// keyKind says where a KeySource reads the key from.
type keyKind uint8

const (
	keyNone keyKind = iota
	keyHeader
	keyCookie
	keyQuery
	keyIP
)

// KeySource says which part of a request identifies a user: a header, a
// cookie, a query parameter or the client address. The zero value extracts
// nothing. It is a small value, safe to copy and to use concurrently.
type KeySource struct {
	kind keyKind
	name string
}

// ParseKeySource parses "header:NAME", "cookie:NAME", "query:NAME" or "ip".
// The prefix is case-insensitive; NAME is kept as written (header names are
// matched case-insensitively at run time, cookie and query names exactly).
func ParseKeySource(s string) (KeySource, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "ip") {
		return KeySource{kind: keyIP}, nil
	}
	kind, name, found := strings.Cut(t, ":")
	if !found {
		return KeySource{}, fmt.Errorf("invalid key %q: want header:NAME, cookie:NAME, query:NAME or ip", s)
	}
	name = strings.TrimSpace(name)
	var k KeySource
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case "header":
		if err := checkHeaderName(name); err != nil {
			return KeySource{}, fmt.Errorf("invalid key %q: %v", s, err)
		}
		k = KeySource{kind: keyHeader, name: name}
	case "cookie":
		if !cfgtypes.IsToken(name) {
			return KeySource{}, fmt.Errorf("invalid key %q: want a cookie name after \"cookie:\" (letters, digits and !#$%%&'*+-.^_`|~), such as cookie:session", s)
		}
		k = KeySource{kind: keyCookie, name: name}
	case "query":
		if err := checkQueryName(name); err != nil {
			return KeySource{}, fmt.Errorf("invalid key %q: %v", s, err)
		}
		k = KeySource{kind: keyQuery, name: name}
	case "ip":
		return KeySource{}, fmt.Errorf("invalid key %q: ip takes no name; write just ip", s)
	default:
		return KeySource{}, fmt.Errorf("invalid key %q: unknown source %q; want header:NAME, cookie:NAME, query:NAME or ip", s, kind)
	}
	return k, nil
}

// checkHeaderName rejects names fasthttp could not look up, and Cookie, whose
// value fasthttp rebuilds (allocating) once cookies have been parsed.
func checkHeaderName(name string) error {
	if !cfgtypes.IsToken(name) {
		return fmt.Errorf("want a header name (letters, digits and !#$%%&'*+-.^_`|~), such as X-User-ID")
	}
	if strings.EqualFold(name, "Cookie") {
		return fmt.Errorf("the Cookie header holds every cookie; use cookie:NAME to key on one of them")
	}
	return nil
}

func checkQueryName(name string) error {
	if name == "" {
		return fmt.Errorf("want a query parameter name after \"query:\", such as query:uid")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c == 0x7f {
			return fmt.Errorf("query parameter name %q contains a control character; write the decoded name", name)
		}
	}
	return nil
}

// String renders the source in the syntax ParseKeySource accepts.
func (k KeySource) String() string {
	switch k.kind {
	case keyHeader:
		return "header:" + k.name
	case keyCookie:
		return "cookie:" + k.name
	case keyQuery:
		return "query:" + k.name
	case keyIP:
		return "ip"
	}
	return ""
}

// IsZero reports whether k is the zero KeySource, which extracts nothing.
func (k KeySource) IsZero() bool { return k.kind == keyNone }

// Extract returns the key of req, or ok == false when it is missing or empty
// (an empty value would put every such user in one bucket, so it counts as
// missing). What each source yields is part of the hashing contract:
//
//   - header:NAME: the first NAME header's value as fasthttp stores it
//     (leading and trailing whitespace removed); NAME is case-insensitive.
//   - cookie:NAME: the first cookie named exactly NAME, as fasthttp parses the
//     Cookie header(s): whitespace trimmed, one pair of surrounding double
//     quotes removed, no percent-decoding. This makes fasthttp parse the
//     request's cookies (it forwards them as one Cookie header afterwards).
//   - query:NAME: the first parameter whose percent-decoded name is NAME, in
//     the query of the request line as received (req.Header.RequestURI, not
//     rewrites made through req.URI()); its value is percent-decoded exactly as
//     fasthttp's QueryArgs does ("+" is a space, "%41" is "A", a malformed
//     escape is kept literally).
//   - ip: the client address chosen by ClientAddr, in netip's canonical text
//     form: dotted quad for IPv4 (also for IPv4-mapped IPv6), RFC 5952
//     lower-case compressed form for IPv6, no zone, no port.
//
// The result may alias req's buffers or scratch; use it before req is
// modified or released. It does not allocate when scratch has room for a
// decoded query value or an address (64 bytes is plenty for ip).
func (k KeySource) Extract(req *fasthttp.Request, peer net.IP, tp *TrustedProxies, scratch []byte) (key []byte, ok bool) {
	var v []byte
	switch k.kind {
	case keyHeader:
		v = req.Header.Peek(k.name)
	case keyCookie:
		v = req.Header.Cookie(k.name)
	case keyQuery:
		v, _ = queryValue(req.Header.RequestURI(), k.name, scratch[:0])
	case keyIP:
		a, found := ClientAddr(req, peer, tp)
		if !found {
			return nil, false
		}
		v = a.AppendTo(scratch[:0])
	}
	if len(v) == 0 {
		return nil, false
	}
	return v, true
}

// queryValue finds the first parameter named name in the query part of a
// request URI and returns its decoded value, a sub-slice of uri when no
// decoding is needed and otherwise appended to dst. found distinguishes
// "?name=" (found, empty) from an absent parameter.
func queryValue(uri []byte, name string, dst []byte) (value []byte, found bool) {
	q := uri
	i := indexByte(q, '?')
	if i < 0 {
		return nil, false
	}
	q = q[i+1:]
	if j := indexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	for len(q) > 0 {
		part := q
		if j := indexByte(q, '&'); j >= 0 {
			part, q = q[:j], q[j+1:]
		} else {
			q = nil
		}
		n, v := part, []byte(nil)
		if j := indexByte(part, '='); j >= 0 {
			n, v = part[:j], part[j+1:]
		}
		if !decodedEqual(n, name) {
			continue
		}
		if indexByte(v, '%') < 0 && indexByte(v, '+') < 0 {
			if v == nil {
				v = part[len(part):] // present without "=": empty, but found
			}
			return v, true
		}
		return decodeQueryAppend(dst, v), true
	}
	return nil, false
}

// hexVal returns the value of a hex digit, or 16 for anything else.
func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 16
}

// decodeQueryAppend percent-decodes src onto dst with fasthttp's rules (the
// same bytes fasthttp's QueryArgs would yield): "+" is a space; "%" and two
// hex digits is that byte; "%" followed by a non-hex digit is kept as "%";
// "%" with fewer than two bytes after it ends decoding and the rest is copied
// verbatim.
func decodeQueryAppend(dst, src []byte) []byte {
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '%':
			if i+3 > len(src) {
				return append(dst, src[i:]...)
			}
			x1, x2 := hexVal(src[i+1]), hexVal(src[i+2])
			if x1 == 16 || x2 == 16 {
				dst = append(dst, '%')
			} else {
				dst = append(dst, x1<<4|x2)
				i += 2
			}
		case '+':
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// decodedEqual reports whether decodeQueryAppend(nil, enc) == name without
// building the decoded bytes.
func decodedEqual(enc []byte, name string) bool {
	j := 0
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		switch c {
		case '%':
			if i+3 > len(enc) {
				rest := enc[i:]
				return len(name)-j == len(rest) && name[j:] == b2s(rest)
			}
			x1, x2 := hexVal(enc[i+1]), hexVal(enc[i+2])
			if x1 != 16 && x2 != 16 {
				c = x1<<4 | x2
				i += 2
			}
		case '+':
			c = ' '
		}
		if j >= len(name) || name[j] != c {
			return false
		}
		j++
	}
	return j == len(name)
}
