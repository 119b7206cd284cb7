package rollout

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// briefPolicy is the policy of the design brief, verbatim apart from the
// state file.
const briefPolicy = `
mode: auto
interval: 10s
min_samples: 1000
alpha: 0.05
state_file: /var/lib/shadowproxy/rollout-api.json
steps:
  - {percent: 1,  hold: 30m}
  - {percent: 10, hold: 2h}
  - {percent: 50, hold: 4h}
  - {percent: 100}
promote_when:
  - {metric: error_rate_5xx, below: 0.5%, window: 15m}
  - {metric: latency_p95, below: 500ms, window: 15m}
  - {metric: match_rate, above: 99%, window: 15m}
rollback_when:
  - {metric: error_rate_5xx, above_baseline: 2x, for: 5m}
  - {metric: latency_p99, above_baseline: 3x, for: 5m}
  - {metric: upstream_errors, above: 0, for: 2m}
  - {metric: health_check_failures, consecutive: 3}
health_check: {path: /healthz, interval: 5s, timeout: 2s, expect_status: 200}
notify: [http://127.0.0.1:9999/hook]
external_metrics: [conversion_rate, crash_rate]
`

func TestBriefPolicyParsesAndValidates(t *testing.T) {
	s := parseSpec(t, briefPolicy)
	s.ApplyDefaults()
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", errs)
	}
	if w := s.Warnings(); len(w) != 0 {
		t.Fatalf("Warnings: %v", w)
	}
	if s.Steps[1].Percent.BP() != 1000 || s.Steps[2].Hold.D() != 4*time.Hour {
		t.Fatalf("steps = %+v", s.Steps)
	}
	if got := s.PromoteWhen[0].Below.Value(); got != 0.005 {
		t.Fatalf("0.5%% parsed as %g", got)
	}
	if got := s.PromoteWhen[1].Below.Value(); got != 0.5 {
		t.Fatalf("500ms parsed as %g s", got)
	}
	if got := float64(*s.RollbackWhen[0].AboveBaseline); got != 2 {
		t.Fatalf("2x parsed as %g", got)
	}
	if s.ExternalMetrics[1].Name != "crash_rate" || s.ExternalMetrics[1].Unit != UnitNumber {
		t.Fatalf("external = %+v", s.ExternalMetrics)
	}
	if s.LongestWindow() != 15*time.Minute {
		t.Fatalf("LongestWindow = %s", s.LongestWindow())
	}
	// Round trip: marshalled and parsed again, the spec is the same.
	out, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	again := parseSpec(t, string(out))
	if !reflect.DeepEqual(again, s) {
		t.Fatalf("round trip changed the spec:\n%s", out)
	}
}

func TestDefaults(t *testing.T) {
	var s Spec
	s.HealthCheck = &HealthCheck{}
	s.ApplyDefaults()
	if s.Mode != ModeAuto || s.Interval.D() != 10*time.Second || s.Window.D() != 5*time.Minute ||
		s.MinSamples != 1000 || s.Alpha != 0.05 {
		t.Fatalf("defaults = %+v", s)
	}
	if !reflect.DeepEqual(s.Steps, DefaultSteps()) || !reflect.DeepEqual(s.RollbackWhen, DefaultRollbackWhen()) {
		t.Fatalf("steps %+v rollback %+v", s.Steps, s.RollbackWhen)
	}
	if *s.HealthCheck != (HealthCheck{Path: "/healthz", Interval: cfgtypes.Duration(5 * time.Second), Timeout: cfgtypes.Duration(2 * time.Second), ExpectStatus: 200}) {
		t.Fatalf("health check = %+v", *s.HealthCheck)
	}
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	before := s
	s.ApplyDefaults()
	if !reflect.DeepEqual(before, s) {
		t.Fatal("ApplyDefaults is not idempotent")
	}
	// An explicit empty rollback_when means none (and is warned about).
	none := parseSpec(t, "rollback_when: []\n")
	none.ApplyDefaults()
	if none.RollbackWhen == nil || len(none.RollbackWhen) != 0 {
		t.Fatalf("rollback_when: [] became %+v", none.RollbackWhen)
	}
	if w := strings.Join(none.Warnings(), "\n"); !strings.Contains(w, "rollback_when is empty") {
		t.Fatalf("warnings: %s", w)
	}
}

// Omitted and explicitly empty condition lists mean different things
// (defaults or inherit, versus none); marshalling keeps them apart.
func TestEmptyListsSurviveRoundTrip(t *testing.T) {
	for _, y := range []string{
		"rollback_when: []\n",
		"steps:\n  - {percent: 10, hold: 1h, rollback_when: [], promote_when: []}\n  - {percent: 100}\n",
		"steps:\n  - {percent: 10, hold: 1h}\n  - {percent: 100}\n",
		"mode: manual\n",
	} {
		s := parseSpec(t, y)
		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		again := parseSpec(t, string(out))
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("%q became %q", y, out)
		}
	}
}

func TestStrictDecoding(t *testing.T) {
	cases := map[string]string{
		"unknown top-level field":     "mode: auto\nintervall: 10s\n",
		"unknown condition field":     "promote_when:\n  - {metric: error_rate_5xx, bellow: 1%}\n",
		"unknown step field":          "steps:\n  - {percent: 1, hodl: 30m}\n",
		"unknown external field":      "external_metrics:\n  - {name: crash_rate, querry: x}\n",
		"bad duration":                "interval: 10 seconds\n",
		"bad percent":                 "steps:\n  - {percent: 150}\n",
		"bad threshold":               "promote_when:\n  - {metric: error_rate_5xx, below: lots}\n",
		"negative threshold":          "promote_when:\n  - {metric: error_rate_5xx, below: -1}\n",
		"bad multiplier":              "rollback_when:\n  - {metric: error_rate_5xx, above_baseline: twice}\n",
		"external metric not scalar":  "external_metrics:\n  - [a, b]\n",
		"threshold not scalar":        "promote_when:\n  - {metric: error_rate_5xx, below: [1]}\n",
		"percent with three decimals": "steps:\n  - {percent: 1.005}\n",
	}
	for name, y := range cases {
		if _, err := ParseSpec([]byte(y)); err == nil {
			t.Errorf("%s: accepted %q", name, y)
		}
	}
	_, err := ParseSpec([]byte("external_metrics:\n  - {name: crash_rate, querry: x}\n"))
	if err == nil || !strings.Contains(err.Error(), `field querry not found in external metric (did you mean "query"?)`) {
		t.Errorf("external metric typo: %v", err)
	}
	s, err := ParseSpec([]byte("external_metrics:\n  - crash_rate\n  - {name: conversion_rate, unit: ratio, query: 'sum(x)'}\n"))
	if err != nil || s.ExternalMetrics[0].Name != "crash_rate" || s.ExternalMetrics[1].Query != "sum(x)" || s.ExternalMetrics[1].Unit != UnitRatio {
		t.Errorf("external metrics: %+v %v", s.ExternalMetrics, err)
	}
}

// TestValidateMessages pins every validation message: they are the user
// interface of a broken config.
func TestValidateMessages(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown mode", "mode: atuo\n",
			[]string{`mode: unknown mode "atuo" (did you mean "auto"?); want auto, manual or dry_run`}},
		{"interval too short", "interval: 10ms\n",
			[]string{"interval: must be at least 100ms, got 10ms"}},
		{"window too long", "window: 48h\n",
			[]string{"window: must be at most 24h, got 48h"}},
		{"negative min_samples", "min_samples: -5\n",
			[]string{"min_samples: must be at least 1, got -5"}},
		{"alpha too large", "alpha: 0.7\n",
			[]string{"alpha: must be between 0 and 0.5 (0.05 is usual), got 0.7"}},
		{"steps not increasing", "steps:\n  - {percent: 10, hold: 1m}\n  - {percent: 5, hold: 1m}\n  - {percent: 0}\n",
			[]string{"steps[1].percent: must be greater than the previous step's 10%, got 5%", "steps[2].percent: must be between 0.01 and 100, got 0"}},
		{"metric typo", "rollback_when:\n  - {metric: error_rate_5xx, above_baseline: 2x}\n  - {metric: error_rate_5x, above_baseline: 2x}\n",
			[]string{`rollback_when[1].metric: unknown metric "error_rate_5x" (did you mean "error_rate_5xx"?)`}},
		{"metric typo of an external metric", "external_metrics: [conversion_rate]\npromote_when:\n  - {metric: convertion_rate, above_baseline: 0.95x}\n",
			[]string{`promote_when[0].metric: unknown metric "convertion_rate" (did you mean "conversion_rate"?)`}},
		{"unknown metric without a suggestion", "promote_when:\n  - {metric: revenue, above: 1}\n",
			[]string{`promote_when[0].metric: unknown metric "revenue": use one of error_rate_5xx, errors_5xx, health_check_failures, latency_p50, latency_p90, latency_p95, latency_p99, match_rate, requests, upstream_error_rate, upstream_errors, or declare it under external_metrics`}},
		{"missing metric", "promote_when:\n  - {below: 1%}\n",
			[]string{"promote_when[0].metric: required; one of error_rate_5xx, errors_5xx, health_check_failures, latency_p50, latency_p90, latency_p95, latency_p99, match_rate, requests, upstream_error_rate, upstream_errors or a name declared in external_metrics"}},
		{"no comparison", "promote_when:\n  - {metric: error_rate_5xx, window: 5m}\n",
			[]string{"promote_when[0]: want one of below, above, at_most, at_least, above_baseline, below_baseline, consecutive"}},
		{"two comparisons", "promote_when:\n  - {metric: error_rate_5xx, below: 1%, above: 0.1%}\n",
			[]string{"promote_when[0]: want exactly one comparison, got below and above"}},
		{"latency threshold without unit", "promote_when:\n  - {metric: latency_p95, below: 500}\n",
			[]string{`promote_when[0].below: latency_p95 is a latency: want a duration such as 500ms, got "500"`}},
		{"rate threshold as a duration", "promote_when:\n  - {metric: error_rate_5xx, below: 5ms}\n",
			[]string{`promote_when[0].below: error_rate_5xx is a rate: want a percentage such as 0.5% or a fraction such as 0.005, got "5ms"`}},
		{"rate threshold above 1", "promote_when:\n  - {metric: error_rate_5xx, below: 5}\n",
			[]string{"promote_when[0].below: error_rate_5xx is a rate: want a fraction up to 1 or a percentage such as 0.5%, got 5 (write 5% for 5 percent)"}},
		{"rate threshold above 100%", "promote_when:\n  - {metric: match_rate, above: 150%}\n",
			[]string{"promote_when[0].above: match_rate is a rate: must be at most 100%, got 150%"}},
		{"count threshold as a rate", "rollback_when:\n  - {metric: upstream_errors, above: 1%}\n",
			[]string{`rollback_when[0].above: upstream_errors is a count: want a whole number such as 0 or 10, got "1%"`}},
		{"count with baseline", "rollback_when:\n  - {metric: upstream_errors, above_baseline: 2x}\n",
			[]string{"rollback_when[0].above_baseline: upstream_errors is a count, which grows with the cohort's share; compare a rate such as error_rate_5xx against the baseline instead"}},
		{"route-wide metric with baseline", "promote_when:\n  - {metric: match_rate, below_baseline: 1x}\n",
			[]string{"promote_when[0].below_baseline: match_rate is measured for the whole route, so it has no control baseline; use below or above"}},
		{"consecutive on another metric", "rollback_when:\n  - {metric: error_rate_5xx, consecutive: 3}\n",
			[]string{"rollback_when[0].consecutive: only health_check_failures counts consecutive failures"}},
		{"health without health_check", "rollback_when:\n  - {metric: health_check_failures, consecutive: 3}\n",
			[]string{"rollback_when[0].metric: health_check_failures needs a health_check section to probe the canary"}},
		{"for in promote_when", "promote_when:\n  - {metric: error_rate_5xx, below: 1%, for: 5m}\n",
			[]string{`promote_when[0].for: only rollback_when conditions hold "for" a duration; promote_when are checked once the step's hold has passed`}},
		{"condition window too long", "rollback_when:\n  - {metric: error_rate_5xx, above_baseline: 2x, window: 25h}\n",
			[]string{"rollback_when[0].window: must be at most 24h, got 25h"}},
		{"min_baseline without baseline", "promote_when:\n  - {metric: error_rate_5xx, below: 1%, min_baseline: 0.1%}\n",
			[]string{"promote_when[0].min_baseline: only applies to above_baseline and below_baseline"}},
		{"min_baseline in the wrong unit", "rollback_when:\n  - {metric: latency_p99, above_baseline: 3x, min_baseline: 0.1%}\n",
			[]string{`rollback_when[0].min_baseline: latency_p99 is a latency: want a duration such as 500ms, got "0.1%"`}},
		{"step override", "steps:\n  - percent: 50\n    hold: 1h\n    promote_when:\n      - {metric: latency_p95, below: 1}\n  - {percent: 100}\n",
			[]string{`steps[0].promote_when[0].below: latency_p95 is a latency: want a duration such as 500ms, got "1"`}},
		{"external metric names", "external_metrics: [error_rate_5xx, crash_rate, crash_rate, Crash-Rate, {name: ''}]\n",
			[]string{`external_metrics[0].name: "error_rate_5xx" is a built-in metric; external metrics need their own name`,
				`external_metrics[2].name: duplicate external metric "crash_rate" (also external_metrics[1])`,
				`external_metrics[3].name: invalid name "Crash-Rate": use lowercase letters, digits and _`,
				"external_metrics[4].name: required"}},
		{"external unit", "external_metrics:\n  - {name: crash_rate, unit: ration}\n",
			[]string{`external_metrics[0].unit: unknown unit "ration" (did you mean "ratio"?); want number, ratio or duration`}},
		{"external ratio threshold", "external_metrics:\n  - {name: crash_rate, unit: ratio}\nrollback_when:\n  - {metric: crash_rate, above: 2}\n",
			[]string{"rollback_when[0].above: crash_rate is a rate: want a fraction up to 1 or a percentage such as 0.5%, got 2 (write 2% for 2 percent)"}},
		{"health check", "health_check: {path: healthz, interval: 1s, timeout: 2s, expect_status: 700}\n",
			[]string{`health_check.path: must start with "/", got "healthz"`, "health_check.timeout: must not exceed the interval (1s), got 2s",
				"health_check.expect_status: must be an HTTP status between 100 and 599, got 700"}},
		{"notify URL", "notify: [slack, 'ftp://x/y', 'https://hooks.example.com/T/B/x']\n",
			[]string{`notify[0]: invalid webhook URL "slack": want http:// or https:// with a host`, `notify[1]: invalid webhook URL "ftp://x/y": want http:// or https:// with a host`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := parseSpec(t, c.yaml)
			s.ApplyDefaults()
			var got []string
			for _, err := range s.Validate() {
				var fe *cfgtypes.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%v is not a *cfgtypes.FieldError", err)
				}
				got = append(got, err.Error())
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

func TestValidatePathsComposeWithPrefix(t *testing.T) {
	s := parseSpec(t, "steps:\n  - {percent: 10, hold: 1m}\n  - {percent: 5}\n")
	errs := cfgtypes.Prefix("routes[1].rollout", s.Validate())
	if len(errs) != 1 || errs[0].Error() != "routes[1].rollout.steps[1].percent: must be greater than the previous step's 10%, got 5%" {
		t.Fatalf("%v", errs)
	}
}

func TestWarnings(t *testing.T) {
	s := parseSpec(t, `
min_samples: 200
alpha: 0.2
state_file: rollout.json
steps:
  - {percent: 5}
  - percent: 20
    hold: 1h
    rollback_when:
      - {metric: latency_p99, above_baseline: 3x}
rollback_when:
  - {metric: error_rate_5xx, above_baseline: 2x}
  - {metric: latency_p99, above_baseline: 3x}
`)
	s.ApplyDefaults()
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	want := []string{
		"promote_when is empty: steps advance on hold time alone",
		"steps[1].percent is 20%, not 100%: the rollout completes with the canary at 20%",
		"steps[0].hold is not set: the step is promoted as soon as its promote_when pass",
		"steps[1].rollback_when replaces the route's rollback_when and drops error_rate_5xx",
		`state_file "rollout.json" is relative: it depends on the working directory`,
		"min_samples 200 is below 1000, the default: one error in 200 requests is already a 0.5% error rate, so single failures decide verdicts",
		"alpha 0.2 is above 0.1: expect more false rollbacks",
	}
	if got := s.Warnings(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got:\n  %s", strings.Join(got, "\n  "))
	}
	var d Spec
	d.ApplyDefaults()
	if got := d.Warnings(); !reflect.DeepEqual(got, []string{
		"promote_when is empty: steps advance on hold time alone",
		"state_file is not set: a restart returns the rollout to steps[0]",
	}) {
		t.Fatalf("defaults warn: %v", got)
	}
}

func TestSeedPolicyFileValidates(t *testing.T) {
	data, err := os.ReadFile("testdata/seed-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(data)
	if err != nil {
		t.Fatal(err)
	}
	s.ApplyDefaults()
	if errs := s.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	if w := s.Warnings(); len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	var pcts []string
	for _, st := range s.Steps {
		pcts = append(pcts, st.Percent.BP().String())
	}
	if strings.Join(pcts, ",") != "1,10,50,100" {
		t.Fatalf("steps %v", pcts)
	}
}

func TestRecorderOptionsBoundMemory(t *testing.T) {
	s := parseSpec(t, "promote_when:\n  - {metric: error_rate_5xx, below: 1%, window: 2h}\n")
	s.ApplyDefaults()
	r := NewRecorder(nil, s.RecorderOptions()...)
	if r.Retention() != 2*time.Hour || r.Slot() != 30*time.Second || len(r.slots) > 245 {
		t.Fatalf("retention %s slot %s slots %d", r.Retention(), r.Slot(), len(r.slots))
	}
}
