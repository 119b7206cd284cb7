package splitter

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// benchCase is one Decide configuration measured by the benchmarks and
// pinned at zero allocations by TestZeroAllocs.
type benchCase struct {
	name string
	spec Spec
	tp   []string
	peer string
	req  func() *fasthttp.Request
}

func benchCases() []benchCase {
	cohorts := []CohortSpec{
		{Name: "internal", When: Conditions{Header: map[string]string{"X-Internal": "true"}}},
		{Name: "beta", When: Conditions{HeaderIn: map[string][]string{"X-Plan": {"beta", "staff"}}, QueryRegex: map[string]string{"v": `^2\.`}}},
		{Name: "team", When: Conditions{CookieIn: map[string][]string{"team": {"a", "b"}}}},
		{Name: "synthetic", When: Conditions{KeyIn: []string{"smoke-test-1", "smoke-test-2"}}},
	}
	browser := func(uri string, extra ...string) func() *fasthttp.Request {
		return func() *fasthttp.Request {
			h := append([]string{
				"Host", "api.example.com", "User-Agent", "Mozilla/5.0 (X11; Linux x86_64)", "Accept", "application/json",
				"Accept-Encoding", "gzip, br", "Authorization", "Bearer abc.def.ghi",
			}, extra...)
			return newReq(uri, h...)
		}
	}
	return []benchCase{
		{"HeaderKey", Spec{Key: "header:X-User-ID", To: "canary", Percent: 500}, nil, "198.51.100.7",
			browser("/v1/items?page=2", "X-User-ID", "7d3f9a2c-1b4e-4f5a-9c8d-0e1f2a3b4c5d")},
		{"CookieKey", Spec{Key: "cookie:sid", To: "canary", Percent: 500}, nil, "198.51.100.7",
			browser("/v1/items", "Cookie", "theme=dark; sid=7d3f9a2c1b4e4f5a; lang=en")},
		{"QueryKeyDecoded", Spec{Key: "query:uid", To: "canary", Percent: 500}, nil, "198.51.100.7",
			browser("/v1/items?page=2&uid=alice%40example.com")},
		{"IPKey", Spec{Key: "ip", To: "canary", Percent: 500}, nil, "198.51.100.7", browser("/v1/items")},
		{"IPKeyTrustedXFF", Spec{Key: "ip", To: "canary", Percent: 500}, []string{"10.0.0.0/8"}, "10.0.0.2",
			browser("/v1/items", "X-Forwarded-For", "203.0.113.9, 10.1.2.3")},
		{"HeaderKeyCohortsNoMatch", Spec{Key: "header:X-User-ID", To: "canary", Percent: 500, Cohorts: cohorts}, nil, "198.51.100.7",
			browser("/v1/items?v=1.0", "X-User-ID", "user-12345", "X-Plan", "beta", "Cookie", "team=c")},
		{"HeaderKeyCohortMatch", Spec{Key: "header:X-User-ID", To: "canary", Percent: 500, Cohorts: cohorts}, nil, "198.51.100.7",
			browser("/v1/items?v=2.1", "X-User-ID", "user-12345", "X-Plan", "beta")},
		{"HeaderKeyCohortQueryDecoded", Spec{Key: "header:X-User-ID", To: "canary", Percent: 500, Cohorts: cohorts}, nil, "198.51.100.7",
			browser("/v1/items?v=2%2E1", "X-User-ID", "user-12345", "X-Plan", "beta")},
		{"ForceHeader", Spec{Key: "header:X-User-ID", To: "canary", Percent: 500, ForceHeader: "X-Force"}, nil, "198.51.100.7",
			browser("/v1/items", "X-User-ID", "u", "X-Force", "canary")},
	}
}

func (c benchCase) compile(tb testing.TB) (*Splitter, *fasthttp.Request, net.IP) {
	tb.Helper()
	var tp *TrustedProxies
	if c.tp != nil {
		tp = mustTP(tb, c.tp...)
	}
	s, err := Compile(c.spec, "bench", "stable", tp)
	if err != nil {
		tb.Fatal(err)
	}
	return s, c.req(), net.ParseIP(c.peer)
}

// TestZeroAllocs pins the primary-path promise: Decide and Sample allocate
// nothing once the request's own buffers have been used.
func TestZeroAllocs(t *testing.T) {
	for _, c := range benchCases() {
		s, req, peer := c.compile(t)
		s.Decide(req, peer) // let fasthttp size its per-request buffers once
		if n := testing.AllocsPerRun(1000, func() { s.Decide(req, peer) }); n != 0 {
			t.Errorf("Decide %s: %.1f allocs per call, want 0", c.name, n)
		}
	}
	key, _ := ParseKeySource("header:X-User-ID")
	for _, smp := range []*Sampler{NewSampler(&key, "s", 1000, nil), NewSampler(nil, "s", 1000, nil)} {
		req := userReq("user-1")
		if n := testing.AllocsPerRun(1000, func() { smp.Sample(req, testPeer) }); n != 0 {
			t.Errorf("Sample: %.1f allocs per call, want 0", n)
		}
	}
	salt, k := "api", []byte("user-42")
	if n := testing.AllocsPerRun(1000, func() { Bucket(salt, k) }); n != 0 {
		t.Errorf("Bucket: %.1f allocs per call, want 0", n)
	}
}

// TestZeroAllocsFreshRequest parses a new request from the wire each time,
// as the server does with its pooled request objects, so fasthttp's lazy
// cookie parsing is inside the measured loop too.
func TestZeroAllocsFreshRequest(t *testing.T) {
	s, err := Compile(Spec{Key: "cookie:sid", To: "canary", Percent: 500, Cohorts: []CohortSpec{
		{Name: "q", When: Conditions{QueryIn: map[string][]string{"v": {"2"}}}},
	}}, "bench", "stable", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte("GET /v1/items?v=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1; sid=abc\r\n\r\n")
	var req fasthttp.Request
	rd := bytes.NewReader(raw)
	br := bufio.NewReader(rd)
	load := func() {
		rd.Reset(raw)
		br.Reset(rd)
		req.Reset()
		if err := req.Header.Read(br); err != nil {
			t.Fatal(err)
		}
	}
	load()
	s.Decide(&req, testPeer)
	if n := testing.AllocsPerRun(500, func() { load(); s.Decide(&req, testPeer) }); n != 0 {
		t.Errorf("%.1f allocs per request, want 0", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			s, req, peer := c.compile(b)
			b.ReportAllocs()
			for b.Loop() {
				s.Decide(req, peer)
			}
		})
	}
}

func BenchmarkDecideParallel(b *testing.B) {
	c := benchCases()[0]
	s, _, peer := c.compile(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := c.req()
		for pb.Next() {
			s.Decide(req, peer)
		}
	})
}

func BenchmarkSample(b *testing.B) {
	key, _ := ParseKeySource("header:X-User-ID")
	b.Run("Keyed", func(b *testing.B) {
		s := NewSampler(&key, "bench:shadow", 1000, nil)
		req := userReq("7d3f9a2c-1b4e-4f5a-9c8d-0e1f2a3b4c5d")
		b.ReportAllocs()
		for b.Loop() {
			s.Sample(req, testPeer)
		}
	})
	b.Run("Random", func(b *testing.B) {
		s := NewSampler(nil, "bench:shadow", 1000, nil)
		req := userReq("u")
		b.ReportAllocs()
		for b.Loop() {
			s.Sample(req, testPeer)
		}
	})
}

func BenchmarkBucket(b *testing.B) {
	key := []byte("7d3f9a2c-1b4e-4f5a-9c8d-0e1f2a3b4c5d")
	b.ReportAllocs()
	for b.Loop() {
		Bucket("api-v2", key)
	}
}
