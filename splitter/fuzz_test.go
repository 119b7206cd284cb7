package splitter

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func FuzzParseKeySource(f *testing.F) {
	for _, s := range []string{"header:X-User-ID", "cookie:sid", "query:uid", "ip", "IP", " header : x ", "header:", "query:a b", "x:y", "", ":", "header:Cookie", "query:\x00", "cookie:a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeySource(s)
		if err != nil {
			if !k.IsZero() {
				t.Fatalf("ParseKeySource(%q) returned %v with error %v", s, k, err)
			}
			if !strings.Contains(err.Error(), "invalid key") {
				t.Fatalf("error %q does not say what was wrong", err)
			}
			return
		}
		if k.IsZero() || k.String() == "" {
			t.Fatalf("ParseKeySource(%q) accepted but returned the zero source", s)
		}
		again, err := ParseKeySource(k.String())
		if err != nil || again != k {
			t.Fatalf("round trip of %q via %q = %v, %v", s, k.String(), again, err)
		}
	})
}

// fuzzSplitters are compiled once per fuzz target: one per key kind, each
// with cohorts reading every source so arbitrary bytes reach every matcher.
func fuzzSplitters(t testing.TB) []*Splitter {
	cohorts := []CohortSpec{
		{Name: "hre", When: Conditions{HeaderRegex: map[string]string{"X-User-ID": `^a.*z$`}}},
		{Name: "cin", When: Conditions{CookieIn: map[string][]string{"sid": {"x", "y y"}}}},
		{Name: "qeq", When: Conditions{Query: map[string]string{"uid": "q q"}, Header: map[string]string{"X-Plan": "beta"}}, To: "blue"},
		{Name: "qre", When: Conditions{QueryRegex: map[string]string{"uid": `^\d+$`}}},
		{Name: "keys", When: Conditions{KeyIn: []string{"k1", "203.0.113.5"}}, To: "stable"},
	}
	tp := mustTP(t, "10.0.0.0/8", "2001:db8::/32")
	var out []*Splitter
	for _, key := range []string{"header:X-User-ID", "cookie:sid", "query:uid", "ip"} {
		s, err := Compile(Spec{Key: key, Salt: "fuzz", To: "canary", Percent: 3333, ForceHeader: "X-Force", Cohorts: cohorts}, "r", "stable", tp)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func fuzzRequest(header, cookie, query, xff string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.Header.SetRequestURI("/p?" + query)
	req.Header.Set("X-User-ID", header)
	req.Header.Set("X-Force", header)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("X-Forwarded-For", xff)
	return req
}

func FuzzDecide(f *testing.F) {
	f.Add("user-1", "sid=abc", "uid=42", "203.0.113.5")
	f.Add("", "", "", "")
	f.Add("abcz", "sid=\"y y\"; sid=x", "uid=q+q&uid=7", "6.6.6.6, 10.0.0.1")
	f.Add("canary", "sid=%zz", "uid=%4", "[2001:db9::1]:80, 2001:db8::2")
	f.Add("\x00\xff", ";;==;", "&&==&%%", ",,,")
	f.Add("k1", "a=b", "uid=123&v=2", "garbage, 10.0.0.3")
	splitters := fuzzSplitters(f)
	fresh := fuzzSplitters(f)
	peers := []net.IP{net.ParseIP("10.0.0.9"), net.ParseIP("198.51.100.1"), nil}
	f.Fuzz(func(t *testing.T, header, cookie, query, xff string) {
		for si, s := range splitters {
			for _, peer := range peers {
				req := fuzzRequest(header, cookie, query, xff)
				d := s.Decide(req, peer)
				if int(d.Target) >= len(s.Targets()) || d.Cohort >= int16(len(s.CohortNames())) {
					t.Fatalf("decision %+v out of range", d)
				}
				if (d.Reason == ReasonCohort) != (d.Cohort >= 0) {
					t.Fatalf("reason %s with cohort %d", d.Reason, d.Cohort)
				}
				// Deterministic: same request again, and a fresh request to a
				// freshly compiled splitter.
				if again := s.Decide(req, peer); again != d {
					t.Fatalf("second Decide %+v != %+v", again, d)
				}
				if other := fresh[si].Decide(fuzzRequest(header, cookie, query, xff), peer); other != d {
					t.Fatalf("fresh splitter %+v != %+v", other, d)
				}
				if d.Reason == ReasonPercent {
					key, ok := s.Key().Extract(req, peer, s.tp, nil)
					if !ok || (d.Target == TargetCanary) != (Bucket("fuzz", key) < 3333) {
						t.Fatalf("percent decision %+v disagrees with key %q (ok %v)", d, key, ok)
					}
				}
			}
		}
	})
}

// FuzzQueryValue checks the query extraction against fasthttp's own parser,
// which the hashing contract points to.
func FuzzQueryValue(f *testing.F) {
	for _, q := range []string{"uid=1", "uid=a+b&uid=2", "u%69d=%41", "uid=%", "uid=%4", "=&uid", "a=1#uid=2", "uid=%zz%41"} {
		f.Add(q, "uid")
	}
	f.Add("a%20b=1", "a b")
	f.Fuzz(func(t *testing.T, query, name string) {
		if name == "" || strings.IndexFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return // fasthttp rejects such a request line before any handler runs
		}
		checkQueryAgainstFasthttp(t, "/p?"+query, name)
	})
}
