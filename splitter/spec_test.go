package splitter

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// docYAML is the example of the package comment; it must decode, validate
// and compile.
const docYAML = `
split:
  key: header:X-User-ID
  salt: api-v2
  to: canary
  percent: 5
  on_missing: stable
  force_header: X-Shadowproxy-Upstream
  response_header: X-Shadowproxy-Upstream
  cohorts:
    - name: internal
      when: {header: {X-Internal: "true"}}
      to: canary
    - name: beta
      when: {header_in: {X-Plan: [beta, staff]}, query_regex: {v: "^2\\."}}
    - name: synthetic
      when: {key_in: [smoke-test-1, smoke-test-2, 12345]}
`

func TestSpecFromYAML(t *testing.T) {
	var doc struct {
		Split Spec `yaml:"split"`
	}
	dec := yaml.NewDecoder(strings.NewReader(docYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	sp := doc.Split
	if errs := sp.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	if sp.Percent.BP() != 500 || sp.Cohorts[1].When.QueryRegex["v"] != `^2\.` || sp.Cohorts[2].When.KeyIn[2] != "12345" {
		t.Errorf("decoded %+v", sp)
	}
	s, err := Compile(sp, "api", "stable", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.ResponseHeader() != "X-Shadowproxy-Upstream" || s.ForceHeader() != "X-Shadowproxy-Upstream" || s.Route() != "api" || s.Key().String() != "header:X-User-ID" {
		t.Errorf("accessors: %q %q %q %q", s.ResponseHeader(), s.ForceHeader(), s.Route(), s.Key())
	}
	if d := s.Decide(newReq("/?v=2.3", "X-Plan", "beta"), testPeer); d.Cohort != 1 || s.Target(d) != "canary" {
		t.Errorf("beta cohort: %+v", d)
	}
	if d := s.Decide(newReq("/", "X-User-ID", "12345"), testPeer); d.Cohort != 2 {
		t.Errorf("numeric key_in: %+v", d)
	}
}

func TestValidate(t *testing.T) {
	good := func(mod func(*Spec)) Spec {
		s := Spec{Key: "header:X-User-ID", To: "canary", Percent: 500}
		mod(&s)
		return s
	}
	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{"valid", good(func(*Spec) {}), nil},
		{"missing key and to", Spec{}, []string{
			"key: required: say which request field identifies a user, e.g. header:X-User-ID, cookie:session, query:uid or ip",
			"to: required: name the canary upstream that receives the split's percentage",
		}},
		{"bad key", good(func(s *Spec) { s.Key = "header:Cookie" }), []string{
			`key: invalid key "header:Cookie": the Cookie header holds every cookie; use cookie:NAME to key on one of them`,
		}},
		{"percent over 100", good(func(s *Spec) { s.Percent = 10001 }), []string{"percent: 100.01% is more than 100"}},
		{"on_missing", good(func(s *Spec) { s.OnMissing = "canary" }), []string{
			`on_missing: unknown value "canary": want "stable" (keyless requests go to the stable upstream, the default) or "random" (sampled per request at the same percentage)`,
		}},
		{"header names", good(func(s *Spec) { s.ForceHeader = "X Force"; s.ResponseHeader = "X:Up" }), []string{
			"force_header: invalid header name \"X Force\": want a header name (letters, digits and !#$%&'*+-.^_`|~), such as X-User-ID",
			"response_header: invalid header name \"X:Up\": want letters, digits and !#$%&'*+-.^_`|~, such as X-Shadowproxy-Upstream",
		}},
		{"cohort names", good(func(s *Spec) {
			w := Conditions{KeyIn: []string{"a"}}
			s.Cohorts = []CohortSpec{{When: w}, {Name: "a b", When: w}, {Name: "x", When: w}, {Name: "x", When: w}}
		}), []string{
			"cohorts[0].name: required: name the cohort (it labels metrics), e.g. internal or beta",
			`cohorts[1].name: invalid cohort name "a b": use up to 64 letters, digits, '_' and '-'`,
			`cohorts[3].name: duplicate cohort name "x" (also cohorts[2]); names must be unique within a route`,
		}},
		{"empty when", good(func(s *Spec) { s.Cohorts = []CohortSpec{{Name: "c"}} }), []string{
			"cohorts[0].when: empty: a cohort needs at least one condition (header, header_in, header_regex, cookie, cookie_in, cookie_regex, query, query_in, query_regex or key_in); without one it would match every request",
		}},
		{"conditions, all errors, sorted", good(func(s *Spec) {
			s.Cohorts = []CohortSpec{{Name: "ok", When: Conditions{Header: map[string]string{"X-A": "1"}}}, {Name: "c", When: Conditions{
				Header:      map[string]string{"X Bad": "1", "X-Empty": ""},
				HeaderIn:    map[string][]string{"X-Plan": {}, "X-Tier": {"gold", ""}},
				HeaderRegex: map[string]string{"X-Re": "("},
				Cookie:      map[string]string{"bad;name": "1"},
				QueryRegex:  map[string]string{"v": "^2\\.", "w": "[z-a]"},
				QueryIn:     map[string][]string{"ctl\x01": {"x"}},
				KeyIn:       []string{"k", ""},
			}}}
		}), []string{
			"cohorts[1].when.header.X Bad: invalid header name \"X Bad\": want a header name (letters, digits and !#$%&'*+-.^_`|~), such as X-User-ID",
			"cohorts[1].when.header.X-Empty: empty value never matches (an absent or empty field fails every condition); give the value to match",
			"cohorts[1].when.header_in.X-Plan: empty list: give at least one value, or remove the condition",
			"cohorts[1].when.header_in.X-Tier[1]: empty value never matches (an absent or empty field fails every condition); remove it",
			"cohorts[1].when.header_regex.X-Re: invalid regex \"(\": missing closing ): `(`",
			"cohorts[1].when.cookie.bad;name: invalid cookie name \"bad;name\": want letters, digits and !#$%&'*+-.^_`|~",
			"cohorts[1].when.query_in.ctl\x01: query parameter name \"ctl\\x01\" contains a control character; write the decoded name",
			"cohorts[1].when.query_regex.w: invalid regex \"[z-a]\": invalid character class range: `z-a`",
			"cohorts[1].when.key_in[1]: empty key: a request without a key never matches, so list real keys only",
		}},
		{"empty key_in", good(func(s *Spec) { s.Cohorts = []CohortSpec{{Name: "c", When: Conditions{KeyIn: []string{}}}} }), []string{
			"cohorts[0].when: empty: a cohort needs at least one condition (header, header_in, header_regex, cookie, cookie_in, cookie_regex, query, query_in, query_regex or key_in); without one it would match every request",
		}},
		{"too many cohorts", good(func(s *Spec) {
			for range MaxCohorts + 1 {
				s.Cohorts = append(s.Cohorts, CohortSpec{Name: fmt.Sprintf("c%d", len(s.Cohorts)), When: Conditions{KeyIn: []string{"a"}}})
			}
		}), []string{"cohorts: 65 cohorts; at most 64 are allowed (they are checked in order on every request): merge rules with header_in or key_in"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.spec.Validate()
			var got []string
			for _, err := range errs {
				var fe *cfgtypes.FieldError
				if !errors.As(err, &fe) {
					t.Errorf("%v is a %T, want *cfgtypes.FieldError", err, err)
				}
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func TestValidatePrefixedByConfig(t *testing.T) {
	// The config package prefixes the route's path; the result must read as
	// the brief's example.
	s := Spec{Key: "ip", To: "c", Cohorts: []CohortSpec{
		{Name: "a", When: Conditions{KeyIn: []string{"x"}}},
		{Name: "b", When: Conditions{QueryRegex: map[string]string{"v": "("}}},
	}}
	errs := cfgtypes.Prefix("routes[0].split", s.Validate())
	if len(errs) != 1 || errs[0].Error() != "routes[0].split.cohorts[1].when.query_regex.v: invalid regex \"(\": missing closing ): `(`" {
		t.Errorf("got %v", errs)
	}
}

func TestUpstreamRefs(t *testing.T) {
	s := Spec{To: "canary", Cohorts: []CohortSpec{{Name: "a", To: "blue"}, {Name: "b"}, {Name: "c", To: "stabel"}}}
	want := []UpstreamRef{{"to", "canary"}, {"cohorts[0].to", "blue"}, {"cohorts[2].to", "stabel"}}
	if got := s.UpstreamRefs(); !slices.Equal(got, want) {
		t.Errorf("UpstreamRefs() = %v, want %v", got, want)
	}
	if got := (&Spec{}).UpstreamRefs(); len(got) != 0 {
		t.Errorf("empty spec refs %v", got)
	}
}
