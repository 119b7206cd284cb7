package proxy

import (
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// SkipReason is why a request that a route shadows was not mirrored.
type SkipReason uint8

// Skip reasons, the values of shadow_skipped_total's reason label.
const (
	// SkipMethod: the method is not in shadow.methods.
	SkipMethod SkipReason = iota
	// SkipBodyTooLarge: the request body is over shadow.max_body.
	SkipBodyTooLarge
	// SkipCompareQueueFull: both answers arrived but the comparison queue
	// was full, so the exchange was not compared.
	SkipCompareQueueFull
	// SkipSecondaryCanaryServed: the secondary was not asked because the
	// canary, not the stable upstream, served the request; comparing the
	// secondary (the stable version) with the canary's answer would learn
	// the real v1→v2 differences as noise.
	SkipSecondaryCanaryServed
	// SkipStreamed: the request body is longer than limits.buffer_body, so
	// it streamed to the primary and was not kept for a shadow.
	SkipStreamed
	numSkipReasons
)

var skipReasonNames = [numSkipReasons]string{"method", "body_too_large", "compare_queue_full", "secondary_canary_served", "streamed"}

// String returns the label value.
func (r SkipReason) String() string { return skipReasonNames[r] }

// SkipReasons lists every SkipReason, in order.
func SkipReasons() []SkipReason {
	out := make([]SkipReason, numSkipReasons)
	for i := range out {
		out[i] = SkipReason(i)
	}
	return out
}

// ShadowOutcomes lists every Outcome, in order.
func ShadowOutcomes() []ShadowOutcome {
	out := make([]ShadowOutcome, numOutcomes)
	for i := range out {
		out[i] = ShadowOutcome(i)
	}
	return out
}

// RouteStats are a route's counters since they were first exported (a
// reload that keeps the route keeps counting), keyed by the label values of
// the same metrics, with every value of each enum present.
type RouteStats struct {
	// Requests is the number of answers the route's clients got.
	Requests float64
	// RequestsByUpstream splits Requests by the upstream that served them,
	// one entry per target of the route.
	RequestsByUpstream map[string]float64
	// Decisions counts split decisions by splitter.Reason; nil without a
	// split.
	Decisions map[string]float64
	// Shadow is nil when the route does not mirror.
	Shadow *ShadowStats
}

// ShadowStats are a route's mirroring counters.
type ShadowStats struct {
	// Targets names the shadow targets (the secondary is not one).
	Targets []string
	// Outcomes counts shadow requests of the targets by ShadowOutcome.
	Outcomes map[string]float64
	// Skipped counts requests not mirrored, by SkipReason.
	Skipped map[string]float64
}

// Stats reads the route's counters. It reads the metric children the route
// holds (no label lookups, no collection of whole vectors), for the admin
// API; it is never called on the request path.
func (r *Route) Stats() RouteStats {
	st := RouteStats{RequestsByUpstream: map[string]float64{}}
	for _, t := range r.targets {
		if _, counted := st.RequestsByUpstream[t.up.Name]; counted {
			continue
		}
		n := t.requests.Total()
		st.RequestsByUpstream[t.up.Name] = n
		st.Requests += n
	}
	if r.split != nil {
		st.Decisions = map[string]float64{}
		for _, byReason := range r.splitCounters {
			for reason, c := range byReason {
				st.Decisions[splitter.Reason(reason).String()] += metrics.Value(c)
			}
		}
	}
	if mi := r.mirror; mi != nil {
		sh := &ShadowStats{Outcomes: map[string]float64{}, Skipped: map[string]float64{}}
		for _, o := range ShadowOutcomes() {
			sh.Outcomes[o.String()] = 0
		}
		for _, t := range mi.targets[:mi.nShadows] {
			sh.Targets = append(sh.Targets, t.name)
			for o, c := range t.outcomes {
				sh.Outcomes[ShadowOutcome(o).String()] += metrics.Value(c)
			}
		}
		for _, reason := range SkipReasons() {
			sh.Skipped[reason.String()] = metrics.Value(mi.skipped[reason])
		}
		st.Shadow = sh
	}
	return st
}
