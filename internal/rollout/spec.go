package rollout

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Mode says how far the controller may act on its own decisions.
type Mode string

const (
	// ModeAuto promotes and rolls back on its own.
	ModeAuto Mode = "auto"
	// ModeManual evaluates and explains, promotes only on command, and still
	// rolls back on its own: the seed's guardrails need no human approval.
	ModeManual Mode = "manual"
	// ModeDryRun decides and logs exactly as auto would, on a virtual copy
	// of the state, and changes nothing: no percentage, no state file.
	ModeDryRun Mode = "dry_run"
)

var modes = []string{string(ModeAuto), string(ModeManual), string(ModeDryRun)}

// ExternalUnit is the unit an external metric's values are reported in and
// its thresholds are written in.
type ExternalUnit string

const (
	// UnitNumber is a plain number; thresholds may also be written as
	// percentages, which are read as fractions.
	UnitNumber ExternalUnit = "number"
	// UnitRatio is a fraction in [0, 1], thresholds "0.1%" or 0.001.
	UnitRatio ExternalUnit = "ratio"
	// UnitDuration is a duration reported in seconds, thresholds "500ms".
	UnitDuration ExternalUnit = "duration"
)

var externalUnits = []string{string(UnitNumber), string(UnitRatio), string(UnitDuration)}

// Defaults applied by ApplyDefaults. They are exported so that documentation
// and the admin API can show them.
const (
	DefaultInterval           = 10 * time.Second
	DefaultWindow             = 5 * time.Minute
	DefaultMinSamples         = 1000 // one error in 1000 requests moves an error rate by 0.1 point
	DefaultAlpha              = 0.05
	DefaultHealthPath         = "/healthz"
	DefaultHealthInterval     = 5 * time.Second
	DefaultHealthTimeout      = 2 * time.Second
	DefaultHealthExpectStatus = 200
	// DefaultRateFloor is the smallest baseline an error rate is compared
	// against (see Condition.MinBaseline): 0.1%.
	DefaultRateFloor = 0.001
	// DefaultLatencyFloor is the smallest baseline a latency is compared
	// against: 1ms.
	DefaultLatencyFloor = time.Millisecond

	// MaxWindow bounds every condition window, and so the Recorder's memory.
	MaxWindow = 24 * time.Hour
	// MinInterval is the shortest evaluation interval accepted.
	MinInterval = 100 * time.Millisecond
)

// Spec is a route's "rollout:" section. Zero values mean "default" so that a
// Spec decoded from YAML can be validated before or after ApplyDefaults.
type Spec struct {
	// Policy names an entry of the config's rollout_policies that this
	// section starts from; every field set here overrides the policy's.
	Policy string `yaml:"policy,omitempty"`
	// Mode is auto (default), manual or dry_run.
	Mode Mode `yaml:"mode,omitempty"`
	// Interval between evaluations (default 10s). Health-probe failures are
	// checked on every controller tick regardless.
	Interval cfgtypes.Duration `yaml:"interval,omitempty"`
	// Window is the default look-back of conditions that set none (5m).
	Window cfgtypes.Duration `yaml:"window,omitempty"`
	// MinSamples is the number of requests each cohort needs in a
	// condition's window before the condition gives any verdict (1000).
	MinSamples int `yaml:"min_samples,omitempty"`
	// Alpha is the significance level of every statistical test (0.05).
	Alpha cfgtypes.Ratio `yaml:"alpha,omitempty"`
	// StateFile is where progress is persisted; empty keeps it in memory
	// only (a warning: a restart then begins again at steps[0]).
	StateFile string `yaml:"state_file,omitempty"`
	// Steps are the canary percentages, strictly increasing. Omitted, they
	// are the seed's 1% (30m), 10% (2h), 50% (4h), 100%.
	Steps []Step `yaml:"steps,omitempty"`
	// PromoteWhen must all pass at the end of a step's hold.
	PromoteWhen []Condition `yaml:"promote_when,omitempty"`
	// RollbackWhen: any one that holds for its "for" rolls back. Omitted
	// (nil) it is the seed's guardrails, see DefaultRollbackWhen; an
	// explicit empty list means none.
	RollbackWhen []Condition `yaml:"rollback_when,omitempty"`
	// HealthCheck enables active probes of the canary, which the
	// health_check_failures metric reads.
	HealthCheck *HealthCheck `yaml:"health_check,omitempty"`
	// Notify lists webhook URLs that receive every transition.
	Notify []string `yaml:"notify,omitempty"`
	// ExternalMetrics declares metrics read from an ExternalSource (for
	// example a Prometheus query), such as conversion_rate or crash_rate.
	ExternalMetrics []ExternalMetric `yaml:"external_metrics,omitempty"`
	// Analysis selects the traffic compared: include [percent] (default)
	// or [percent, cohort], which also counts requests routed by a cohort
	// rule, on the side they went to.
	Analysis *Analysis `yaml:"analysis,omitempty"`
	// ExpectedRPS is the route's typical request rate, used only to warn
	// when a step cannot reach its sample sizes (see Plan).
	ExpectedRPS float64 `yaml:"expected_rps,omitempty"`
	// Smoke sends scripted checks to the canary (and to stable, to tell a
	// broken environment from a broken canary) before each step gets
	// traffic and after each promotion.
	Smoke *Smoke `yaml:"smoke,omitempty"`
	// Webhooks gate steps on outside systems: pre_step must answer 2xx
	// before a step gets traffic, confirm_promotion before a promotion.
	Webhooks []GateWebhook `yaml:"webhooks,omitempty"`
	// StaleAfter is how long a completed (100%) split may stay in the
	// config before validate and the dashboard ask to finish it
	// (default 14d).
	StaleAfter cfgtypes.Duration `yaml:"stale_after,omitempty"`
}

// MarshalYAML keeps the difference between an omitted rollback_when (the
// default guardrails) and an explicit empty one (none) across a round trip.
func (s Spec) MarshalYAML() (any, error) {
	type plain Spec
	return encodeWithEmptyLists(plain(s), []namedList{{"rollback_when", s.RollbackWhen}})
}

// MarshalYAML keeps the difference between omitted step overrides (inherit)
// and explicit empty ones (none for this step).
func (st Step) MarshalYAML() (any, error) {
	type plain Step
	return encodeWithEmptyLists(plain(st), []namedList{{"promote_when", st.PromoteWhen}, {"rollback_when", st.RollbackWhen}})
}

type namedList struct {
	key   string
	conds []Condition
}

// encodeWithEmptyLists encodes v (whose list fields are omitempty) and adds
// "key: []" for each list that is empty but not nil.
func encodeWithEmptyLists(v any, lists []namedList) (any, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	for _, l := range lists {
		if l.conds != nil && len(l.conds) == 0 {
			n.Content = append(n.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: l.key},
				&yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle})
		}
	}
	return &n, nil
}

// Step is one stage of the rollout.
type Step struct {
	// Percent of traffic (by key bucket) sent to the canary.
	Percent cfgtypes.Percent `yaml:"percent"`
	// Hold is the minimum time at this step before promotion is considered.
	Hold cfgtypes.Duration `yaml:"hold,omitempty"`
	// PromoteWhen, when set (even to []), replaces the route's promote_when
	// for this step.
	PromoteWhen []Condition `yaml:"promote_when,omitempty"`
	// RollbackWhen, when set (even to []), replaces the route's
	// rollback_when for this step.
	RollbackWhen []Condition `yaml:"rollback_when,omitempty"`
	// Pause makes the step wait, once its hold and promote_when pass, for
	// a manual promote (POST .../promote), whatever the mode.
	Pause bool `yaml:"pause,omitempty"`
	// Deadline bounds the time at this step (pauses excluded): past it,
	// still not promoted, the rollout pauses or rolls back (OnDeadline)
	// and notifies, instead of waiting in silence for samples.
	Deadline cfgtypes.Duration `yaml:"deadline,omitempty"`
	// OnDeadline is pause (default) or rollback.
	OnDeadline string `yaml:"on_deadline,omitempty"`
}

// SilencePolicy says what a guardrail does while it gets no verdict
// (on_no_data: too few samples; on_error: an external source failing). In
// YAML it is "hold" or {fail_after: N}.
type SilencePolicy struct {
	// FailAfter, when > 0, fires the guardrail after this many consecutive
	// evaluations without a verdict; 0 holds (the streak is kept, neither
	// advanced to a rollback nor reset).
	FailAfter int `yaml:"fail_after,omitempty"`
}

// UnmarshalYAML accepts "hold" or a mapping with fail_after.
func (p *SilencePolicy) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "hold" {
			return fmt.Errorf("want hold or {fail_after: N}, got %q", n.Value)
		}
		*p = SilencePolicy{}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errors.New("want hold or {fail_after: N}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k != "fail_after" {
			return fmt.Errorf("line %d: field %s not found; want fail_after", n.Content[i].Line, k)
		}
	}
	type plain SilencePolicy
	var v plain
	if err := n.Decode(&v); err != nil {
		return err
	}
	if v.FailAfter < 1 {
		return fmt.Errorf("fail_after must be at least 1, got %d", v.FailAfter)
	}
	*p = SilencePolicy(v)
	return nil
}

// MarshalYAML writes "hold" or the mapping.
func (p SilencePolicy) MarshalYAML() (any, error) {
	if p.FailAfter == 0 {
		return "hold", nil
	}
	return map[string]int{"fail_after": p.FailAfter}, nil
}

// Condition is one machine-checkable criterion. Exactly one comparison
// (below, above, at_most, at_least, above_baseline, below_baseline,
// consecutive) must be set.
type Condition struct {
	// Metric is a built-in metric (see MetricNames) or a declared external one.
	Metric string `yaml:"metric"`
	// Below: the canary value is < the threshold.
	Below *Threshold `yaml:"below,omitempty"`
	// Above: the canary value is > the threshold.
	Above *Threshold `yaml:"above,omitempty"`
	// AtMost: the canary value is <= the threshold ("crash_rate equals 0").
	AtMost *Threshold `yaml:"at_most,omitempty"`
	// AtLeast: the canary value is >= the threshold.
	AtLeast *Threshold `yaml:"at_least,omitempty"`
	// AboveBaseline: the canary is worse than the control by more than this
	// factor AND the difference is significant at alpha.
	AboveBaseline *cfgtypes.Multiplier `yaml:"above_baseline,omitempty"`
	// BelowBaseline: the canary's point estimate is below this factor times
	// the control's (for example 1.5x to promote, 0.95x for conversion).
	BelowBaseline *cfgtypes.Multiplier `yaml:"below_baseline,omitempty"`
	// Consecutive: at least this many consecutive failed health probes.
	Consecutive int `yaml:"consecutive,omitempty"`
	// MinBaseline is the floor under the control value in baseline
	// comparisons, so that a zero control does not turn every canary error
	// into an infinite ratio (default 0.1% for rates, 1ms for latency, none
	// for external metrics).
	MinBaseline *Threshold `yaml:"min_baseline,omitempty"`
	// MinSamples overrides the section's min_samples for this condition
	// (for example 500 for latency, 5000 for a match rate).
	MinSamples int `yaml:"min_samples,omitempty"`
	// Window is the look-back of the measurement (default: the section's window).
	Window cfgtypes.Duration `yaml:"window,omitempty"`
	// For (rollback_when only) is how long the condition must hold on every
	// evaluation before it fires; 0 fires on the first breaching evaluation.
	For cfgtypes.Duration `yaml:"for,omitempty"`
	// OnNoData (rollback_when only): hold (default) or fail_after N
	// evaluations without enough samples.
	OnNoData *SilencePolicy `yaml:"on_no_data,omitempty"`
	// OnError (rollback_when only): hold (default) or fail_after N
	// evaluations whose external lookup failed.
	OnError *SilencePolicy `yaml:"on_error,omitempty"`
}

// HealthCheck configures active HTTP probes of the canary upstream: the
// same probe as an upstream's health section, sent to every endpoint of the
// canary with the upstream's TLS settings. Path is appended to each
// endpoint's base URL.
type HealthCheck = cfgtypes.Probe

// DefaultHealthCheck returns the values a health_check section takes for
// the fields it leaves out.
func DefaultHealthCheck() HealthCheck {
	return HealthCheck{
		Path:         DefaultHealthPath,
		Interval:     cfgtypes.Duration(DefaultHealthInterval),
		Timeout:      cfgtypes.Duration(DefaultHealthTimeout),
		ExpectStatus: DefaultHealthExpectStatus,
	}
}

// ExternalMetric declares a metric measured outside the proxy. In YAML it is
// either a bare name ("crash_rate") or a mapping with name, query, unit, help.
type ExternalMetric struct {
	// Name used by conditions: lowercase letters, digits and underscores.
	Name string `yaml:"name"`
	// Query is handed to the ExternalSource (for Prometheus, a PromQL
	// expression); the controller does not interpret it.
	Query string `yaml:"query,omitempty"`
	// Unit is number (default), ratio or duration (values in seconds).
	Unit ExternalUnit `yaml:"unit,omitempty"`
	// Help is a free-text description shown in explanations.
	Help string `yaml:"help,omitempty"`
}

var externalMetricKeys = []string{"name", "query", "unit", "help"}

// UnmarshalYAML accepts a bare name or a strict mapping. yaml.v3 does not
// carry KnownFields into custom unmarshalers, so unknown keys are rejected
// here by hand.
func (e *ExternalMetric) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*e = ExternalMetric{Name: n.Value}
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			found := false
			for _, want := range externalMetricKeys {
				if k == want {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("line %d: field %s not found in external metric%s", n.Content[i].Line, k, cfgtypes.Suggest(k, externalMetricKeys))
			}
		}
		type plain ExternalMetric
		var p plain
		if err := n.Decode(&p); err != nil {
			return err
		}
		*e = ExternalMetric(p)
		return nil
	default:
		return errors.New("want a metric name or a mapping with name, query, unit")
	}
}

// thresholdKind records how a threshold was written, so that validation can
// tell "500ms" from "500" and "5%" from 5.
type thresholdKind uint8

const (
	thrNumber thresholdKind = iota + 1
	thrPercent
	thrDuration
)

// Threshold is a comparison value written in its metric's unit: a duration
// ("500ms") for latency, a rate ("0.5%" or 0.005) for rates, a plain number
// for counts and external metrics. It is parsed on decoding and checked
// against the metric by Validate.
type Threshold struct {
	value float64 // plain number, fraction, or seconds
	kind  thresholdKind
	raw   string
}

// ParseThreshold parses "0.5%", "500ms" or "10".
func ParseThreshold(s string) (*Threshold, error) {
	t := strings.TrimSpace(s)
	if strings.HasSuffix(t, "%") {
		v, err := cfgtypes.ParseRatio(t)
		if err != nil {
			return nil, err
		}
		return &Threshold{value: v, kind: thrPercent, raw: t}, nil
	}
	if v, err := strconv.ParseFloat(t, 64); err == nil {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("invalid threshold %q: want a finite number", s)
		}
		if v < 0 {
			return nil, fmt.Errorf("invalid threshold %q: must not be negative", s)
		}
		return &Threshold{value: v, kind: thrNumber, raw: t}, nil
	}
	if d, err := time.ParseDuration(t); err == nil {
		if d < 0 {
			return nil, fmt.Errorf("invalid threshold %q: must not be negative", s)
		}
		return &Threshold{value: d.Seconds(), kind: thrDuration, raw: t}, nil
	}
	return nil, fmt.Errorf("invalid threshold %q: want a number (10), a rate (0.5%%) or a duration (500ms)", s)
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a threshold such as 0.5%, 500ms or 10")
	}
	v, err := ParseThreshold(n.Value)
	if err != nil {
		return err
	}
	*t = *v
	return nil
}

// MarshalYAML writes the threshold as it was written.
func (t Threshold) MarshalYAML() (any, error) { return t.raw, nil }

// String returns the threshold as written.
func (t Threshold) String() string { return t.raw }

// Value is the threshold as a plain number, a fraction or seconds.
func (t Threshold) Value() float64 { return t.value }

// ParseSpec decodes a rollout section strictly (unknown fields are errors),
// without applying defaults or validating.
func ParseSpec(data []byte) (Spec, error) {
	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("decode rollout spec: %w", err)
	}
	return s, nil
}

// DefaultSteps are the seed's canary stages: 1% for 30m, 10% for 2h, 50% for
// 4h, then 100%.
func DefaultSteps() []Step {
	return []Step{
		{Percent: 100, Hold: cfgtypes.Duration(30 * time.Minute)},
		{Percent: 1000, Hold: cfgtypes.Duration(2 * time.Hour)},
		{Percent: 5000, Hold: cfgtypes.Duration(4 * time.Hour)},
		{Percent: 10000},
	}
}

// DefaultRollbackWhen are the seed's automatic rollback triggers that the
// proxy can measure itself: 5xx rate above 2x baseline for 5m and p99
// latency above 3x baseline for 5m.
func DefaultRollbackWhen() []Condition {
	two, three := cfgtypes.Multiplier(2), cfgtypes.Multiplier(3)
	return []Condition{
		{Metric: "error_rate_5xx", AboveBaseline: &two, For: cfgtypes.Duration(5 * time.Minute)},
		{Metric: "latency_p99", AboveBaseline: &three, For: cfgtypes.Duration(5 * time.Minute)},
	}
}

// ApplyDefaults fills every unset field with its documented default. It is
// idempotent. Condition windows stay zero and resolve to Spec.Window when
// used, so that changing the section's window changes them all.
func (s *Spec) ApplyDefaults() {
	if s.Mode == "" {
		s.Mode = ModeAuto
	}
	if s.Interval == 0 {
		s.Interval = cfgtypes.Duration(DefaultInterval)
	}
	if s.Window == 0 {
		s.Window = cfgtypes.Duration(DefaultWindow)
	}
	if s.MinSamples == 0 {
		s.MinSamples = DefaultMinSamples
	}
	if s.Alpha == 0 {
		s.Alpha = DefaultAlpha
	}
	if len(s.Steps) == 0 {
		s.Steps = DefaultSteps()
	}
	if s.RollbackWhen == nil {
		s.RollbackWhen = DefaultRollbackWhen()
	}
	if hc := s.HealthCheck; hc != nil {
		*hc = hc.WithDefaults(DefaultHealthCheck())
	}
	for i := range s.ExternalMetrics {
		if s.ExternalMetrics[i].Unit == "" {
			s.ExternalMetrics[i].Unit = UnitNumber
		}
	}
	s.applyGateDefaults()
}

// promoteWhen returns the promote conditions in force at step i.
func (s *Spec) promoteWhen(i int) []Condition {
	if i >= 0 && i < len(s.Steps) && s.Steps[i].PromoteWhen != nil {
		return s.Steps[i].PromoteWhen
	}
	return s.PromoteWhen
}

// rollbackWhen returns the rollback conditions in force at step i.
func (s *Spec) rollbackWhen(i int) []Condition {
	if i >= 0 && i < len(s.Steps) && s.Steps[i].RollbackWhen != nil {
		return s.Steps[i].RollbackWhen
	}
	return s.RollbackWhen
}

// window resolves a condition's look-back.
func (s *Spec) window(c *Condition) time.Duration {
	if c.Window > 0 {
		return c.Window.D()
	}
	if s.Window > 0 {
		return s.Window.D()
	}
	return DefaultWindow
}

// LongestWindow is the longest look-back any condition of s reads, which is
// how much history the route's Recorder must keep.
func (s *Spec) LongestWindow() time.Duration {
	longest := s.window(&Condition{})
	visit := func(cs []Condition) {
		for i := range cs {
			if w := s.window(&cs[i]); w > longest {
				longest = w
			}
		}
	}
	visit(s.PromoteWhen)
	visit(s.RollbackWhen)
	if s.RollbackWhen == nil {
		visit(DefaultRollbackWhen())
	}
	for i := range s.Steps {
		visit(s.Steps[i].PromoteWhen)
		visit(s.Steps[i].RollbackWhen)
	}
	return min(longest, MaxWindow)
}

// RecorderOptions sizes a Recorder for s: enough history for its longest
// window, in about 240 slots so that memory stays bounded (roughly 3 KiB per
// slot) whatever the windows are.
func (s *Spec) RecorderOptions() []RecorderOption {
	retention := s.LongestWindow()
	slot := (retention / 240).Round(time.Second)
	if slot < time.Second {
		slot = time.Second
	}
	return []RecorderOption{WithSlot(slot), WithRetention(retention)}
}

// Validate returns every problem in s as a *cfgtypes.FieldError whose path
// is relative to the rollout section ("steps[2].percent"). It accepts a spec
// before or after ApplyDefaults.
func (s *Spec) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}

	if s.Mode != "" && s.Mode != ModeAuto && s.Mode != ModeManual && s.Mode != ModeDryRun {
		add("mode", "unknown mode %q%s; want auto, manual or dry_run", string(s.Mode), cfgtypes.Suggest(string(s.Mode), modes))
	}
	if s.Interval != 0 && s.Interval.D() < MinInterval {
		add("interval", "must be at least %s, got %s", MinInterval, s.Interval.D())
	}
	if s.Window.D() > MaxWindow {
		add("window", "must be at most %s, got %s", fmtDur(MaxWindow), fmtDur(s.Window.D()))
	}
	if s.MinSamples < 0 {
		add("min_samples", "must be at least 1, got %d", s.MinSamples)
	}
	if s.Alpha < 0 || s.Alpha >= 0.5 {
		add("alpha", "must be between 0 and 0.5 (0.05 is usual), got %g", float64(s.Alpha))
	}

	if a := s.Analysis; a != nil {
		hasPercent := false
		for i, v := range a.Include {
			switch v {
			case "percent":
				hasPercent = true
			case "cohort":
			default:
				add(fmt.Sprintf("analysis.include[%d]", i), "unknown traffic %q%s; want percent or cohort", v, cfgtypes.Suggest(v, []string{"percent", "cohort"}))
			}
		}
		if !hasPercent {
			add("analysis.include", "must include percent: the random split is what makes canary and control comparable")
		}
	}

	// External metrics first: conditions are checked against them.
	seen := map[string]int{}
	for i, e := range s.ExternalMetrics {
		p := fmt.Sprintf("external_metrics[%d]", i)
		switch {
		case e.Name == "":
			add(p+".name", "required")
		case !validMetricName(e.Name):
			add(p+".name", "invalid name %q: use lowercase letters, digits and _", e.Name)
		default:
			if _, ok := builtinMetric(e.Name); ok {
				add(p+".name", "%q is a built-in metric; external metrics need their own name", e.Name)
			} else if j, dup := seen[e.Name]; dup {
				add(p+".name", "duplicate external metric %q (also external_metrics[%d])", e.Name, j)
			} else {
				seen[e.Name] = i
			}
		}
		if e.Unit != "" && e.Unit != UnitNumber && e.Unit != UnitRatio && e.Unit != UnitDuration {
			add(p+".unit", "unknown unit %q%s; want number, ratio or duration", string(e.Unit), cfgtypes.Suggest(string(e.Unit), externalUnits))
		}
	}

	steps := s.Steps
	for i, st := range steps {
		p := fmt.Sprintf("steps[%d]", i)
		switch {
		case st.Percent == 0:
			add(p+".percent", "must be between 0.01 and 100, got 0")
		case i > 0 && st.Percent <= steps[i-1].Percent:
			add(p+".percent", "must be greater than the previous step's %s%%, got %s%%", steps[i-1].Percent.BP(), st.Percent.BP())
		}
		if st.Deadline != 0 && st.Deadline.D() < st.Hold.D() {
			add(p+".deadline", "must be at least the step's hold (%s), got %s", fmtDur(st.Hold.D()), fmtDur(st.Deadline.D()))
		}
		if st.OnDeadline != "" && st.OnDeadline != "pause" && st.OnDeadline != "rollback" {
			add(p+".on_deadline", "unknown action %q%s; want pause or rollback", st.OnDeadline, cfgtypes.Suggest(st.OnDeadline, []string{"pause", "rollback"}))
		} else if st.OnDeadline != "" && st.Deadline == 0 {
			add(p+".on_deadline", "needs a deadline")
		}
		if st.PromoteWhen != nil {
			errs = append(errs, s.validateConditions(p+".promote_when", st.PromoteWhen, false)...)
		}
		if st.RollbackWhen != nil {
			errs = append(errs, s.validateConditions(p+".rollback_when", st.RollbackWhen, true)...)
		}
	}
	errs = append(errs, s.validateConditions("promote_when", s.PromoteWhen, false)...)
	errs = append(errs, s.validateConditions("rollback_when", s.RollbackWhen, true)...)

	if hc := s.HealthCheck; hc != nil {
		errs = append(errs, hc.Validate("health_check", DefaultHealthCheck())...)
	}

	for i, raw := range s.Notify {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(fmt.Sprintf("notify[%d]", i), "invalid webhook URL %q: want http:// or https:// with a host", raw)
		}
	}
	errs = append(errs, s.validateGates()...)
	return errs
}

// validMetricName reports whether name is a lowercase identifier.
func validMetricName(name string) bool {
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

var comparatorNames = []string{"below", "above", "at_most", "at_least", "above_baseline", "below_baseline", "consecutive"}

// comparators returns the names of the comparisons set on c.
func (c *Condition) comparators() []string {
	var out []string
	if c.Below != nil {
		out = append(out, "below")
	}
	if c.Above != nil {
		out = append(out, "above")
	}
	if c.AtMost != nil {
		out = append(out, "at_most")
	}
	if c.AtLeast != nil {
		out = append(out, "at_least")
	}
	if c.AboveBaseline != nil {
		out = append(out, "above_baseline")
	}
	if c.BelowBaseline != nil {
		out = append(out, "below_baseline")
	}
	if c.Consecutive != 0 {
		out = append(out, "consecutive")
	}
	return out
}

// absolute returns the absolute threshold and its comparator name, if any.
func (c *Condition) absolute() (*Threshold, string) {
	switch {
	case c.Below != nil:
		return c.Below, "below"
	case c.Above != nil:
		return c.Above, "above"
	case c.AtMost != nil:
		return c.AtMost, "at_most"
	case c.AtLeast != nil:
		return c.AtLeast, "at_least"
	}
	return nil, ""
}

func (s *Spec) validateConditions(prefix string, conds []Condition, rollback bool) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}
	for i := range conds {
		c := &conds[i]
		p := fmt.Sprintf("%s[%d]", prefix, i)
		if c.Window.D() > MaxWindow {
			add(p+".window", "must be at most %s, got %s", fmtDur(MaxWindow), fmtDur(c.Window.D()))
		}
		if c.MinSamples < 0 {
			add(p+".min_samples", "must be at least 1, got %d", c.MinSamples)
		}
		if !rollback && (c.OnNoData != nil || c.OnError != nil) {
			add(p+".on_no_data", "only rollback_when conditions take on_no_data/on_error; a promote condition without a verdict simply does not pass")
		}
		if m, ok := s.lookupMetric(c.Metric); rollback && ok && m.kind != kindExternal && c.AboveBaseline != nil && *c.AboveBaseline < 1 {
			add(p+".above_baseline", "must be at least 1x, got %gx: below 1x a canary as good as its control would breach", float64(*c.AboveBaseline))
		}
		if c.For != 0 && !rollback {
			add(p+".for", "only rollback_when conditions hold \"for\" a duration; promote_when are checked once the step's hold has passed")
		}
		cmps := c.comparators()
		switch {
		case len(cmps) == 0:
			add(p, "want one of %s", strings.Join(comparatorNames, ", "))
		case len(cmps) > 1:
			add(p, "want exactly one comparison, got %s", strings.Join(cmps, " and "))
		}
		if c.Metric == "" {
			add(p+".metric", "required; one of %s or a name declared in external_metrics", strings.Join(MetricNames(), ", "))
			continue
		}
		m, ok := s.lookupMetric(c.Metric)
		if !ok {
			if hint := cfgtypes.Suggest(c.Metric, s.knownMetricNames()); hint != "" {
				add(p+".metric", "unknown metric %q%s", c.Metric, hint)
			} else {
				add(p+".metric", "unknown metric %q: use one of %s, or declare it under external_metrics", c.Metric, strings.Join(MetricNames(), ", "))
			}
			continue
		}
		if m.kind == kindHealth && s.HealthCheck == nil {
			add(p+".metric", "health_check_failures needs a health_check section to probe the canary")
		}
		if c.Consecutive < 0 {
			add(p+".consecutive", "must be at least 1, got %d", c.Consecutive)
		} else if c.Consecutive > 0 && m.kind != kindHealth {
			add(p+".consecutive", "only health_check_failures counts consecutive failures")
		}
		if t, name := c.absolute(); t != nil {
			if msg := checkThreshold(m, t); msg != "" {
				add(p+"."+name, "%s", msg)
			}
		}
		for _, b := range []struct {
			name string
			set  bool
		}{{"above_baseline", c.AboveBaseline != nil}, {"below_baseline", c.BelowBaseline != nil}} {
			if !b.set || m.baseline {
				continue
			}
			switch m.kind {
			case kindCount:
				add(p+"."+b.name, "%s is a count, which grows with the cohort's share; compare a rate such as error_rate_5xx against the baseline instead", m.name)
			case kindHealth:
				add(p+"."+b.name, "%s has no baseline; use consecutive", m.name)
			default:
				add(p+"."+b.name, "%s is measured for the whole route, so it has no control baseline; use below or above", m.name)
			}
		}
		if c.MinBaseline != nil {
			if c.AboveBaseline == nil && c.BelowBaseline == nil {
				add(p+".min_baseline", "only applies to above_baseline and below_baseline")
			} else if msg := checkThreshold(m, c.MinBaseline); msg != "" {
				add(p+".min_baseline", "%s", msg)
			}
		}
	}
	return errs
}

// checkThreshold returns why t cannot be a threshold of m, or "".
func checkThreshold(m metricInfo, t *Threshold) string {
	kind := m.kind
	if kind == kindExternal {
		switch m.unit {
		case UnitRatio:
			kind = kindRate
		case UnitDuration:
			kind = kindLatency
		default:
			if t.kind == thrDuration {
				return fmt.Sprintf("%s is a number: want a number such as 0.02 or 2%%, got %q", m.name, t.raw)
			}
			return ""
		}
	}
	switch kind {
	case kindRate:
		switch {
		case t.kind == thrDuration:
			return fmt.Sprintf("%s is a rate: want a percentage such as 0.5%% or a fraction such as 0.005, got %q", m.name, t.raw)
		case t.kind == thrNumber && t.value > 1:
			return fmt.Sprintf("%s is a rate: want a fraction up to 1 or a percentage such as 0.5%%, got %s (write %s%% for %s percent)", m.name, t.raw, t.raw, t.raw)
		case t.value > 1:
			return fmt.Sprintf("%s is a rate: must be at most 100%%, got %s", m.name, t.raw)
		}
	case kindLatency:
		if t.kind != thrDuration {
			return fmt.Sprintf("%s is a latency: want a duration such as 500ms, got %q", m.name, t.raw)
		}
	case kindCount, kindHealth:
		if t.kind != thrNumber || t.value != math.Trunc(t.value) {
			return fmt.Sprintf("%s is a count: want a whole number such as 0 or 10, got %q", m.name, t.raw)
		}
	}
	return ""
}

// Warnings returns advice about a valid but risky spec.
func (s *Spec) Warnings() []string {
	var w []string
	steps := s.Steps
	if len(steps) == 0 {
		steps = DefaultSteps()
	}
	rollbackNone := s.RollbackWhen != nil && len(s.RollbackWhen) == 0
	anyStepRollback := false
	for _, st := range steps {
		if len(st.RollbackWhen) > 0 {
			anyStepRollback = true
		}
	}
	if rollbackNone && !anyStepRollback {
		w = append(w, "rollback_when is empty: a failing canary is never rolled back automatically")
	}
	anyPromote := len(s.PromoteWhen) > 0
	for _, st := range steps {
		if len(st.PromoteWhen) > 0 {
			anyPromote = true
		}
	}
	if !anyPromote && s.Mode != ModeManual {
		w = append(w, "promote_when is empty: steps advance on hold time alone")
	}
	if last := steps[len(steps)-1]; last.Percent != 0 && last.Percent.BP() != cfgtypes.MaxBasisPoints {
		w = append(w, fmt.Sprintf("steps[%d].percent is %s%%, not 100%%: the rollout completes with the canary at %s%%", len(steps)-1, last.Percent.BP(), last.Percent.BP()))
	}
	for i, st := range steps[:len(steps)-1] {
		if st.Hold == 0 {
			w = append(w, fmt.Sprintf("steps[%d].hold is not set: the step is promoted as soon as its promote_when pass", i))
		}
	}
	routeMetrics := map[string]bool{}
	for _, c := range s.RollbackWhen {
		routeMetrics[c.Metric] = true
	}
	for i, st := range steps {
		if st.RollbackWhen == nil {
			continue
		}
		has := map[string]bool{}
		for _, c := range st.RollbackWhen {
			has[c.Metric] = true
		}
		for _, c := range s.RollbackWhen {
			if !has[c.Metric] {
				w = append(w, fmt.Sprintf("steps[%d].rollback_when replaces the route's rollback_when and drops %s", i, c.Metric))
				has[c.Metric] = true
			}
		}
	}
	if s.StateFile == "" {
		w = append(w, "state_file is not set: a restart returns the rollout to steps[0]")
	} else if !filepath.IsAbs(s.StateFile) {
		w = append(w, fmt.Sprintf("state_file %q is relative: it depends on the working directory", s.StateFile))
	}
	if s.MinSamples > 0 && s.MinSamples < DefaultMinSamples {
		w = append(w, fmt.Sprintf("min_samples %d is below %d, the default: one error in %d requests is already a %.2g%% error rate, so single failures decide verdicts",
			s.MinSamples, DefaultMinSamples, s.MinSamples, 100/float64(s.MinSamples)))
	}
	if s.IncludesCohort() {
		w = append(w, "analysis includes cohort-routed traffic: those users are not a random sample (internal users, testers), so the comparison can be biased either way")
	}
	if s.ExpectedRPS < 0 {
		w = append(w, fmt.Sprintf("expected_rps %g is negative and ignored", s.ExpectedRPS))
	}
	w = append(w, s.Plan().Short()...)
	if s.Alpha > 0.1 {
		w = append(w, fmt.Sprintf("alpha %g is above 0.1: expect more false rollbacks", float64(s.Alpha)))
	}
	return w
}

// fmtDur renders a duration without the trailing zero units of
// time.Duration.String ("2h" rather than "2h0m0s").
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// plannedBlocks is how many blocks of length w a rollback condition tests
// over the planned rollout: every step's hold (or deadline, when longer)
// cut into blocks, plus the partial block at each step. Alpha is spent
// evenly over them (see spendBlock).
func (s *Spec) plannedBlocks(w time.Duration) int {
	if w <= 0 {
		return 1
	}
	n := 0
	for _, st := range s.Steps {
		d := st.Hold.D()
		if st.Deadline.D() > d {
			d = st.Deadline.D()
		}
		n += int(d/w) + 1
	}
	return max(n, 1)
}

// statisticalRollbackConditions counts the distinct rollback conditions
// decided by a sequential test anywhere in the policy: the policy's alpha
// is shared among them (Bonferroni), so that the rollout as a whole rolls
// back a canary equal to its control with probability at most alpha.
func (s *Spec) statisticalRollbackConditions() int {
	seen := map[string]bool{}
	visit := func(cs []Condition) {
		for i := range cs {
			m, ok := s.lookupMetric(cs[i].Metric)
			if !ok {
				continue
			}
			if _, ok := sequentialTest(&cs[i], m, true); ok {
				seen[cs[i].describe()] = true
			}
		}
	}
	visit(s.RollbackWhen)
	for i := range s.Steps {
		visit(s.Steps[i].RollbackWhen)
	}
	return max(len(seen), 1)
}

// Overlay returns base with every field that s sets replacing base's: a
// route's rollout section over the named policy it uses. A field is set
// when it is not its zero value; a list is set when present, even empty
// ("rollback_when: []" removes the policy's guardrails for this route).
func (s Spec) Overlay(base Spec) Spec {
	out := cloneSpec(base)
	out.Steps = append([]Step(nil), base.Steps...)
	ov, dst := reflect.ValueOf(s), reflect.ValueOf(&out).Elem()
	for i := 0; i < ov.NumField(); i++ {
		if f := ov.Field(i); !f.IsZero() {
			dst.Field(i).Set(f)
		}
	}
	return out
}

// Analysis selects which traffic the canary-vs-control comparison uses.
type Analysis struct {
	// Include lists percent (the random split; required) and optionally
	// cohort (traffic routed by cohort rules and force headers).
	Include []string `yaml:"include,omitempty"`
}

// IncludesCohort reports whether cohort-routed traffic is analysed.
func (s *Spec) IncludesCohort() bool {
	if s == nil || s.Analysis == nil {
		return false
	}
	for _, v := range s.Analysis.Include {
		if v == "cohort" {
			return true
		}
	}
	return false
}
