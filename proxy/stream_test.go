package proxy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// decodeChunked reads raw as a chunked body through upstreamBody.
func decodeChunked(raw string, maxBody int) (string, error) {
	b := &upstreamBody{t: &streamTransport{maxBody: maxBody}, br: bufio.NewReaderSize(strings.NewReader(raw), 16), remaining: -1}
	var out bytes.Buffer
	_, err := io.Copy(&out, b)
	return out.String(), err
}

func TestUpstreamBodyChunked(t *testing.T) {
	for _, tt := range []struct {
		name, raw, want string
		ok              bool
	}{
		{"two chunks", "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n", "abcde", true},
		{"trailers dropped", "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", "abc", true},
		{"upper-case size", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", true},
		{"missing CRLF after data", "3\r\nabcX\r\n0\r\n\r\n", "abc", false},
		{"bad size", "zz\r\nabc\r\n0\r\n\r\n", "", false},
		{"size too long", "1000000000000000\r\n", "", false},
		{"cut inside a chunk", "5\r\nab", "ab", false},
		{"no last chunk", "3\r\nabc\r\n", "abc", false},
	} {
		got, err := decodeChunked(tt.raw, 0)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("%s: got %q, %v; want %q, ok=%v", tt.name, got, err, tt.want, tt.ok)
		}
	}
	if got, err := decodeChunked("5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", 7); got != "abcdefg" || err != errStreamTooLarge {
		t.Errorf("max_response_body 7: got %q, %v; want the first 7 bytes and errStreamTooLarge", got, err)
	}
}

// FuzzUpstreamBodyChunked: any bytes as a chunked body end in an error or
// EOF, never a panic, and never yield more bytes than were sent.
func FuzzUpstreamBodyChunked(f *testing.F) {
	for _, s := range []string{"3\r\nabc\r\n0\r\n\r\n", "0\r\n\r\n", "ffffffffffffff\r\n", "1;a=b\r\nx\r\n0\r\nT: v\r\n\r\n", "\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, _ := decodeChunked(raw, 1<<20)
		if len(got) > len(raw) {
			t.Fatalf("decoded %d bytes from %d", len(got), len(raw))
		}
	})
}
