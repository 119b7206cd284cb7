package rollout

import (
	"testing"
	"time"
)

// Every comparison compiles to its operator, threshold, window, sample
// gate and test once, when the route is added.
func TestCompilePolicy(t *testing.T) {
	spec := parseSpec(t, `
window: 5m
min_samples: 200
external_metrics: [crash_rate]
steps:
  - {percent: 1, hold: 10m}
  - percent: 100
    promote_when: [{metric: latency_p95, below: 500ms, window: 1h, min_samples: 50}]
promote_when:
  - {metric: error_rate_5xx, at_most: 1%}
  - {metric: match_rate, at_least: 99%}
  - {metric: latency_p99, below_baseline: 1.5x}
rollback_when:
  - {metric: error_rate_5xx, above_baseline: 2x, for: 5m}
  - {metric: upstream_errors, above: 0}
  - {metric: crash_rate, above: 0.1%, window: 2m}
`)
	spec.ApplyDefaults()
	p := compile(&spec)
	type want struct {
		op         op
		factor     float64
		window     time.Duration
		minSamples uint64
		isSeq      bool
		key        string
	}
	check := func(name string, got compiledCond, w want) {
		t.Helper()
		if got.op != w.op || got.factor != w.factor || got.window != w.window || got.minSamples != w.minSamples || got.isSeq != w.isSeq || got.key != w.key {
			t.Errorf("%s: op %s factor %g window %s min %d seq %v key %q; want %+v", name, got.op, got.factor, got.window, got.minSamples, got.isSeq, got.key, w)
		}
	}
	s0 := p.steps[0]
	check("at_most", s0.promote[0], want{opAtMost, 0.01, 5 * time.Minute, 200, true, "promote:0:error_rate_5xx at_most 1%"})
	check("match_rate", s0.promote[1], want{opAtLeast, 0.99, 5 * time.Minute, 200, false, "promote:0:match_rate at_least 99%"})
	check("below_baseline", s0.promote[2], want{opBelowBaseline, 1.5, 5 * time.Minute, 200, true, "promote:0:latency_p99 below_baseline 1.5x"})
	check("above_baseline", s0.rollback[0], want{opAboveBaseline, 2, 5 * time.Minute, 200, true, "rollback:error_rate_5xx above_baseline 2x for 5m"})
	check("count", s0.rollback[1], want{opAbove, 0, 5 * time.Minute, 200, false, "rollback:upstream_errors above 0"})
	check("external", s0.rollback[2], want{opAbove, 0.001, 2 * time.Minute, 200, false, "rollback:crash_rate above 0.1%"})
	check("step override", p.steps[1].promote[0], want{opBelow, 0.5, time.Hour, 50, true, "promote:1:latency_p95 below 500ms"})
	if p.rollbackAlpha != 0.05 || p.planned[5*time.Minute] != 4 {
		// 10m hold: blocks 0-5m, 5-10m and the partial one at the
		// promotion; 100%: one.
		t.Errorf("alpha %g (one statistical guardrail), planned %v", p.rollbackAlpha, p.planned)
	}
}
