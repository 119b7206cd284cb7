package diff

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.want from the current output")

// TestGolden compares every pair testdata/golden/NAME.a.EXT / NAME.b.EXT under
// the rules in NAME.rules.yaml (a compare: section; absent means defaults)
// and checks FormatText's output against NAME.want. EXT .json sends
// Content-Type application/json, anything else text/plain.
func TestGolden(t *testing.T) {
	as, err := filepath.Glob(filepath.Join("testdata", "golden", "*.a.*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(as) < 10 {
		t.Fatalf("found only %d golden pairs", len(as))
	}
	for _, aPath := range as {
		base := filepath.Base(aPath)
		name := base[:strings.Index(base, ".a.")]
		ext := filepath.Ext(aPath)
		t.Run(name, func(t *testing.T) {
			dir := filepath.Dir(aPath)
			bPath := filepath.Join(dir, name+".b"+ext)
			a := readFile(t, aPath)
			b := readFile(t, bPath)
			var spec Spec
			if raw, err := os.ReadFile(filepath.Join(dir, name+".rules.yaml")); err == nil {
				if err := yaml.Unmarshal(raw, &spec); err != nil {
					t.Fatalf("rules: %v", err)
				}
			}
			rules, err := CompileRules(spec)
			if err != nil {
				t.Fatal(err)
			}
			ct := "text/plain"
			if ext == ".json" {
				ct = "application/json"
			}
			res := Compare(&Capture{Status: 200, ContentType: ct, Body: a}, &Capture{Status: 200, ContentType: ct, Body: b}, rules)
			var out bytes.Buffer
			if err := FormatText(&out, res); err != nil {
				t.Fatal(err)
			}
			wantPath := filepath.Join(dir, name+".want")
			if *update {
				if err := os.WriteFile(wantPath, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := readFile(t, wantPath)
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (run go test ./diff/ -run TestGolden -update to accept)\n--- got\n%s--- want\n%s", wantPath, out.Bytes(), want)
			}
			// Every pair also compares equal to itself, and the verdict is
			// symmetric.
			if self := Compare(&Capture{Status: 200, ContentType: ct, Body: a}, &Capture{Status: 200, ContentType: ct, Body: a}, rules); self.Outcome != Match {
				t.Errorf("a vs a: %v %v", self.Outcome, self.Differences)
			}
			rev := Compare(&Capture{Status: 200, ContentType: ct, Body: b}, &Capture{Status: 200, ContentType: ct, Body: a}, rules)
			if rev.Outcome != res.Outcome {
				t.Errorf("b vs a is %v, a vs b is %v", rev.Outcome, res.Outcome)
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
