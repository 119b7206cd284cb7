package diff

import (
	"strings"
	"testing"
)

func TestParsePatternErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty pattern"},
		{"timestamp", `must start with "/"`},
		{"*/id", `must start with "/"`},
		{"/items/*id", "wildcards match whole segments only"},
		{"/a/***", "wildcards match whole segments only"},
		{"/a~2b", "invalid escape"},
		{"/a~", "invalid escape"},
		{"/" + strings.Repeat("a", maxPatternLen), "the limit is"},
	}
	for _, tt := range tests {
		_, err := ParsePattern(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParsePattern(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		want    bool
	}{
		{"/timestamp", "/timestamp", true},
		{"/timestamp", "/timestamps", false},
		{"/timestamp", "/meta/timestamp", false},
		{"/items/*/id", "/items/3/id", true},
		{"/items/*/id", "/items/x/id", true},
		{"/items/*/id", "/items/id", false},
		{"/items/*/id", "/items/1/2/id", false},
		{"**/requestId", "/requestId", true},
		{"**/requestId", "/a/b/c/requestId", true},
		{"**/requestId", "/a/requestIdx", false},
		{"/a/**/z", "/a/z", true},
		{"/a/**/z", "/a/b/c/z", true},
		{"/a/**/z", "/a/b/c/y", false},
		{"/a/**", "/a", true},
		{"/a/**", "/a/b/c", true},
		{"**", "/anything/at/all", true},
		{"**", BodyPath, true},
		{"/a", BodyPath, false},
		{"**/*/id", "/id", false},
		{"**/*/id", "/x/id", true},
		{"/**/b/**/c", "/b/x/b/y/c", true},
		{"/**/b/**/c", "/b/x/c/y", false},
		{"/a~1b", "/a~1b", true},
		{"/m~0n", "/m~0n", true},
		{"/", "/", true}, // the empty key
		{"/status", StatusPath, false},
		{"**", "header/Date", false},
	}
	for _, tt := range tests {
		p := MustParsePattern(tt.pattern)
		if got := p.Match(tt.path); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestPatternMatchWithin(t *testing.T) {
	p := MustParsePattern("/meta")
	for path, want := range map[string]bool{"/meta": true, "/meta/build/sha": true, "/metadata": false, "/x/meta": false} {
		if got := p.MatchWithin(path); got != want {
			t.Errorf("/meta.MatchWithin(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	tests := map[string]string{
		"/items/3/id":             "/items/*/id",
		"/items/03/id":            "/items/03/id", // not an index: leading zero
		"/a/0":                    "/a/*",
		"/0/1/2":                  "/*/*/*",
		"/users/42/name":          "/users/*/name",
		"/plain/path":             "/plain/path",
		"/x/-1":                   "/x/-1",
		"/a/12345678901234567890": "/a/12345678901234567890", // too long to be an index
		StatusPath:                StatusPath,
		"header/Etag":             "header/Etag",
		BodyPath:                  BodyPath,
		"/":                       "/",
		"/a~1b/7":                 "/a~1b/*",
	}
	for in, want := range tests {
		got := NormalizePath(in)
		if got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
		if NormalizePath(got) != got {
			t.Errorf("NormalizePath is not idempotent on %q", in)
		}
		// A normalized pointer is a valid ignore pattern that matches the
		// original path.
		if strings.HasPrefix(in, "/") {
			p, err := ParsePattern(got)
			if err != nil {
				t.Errorf("normalized %q is not a pattern: %v", got, err)
			} else if !p.Match(in) {
				t.Errorf("pattern %q does not match %q", got, in)
			}
		}
	}
}

func TestNormalizePathNoAllocWhenUnchanged(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() { _ = NormalizePath("/a/b/c/name") })
	if allocs != 0 {
		t.Errorf("NormalizePath allocated %v times for an unchanged path", allocs)
	}
}

// FuzzPattern checks that parsing never panics, that a valid pattern matches
// a path built from it (wildcards replaced by concrete segments), and that
// normalizing that path yields a pattern matching it too.
func FuzzPattern(f *testing.F) {
	for _, s := range []string{"/timestamp", "/items/*/id", "**/requestId", "/a/**/b", "**", "/a~0~1", "/", "//", "/*/**/*", "**/**/x", "/a~", "x", "/a*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("String() = %q, want %q", p.String(), s)
		}
		// Build a concrete path: "*" → "7", "**" → "x/8" (two segments).
		var b strings.Builder
		for _, seg := range p.segs {
			switch seg.kind {
			case segOne:
				b.WriteString("/7")
			case segAny:
				b.WriteString("/x/8")
			default:
				b.WriteByte('/')
				b.Write(appendEscapedSegment(nil, []byte(seg.lit)))
			}
		}
		path := b.String()
		if path == "" {
			return
		}
		if !p.Match(path) {
			t.Fatalf("pattern %q does not match its own instance %q", s, path)
		}
		if !p.MatchWithin(path + "/child") {
			t.Fatalf("pattern %q does not cover a child of %q", s, path)
		}
		norm := NormalizePath(path)
		np, err := ParsePattern(norm)
		if err != nil {
			t.Fatalf("normalized path %q is not a pattern: %v", norm, err)
		}
		if !np.Match(path) {
			t.Fatalf("normalized pattern %q does not match %q", norm, path)
		}
	})
}
