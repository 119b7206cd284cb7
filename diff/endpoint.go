package diff

import (
	"fmt"
	"strings"
)

// OtherEndpoint is the endpoint that stands for every endpoint beyond
// max_endpoints.
const OtherEndpoint = "other"

// maxEndpointSegments bounds how much of a path names an endpoint; deeper
// segments are folded into one "{...}".
const maxEndpointSegments = 8

// maxLiteralSegment: a longer path segment is an identifier, not a name.
const maxLiteralSegment = 48

// endpointTemplate is one entry of the endpoints: list.
type endpointTemplate struct {
	method string   // "" for any method
	segs   []string // literal segments; "" stands for a {param}
	src    string   // the path as written, "/users/{id}"
}

// parseEndpointTemplate parses "GET /users/{id}" or "/users/{id}".
func parseEndpointTemplate(s string) (endpointTemplate, error) {
	var t endpointTemplate
	path := strings.TrimSpace(s)
	if m, p, ok := strings.Cut(path, " "); ok {
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, "/{}") {
			return t, fmt.Errorf("invalid method %q in %q: want an upper-case method such as GET, then the path", m, s)
		}
		t.method, path = m, strings.TrimSpace(p)
	}
	if !strings.HasPrefix(path, "/") {
		return t, fmt.Errorf(`invalid endpoint %q: want a path such as "/users/{id}" or "GET /users/{id}"`, s)
	}
	if strings.ContainsAny(path, "?#") {
		return t, fmt.Errorf("invalid endpoint %q: the query string is not part of an endpoint", s)
	}
	t.src = path
	if path == "/" {
		return t, nil
	}
	for _, seg := range strings.Split(path[1:], "/") {
		switch {
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") && len(seg) > 2:
			t.segs = append(t.segs, "")
		case strings.ContainsAny(seg, "{}"):
			return t, fmt.Errorf("invalid segment %q in %q: a parameter is a whole segment such as {id}", seg, s)
		default:
			t.segs = append(t.segs, seg)
		}
	}
	return t, nil
}

func (t *endpointTemplate) match(method string, segs []string) bool {
	if t.method != "" && t.method != method {
		return false
	}
	if len(segs) != len(t.segs) {
		return false
	}
	for i, s := range t.segs {
		if s != "" && s != segs[i] {
			return false
		}
	}
	return true
}

// Endpoint names the endpoint of a request: "GET /users/{id}". A template
// of the endpoints: list that matches wins (named with the request's
// method, so GET and DELETE of one template stay apart); otherwise path
// segments that look like identifiers (numbers, UUIDs, hex tokens, long
// mixed tokens) are folded to {id}. The query string plays no part.
func (r *Rules) Endpoint(method, uri string) string {
	path := uri
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if i := strings.Index(path, "://"); i >= 0 {
		// An absolute-form request target: drop scheme and authority.
		path = path[i+3:]
		if j := strings.IndexByte(path, '/'); j >= 0 {
			path = path[j:]
		} else {
			path = "/"
		}
	}
	if path == "" || path == "/" {
		return method + " /"
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range r.endpoints {
		if t := &r.endpoints[i]; t.match(method, segs) {
			return method + " " + t.src
		}
	}
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte(' ')
	for i, s := range segs {
		if i == maxEndpointSegments {
			b.WriteString("/{...}")
			break
		}
		b.WriteByte('/')
		if isIdentifier(s) {
			b.WriteString("{id}")
		} else {
			b.WriteString(s)
		}
	}
	return b.String()
}

// isIdentifier reports whether a path segment looks like a value rather
// than a name: all digits, a UUID, a hex token of 8 or more characters with
// a digit, a token with two or more digits ("u80", "order-2024-17") unless
// it reads as a version ("v2", "v10", "v1.2"), or a long token mixing
// letters and digits.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	if len(s) > maxLiteralSegment {
		return true
	}
	digits, hex, alnum := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
			alnum++
		case c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			hex++
			alnum++
		case c >= 'g' && c <= 'z', c >= 'G' && c <= 'Z':
			alnum++
		case c == '-' || c == '_' || c == '.':
		default:
			return false
		}
	}
	switch {
	case digits == len(s):
		return true
	case len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' && hex == 32:
		return true // UUID
	case hex == len(s) && len(s) >= 8 && digits > 0:
		return true
	case len(s) >= 16 && digits > 0 && alnum > digits:
		return true
	case digits >= 2 && !isVersion(s):
		return true
	}
	return false
}

// isVersion reports "v2", "V10", "v1.2"-like segments: names of API
// versions, not identifiers.
func isVersion(s string) bool {
	if len(s) < 2 || (s[0] != 'v' && s[0] != 'V') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}
