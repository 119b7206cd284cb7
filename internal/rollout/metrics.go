package rollout

import "sort"

// metricKind says how a metric's value is measured and therefore how its
// thresholds must be written.
type metricKind uint8

const (
	kindRate     metricKind = iota + 1 // a fraction in [0, 1]; thresholds "0.5%" or 0.005
	kindLatency                        // a duration; thresholds "500ms"
	kindCount                          // a count of events in the window; thresholds 0, 10
	kindHealth                         // consecutive failed active health probes
	kindExternal                       // declared in external_metrics, unit from the declaration
)

// metricInfo describes one metric a condition may name.
type metricInfo struct {
	name string
	kind metricKind
	// perArm is false for metrics measured for the route as a whole
	// (match_rate, health_check_failures): they have no control value.
	perArm bool
	// baseline is true when above_baseline/below_baseline make sense.
	baseline bool
	// quantile is the latency quantile for kindLatency metrics.
	quantile float64
	// unit is the declared unit of an external metric.
	unit ExternalUnit
	help string
}

// builtinMetrics are the metrics the Recorder measures itself. The list is
// the whole vocabulary of the policy besides declared external metrics, so
// a misspelt name is always an error rather than a silently ignored guard.
var builtinMetrics = []metricInfo{
	{name: "requests", kind: kindCount, perArm: true, help: "requests in the window"},
	{name: "errors_5xx", kind: kindCount, perArm: true, help: "responses with status >= 500 in the window"},
	{name: "upstream_errors", kind: kindCount, perArm: true, help: "requests whose upstream failed (connect, timeout, reset) in the window"},
	{name: "error_rate_5xx", kind: kindRate, perArm: true, baseline: true, help: "share of responses with status >= 500"},
	{name: "upstream_error_rate", kind: kindRate, perArm: true, baseline: true, help: "share of requests whose upstream failed"},
	{name: "latency_p50", kind: kindLatency, perArm: true, baseline: true, quantile: 0.50, help: "median latency"},
	{name: "latency_p90", kind: kindLatency, perArm: true, baseline: true, quantile: 0.90, help: "90th percentile latency"},
	{name: "latency_p95", kind: kindLatency, perArm: true, baseline: true, quantile: 0.95, help: "95th percentile latency"},
	{name: "latency_p99", kind: kindLatency, perArm: true, baseline: true, quantile: 0.99, help: "99th percentile latency"},
	{name: "match_rate", kind: kindRate, help: "share of shadow comparisons that matched (route-wide)"},
	{name: "health_check_failures", kind: kindHealth, help: "consecutive failed active health probes of the canary"},
}

// MetricNames returns the names of the built-in metrics, sorted, for
// documentation and for error messages.
func MetricNames() []string {
	out := make([]string, 0, len(builtinMetrics))
	for _, m := range builtinMetrics {
		out = append(out, m.name)
	}
	sort.Strings(out)
	return out
}

func builtinMetric(name string) (metricInfo, bool) {
	for _, m := range builtinMetrics {
		if m.name == name {
			return m, true
		}
	}
	return metricInfo{}, false
}

// lookupMetric resolves name against the built-in metrics and the spec's
// declared external metrics.
func (s *Spec) lookupMetric(name string) (metricInfo, bool) {
	if m, ok := builtinMetric(name); ok {
		return m, true
	}
	for _, e := range s.ExternalMetrics {
		if e.Name == name {
			unit := e.Unit
			if unit == "" {
				unit = UnitNumber
			}
			return metricInfo{name: e.Name, kind: kindExternal, perArm: true, baseline: true, unit: unit, help: e.Query}, true
		}
	}
	return metricInfo{}, false
}

// knownMetricNames lists every name a condition of s may use.
func (s *Spec) knownMetricNames() []string {
	names := MetricNames()
	for _, e := range s.ExternalMetrics {
		if e.Name != "" {
			names = append(names, e.Name)
		}
	}
	return names
}
