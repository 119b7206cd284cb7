package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// ExternalSource supplies metrics measured outside the proxy (a Prometheus
// query, a crash reporter). Value returns the metric for one cohort over the
// window; the controller calls it off the request path with a timeout, and
// puts the route and the declared query in ctx (see ExternalQueryFrom).
type ExternalSource interface {
	Value(ctx context.Context, metric string, cohort splitter.Arm, window time.Duration) (float64, error)
}

// ExternalQuery is what the controller knows about one external lookup.
type ExternalQuery struct {
	Route  string
	Metric string
	// Query is the declared external_metrics[].query, possibly empty.
	Query  string
	Cohort splitter.Arm
	Window time.Duration
}

type externalQueryKey struct{}

// WithExternalQuery returns ctx carrying q, the way the controller calls an
// ExternalSource (so a source can be tested without a controller).
func WithExternalQuery(ctx context.Context, q ExternalQuery) context.Context {
	return context.WithValue(ctx, externalQueryKey{}, q)
}

// ExternalQueryFrom returns the route and declared query of the lookup an
// ExternalSource is serving, so that one source can serve every route.
func ExternalQueryFrom(ctx context.Context) (ExternalQuery, bool) {
	q, ok := ctx.Value(externalQueryKey{}).(ExternalQuery)
	return q, ok
}

// HealthProber reports the canary's active health: the number of probes
// that failed in a row (0 when the last probe succeeded).
// *healthcheck.Checker implements it.
type HealthProber interface {
	ConsecutiveFailures() int
}

// Verdict is the outcome of one condition on one evaluation.
type Verdict string

const (
	// VerdictPass: a promote condition is satisfied.
	VerdictPass Verdict = "pass"
	// VerdictFail: a promote condition is not satisfied.
	VerdictFail Verdict = "fail"
	// VerdictOK: a rollback condition is not met.
	VerdictOK Verdict = "ok"
	// VerdictBreach: a rollback condition is met on this evaluation; it
	// fires once it has been met on every evaluation for its "for".
	VerdictBreach Verdict = "breach"
	// VerdictNoData: too few samples (or no probe yet) for any verdict.
	VerdictNoData Verdict = "no_data"
	// VerdictNotApplicable: a baseline comparison at 100%, where the
	// control has no traffic. It neither blocks promotion nor fires.
	VerdictNotApplicable Verdict = "not_applicable"
	// VerdictError: an external source failed; treated like no_data.
	VerdictError Verdict = "error"
)

// ConditionResult explains one condition on one evaluation. Values are in
// the metric's unit: fractions for rates, seconds for latency. Fields that
// do not apply are null, never NaN.
type ConditionResult struct {
	// Condition is the condition as written ("error_rate_5xx above_baseline 2x for 5m").
	Condition string `json:"condition"`
	Metric    string `json:"metric"`
	// Unit is "ratio", "seconds", "count" or "number".
	Unit   string `json:"unit"`
	Window string `json:"window,omitempty"`
	// Canary and Control are the measured values (Control null for
	// route-wide metrics).
	Canary  *float64 `json:"canary"`
	Control *float64 `json:"control"`
	// Threshold is the absolute threshold, or the factor of a baseline comparison.
	Threshold float64 `json:"threshold"`
	// Baseline is the control value actually compared against (after the
	// min_baseline floor), and Ratio the canary over it.
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	// CanarySamples and ControlSamples are the sample counts behind the values.
	CanarySamples  uint64 `json:"canary_samples"`
	ControlSamples uint64 `json:"control_samples"`
	// Tests are the statistical tests run, and PValue the one the verdict used.
	Tests  []TestResult `json:"tests,omitempty"`
	PValue *float64     `json:"p_value,omitempty"`
	// Met is whether the condition is true on this evaluation.
	Met     bool    `json:"met"`
	Verdict Verdict `json:"verdict"`
	// BreachingFor is how long a rollback condition has been met, and Fired
	// whether that reached its "for".
	BreachingFor float64 `json:"breaching_for_seconds,omitempty"`
	Fired        bool    `json:"fired,omitempty"`
	// Detail is the whole story in one line.
	Detail string `json:"detail"`

	index int // position in the condition list in force
}

// Decision is what an evaluation concluded.
type Decision string

const (
	// DecisionHold: stay at the step (hold not over, a condition not
	// passing, too few samples, or paused).
	DecisionHold Decision = "hold"
	// DecisionPromote: moved to the next step.
	DecisionPromote Decision = "promote"
	// DecisionRollback: a guardrail fired; the canary is at 0%.
	DecisionRollback Decision = "rollback"
	// DecisionComplete: the last step's hold passed with every promote_when.
	DecisionComplete Decision = "complete"
	// DecisionReady: manual mode, every promote_when passes; waiting for a
	// promote command.
	DecisionReady Decision = "ready"
)

// Explanation is the full record of one evaluation of a route.
type Explanation struct {
	Route   string    `json:"route"`
	At      time.Time `json:"at"`
	Mode    Mode      `json:"mode"`
	State   State     `json:"state"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	// HeldSeconds is the time spent at this step (pauses excluded) and
	// HoldSeconds the step's hold.
	HeldSeconds float64 `json:"held_seconds"`
	HoldSeconds float64 `json:"hold_seconds"`
	// Samples are the request counts in the section's default window.
	Samples  SampleCounts      `json:"samples"`
	Decision Decision          `json:"decision"`
	Reason   string            `json:"reason"`
	Promote  []ConditionResult `json:"promote"`
	Rollback []ConditionResult `json:"rollback"`
}

// SampleCounts are request counts per cohort.
type SampleCounts struct {
	Window      string `json:"window"`
	Canary      uint64 `json:"canary"`
	Control     uint64 `json:"control"`
	Excluded    uint64 `json:"excluded"`
	Comparisons uint64 `json:"comparisons"`
}

// evaluator computes condition results for one route at one moment. It
// reads only immutable inputs and the concurrency-safe Recorder, so it runs
// without the route's lock (external lookups may take seconds).
type evaluator struct {
	ctx       context.Context
	route     string
	spec      *Spec
	rec       *Recorder
	now       time.Time
	dataSince time.Time
	atFull    bool
	health    HealthProber
	external  ExternalSource
	timeout   time.Duration
	windows   map[time.Duration]*WindowStats
	// stepStart is when the current step began: windows and blocks never
	// reach before it, so a change of share never shows up as a difference.
	stepStart time.Time
	// seqs are the sequential states of the conditions being evaluated
	// (copies; the controller stores them back), by index, rollback and
	// promote lists apart.
	seqs, pseqs []*condSeq
	// planned is the number of blocks alpha is spent over, by window.
	planned map[time.Duration]int
	// ext holds the external values looked up before the evaluation.
	ext map[extKey]extResult
	// caches keep the route's sliding windows, by length (only one Tick
	// runs at a time, so they are used by one evaluation at a time).
	caches map[time.Duration]*WindowCache
	// rollbackAlpha is the alpha of one rollback condition over the whole
	// rollout (the policy's alpha shared among its statistical guardrails).
	rollbackAlpha float64
}

// stats returns the window ending now, clipped to dataSince (samples from
// before a resume after rollback belong to the failed attempt).
func (e *evaluator) stats(d time.Duration) *WindowStats {
	if w, ok := e.windows[d]; ok {
		return w
	}
	from := e.now.Add(-d)
	if from.Before(e.dataSince) {
		from = e.dataSince
	}
	if from.Before(e.stepStart) {
		from = e.stepStart
	}
	var w WindowStats
	if c := e.caches[d]; c != nil {
		w = c.Between(from, e.now)
	} else {
		w = e.rec.Between(from, e.now)
	}
	if e.windows == nil {
		e.windows = map[time.Duration]*WindowStats{}
	}
	e.windows[d] = &w
	return &w
}

func (e *evaluator) alpha() float64 {
	if e.spec.Alpha > 0 {
		return float64(e.spec.Alpha)
	}
	return DefaultAlpha
}

// evaluate computes one condition. rollback selects the verdict vocabulary
// and the sample rule: a count that breaches a rollback threshold is
// evidence by itself, but a promotion always needs min_samples.
func (e *evaluator) evaluate(cc *compiledCond) ConditionResult {
	c, rollback, win := cc.c, cc.rollback, cc.window
	res := ConditionResult{Condition: cc.text, Metric: c.Metric, Window: fmtDur(win), index: cc.index}
	m := cc.metric
	if !cc.known { // Validate rejects this; stay safe if called unvalidated.
		res.Verdict, res.Detail = VerdictError, fmt.Sprintf("unknown metric %q", c.Metric)
		return res
	}
	res.Unit = unitName(m)
	thr, cmp := cc.thr, cc.op
	res.Threshold = cc.factor
	finish := func(met bool, detail string) ConditionResult {
		res.Met = met
		switch {
		case rollback && met:
			res.Verdict = VerdictBreach
		case rollback:
			res.Verdict = VerdictOK
		case met:
			res.Verdict = VerdictPass
		default:
			res.Verdict = VerdictFail
		}
		res.Detail = detail
		return res
	}
	noVerdict := func(v Verdict, detail string) ConditionResult {
		res.Verdict, res.Detail = v, detail
		return res
	}

	switch m.kind {
	case kindHealth:
		res.Window = "" // a probe streak has no window
		if e.health == nil {
			return noVerdict(VerdictNoData, "no health prober for this route")
		}
		v := float64(e.health.ConsecutiveFailures())
		res.Canary = ptr(v)
		var met bool
		if c.Consecutive > 0 {
			met = v >= float64(c.Consecutive)
			return finish(met, fmt.Sprintf("%d consecutive failed probes (fires at %d)", int(v), c.Consecutive))
		}
		met = compare(v, thr.value, cmp)
		return finish(met, fmt.Sprintf("%d consecutive failed probes, %s %s", int(v), cmpWord(cmp, rollback), thr.raw))
	case kindExternal:
		return e.evaluateExternal(cc, &res, finish, noVerdict)
	}

	w := e.stats(win)
	if m.name == "match_rate" {
		res.CanarySamples = w.Comparisons
		if need := cc.minSamples; w.Comparisons < need {
			return noVerdict(VerdictNoData, fmt.Sprintf("insufficient comparisons: %d of %d", w.Comparisons, need))
		}
		v := w.MatchRate()
		res.Canary = ptr(v)
		met := compare(v, thr.value, cmp)
		return finish(met, fmt.Sprintf("match rate %s over %d comparisons, %s %s", formatValue(m, v), w.Comparisons, cmpWord(cmp, rollback), thr.raw))
	}

	can, ctl := &w.Canary, &w.Control
	res.CanarySamples, res.ControlSamples = can.Requests, ctl.Requests
	cv, kv := metricValue(m, can), metricValue(m, ctl)
	res.Canary = ptr(cv)
	if ctl.Requests > 0 {
		res.Control = ptr(kv)
	}
	baseline := cc.baseline()
	if baseline && e.atFull {
		return noVerdict(VerdictNotApplicable, "the control has no traffic at 100%; baseline comparisons no longer apply")
	}
	// Sequential evidence is folded on every evaluation, verdict or not,
	// so that no data is lost between evaluations.
	seqT, isSeq := cc.seq, cc.isSeq
	var seqOK bool
	var seqE float64
	var seqText string
	if st := e.seqFor(cc.index, rollback); isSeq && st != nil && !(baseline && e.atFull) {
		seqOK, seqE, seqText = e.runSeq(&seqT, st, win, rollback)
		res.Tests = []TestResult{{Name: "msprt", Statistic: seqE, PValue: math.Min(1, 1/math.Max(seqE, 1e-300))}}
		res.PValue = ptr(res.Tests[0].PValue)
	} else {
		isSeq = false
	}
	countBreach := rollback && m.kind == kindCount && thr != nil
	if need := cc.minSamples; !countBreach && (can.Requests < need || (!e.atFull && ctl.Requests < need)) {
		if e.atFull {
			return noVerdict(VerdictNoData, fmt.Sprintf("insufficient samples: canary %d of %d", can.Requests, need))
		}
		return noVerdict(VerdictNoData, fmt.Sprintf("insufficient samples: canary %d, control %d of %d each", can.Requests, ctl.Requests, need))
	}

	if thr != nil {
		met := compare(cv, thr.value, cmp)
		if isSeq {
			met = seqOK
		}
		ctx := ""
		if res.Control != nil {
			ctx = " (control " + formatValue(m, kv) + ")"
		}
		if isSeq {
			return finish(met, fmt.Sprintf("canary %s%s, %s %s: %s", formatValue(m, cv), ctx, cmpWord(cmp, rollback), thr.raw, seqText))
		}
		return finish(met, fmt.Sprintf("canary %s%s, %s %s", formatValue(m, cv), ctx, cmpWord(cmp, rollback), thr.raw))
	}

	// Baseline comparison. The floor keeps a zero (or tiny) control value
	// from turning any canary error into an infinite ratio, while the
	// significance test keeps a handful of errors from firing; with both a
	// real regression against a clean control is still caught.
	floor := defaultFloor(m)
	if c.MinBaseline != nil {
		floor = c.MinBaseline.value
	}
	base := math.Max(kv, floor)
	res.Baseline = ptr(base)
	ratio, finite := safeRatio(cv, base)
	if finite {
		res.Ratio = ptr(ratio)
	}
	if isSeq {
		ratioText := "∞"
		if finite {
			ratioText = strconv.FormatFloat(ratio, 'f', 2, 64) + "x"
		}
		head := fmt.Sprintf("canary %s vs control %s", formatValue(m, cv), formatValue(m, kv))
		if base > kv {
			head += fmt.Sprintf(" (floor %s)", formatValue(m, base))
		}
		k, word := 0.0, ""
		if c.AboveBaseline != nil {
			k, word = float64(*c.AboveBaseline), "above"
		} else {
			k, word = float64(*c.BelowBaseline), "below"
		}
		verdict := "not shown"
		if seqOK {
			verdict = "shown"
		}
		return finish(seqOK, fmt.Sprintf("%s, %s: %s %gx the baseline %s (%s)", head, ratioText, word, k, verdict, seqText))
	}
	// Every baseline rate and latency condition compiles to a sequential
	// test (compile.go); a fixed-sample test here would peek at alpha on
	// every evaluation, which is what the sequential design replaced.
	return noVerdict(VerdictError, "no sequential test state for this condition")
}

func (e *evaluator) evaluateExternal(cc *compiledCond, res *ConditionResult,
	finish func(bool, string) ConditionResult, noVerdict func(Verdict, string) ConditionResult) ConditionResult {
	c, m, win, rollback := cc.c, cc.metric, cc.window, cc.rollback
	if e.external == nil {
		return noVerdict(VerdictError, "no external metric source is configured")
	}
	query := ""
	for _, x := range e.spec.ExternalMetrics {
		if x.Name == m.name {
			query = x.Query
		}
	}
	get := func(cohort splitter.Arm) (float64, error) {
		if r, ok := e.ext[extKey{m.name, cohort, win}]; ok {
			return r.v, r.err
		}
		ctx, cancel := context.WithTimeout(e.ctx, e.timeout)
		defer cancel()
		ctx = WithExternalQuery(ctx, ExternalQuery{Route: e.route, Metric: m.name, Query: query, Cohort: cohort, Window: win})
		v, err := e.external.Value(ctx, m.name, cohort, win)
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			err = errors.New("not a finite number")
		}
		if err != nil {
			return 0, fmt.Errorf("external metric %s (%s): %w", m.name, cohort, err)
		}
		return v, nil
	}
	cv, err := get(splitter.ArmCanary)
	if err != nil {
		return noVerdict(VerdictError, err.Error())
	}
	res.Canary = ptr(cv)
	thr, cmp := cc.thr, cc.op
	if thr != nil {
		return finish(compare(cv, thr.value, cmp), fmt.Sprintf("canary %s, %s %s", formatValue(m, cv), cmpWord(cmp, rollback), thr.raw))
	}
	if e.atFull {
		return noVerdict(VerdictNotApplicable, "the control has no traffic at 100%; baseline comparisons no longer apply")
	}
	kv, err := get(splitter.ArmControl)
	if err != nil {
		return noVerdict(VerdictError, err.Error())
	}
	res.Control = ptr(kv)
	floor := 0.0
	if c.MinBaseline != nil {
		floor = c.MinBaseline.value
	}
	base := math.Max(kv, floor)
	res.Baseline = ptr(base)
	ratio, finite := safeRatio(cv, base)
	if finite {
		res.Ratio = ptr(ratio)
	}
	ratioText := "∞"
	if finite {
		ratioText = strconv.FormatFloat(ratio, 'f', 2, 64) + "x"
	}
	head := fmt.Sprintf("canary %s vs control %s: %s", formatValue(m, cv), formatValue(m, kv), ratioText)
	// External sources give no samples to test, so the comparison is on
	// the values alone; the source is expected to smooth over its window.
	if c.AboveBaseline != nil {
		k := float64(*c.AboveBaseline)
		return finish(ratio > k, fmt.Sprintf("%s %s %gx", head, relWord(ratio > k, ">", "<="), k))
	}
	k := float64(*c.BelowBaseline)
	return finish(ratio < k, fmt.Sprintf("%s %s %gx", head, relWord(ratio < k, "<", ">="), k))
}

func relWord(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// safeRatio divides, reporting an infinite ratio (a positive canary over a
// zero baseline) as not finite. 0/0 is 0: neither cohort shows anything.
func safeRatio(a, b float64) (float64, bool) {
	switch {
	case b > 0:
		return a / b, true
	case a > 0:
		return math.Inf(1), false
	default:
		return 0, true
	}
}

func defaultFloor(m metricInfo) float64 {
	switch m.kind {
	case kindRate:
		return DefaultRateFloor
	case kindLatency:
		return DefaultLatencyFloor.Seconds()
	}
	return 0
}

func metricValue(m metricInfo, c *ArmStats) float64 {
	switch m.name {
	case "requests":
		return float64(c.Requests)
	case "errors_5xx":
		return float64(c.Errors5xx)
	case "upstream_errors":
		return float64(c.UpstreamErrors)
	case "error_rate_5xx":
		return c.ErrorRate5xx()
	case "upstream_error_rate":
		return c.UpstreamErrorRate()
	}
	if m.kind == kindLatency {
		return c.quantileMicros(m.quantile) / 1e6
	}
	return 0
}

func compare(v, t float64, o op) bool {
	switch o {
	case opBelow:
		return v < t
	case opAbove:
		return v > t
	case opAtMost:
		return v <= t
	case opAtLeast:
		return v >= t
	}
	return false
}

// cmpWord phrases a comparison for a detail line: a promote condition says
// what it needs, a rollback condition when it fires.
func cmpWord(o op, rollback bool) string {
	if rollback {
		return "fires when " + o.symbol()
	}
	return "needs " + o.symbol()
}

func unitName(m metricInfo) string {
	switch m.kind {
	case kindRate:
		return "ratio"
	case kindLatency:
		return "seconds"
	case kindCount, kindHealth:
		return "count"
	}
	switch m.unit {
	case UnitRatio:
		return "ratio"
	case UnitDuration:
		return "seconds"
	}
	return "number"
}

// formatValue renders a value in its metric's unit for humans.
func formatValue(m metricInfo, v float64) string {
	switch unitName(m) {
	case "ratio":
		return strconv.FormatFloat(v*100, 'g', 3, 64) + "%"
	case "seconds":
		d := time.Duration(v * float64(time.Second))
		switch {
		case d >= time.Second:
			d = d.Round(time.Millisecond)
		case d >= time.Millisecond:
			d = d.Round(10 * time.Microsecond)
		}
		return d.String()
	case "count":
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// describe renders a condition as it reads in the policy.
func (c *Condition) describe() string {
	var b strings.Builder
	b.WriteString(c.Metric)
	if t, name := c.absolute(); t != nil {
		b.WriteString(" " + name + " " + t.raw)
	}
	if c.AboveBaseline != nil {
		b.WriteString(" above_baseline " + strconv.FormatFloat(float64(*c.AboveBaseline), 'g', -1, 64) + "x")
	}
	if c.BelowBaseline != nil {
		b.WriteString(" below_baseline " + strconv.FormatFloat(float64(*c.BelowBaseline), 'g', -1, 64) + "x")
	}
	if c.Consecutive > 0 {
		b.WriteString(" consecutive " + strconv.Itoa(c.Consecutive))
	}
	if c.For > 0 {
		b.WriteString(" for " + fmtDur(c.For.D()))
	}
	return b.String()
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

type extKey struct {
	metric string
	cohort splitter.Arm
	window time.Duration
}

type extResult struct {
	v   float64
	err error
}

// prefetchExternal looks up every external value the conditions need at
// once, concurrently, and waits at most the lookup timeout (which the
// controller bounds by the interval): a slow or hanging source costs one
// timeout per evaluation, not one per lookup, and a source that ignores its
// context is abandoned rather than waited for.
func (e *evaluator) prefetchExternal(lists ...[]compiledCond) {
	if e.external == nil {
		return
	}
	type job struct {
		k     extKey
		query string
	}
	var jobs []job
	seen := map[extKey]bool{}
	for _, conds := range lists {
		for i := range conds {
			c, m := conds[i].c, conds[i].metric
			if !conds[i].known || m.kind != kindExternal {
				continue
			}
			query := ""
			for _, x := range e.spec.ExternalMetrics {
				if x.Name == m.name {
					query = x.Query
				}
			}
			cohorts := []splitter.Arm{splitter.ArmCanary}
			if (c.AboveBaseline != nil || c.BelowBaseline != nil) && !e.atFull {
				cohorts = append(cohorts, splitter.ArmControl)
			}
			for _, co := range cohorts {
				k := extKey{m.name, co, conds[i].window}
				if !seen[k] {
					seen[k] = true
					jobs = append(jobs, job{k, query})
				}
			}
		}
	}
	if len(jobs) == 0 {
		return
	}
	type answer struct {
		k extKey
		r extResult
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.timeout)
	defer cancel()
	answers := make(chan answer, len(jobs)) // buffered: a late answer never blocks its goroutine
	for _, j := range jobs {
		go func() {
			qctx := WithExternalQuery(ctx, ExternalQuery{Route: e.route, Metric: j.k.metric, Query: j.query, Cohort: j.k.cohort, Window: j.k.window})
			v, err := e.external.Value(qctx, j.k.metric, j.k.cohort, j.k.window)
			if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
				err = errors.New("not a finite number")
			}
			if err != nil {
				err = fmt.Errorf("external metric %s (%s): %w", j.k.metric, j.k.cohort, err)
			}
			answers <- answer{j.k, extResult{v, err}}
		}()
	}
	e.ext = make(map[extKey]extResult, len(jobs))
	for _, j := range jobs {
		e.ext[j.k] = extResult{err: fmt.Errorf("external metric %s (%s): no answer within %s", j.k.metric, j.k.cohort, e.timeout)}
	}
	for range jobs {
		select {
		case a := <-answers:
			e.ext[a.k] = a.r
		case <-ctx.Done():
			return
		}
	}
}
