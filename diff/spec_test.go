package diff

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"gopkg.in/yaml.v3"
)

func TestSpecYAML(t *testing.T) {
	const src = `
secondary: stable-twin
ignore: ["/timestamp", "/items/*/id", "**/requestId"]
headers: [Content-Type]
array_order: ignore
float_tolerance: 0.001
mask: ["[0-9a-f-]{36}"]
max_body: 2MiB
samples: 50
max_fields: 100
redact: ["**/ssn"]
noise: {min_observations: 30, threshold: 10%, max_paths: 50}
`
	var s Spec
	if err := yaml.Unmarshal([]byte(src), &s); err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Secondary:      "stable-twin",
		Ignore:         []string{"/timestamp", "/items/*/id", "**/requestId"},
		Headers:        []string{"Content-Type"},
		ArrayOrder:     "ignore",
		FloatTolerance: 0.001,
		Mask:           []string{"[0-9a-f-]{36}"},
		MaxBody:        2 << 20,
		Samples:        50,
		MaxFields:      100,
		Redact:         []string{"**/ssn"},
		Noise:          NoiseSpec{MinObservations: 30, Threshold: 0.1, MaxPaths: 50},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatalf("valid spec: %v", errs)
	}
	r, err := CompileRules(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxBody() != 2<<20 || r.Secondary() != "stable-twin" || !reflect.DeepEqual(r.HeaderNames(), []string{"Content-Type"}) || r.AllHeaders() {
		t.Errorf("rules accessors: %d %q %v %v", r.MaxBody(), r.Secondary(), r.HeaderNames(), r.AllHeaders())
	}
	if refs := s.UpstreamRefs(); !reflect.DeepEqual(refs, []UpstreamRef{{Path: "secondary", Name: "stable-twin"}}) {
		t.Errorf("UpstreamRefs = %v", refs)
	}
}

func TestApplyDefaults(t *testing.T) {
	var s Spec
	s.ApplyDefaults()
	want := Spec{
		ArrayOrder:   "strict",
		MaxBody:      1 << 20,
		Samples:      100,
		MaxFields:    200,
		Noise:        NoiseSpec{MinObservations: 100, Threshold: 0.05, Relative: 0.2, Window: 1000, MaxPaths: 200},
		MaxEndpoints: 50,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("defaults: got %+v\nwant %+v", s, want)
	}
	if len(s.Validate()) != 0 {
		t.Errorf("defaults do not validate: %v", s.Validate())
	}
	if (&Spec{}).UpstreamRefs() != nil {
		t.Error("no secondary should mean no refs")
	}
}

func TestValidateCollectsEveryError(t *testing.T) {
	s := Spec{
		Ignore:         []string{"/ok", "**/fine", "bad", "/a*"},
		Headers:        []string{"Content-Type", "bad header", "content-type", "*"},
		ArrayOrder:     "sorted",
		FloatTolerance: math.Inf(1),
		Mask:           []string{"(", ""},
		MaxBody:        cfgtypes.Size(1 << 40),
		Samples:        -1,
		MaxFields:      maxMaxFields + 1,
		Redact:         []string{"password"},
		Noise:          NoiseSpec{MinObservations: -1, Threshold: 1.5, MaxPaths: -3},
	}
	errs := s.Validate()
	want := map[string]string{
		"ignore[2]":              `invalid pattern: pattern "bad" must start with "/"`,
		"ignore[3]":              "wildcards match whole segments only",
		"headers[1]":             `invalid header name "bad header"`,
		"headers[2]":             "already listed at headers[0]",
		"array_order":            `invalid value "sorted": want "strict" or "ignore"`,
		"float_tolerance":        "want a finite number >= 0",
		"mask[0]":                "invalid regular expression",
		"mask[1]":                "empty regular expression",
		"max_body":               "want at most 256MiB",
		"samples":                "invalid count -1",
		"max_fields":             "invalid count 10001",
		"redact[0]":              "invalid pattern",
		"noise.min_observations": "invalid count -1",
		"noise.threshold":        "invalid rate 1.5",
		"noise.max_paths":        "invalid count -3",
	}
	got := map[string]string{}
	for _, err := range errs {
		var fe *cfgtypes.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("error %v is not a *cfgtypes.FieldError", err)
		}
		if _, dup := got[fe.Path]; dup {
			t.Errorf("two errors for %s", fe.Path)
		}
		got[fe.Path] = fe.Msg
	}
	for path, frag := range want {
		if msg, ok := got[path]; !ok {
			t.Errorf("no error for %s", path)
		} else if !strings.Contains(msg, frag) {
			t.Errorf("%s: %q does not contain %q", path, msg, frag)
		}
	}
	for path, msg := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected error %s: %s", path, msg)
		}
	}
	// Prefixing by the config loader gives full paths.
	full := cfgtypes.Prefix("routes[1].compare", errs)
	if !strings.HasPrefix(full[0].Error(), "routes[1].compare.ignore[2]: invalid pattern") {
		t.Errorf("prefixed: %v", full[0])
	}
	if _, err := CompileRules(s); err == nil || !strings.Contains(err.Error(), "array_order") {
		t.Errorf("CompileRules should fail with every problem, got %v", err)
	}
}
