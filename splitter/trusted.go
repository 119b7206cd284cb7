package splitter

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// TrustedProxies is the set of networks whose X-Forwarded-For entries are
// believed. It is immutable once parsed and safe for concurrent use; a nil
// *TrustedProxies trusts nobody.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies parses CIDRs ("10.0.0.0/8", "2001:db8::/32") or bare
// addresses ("192.0.2.7", taken as a single host). It returns every invalid
// entry, each as a *cfgtypes.FieldError whose path is the entry's index
// ("[2]"), so the caller can prefix the field it came from.
func ParseTrustedProxies(cidrs []string) (*TrustedProxies, []error) {
	tp := &TrustedProxies{prefixes: make([]netip.Prefix, 0, len(cidrs))}
	var errs []error
	for i, c := range cidrs {
		p, err := parseTrusted(strings.TrimSpace(c))
		if err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("[%d]", i), "%v", err))
			continue
		}
		tp.prefixes = append(tp.prefixes, p)
	}
	return tp, errs
}

func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: want a network such as 10.0.0.0/8 or 2001:db8::/32", s)
		}
		if p.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104 means 10.0.0.0/8; addresses are unmapped
			// before matching, so store the IPv4 form.
			bits := p.Bits() - 96
			if bits < 0 {
				return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: an IPv4-mapped prefix needs at least /96", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), bits)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid trusted proxy %q: want a CIDR such as 10.0.0.0/8 or an address such as 192.0.2.7", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Len returns the number of trusted networks.
func (tp *TrustedProxies) Len() int {
	if tp == nil {
		return 0
	}
	return len(tp.prefixes)
}

// Contains reports whether a (unmapped if IPv4-in-IPv6) is inside a trusted
// network. A linear scan: trusted lists are a handful of entries, and it does
// not allocate.
func (tp *TrustedProxies) Contains(a netip.Addr) bool {
	if tp == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range tp.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String lists the trusted networks, for logs and the admin API.
func (tp *TrustedProxies) String() string {
	if tp == nil {
		return ""
	}
	parts := make([]string, len(tp.prefixes))
	for i, p := range tp.prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// ClientAddr returns the address that identifies the client of req, by the
// rule documented in the package comment ("The ip key"):
//
//   - no trusted proxies configured, or the peer is not trusted: the peer
//     itself, whatever X-Forwarded-For says (a client can write anything there);
//   - the peer is trusted: X-Forwarded-For (all its header lines, in order, as
//     one comma-separated list) is walked from right to left, trusted entries
//     are skipped, and the first untrusted entry is the client. If every entry
//     is trusted the leftmost one is used (the request started inside the
//     trusted network); if there is no X-Forwarded-For the peer is used.
//
// ok is false when the peer is missing or invalid, or when an entry met during
// the walk is not an IP address (the hop that wrote it is broken, and guessing
// would misattribute users). Only header lines are read: fasthttp rejects a request that sends
// X-Forwarded-For as a trailer, which a client could otherwise append after
// the trusted hop's value (TestXFFTrailerRejected pins this).
//
// It does not allocate, except for an error value when a trusted hop wrote a
// malformed entry.
func ClientAddr(req *fasthttp.Request, peer net.IP, tp *TrustedProxies) (netip.Addr, bool) {
	p, ok := netip.AddrFromSlice(peer)
	if !ok {
		return netip.Addr{}, false
	}
	p = p.Unmap()
	if !tp.Contains(p) {
		return p, true
	}
	var leftmost netip.Addr
	lines := req.Header.PeekAll(fasthttp.HeaderXForwardedFor)
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		end := len(line)
		for end > 0 {
			start := end - 1
			for start >= 0 && line[start] != ',' {
				start--
			}
			item := trimOWS(line[start+1 : end])
			end = start
			if start < 0 {
				end = 0
			}
			if len(item) == 0 {
				continue // "a,,b" or a trailing comma: nothing was written there
			}
			a, ok := parseForwardedAddr(item)
			if !ok {
				return netip.Addr{}, false
			}
			if !tp.Contains(a) {
				return a, true
			}
			leftmost = a
		}
	}
	if leftmost.IsValid() {
		return leftmost, true
	}
	return p, true
}

// parseForwardedAddr parses one X-Forwarded-For entry: an IPv4 or IPv6
// address, optionally with a port ("192.0.2.1:5678", "[2001:db8::1]:443") as
// some load balancers write it. Zones and anything else are rejected.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	if len(b) > 0 && b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 || (end+1 < len(b) && !isPort(b[end+1:])) {
			return netip.Addr{}, false
		}
		b = b[1:end]
	} else if colons := countByte(b, ':'); colons == 1 {
		i := indexByte(b, ':')
		if !isPort(b[i:]) {
			return netip.Addr{}, false
		}
		b = b[:i]
	}
	for _, c := range b {
		// Digits, hex letters, dots and colons only: rejects zones ("%eth0"),
		// which would make ParseAddr intern a string, and obvious garbage
		// without building an error value.
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':') {
			return netip.Addr{}, false
		}
	}
	if len(b) == 0 || len(b) > 45 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(b2s(b))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// isPort reports whether b is ":" followed by 1 to 5 digits.
func isPort(b []byte) bool {
	if len(b) < 2 || len(b) > 6 || b[0] != ':' {
		return false
	}
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func countByte(b []byte, c byte) int {
	n := 0
	for _, x := range b {
		if x == c {
			n++
		}
	}
	return n
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// b2s views b as a string without copying. Only for calls that do not keep
// the string beyond their return (comparisons, netip.ParseAddr's result),
// because b is a request buffer that fasthttp reuses.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
