package diff

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestEqualityRulesAgree pins the three statements of JSON equality to each
// other: the reporting walk finds no difference exactly when the silent one
// says equal, and equal values hash alike (which unordered matching relies
// on).
func TestEqualityRulesAgree(t *testing.T) {
	docs := []string{
		`1`, `1.0`, `10e-1`, `2`, `-0`, `0`, `null`, `true`, `false`, `"a"`, `"\u0061"`, `"b"`,
		`[]`, `[1,2]`, `[2,1]`, `[1,1,2]`, `[1,2,2]`, `[1.0,2]`, `[[1],[2,3]]`, `[[3,2],[1]]`,
		`{}`, `{"a":1}`, `{"a":1.00}`, `{"a":1,"b":2}`, `{"b":2,"a":1}`, `{"a":null}`, `{"a":[1,{"x":"y"}]}`,
		`{"a":[{"x":"y"},1]}`, `{"ts":1,"a":1}`, `{"ts":2,"a":1}`, `{"a":{"ts":3}}`, `{"a":{}}`,
		`[{"k":1,"v":"a"},{"k":2}]`, `[{"k":2},{"v":"a","k":1}]`, `[1.001,2]`, `[2,1.0004]`,
	}
	for _, spec := range []Spec{
		{},
		{ArrayOrder: "ignore"},
		{Ignore: []string{"**/ts"}},
		{ArrayOrder: "ignore", Ignore: []string{"**/ts"}},
		{ArrayOrder: "ignore", FloatTolerance: 0.001},
		{FloatTolerance: 0.5},
	} {
		rules := mustRules(t, spec)
		for _, x := range docs {
			for _, y := range docs {
				c := rules.pool.Get().(*comparer)
				c.start(rules)
				if err := c.a.parse([]byte(x)); err != nil {
					t.Fatal(err)
				}
				if err := c.b.parse([]byte(y)); err != nil {
					t.Fatal(err)
				}
				eq := c.equal(&c.a.nodes[0], &c.b.nodes[0])
				c.path = c.path[:0]
				c.diffNodes(&c.a.nodes[0], &c.b.nodes[0])
				reported := len(c.diffs) > 0
				if eq == reported {
					t.Errorf("%+v: %s vs %s: equal=%v but walk reported %v", spec, x, y, eq, c.diffs)
				}
				if eq && rules.unordered && c.hash(&c.a, &c.a.nodes[0]) != c.hash(&c.b, &c.b.nodes[0]) {
					t.Errorf("%+v: %s and %s are equal but hash differently", spec, x, y)
				}
				c.release()
			}
		}
	}
}

func TestFloatToleranceExactDecimal(t *testing.T) {
	tests := []struct {
		a, b string
		tol  float64
		want Outcome
	}{
		{`0.3`, `0.4`, 0.1, Match}, // the boundary is inclusive and exact
		{`0.3`, `0.4000001`, 0.1, Mismatch},
		{`1`, `1.5`, 0.5, Match},
		{`1`, `1.5000000000000000001`, 0.5, Mismatch},
		{`-0.05`, `0.05`, 0.1, Match},
		{`12345678901234567890`, `12345678901234567891`, 0.999, Mismatch}, // beyond 2^53: every digit counts
		{`12345678901234567890`, `12345678901234567891`, 1, Match},
		{`123456789012345678901234567890.5`, `123456789012345678901234567890.25`, 0.25, Match},
		{`123456789012345678901234567890.5`, `123456789012345678901234567890.24`, 0.25, Mismatch},
		{`1e-7`, `2e-7`, 1e-7, Match},
		{`1e-7`, `2.1e-7`, 1e-7, Mismatch},
		{`1e400`, `1e400`, 0.1, Match},
		{`1e400`, `2e400`, 0.1, Mismatch},
	}
	for _, tt := range tests {
		r := Compare(jsonCap(200, tt.a), jsonCap(200, tt.b), mustRules(t, Spec{FloatTolerance: tt.tol}))
		if r.Outcome != tt.want {
			t.Errorf("%s vs %s at %v: %v %+v", tt.a, tt.b, tt.tol, r.Outcome, r.Differences)
		}
	}
}

func TestUnorderedFindsPairingAndReportsLeftovers(t *testing.T) {
	tests := []struct {
		name, a, b string
		tol        float64
		want       []string // "kind path"
	}{
		// First-fit pairing of 1.0 with 1.1 would strand 0.95 and 1.2.
		{"tolerance pairing", `[1.0, 1.2]`, `[1.1, 0.95]`, 0.1, nil},
		{"tolerance surplus", `[1.0, 5]`, `[1.05, 9, 10]`, 0.1, []string{"removed /1", "added /1", "added /2"}},
		{"duplicates", `[1,1,1,2]`, `[2,1,1,1]`, 0, nil},
		{"extra items", `[{"id":1},{"id":2}]`, `[{"id":3},{"id":2},{"id":1}]`, 0, []string{"added /0"}},
		{"unrelated leftovers are not changed", `[{"id":1},{"id":2}]`, `[{"id":2},{"id":9}]`, 0, []string{"removed /0", "added /1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Compare(jsonCap(200, tt.a), jsonCap(200, tt.b), mustRules(t, Spec{ArrayOrder: "ignore", FloatTolerance: tt.tol}))
			var got []string
			for _, d := range r.Differences {
				got = append(got, d.Kind.String()+" "+d.Path)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// bigArrays builds two shuffled arrays of n elements with the same content,
// objects or bare numbers.
func bigArrays(n int, objects bool) (string, string) {
	rng := rand.New(rand.NewPCG(7, 8))
	el := make([]string, n)
	for i := range el {
		if objects {
			el[i] = fmt.Sprintf(`{"id":%d,"name":"n%d","dup":%d}`, i, i%10, i%3)
		} else {
			el[i] = fmt.Sprintf(`%d.%d`, i%1000, i%7) // many duplicates
		}
	}
	a := "[" + strings.Join(el, ",") + "]"
	rng.Shuffle(n, func(i, j int) { el[i], el[j] = el[j], el[i] })
	return a, "[" + strings.Join(el, ",") + "]"
}

// BenchmarkUnordered100k compares 100,000-element arrays in another order:
// it must stay near-linear (it was quadratic, about 21s per comparison).
func BenchmarkUnordered100k(b *testing.B) {
	for _, tc := range []struct {
		name    string
		objects bool
		tol     float64
	}{{"objects", true, 0}, {"numbers-duplicates", false, 0}, {"numbers-tolerance", false, 0.01}} {
		pa, pb := bigArrays(100_000, tc.objects)
		rules, err := CompileRules(Spec{ArrayOrder: "ignore", FloatTolerance: tc.tol, MaxBody: 64 << 20})
		if err != nil {
			b.Fatal(err)
		}
		p, s := jsonCap(200, pa), jsonCap(200, pb)
		b.Run(tc.name, func(b *testing.B) {
			if r := Compare(p, s, rules); r.Outcome != Match || r.Note != "" {
				b.Fatalf("setup: %v %q %v", r.Outcome, r.Note, r.Differences)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				Compare(p, s, rules)
			}
		})
	}
}

func TestHeaderRules(t *testing.T) {
	cap := func(h ...string) *Capture {
		c := &Capture{Status: 200, Body: []byte("x")}
		for i := 0; i+1 < len(h); i += 2 {
			c.Headers = append(c.Headers, Header{Name: h[i], Value: h[i+1]})
		}
		return c
	}
	tests := []struct {
		name    string
		headers []string
		p, s    *Capture
		want    []string
	}{
		{"media type compared by default", nil, cap("Content-Type", "application/json"), cap("Content-Type", "text/html"), []string{"header/Content-Type"}},
		{"charset alone is not the media type", nil, cap("Content-Type", "application/json; charset=utf-8"), cap("Content-Type", "application/JSON"), nil},
		{"listed Content-Type compares the value", []string{"Content-Type"}, cap("Content-Type", "text/plain; charset=utf-8"), cap("Content-Type", "text/plain"), []string{"header/Content-Type"}},
		{"volatile tracing headers", []string{"*"},
			cap("X-B3-Traceid", "1", "X-B3-Sampled", "1", "Traceparent", "a", "X-Correlation-Id", "c", "Cf-Ray", "r", "X-Envoy-Upstream-Service-Time", "3", "X-Api", "v"),
			cap("X-B3-Traceid", "2", "X-B3-Sampled", "0", "Traceparent", "b", "X-Correlation-Id", "d", "Cf-Ray", "s", "X-Envoy-Upstream-Service-Time", "9", "X-Api", "v"), nil},
		{"cache-control is a token set", []string{"*"}, cap("Cache-Control", "no-cache, max-age=0"), cap("Cache-Control", "Max-Age=0,no-cache"), nil},
		{"cache-control change", []string{"Cache-Control"}, cap("Cache-Control", "no-cache"), cap("Cache-Control", "max-age=60"), []string{"header/Cache-Control"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Compare(tt.p, tt.s, mustRules(t, Spec{Headers: tt.headers}))
			var got []string
			for _, d := range r.Differences {
				got = append(got, d.Path)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestWithinToleranceAgreesWithBigRat checks the exact decimal arithmetic
// (both the 18-digit integer path and the math/big one) against big.Rat on
// random literals, many of them right at the boundary.
func TestWithinToleranceAgreesWithBigRat(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	lit := func() string {
		var b strings.Builder
		if rng.IntN(4) == 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.Itoa(rng.IntN(1000)))
		if rng.IntN(3) > 0 {
			b.WriteByte('.')
			for i := 0; i < 1+rng.IntN(25); i++ {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
		}
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&b, "e%d", rng.IntN(7)-3)
		}
		return b.String()
	}
	rat := func(s string) *big.Rat {
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("bad literal %q", s)
		}
		return r
	}
	for i := 0; i < 20000; i++ {
		a, tol := lit(), lit()
		if strings.HasPrefix(tol, "-") {
			tol = tol[1:]
		}
		b := lit()
		if i%3 == 0 {
			// b = a + tol exactly: on the boundary, which must match.
			b = new(big.Rat).Add(rat(a), rat(tol)).FloatString(40)
		}
		d := new(big.Rat).Sub(rat(a), rat(b))
		want := d.Abs(d).Cmp(rat(tol)) <= 0
		if got := withinTolerance([]byte(a), []byte(b), []byte(tol)); got != want {
			t.Fatalf("withinTolerance(%s, %s, %s) = %v, want %v", a, b, tol, got, want)
		}
	}
}
