package diff

import (
	"bytes"
	"fmt"
	"strings"
)

// segKind tells how one pattern segment matches path segments.
type segKind uint8

const (
	segLiteral segKind = iota // matches one segment equal to lit
	segOne                    // "*": matches exactly one segment, whatever it is
	segAny                    // "**": matches zero or more segments
)

type patSeg struct {
	kind segKind
	lit  string // decoded (~0 and ~1 already turned into ~ and /)
}

// Pattern is a compiled JSON Pointer (RFC 6901) pattern: "/items/*/id",
// "**/requestId", "/meta/**". A "*" segment matches exactly one segment (an
// array index or an object key), a "**" segment matches any number of
// segments, including none. Everything else is a literal key, written with the
// RFC 6901 escapes ~0 for "~" and ~1 for "/".
//
// A Pattern is immutable and safe for concurrent use.
type Pattern struct {
	src  string
	segs []patSeg
	fold bool // literal segments compare case-insensitively (redaction)
}

// maxPatternLen bounds a pattern so that matching cost stays predictable.
const maxPatternLen = 1024

// ParsePattern compiles an ignore or redaction pattern. The error says what
// is wrong and how to write it instead.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf(`empty pattern: write a JSON Pointer such as "/timestamp", "/items/*/id" or "**/requestId"`)
	}
	if len(s) > maxPatternLen {
		return Pattern{}, fmt.Errorf("pattern is %d characters long, the limit is %d", len(s), maxPatternLen)
	}
	var rest string
	switch {
	case s[0] == '/':
		rest = s[1:]
	case s == "**" || strings.HasPrefix(s, "**/"):
		rest = s
	default:
		return Pattern{}, fmt.Errorf(`pattern %q must start with "/" (a JSON Pointer such as "/%s") or with "**/"`, s, s)
	}
	p := Pattern{src: s}
	for _, raw := range strings.Split(rest, "/") {
		switch {
		case raw == "*":
			p.segs = append(p.segs, patSeg{kind: segOne})
		case raw == "**":
			// "**/**" means the same as "**"; collapsing keeps matching linear.
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == segAny {
				continue
			}
			p.segs = append(p.segs, patSeg{kind: segAny})
		case strings.Contains(raw, "*"):
			return Pattern{}, fmt.Errorf(`pattern %q: segment %q mixes "*" with other characters; wildcards match whole segments only, write "*" (one segment) or "**" (any depth) between slashes`, s, raw)
		default:
			lit, err := unescapeSegment(raw)
			if err != nil {
				return Pattern{}, fmt.Errorf("pattern %q: %w", s, err)
			}
			p.segs = append(p.segs, patSeg{lit: lit})
		}
	}
	return p, nil
}

// MustParsePattern is ParsePattern for patterns known to be valid (tests,
// built-in tables); it panics on an invalid pattern.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the pattern as it was written.
func (p Pattern) String() string { return p.src }

// Match reports whether path, a JSON Pointer such as "/items/3/id" (escaped
// per RFC 6901), matches the pattern exactly. Paths that are not pointers
// ("status", "header/Date", "body") never match.
func (p Pattern) Match(path string) bool {
	if len(path) == 0 || path[0] != '/' {
		// "body" is the whole document: only a pattern that matches
		// the root, "**", covers it.
		return path == rootPath && matchSegs(p.segs, []string(nil), p.fold)
	}
	segs, err := splitPointer(path)
	if err != nil {
		return false
	}
	return matchSegs(p.segs, segs, p.fold)
}

// MatchWithin reports whether path or one of its ancestors matches: a
// pattern "/meta" covers "/meta/build/sha" too. This is how ignore and
// redaction rules apply.
func (p Pattern) MatchWithin(path string) bool {
	return p.subtree().Match(path)
}

// subtree returns the pattern with an implicit trailing "**", so that one
// match tells whether the path or any ancestor matches.
func (p Pattern) subtree() Pattern {
	if n := len(p.segs); n > 0 && p.segs[n-1].kind == segAny {
		return p
	}
	segs := make([]patSeg, len(p.segs), len(p.segs)+1)
	copy(segs, p.segs)
	p.segs = append(segs, patSeg{kind: segAny})
	return p
}

// folded returns the pattern with case-insensitive literal segments, used for
// redaction where "Password" must be caught as surely as "password".
func (p Pattern) folded() Pattern {
	p.fold = true
	return p
}

// matchSegs is glob matching on segments: "*" behaves like "?" and "**" like
// "*" in a file glob. The greedy algorithm with one backtrack point is correct
// for such patterns and runs in O(len(pat)*len(segs)) at worst.
func matchSegs[S ~string | ~[]byte](pat []patSeg, segs []S, fold bool) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(segs) {
		if pi < len(pat) {
			ps := pat[pi]
			switch ps.kind {
			case segAny:
				starP, starS = pi, si
				pi++
				continue
			case segOne:
				pi++
				si++
				continue
			default:
				if segEqual(ps.lit, segs[si], fold) {
					pi++
					si++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last "**" swallow one more segment and retry.
		starS++
		pi, si = starP+1, starS
	}
	for pi < len(pat) && pat[pi].kind == segAny {
		pi++
	}
	return pi == len(pat)
}

func segEqual[S ~string | ~[]byte](lit string, seg S, fold bool) bool {
	if fold {
		return strings.EqualFold(lit, string(seg))
	}
	return lit == string(seg)
}

// unescapeSegment decodes the RFC 6901 escapes of one pointer segment.
func unescapeSegment(raw string) (string, error) {
	if strings.IndexByte(raw, '~') < 0 {
		return raw, nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '~' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(raw) && raw[i+1] == '0' {
			b.WriteByte('~')
		} else if i+1 < len(raw) && raw[i+1] == '1' {
			b.WriteByte('/')
		} else {
			return "", fmt.Errorf(`invalid escape in segment %q: write "~0" for "~" and "~1" for "/"`, raw)
		}
		i++
	}
	return b.String(), nil
}

// splitPointer splits a JSON Pointer into decoded segments.
func splitPointer(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	if path[0] != '/' {
		return nil, fmt.Errorf("pointer %q does not start with /", path)
	}
	parts := strings.Split(path[1:], "/")
	for i, raw := range parts {
		seg, err := unescapeSegment(raw)
		if err != nil {
			return nil, err
		}
		parts[i] = seg
	}
	return parts, nil
}

// appendEscapedSegment appends one pointer segment, escaping "~" and "/".
func appendEscapedSegment(dst, seg []byte) []byte {
	if bytes.IndexByte(seg, '~') < 0 && bytes.IndexByte(seg, '/') < 0 {
		return append(dst, seg...)
	}
	for _, c := range seg {
		switch c {
		case '~':
			dst = append(dst, '~', '0')
		case '/':
			dst = append(dst, '~', '1')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// NormalizePath turns the array indices of a JSON Pointer into "*", so that
// "/items/3/id" and "/items/7/id" aggregate as one field, "/items/*/id", which
// is also a valid ignore pattern. Any segment that is a canonical decimal
// integer is treated as an index, including numeric object keys ("/users/42"):
// such keys are usually identifiers, and keeping them would make the field
// label set unbounded. Paths that are not pointers ("status",
// "header/Content-Type", "body") are returned unchanged. It allocates only when
// the path changes.
func NormalizePath(path string) string {
	if len(path) == 0 || path[0] != '/' {
		return path
	}
	if !hasIndexSegment(path) {
		return path
	}
	b := make([]byte, 0, len(path))
	start := 1
	for start <= len(path) {
		end := strings.IndexByte(path[start:], '/')
		if end < 0 {
			end = len(path)
		} else {
			end += start
		}
		b = append(b, '/')
		if isIndex(path[start:end]) {
			b = append(b, '*')
		} else {
			b = append(b, path[start:end]...)
		}
		start = end + 1
	}
	return string(b)
}

func hasIndexSegment(path string) bool {
	start := 1
	for start <= len(path) {
		end := strings.IndexByte(path[start:], '/')
		if end < 0 {
			end = len(path)
		} else {
			end += start
		}
		if isIndex(path[start:end]) {
			return true
		}
		start = end + 1
	}
	return false
}

// isIndex reports whether s is an RFC 6901 array index: "0" or digits
// without a leading zero.
func isIndex(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	if s[0] == '0' {
		return len(s) == 1
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// pathParent returns the pointer without its last segment, and false at the
// top ("/a" has no parent pointer: the whole document is "body").
func pathParent(path string) (string, bool) {
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return "", false
	}
	return path[:i], true
}
