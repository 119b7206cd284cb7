package splitter

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// newReq builds a request for uri with headers given as name, value pairs.
func newReq(uri string, headers ...string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

func mustTP(t testing.TB, cidrs ...string) *TrustedProxies {
	t.Helper()
	tp, errs := ParseTrustedProxies(cidrs)
	if len(errs) > 0 {
		t.Fatalf("ParseTrustedProxies(%q): %v", cidrs, errs)
	}
	return tp
}

func TestParseKeySource(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "header:X-User-ID", want: "header:X-User-ID"},
		{in: " Header : x-user-id ", want: "header:x-user-id"},
		{in: "cookie:session", want: "cookie:session"},
		{in: "query:uid", want: "query:uid"},
		{in: "query:user id", want: "query:user id"},
		{in: "query:a\tb", err: `invalid key "query:a\tb": query parameter name "a\tb" contains a control character; write the decoded name`},
		{in: "query:user[id]", want: "query:user[id]"},
		{in: "ip", want: "ip"},
		{in: "IP", want: "ip"},
		{in: "ip:x", err: `invalid key "ip:x": ip takes no name; write just ip`},
		{in: "", err: `invalid key "": want header:NAME, cookie:NAME, query:NAME or ip`},
		{in: "X-User-ID", err: `invalid key "X-User-ID": want header:NAME, cookie:NAME, query:NAME or ip`},
		{in: "header:", err: `invalid key "header:": want a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~), such as X-User-ID`},
		{in: "header:X User", err: `invalid key "header:X User": want a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~), such as X-User-ID`},
		{in: "header:cookie", err: `invalid key "header:cookie": the Cookie header holds every cookie; use cookie:NAME to key on one of them`},
		{in: "cookie:", err: `invalid key "cookie:": want a cookie name after "cookie:" (letters, digits and !#$%&'*+-.^_` + "`" + `|~), such as cookie:session`},
		{in: "query:", err: `invalid key "query:": want a query parameter name after "query:", such as query:uid`},
		{in: "path:x", err: `invalid key "path:x": unknown source "path"; want header:NAME, cookie:NAME, query:NAME or ip`},
	}
	for _, tt := range tests {
		k, err := ParseKeySource(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseKeySource(%q) error = %v\nwant %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || k.String() != tt.want {
			t.Errorf("ParseKeySource(%q) = %q, %v; want %q", tt.in, k.String(), err, tt.want)
		}
	}
}

func TestExtract(t *testing.T) {
	peer := net.ParseIP("203.0.113.9")
	tests := []struct {
		name   string
		key    string
		req    *fasthttp.Request
		want   string
		wantOK bool
	}{
		{"header", "header:X-User-ID", newReq("/", "X-User-ID", "u1"), "u1", true},
		{"header name is case-insensitive", "header:x-user-id", newReq("/", "X-USER-ID", "u1"), "u1", true},
		{"header first of several", "header:X-User-ID", newReq("/", "X-User-ID", "u1", "X-User-ID", "u2"), "u1", true},
		{"header missing", "header:X-User-ID", newReq("/", "X-Other", "u1"), "", false},
		{"header empty is missing", "header:X-User-ID", newReq("/", "X-User-ID", ""), "", false},
		{"cookie", "cookie:sid", newReq("/", "Cookie", "a=1; sid=abc; b=2"), "abc", true},
		{"cookie quoted", "cookie:sid", newReq("/", "Cookie", `sid="abc"`), "abc", true},
		{"cookie name is exact", "cookie:sid", newReq("/", "Cookie", "SID=abc"), "", false},
		{"cookie across headers", "cookie:sid", newReq("/", "Cookie", "a=1", "Cookie", "sid=xyz"), "xyz", true},
		{"cookie missing", "cookie:sid", newReq("/"), "", false},
		{"query", "query:uid", newReq("/p?a=1&uid=42&uid=43"), "42", true},
		{"query decoded", "query:uid", newReq("/p?uid=a%40b+c"), "a@b c", true},
		{"query long decoded", "query:uid", newReq("/p?uid=" + longEscaped(100)), string(longDecoded(100)), true},
		{"query encoded name", "query:user id", newReq("/p?user%20id=7"), "7", true},
		{"query fragment ignored", "query:uid", newReq("/p?x=1#uid=9"), "", false},
		{"query no value", "query:uid", newReq("/p?uid&x=1"), "", false},
		{"query absent", "query:uid", newReq("/p"), "", false},
		{"query absolute form", "query:uid", newReq("http://example.com/p?uid=5"), "5", true},
		{"ip", "ip", newReq("/"), "203.0.113.9", true},
		{"ip ignores XFF without trusted proxies", "ip", newReq("/", "X-Forwarded-For", "1.2.3.4"), "203.0.113.9", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeySource(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := k.Extract(tt.req, peer, nil, make([]byte, 0, 64))
			if ok != tt.wantOK || string(got) != tt.want {
				t.Errorf("Extract = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	var zero KeySource
	if _, ok := zero.Extract(newReq("/"), peer, nil, nil); ok || !zero.IsZero() {
		t.Error("the zero KeySource extracted a key")
	}
}

func longEscaped(n int) string {
	b := make([]byte, 0, 3*n)
	for i := range n {
		b = append(b, '%', "0123456789ABCDEF"[(0x41+i%26)>>4], "0123456789ABCDEF"[(0x41+i%26)&15])
	}
	return string(b)
}

func longDecoded(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0x41 + i%26)
	}
	return b
}

// TestQueryMatchesFasthttp pins the query decoding to fasthttp's QueryArgs,
// since other systems are told "decoded as fasthttp does".
func TestQueryMatchesFasthttp(t *testing.T) {
	for _, q := range []string{
		"uid=1", "uid=a+b", "uid=%41%42", "uid=%4", "uid=%", "uid=%zz", "uid=%+", "uid=%4+",
		"u%69d=2", "u%69d%=3&uid=4", "uid=", "uid", "x=1&uid=%2B&uid=9", "uid=%E2%82%AC",
		"=1&uid=2", "&&uid=3&&", "uid==", "uid=a=b", "ui+d=1&uid=2", "uid=%%41",
	} {
		checkQueryAgainstFasthttp(t, "/p?"+q, "uid")
	}
}

func checkQueryAgainstFasthttp(t *testing.T, uri, name string) {
	t.Helper()
	var req fasthttp.Request
	req.Header.SetRequestURI(uri)
	got, _ := queryValue(req.Header.RequestURI(), name, nil)
	var ref fasthttp.Request
	ref.Header.SetRequestURI(uri)
	want := ref.URI().QueryArgs().Peek(name)
	if string(got) != string(want) {
		t.Errorf("query %q name %q: got %q, fasthttp QueryArgs %q", uri, name, got, want)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tp, errs := ParseTrustedProxies([]string{"10.0.0.0/8", " 192.0.2.7 ", "2001:db8::/32", "::ffff:172.16.0.0/108", "10.1.2.3/33", "bogus", "fe80::1%eth0", "::ffff:0:0/90"})
	wantErrs := []string{
		`[4]: invalid CIDR "10.1.2.3/33": want a network such as 10.0.0.0/8 or 2001:db8::/32`,
		`[5]: invalid trusted proxy "bogus": want a CIDR such as 10.0.0.0/8 or an address such as 192.0.2.7`,
		`[6]: invalid trusted proxy "fe80::1%eth0": want a CIDR such as 10.0.0.0/8 or an address such as 192.0.2.7`,
		`[7]: invalid CIDR "::ffff:0:0/90": an IPv4-mapped prefix needs at least /96`,
	}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors = %v, want %d", errs, len(wantErrs))
	}
	for i, e := range errs {
		if e.Error() != wantErrs[i] {
			t.Errorf("error %d = %q\nwant %q", i, e, wantErrs[i])
		}
	}
	if got := tp.String(); got != "10.0.0.0/8,192.0.2.7/32,2001:db8::/32,172.16.0.0/12" {
		t.Errorf("String() = %q", got)
	}
	for addr, want := range map[string]bool{
		"10.9.9.9": true, "11.0.0.1": false, "192.0.2.7": true, "192.0.2.8": false,
		"2001:db8::5": true, "2001:db9::5": false, "::ffff:10.1.1.1": true, "172.31.0.1": true,
	} {
		if got := tp.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	var none *TrustedProxies
	if none.Contains(netip.MustParseAddr("10.0.0.1")) || none.Len() != 0 {
		t.Error("a nil TrustedProxies trusted something")
	}
}

func TestClientAddr(t *testing.T) {
	tp := mustTP(t, "10.0.0.0/8", "2001:db8::/32")
	tests := []struct {
		name   string
		tp     *TrustedProxies
		peer   string
		xff    []string
		want   string
		wantOK bool
	}{
		{"no trusted proxies: peer, spoofed XFF ignored", nil, "198.51.100.1", []string{"1.1.1.1"}, "198.51.100.1", true},
		{"untrusted peer: spoofed XFF ignored", tp, "198.51.100.1", []string{"1.1.1.1, 10.0.0.1"}, "198.51.100.1", true},
		{"trusted peer: rightmost untrusted", tp, "10.0.0.2", []string{"6.6.6.6, 203.0.113.5, 10.0.0.1"}, "203.0.113.5", true},
		{"trusted peer: client spoof left of real client is never read", tp, "10.0.0.2", []string{"10.0.0.99, 203.0.113.5"}, "203.0.113.5", true},
		{"trusted peer: several header lines form one list", tp, "10.0.0.2", []string{"6.6.6.6", "203.0.113.5, 10.0.0.1"}, "203.0.113.5", true},
		{"trusted peer: last line first", tp, "10.0.0.2", []string{"203.0.113.5", "10.0.0.1"}, "203.0.113.5", true},
		{"trusted peer: all trusted uses leftmost", tp, "10.0.0.2", []string{"10.0.0.7, 10.0.0.1"}, "10.0.0.7", true},
		{"trusted peer: no XFF uses peer", tp, "10.0.0.2", nil, "10.0.0.2", true},
		{"trusted peer: empty entries skipped", tp, "10.0.0.2", []string{"203.0.113.5,, 10.0.0.1 ,"}, "203.0.113.5", true},
		{"trusted peer: ports stripped", tp, "10.0.0.2", []string{"[2001:db9::1]:443, 10.0.0.1:8080"}, "2001:db9::1", true},
		{"trusted peer: ipv4 with port", tp, "10.0.0.2", []string{"203.0.113.5:1234"}, "203.0.113.5", true},
		{"trusted peer: ipv6 canonical form", tp, "2001:db8::1", []string{"2001:DB9:0:0::0001"}, "2001:db9::1", true},
		{"trusted peer: mapped ipv4 unmapped", tp, "::ffff:10.0.0.2", []string{"::ffff:203.0.113.5"}, "203.0.113.5", true},
		{"trusted peer: garbage before an untrusted entry", tp, "10.0.0.2", []string{"203.0.113.5, unknown"}, "", false},
		{"trusted peer: zone rejected", tp, "10.0.0.2", []string{"fe80::1%eth0"}, "", false},
		{"trusted peer: garbage left of the client is never read", tp, "10.0.0.2", []string{"garbage, 203.0.113.5"}, "203.0.113.5", true},
		{"no peer", tp, "", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newReq("/")
			for _, x := range tt.xff {
				req.Header.Add("X-Forwarded-For", x)
			}
			var peer net.IP
			if tt.peer != "" {
				peer = net.ParseIP(tt.peer)
			}
			a, ok := ClientAddr(req, peer, tt.tp)
			got := ""
			if ok {
				got = a.String()
			}
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("ClientAddr = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
			// The ip key is the same address in text.
			key, kok := KeySource{kind: keyIP}.Extract(req, peer, tt.tp, nil)
			if kok != tt.wantOK || string(key) != tt.want {
				t.Errorf("ip key = %q, %v; want %q, %v", key, kok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestXFFTrailerRejected pins the fasthttp behaviour ClientAddr relies on:
// a client cannot append an X-Forwarded-For value after the body (as a
// trailer), to the right of the one its trusted proxy wrote, because fasthttp
// rejects such a request before any handler sees it.
func TestXFFTrailerRejected(t *testing.T) {
	for _, raw := range []string{
		"POST /p HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\nTrailer: X-Forwarded-For\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
	} {
		var req fasthttp.Request
		err := req.Read(bufio.NewReader(strings.NewReader(raw)))
		if err == nil || !strings.Contains(err.Error(), "forbidden trailer") {
			t.Errorf("fasthttp accepted an X-Forwarded-For trailer (err %v, values %q); ClientAddr must then skip trailer values", err, req.Header.PeekAll("X-Forwarded-For"))
		}
	}
}
