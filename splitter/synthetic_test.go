package splitter

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestMarker(t *testing.T) {
	key, _ := ParseKeySource("header:X-User")
	m := NewMarker([]Conditions{
		{Header: map[string]string{"X-Synthetic": "true"}},
		{KeyIn: []string{"smoke-test-prod"}},
	}, &key, nil)
	cases := []struct {
		name    string
		headers map[string]string
		want    bool
	}{
		{"marker header", map[string]string{"X-Synthetic": "true"}, true},
		{"other value", map[string]string{"X-Synthetic": "false"}, false},
		{"test account", map[string]string{"X-User": "smoke-test-prod"}, true},
		{"real user", map[string]string{"X-User": "alice"}, false},
		{"nothing", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var req fasthttp.Request
			req.SetRequestURI("/x")
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			if got := m.Synthetic(&req, net.IPv4(127, 0, 0, 1)); got != c.want {
				t.Fatalf("Synthetic = %v; want %v", got, c.want)
			}
		})
	}
	var nilMarker *Marker
	var req fasthttp.Request
	if nilMarker.Synthetic(&req, nil) {
		t.Fatal("a nil Marker marked a request")
	}
}

func TestValidateSynthetic(t *testing.T) {
	cases := []struct {
		name   string
		rules  []Conditions
		hasKey bool
		want   string
	}{
		{"empty rule", []Conditions{{}}, true, "[0]: empty"},
		{"key_in without split", []Conditions{{KeyIn: []string{"a"}}}, false, "[0].key_in: the route has no split"},
		{"bad regex", []Conditions{{HeaderRegex: map[string]string{"X": "("}}}, true, "[0].header_regex.X"},
		{"ok", []Conditions{{Header: map[string]string{"X": "1"}}}, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := ValidateSynthetic(c.rules, c.hasKey)
			if c.want == "" {
				if len(errs) != 0 {
					t.Fatalf("unexpected errors: %v", errs)
				}
				return
			}
			if len(errs) == 0 || !strings.Contains(errs[0].Error(), c.want) {
				t.Fatalf("errors %v; want one containing %q", errs, c.want)
			}
		})
	}
}

// TestMarkerZeroAllocs pins the synthetic check at zero allocations, marked
// or not, since it runs on every request of a route that has rules.
func TestMarkerZeroAllocs(t *testing.T) {
	key, _ := ParseKeySource("header:X-User")
	m := NewMarker([]Conditions{
		{Header: map[string]string{"X-Synthetic": "true"}},
		{KeyIn: []string{"smoke-test-prod"}, QueryRegex: map[string]string{"probe": "^[0-9]+$"}},
	}, &key, nil)
	for _, user := range []string{"alice", "smoke-test-prod"} {
		var req fasthttp.Request
		req.SetRequestURI("/x?probe=12")
		req.Header.Set("X-User", user)
		m.Synthetic(&req, nil)
		if n := testing.AllocsPerRun(1000, func() { m.Synthetic(&req, nil) }); n != 0 {
			t.Errorf("Synthetic (user %s): %.1f allocs per call, want 0", user, n)
		}
	}
}

// BenchmarkMarker measures the synthetic check for an unmarked request (the
// common case: every rule is tried) against two rules.
func BenchmarkMarker(b *testing.B) {
	key, _ := ParseKeySource("header:X-User")
	m := NewMarker([]Conditions{
		{Header: map[string]string{"X-Synthetic": "true"}},
		{KeyIn: []string{"smoke-test-prod"}},
	}, &key, nil)
	var req fasthttp.Request
	req.SetRequestURI("/x")
	req.Header.Set("X-User", "alice")
	b.ReportAllocs()
	for b.Loop() {
		m.Synthetic(&req, nil)
	}
}
