package diff

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func mustRules(t testing.TB, spec Spec) *Rules {
	t.Helper()
	r, err := CompileRules(spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func jsonCap(status int, body string) *Capture {
	return &Capture{Status: status, ContentType: "application/json", Body: []byte(body)}
}

func TestCompareResponses(t *testing.T) {
	hdr := func(kv ...string) []Header {
		var hs []Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, Header{kv[i], kv[i+1]})
		}
		return hs
	}
	tests := []struct {
		name      string
		spec      Spec
		p, s      *Capture
		want      Outcome
		wantDiffs []Difference
		wantBody  BodyMode
		wantNote  string
	}{
		{
			name: "identical", p: jsonCap(200, `{"a":1}`), s: jsonCap(200, `{"a":1}`),
			want: Match, wantBody: BodyJSON,
		},
		{
			name: "status differs", p: jsonCap(200, `{"a":1}`), s: jsonCap(503, `{"a":1}`),
			want: Mismatch, wantBody: BodyJSON,
			wantDiffs: []Difference{{Path: "status", Kind: Changed, Primary: "200", Shadow: "503"}},
		},
		{
			name: "listed header compared case-insensitively",
			spec: Spec{Headers: []string{"content-type", "X-Version"}},
			p:    &Capture{Status: 200, Headers: hdr("Content-Type", "application/json", "x-version", "1")},
			s:    &Capture{Status: 200, Headers: hdr("CONTENT-TYPE", "text/html", "X-VERSION", "1")},
			want: Mismatch, wantBody: BodyBytes,
			wantDiffs: []Difference{{Path: "header/Content-Type", Kind: Changed, Primary: `"application/json"`, Shadow: `"text/html"`}},
		},
		{
			name: "header added and removed; repeated values joined",
			spec: Spec{Headers: []string{"Vary", "X-Old", "X-New"}},
			p:    &Capture{Status: 200, Headers: hdr("Vary", "Accept", "Vary", "Origin", "X-Old", "1")},
			s:    &Capture{Status: 200, Headers: hdr("Vary", "Accept, Origin", "X-New", "2")},
			want: Mismatch, wantBody: BodyBytes,
			wantDiffs: []Difference{
				{Path: "header/X-Old", Kind: Removed, Primary: `"1"`},
				{Path: "header/X-New", Kind: Added, Shadow: `"2"`},
			},
		},
		{
			name: "unlisted headers are not compared",
			p:    &Capture{Status: 200, Headers: hdr("X-A", "1")},
			s:    &Capture{Status: 200, Headers: hdr("X-A", "2")},
			want: Match, wantBody: BodyBytes,
		},
		{
			name: "star skips volatile headers, explicit volatile name wins",
			spec: Spec{Headers: []string{"*", "Date"}},
			p:    &Capture{Status: 200, Headers: hdr("Date", "Mon", "Server", "a", "X-Request-Id", "1", "Cache-Control", "no-store")},
			s:    &Capture{Status: 200, Headers: hdr("Date", "Tue", "Server", "b", "X-Request-Id", "2", "Cache-Control", "max-age=60")},
			want: Mismatch, wantBody: BodyBytes,
			wantDiffs: []Difference{
				{Path: "header/Date", Kind: Changed, Primary: `"Mon"`, Shadow: `"Tue"`},
				{Path: "header/Cache-Control", Kind: Changed, Primary: `"no-store"`, Shadow: `"max-age=60"`},
			},
		},
		{
			name: "secret header values are redacted",
			spec: Spec{Headers: []string{"Set-Cookie"}},
			p:    &Capture{Status: 200, Headers: hdr("Set-Cookie", "sid=1")},
			s:    &Capture{Status: 200, Headers: hdr("Set-Cookie", "sid=2")},
			want: Mismatch, wantBody: BodyBytes,
			wantDiffs: []Difference{{Path: "header/Set-Cookie", Kind: Changed, Primary: redactedValue, Shadow: redactedValue}},
		},
		{
			name: "primary error is uncomparable",
			p:    &Capture{Err: errors.New("dial tcp: connection refused")},
			s:    jsonCap(200, `{}`),
			want: Uncomparable, wantBody: BodySkipped, wantNote: "primary upstream failed: dial tcp: connection refused",
		},
		{
			name: "truncated body is uncomparable when the rest matches",
			p:    &Capture{Status: 200, Body: []byte("abc"), Truncated: true},
			s:    &Capture{Status: 200, Body: []byte("abc")},
			want: Uncomparable, wantBody: BodySkipped, wantNote: "primary body exceeds max_body (1MiB); body not compared",
		},
		{
			name: "truncated body with a status difference is still a mismatch",
			p:    &Capture{Status: 200, Body: []byte("abc")},
			s:    &Capture{Status: 500, Body: []byte("abc"), Truncated: true},
			want: Mismatch, wantBody: BodySkipped, wantNote: "shadow body exceeds max_body",
			wantDiffs: []Difference{{Path: "status", Kind: Changed, Primary: "200", Shadow: "500"}},
		},
		{
			name: "body over max_body is not parsed",
			spec: Spec{MaxBody: 4},
			p:    jsonCap(200, `{"a":1}`), s: jsonCap(200, `{"a":2}`),
			want: Uncomparable, wantBody: BodySkipped, wantNote: "exceeds max_body (4B)",
		},
		{
			name: "json sniffed without content type",
			p:    &Capture{Status: 200, Body: []byte(`{"a":1,"b":2}`)},
			s:    &Capture{Status: 200, Body: []byte(` {"b":2, "a":1.0}`)},
			want: Match, wantBody: BodyJSON,
		},
		{
			name: "a +json type counts as JSON",
			p:    &Capture{Status: 200, ContentType: "application/problem+json; charset=utf-8", Body: []byte(`1`)},
			s:    &Capture{Status: 200, Headers: hdr("Content-Type", "application/problem+json"), Body: []byte(`1.0`)},
			want: Match, wantBody: BodyJSON,
		},
		{
			name: "scalar text bodies are not sniffed",
			p:    &Capture{Status: 200, ContentType: "text/plain", Body: []byte(`1`)},
			s:    &Capture{Status: 200, ContentType: "text/plain", Body: []byte(`1.0`)},
			want: Mismatch, wantBody: BodyBytes, wantNote: "bodies differ from byte 1",
			wantDiffs: []Difference{{Path: "body", Kind: Changed, Primary: `"1"`, Shadow: `"1.0"`}},
		},
		{
			name: "ignore ** covers the whole body, even as bytes",
			spec: Spec{Ignore: []string{"**"}},
			p:    &Capture{Status: 200, Body: []byte("a")},
			s:    &Capture{Status: 200, Body: []byte("b")},
			want: Match, wantBody: BodyBytes,
		},
		{
			name: "removed body",
			p:    &Capture{Status: 200, Body: []byte("hello")},
			s:    &Capture{Status: 200},
			want: Mismatch, wantBody: BodyBytes,
			wantDiffs: []Difference{{Path: "body", Kind: Removed, Primary: `"hello"`}},
		},
		{
			name: "configured redaction inside rendered values",
			spec: Spec{Redact: []string{"/user/*/ssn"}},
			p:    jsonCap(200, `{"user":{"ada":{"ssn":"1"}}}`),
			s:    jsonCap(200, `{"user":{}}`),
			want: Mismatch, wantBody: BodyJSON,
			wantDiffs: []Difference{{Path: "/user/ada", Kind: Removed, Primary: `{"ssn":"[REDACTED]"}`}},
		},
		{
			name: "redaction is case-insensitive and applies in arrays",
			p:    jsonCap(200, `[{"Password":"a","n":1}]`),
			s:    jsonCap(200, `[]`),
			want: Mismatch, wantBody: BodyJSON,
			wantDiffs: []Difference{{Path: "/0", Kind: Removed, Primary: `{"Password":"[REDACTED]","n":1}`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(tt.p, tt.s, mustRules(t, tt.spec))
			if got.Outcome != tt.want {
				t.Errorf("outcome = %v, want %v (%+v)", got.Outcome, tt.want, got)
			}
			if !reflect.DeepEqual(got.Differences, tt.wantDiffs) {
				t.Errorf("differences:\n got %+v\nwant %+v", got.Differences, tt.wantDiffs)
			}
			if got.Body != tt.wantBody {
				t.Errorf("body mode = %v, want %v", got.Body, tt.wantBody)
			}
			if !strings.Contains(got.Note, tt.wantNote) || (tt.wantNote == "" && got.Note != "") {
				t.Errorf("note = %q, want it to contain %q", got.Note, tt.wantNote)
			}
		})
	}
}

func TestCompareNilRulesAndCaptures(t *testing.T) {
	if r := Compare(jsonCap(200, `{"a":1}`), jsonCap(200, `{"a":1.0}`), nil); r.Outcome != Match {
		t.Errorf("nil rules: %+v", r)
	}
	if r := Compare(nil, jsonCap(200, `{}`), nil); r.Outcome != Uncomparable {
		t.Errorf("nil capture: %+v", r)
	}
}

func TestNumbersEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1.0", true},
		{"1", "1.000", true},
		{"100", "1e2", true},
		{"100", "1E+2", true},
		{"0.01", "1e-2", true},
		{"0.1e1", "1", true},
		{"10e-1", "1", true},
		{"0", "-0", true},
		{"0", "0.0e10", true},
		{"-0.0", "0e-5", true},
		{"1", "-1", false},
		{"1", "10", false},
		{"1.5", "15e-1", true},
		{"1.5", "1.50001", false},
		{"12345678901234567890", "12345678901234567891", false},
		{"12345678901234567890", "1.234567890123456789e19", true},
		{"1e400", "10e399", true},
		{"1e400", "1e401", false},
		{"0.000", "0", true},
		{"120", "12", false},
		{"0.12", "0.012", false},
	}
	for _, tt := range tests {
		if got := numbersEqual([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("numbersEqual(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := numbersEqual([]byte(tt.b), []byte(tt.a)); got != tt.want {
			t.Errorf("numbersEqual(%s, %s) = %v, want %v (reversed)", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestParserAgreesWithEncodingJSON pins the parser's notion of valid JSON to
// encoding/json's on tricky inputs.
func TestParserAgreesWithEncodingJSON(t *testing.T) {
	inputs := []string{
		``, ` `, `{}`, `[]`, `null`, `true`, `false`, `nul`, `tru`, `0`, `-0`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `1E-7`,
		`"a"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\x"`, "\"\x01\"", `"abc`, `{"a":}`, `{"a" 1}`, `{"a":1,}`, `[1,]`,
		`[1 2]`, `{"a":1}x`, `{1:2}`, ` [ 1 , { "b" : [ ] } ] `, `"\/"`, `"\u12"`, `{"a":1}{}`, "\"\xff\"", `[[[[]]]]`,
		strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
	}
	var d doc
	for _, in := range inputs {
		err := d.parse([]byte(in))
		if (err == nil) != json.Valid([]byte(in)) {
			t.Errorf("parse(%q) error = %v, json.Valid = %v", in, err, json.Valid([]byte(in)))
		}
	}
	deep := strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2)
	if err := d.parse([]byte(deep)); err == nil || !strings.Contains(err.Error(), "nesting deeper") {
		t.Errorf("deep nesting: %v", err)
	}
}

func TestMaxDifferences(t *testing.T) {
	var a, b strings.Builder
	a.WriteString("[")
	b.WriteString("[")
	for i := 0; i < MaxDifferences+50; i++ {
		if i > 0 {
			a.WriteString(",")
			b.WriteString(",")
		}
		fmt.Fprintf(&a, "%d", i)
		fmt.Fprintf(&b, "%d", i+1)
	}
	a.WriteString("]")
	b.WriteString("]")
	r := Compare(jsonCap(200, a.String()), jsonCap(200, b.String()), mustRules(t, Spec{}))
	if len(r.Differences) != MaxDifferences || r.Omitted != 50 {
		t.Errorf("got %d differences, %d omitted; want %d and 50", len(r.Differences), r.Omitted, MaxDifferences)
	}
}

func TestValueRenderingIsBounded(t *testing.T) {
	big := `{"a":[` + strings.Repeat(`"ééééééééé",`, 200) + `"x"]}`
	r := Compare(jsonCap(200, big), jsonCap(200, `{}`), mustRules(t, Spec{}))
	if len(r.Differences) != 1 {
		t.Fatalf("%+v", r)
	}
	v := r.Differences[0].Primary
	if len(v) > MaxValueLen+len("…") || !strings.HasSuffix(v, "…") {
		t.Errorf("rendering not cut: %d bytes, %q", len(v), v)
	}
	if !strings.HasPrefix(v, `["ééé`) {
		t.Errorf("rendering %q", v)
	}
	for _, r := range v {
		if r == '\uFFFD' {
			t.Fatalf("cut inside a rune: %q", v)
		}
	}
}

func TestUnorderedBudget(t *testing.T) {
	// Many objects that differ only in numbers share one hash bucket under
	// a tolerance (arrays of bare numbers are paired by sorting instead);
	// the budget keeps the matching bounded and the result says so.
	var a, b strings.Builder
	a.WriteString("[")
	b.WriteString("[")
	for i := 0; i < 3000; i++ {
		if i > 0 {
			a.WriteString(",")
			b.WriteString(",")
		}
		fmt.Fprintf(&a, `{"v":%d}`, i)
		fmt.Fprintf(&b, `{"v":%d}`, 10000+i)
	}
	a.WriteString("]")
	b.WriteString("]")
	r := Compare(jsonCap(200, a.String()), jsonCap(200, b.String()), mustRules(t, Spec{ArrayOrder: "ignore", FloatTolerance: 0.5}))
	if r.Outcome != Mismatch || !strings.Contains(r.Note, "work limit") {
		t.Errorf("outcome %v note %q", r.Outcome, r.Note)
	}
}

func TestUnorderedToleranceAndDuplicates(t *testing.T) {
	rules := mustRules(t, Spec{ArrayOrder: "ignore", FloatTolerance: 0.01})
	tests := []struct {
		a, b string
		want Outcome
	}{
		{`[1.001, 2, 3]`, `[3.005, 1, 2]`, Match},
		{`[1, 1, 2]`, `[1, 2, 2]`, Mismatch},
		{`[[1, 2], [3]]`, `[[3], [2, 1.001]]`, Match},
		{`[{"a": [1, 2]}]`, `[{"a": [2, 1]}]`, Match},
		{`[]`, `[null]`, Mismatch},
	}
	for _, tt := range tests {
		if got := Compare(jsonCap(200, tt.a), jsonCap(200, tt.b), rules); got.Outcome != tt.want {
			t.Errorf("%s vs %s: %v %+v, want %v", tt.a, tt.b, got.Outcome, got.Differences, tt.want)
		}
	}
}

func TestCompareConcurrent(t *testing.T) {
	rules := mustRules(t, Spec{ArrayOrder: "ignore", Ignore: []string{"**/id"}})
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func(g int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				a := fmt.Sprintf(`{"items":[{"id":%d,"v":%d},{"id":0,"v":%d}]}`, i, g, i)
				b := fmt.Sprintf(`{"items":[{"id":1,"v":%d},{"id":%d,"v":%d}]}`, i, g, g)
				if r := Compare(jsonCap(200, a), jsonCap(200, b), rules); r.Outcome != Match {
					t.Errorf("goroutine %d iteration %d: %+v", g, i, r)
					return
				}
			}
		}(g)
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}

func TestLargeObjectsKeyOrderAndDuplicates(t *testing.T) {
	var a, b strings.Builder
	a.WriteString("{")
	for i := 0; i < 100; i++ {
		if i > 0 {
			a.WriteString(",")
		}
		fmt.Fprintf(&a, `"k%02d":%d`, i, i)
	}
	a.WriteString(`,"esc\u0061ped":1}`)
	// The shadow lists the keys in a scrambled order, repeats k50 (the last
	// value wins, as in encoding/json) and changes k77.
	b.WriteString(`{"k50":-1,"escaped":1`)
	for i := 0; i < 100; i++ {
		j := (i * 37) % 100
		v := j
		if j == 77 {
			v = 78
		}
		fmt.Fprintf(&b, `,"k%02d":%d`, j, v)
	}
	b.WriteString("}")
	r := Compare(jsonCap(200, a.String()), jsonCap(200, b.String()), mustRules(t, Spec{}))
	want := []Difference{{Path: "/k77", Kind: Changed, Primary: "77", Shadow: "78"}}
	if !reflect.DeepEqual(r.Differences, want) {
		t.Errorf("got %+v %s", r.Differences, r.Note)
	}
}

func TestUnorderedWithIgnores(t *testing.T) {
	tests := []struct {
		ignore []string
		a, b   string
		want   Outcome
	}{
		// Ignoring every element makes lengths irrelevant.
		{[]string{"/tags/*"}, `{"tags":[1,2,3]}`, `{"tags":[4]}`, Match},
		// Ignored members do not prevent matching elements, at any depth.
		{[]string{"**/ts"}, `[{"a":1,"ts":1},{"a":2,"ts":2}]`, `[{"a":2,"ts":9},{"ts":8,"a":1}]`, Match},
		{[]string{"**/ts"}, `[{"a":1,"ts":1}]`, `[{"a":1}]`, Match},
		{[]string{"**/ts"}, `[[{"a":1,"ts":1}],[{"b":1}]]`, `[[{"b":1}],[{"ts":5,"a":1}]]`, Match},
		{[]string{"**/ts"}, `[{"a":1,"ts":1}]`, `[{"a":2,"ts":1}]`, Mismatch},
		// A type change under an ignored path is ignored too.
		{[]string{"/x/*/v"}, `{"x":[{"v":[1]},{"v":1}]}`, `{"x":[{"v":"s"},{"v":{}}]}`, Match},
	}
	for _, tt := range tests {
		rules := mustRules(t, Spec{ArrayOrder: ArrayOrderIgnore, Ignore: tt.ignore})
		if got := Compare(jsonCap(200, tt.a), jsonCap(200, tt.b), rules); got.Outcome != tt.want {
			t.Errorf("ignore %v: %s vs %s = %v %+v, want %v", tt.ignore, tt.a, tt.b, got.Outcome, got.Differences, tt.want)
		}
	}
}
