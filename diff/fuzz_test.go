package diff

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/wI2L/jsondiff"
)

// oracleDiffers asks github.com/wI2L/jsondiff, an independent implementation,
// whether two valid documents differ. It decodes numbers as float64 and
// replaces invalid UTF-8, so where it sees a difference this package must see
// one too (the reverse does not hold: 2^53+1 and 2^53 are equal floats).
// It cannot decode numbers beyond float64's range (1e400); ok is false then.
func oracleDiffers(a, b []byte) (differs, ok bool) {
	patch, err := jsondiff.CompareJSON(a, b)
	if err != nil {
		return false, false
	}
	return len(patch) > 0, true
}

// FuzzCompare checks that Compare never panics, that a body always matches
// itself (also with unordered arrays and a tolerance), that the verdict is
// symmetric, that the parser agrees with encoding/json on validity, and that
// whatever jsondiff calls different is a mismatch here too.
func FuzzCompare(f *testing.F) {
	seeds := [][2]string{
		{`{"a":1}`, `{"a":1.0}`},
		{`{"a":[1,2,3]}`, `{"a":[3,2,1]}`},
		{`{"a":null}`, `{}`},
		{`[{"id":1,"x":"é"},{"id":2}]`, `[{"id":2},{"id":1,"x":"\u00e9"}]`},
		{`{"a":{"b":{"c":[true,false,null]}}}`, `{"a":{"b":{"c":[true,false]}}}`},
		{`"\ud83d\ude00"`, `"😀"`},
		{`12345678901234567890`, `12345678901234567891`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`{"a":1,}`, `{"a":1}`},
		{``, `{}`},
		{`[[],[[]],{}]`, `[{},[[]],[]]`},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	// The golden pairs are good seeds too.
	if as, err := filepath.Glob(filepath.Join("testdata", "golden", "*.a.json")); err == nil {
		for _, a := range as {
			b := a[:len(a)-len(".a.json")] + ".b.json"
			ra, errA := os.ReadFile(a)
			rb, errB := os.ReadFile(b)
			if errA == nil && errB == nil {
				f.Add(ra, rb)
			}
		}
	}
	strict, err := CompileRules(Spec{})
	if err != nil {
		f.Fatal(err)
	}
	loose, err := CompileRules(Spec{ArrayOrder: ArrayOrderIgnore, FloatTolerance: 0.5, Ignore: []string{"**/id"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ca := &Capture{Status: 200, ContentType: "application/json", Body: a}
		cb := &Capture{Status: 200, ContentType: "application/json", Body: b}
		for _, rules := range []*Rules{strict, loose} {
			if r := Compare(ca, &Capture{Status: 200, ContentType: "application/json", Body: append([]byte(nil), a...)}, rules); r.Outcome != Match {
				t.Fatalf("a body does not match itself: %q: %+v", a, r)
			}
			ab := Compare(ca, cb, rules)
			ba := Compare(cb, ca, rules)
			if rules == strict && ab.Outcome != ba.Outcome {
				t.Fatalf("asymmetric verdict for %q / %q: %v vs %v", a, b, ab.Outcome, ba.Outcome)
			}
			for _, d := range ab.Differences {
				if d.Path == "" || d.Kind < Changed || d.Kind > TypeChanged {
					t.Fatalf("malformed difference %+v", d)
				}
				if len(d.Primary) > MaxValueLen+len("…") || len(d.Shadow) > MaxValueLen+len("…") {
					t.Fatalf("value not bounded: %d/%d bytes", len(d.Primary), len(d.Shadow))
				}
			}
		}

		var d doc
		va, vb := d.parse(a) == nil, d.parse(b) == nil
		if va != json.Valid(a) || vb != json.Valid(b) {
			// The only sanctioned disagreement is the nesting limit.
			if json.Valid(a) && va == false && depthOf(a) <= maxDepth || json.Valid(b) && vb == false && depthOf(b) <= maxDepth || !json.Valid(a) && va || !json.Valid(b) && vb {
				t.Fatalf("validity differs from encoding/json: %q (%v) / %q (%v)", a, va, b, vb)
			}
		}
		if differs, ok := oracleDiffers(a, b); va && vb && ok && differs {
			if r := Compare(ca, cb, strict); r.Outcome != Mismatch {
				t.Fatalf("jsondiff sees a difference between %q and %q, Compare says %v", a, b, r.Outcome)
			}
		}
	})
}

// depthOf is a rough nesting depth (brackets outside strings).
func depthOf(b []byte) int {
	depth, maxD, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '[' || c == '{':
			depth++
			maxD = max(maxD, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return maxD
}
