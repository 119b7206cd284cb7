// Package metrics defines every Prometheus collector shadowproxy exports, with
// its name, help and labels, registered on a private registry (never the
// global default one, so tests and several proxies in one process do not
// collide).
//
// Naming follows the Prometheus conventions: snake_case, base units
// (_seconds, _bytes), counters end in _total. Every label is bounded by the
// configuration (route, upstream, target names) or by a fixed set (reason,
// outcome, result, code); nothing a client sends becomes a label value
// directly. Field paths from diffs are capped per route by the diff engine.
package metrics

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Namespace prefixes every shadowproxy metric.
const Namespace = "shadowproxy"

// LatencyBuckets spans loopback hops (100µs) to slow upstreams (30s).
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

// Metrics holds every collector. Create one with New.
type Metrics struct {
	Registry *prometheus.Registry

	// Primary path.
	Requests         *prometheus.CounterVec   // route, upstream, code
	RequestDuration  *prometheus.HistogramVec // route, upstream
	UpstreamErrors   *prometheus.CounterVec   // route, upstream, reason
	Unmatched        prometheus.Counter
	RejectedRequests *prometheus.CounterVec // reason

	// Upstream endpoints (labels bounded by the configuration).
	EndpointUp        *prometheus.GaugeVec   // upstream, endpoint
	EndpointEjections *prometheus.CounterVec // upstream, endpoint
	UpstreamPipeline  *prometheus.CounterVec // upstream, result

	// Upgrades (WebSocket tunnels).
	Upgrades      *prometheus.CounterVec // route, result
	ActiveTunnels prometheus.Gauge

	// Splitting.
	SplitDecisions *prometheus.CounterVec // route, upstream, reason
	SplitPercent   *prometheus.GaugeVec   // route

	// Shadowing.
	ShadowRequests *prometheus.CounterVec   // route, target, role, outcome
	ShadowDuration *prometheus.HistogramVec // route, target, role
	ShadowQueue    *prometheus.GaugeVec     // route
	ShadowInflight *prometheus.GaugeVec     // route, target, role
	ShadowSkipped  *prometheus.CounterVec   // route, reason
	// ShadowBodyTruncated counts shadow responses cut at shadow.max_body
	// while reading (the rest discarded with the connection).
	ShadowBodyTruncated *prometheus.CounterVec // route, target, role

	// Comparison.
	Comparisons *prometheus.CounterVec // route, target, endpoint, result
	DiffFields  *prometheus.CounterVec // route, target, field
	NoiseFields *prometheus.GaugeVec   // route
	// EndpointsOther counts comparisons of endpoints beyond max_endpoints.
	EndpointsOther *prometheus.CounterVec // route

	// Rollouts.
	RolloutPercent     *prometheus.GaugeVec   // route
	RolloutStep        *prometheus.GaugeVec   // route
	RolloutTransitions *prometheus.CounterVec // route, action

	// Configuration.
	ConfigReloads        *prometheus.CounterVec // result
	ConfigLastReloadOK   prometheus.Gauge
	ConfigLastReloadTime prometheus.Gauge
	BuildInfo            *prometheus.GaugeVec // version, goversion

	// status holds one StatusCounters per route and upstream, so that every
	// snapshot counts into the same one and its Total covers everything
	// exported for the pair, across reloads.
	statusMu sync.Mutex
	status   map[[2]string]*StatusCounters
	// Tracing.
	TracingSpans *prometheus.CounterVec // result

	// Release pipeline (smoke gates, synthetic traffic, cutover, stale splits).
	SyntheticRequests         *prometheus.CounterVec // route
	SmokeChecks               *prometheus.CounterVec // route, check, result
	GateWebhooks              *prometheus.CounterVec // route, type, result
	Evidence                  *prometheus.CounterVec // route, result
	RolloutCompletedTimestamp *prometheus.GaugeVec   // route
	CutoverActive             *prometheus.GaugeVec   // route
}

// New creates and registers every collector, including the Go runtime and
// process collectors.
func New(version string) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{Registry: r}
	f := factory{r}

	m.Requests = f.counterVec("requests_total", "Client requests answered, by route, upstream that served and status code.", "route", "upstream", "code")
	m.RequestDuration = f.histogramVec("request_duration_seconds", "Time from receiving a request to having the upstream's response, by route and upstream.", "route", "upstream")
	m.UpstreamErrors = f.counterVec("upstream_errors_total", "Primary requests that failed at the upstream, by reason: connect, timeout, reset or other.", "route", "upstream", "reason")
	m.Unmatched = f.counter("unmatched_requests_total", "Requests that matched no route and were answered 404.")
	m.RejectedRequests = f.counterVec("rejected_requests_total", "Requests rejected before routing, by reason: body_too_large, header_too_large, timeout, malformed, too_many_connections and connect (HTTP/2).", "reason")

	m.EndpointUp = f.gaugeVec("upstream_endpoint_up", "1 while an upstream endpoint receives traffic, 0 while it is ejected or failing its health check.", "upstream", "endpoint")
	m.EndpointEjections = f.counterVec("upstream_endpoint_ejections_total", "Times an endpoint was ejected after consecutive connect errors or timeouts.", "upstream", "endpoint")
	m.UpstreamPipeline = f.counterVec("upstream_pipeline_requests_total", "Requests eligible for an upstream's pipelined connections (pipeline_conns), by result: answered (on a pipelined connection), bypassed (no pipelined connection could take it: all full, catching up, or the upstream too slow to queue behind; sent on the pool), rescued (waited past pipeline_max_wait behind a slow answer; sent again on the pool), retried (its connection closed before the answer; sent on the pool), rescue_denied (a connection could not rescue its queue because the rescue budget was spent).", "upstream", "result")
	m.Upgrades = f.counterVec("upgrades_total", "Connection: Upgrade requests by route and result: tunnelled, declined (the upstream answered without switching), refused, failed, not_allowed (protocol not in upgrades.allow: forwarded as a plain request).", "route", "result")
	m.ActiveTunnels = f.gauge("active_tunnels", "Upgraded connections (WebSocket tunnels) open now.")

	m.SplitDecisions = f.counterVec("split_decisions_total", "Split decisions by route, chosen upstream and reason: percent, cohort, missing_key, forced or halted.", "route", "upstream", "reason")
	m.SplitPercent = f.gaugeVec("split_percent", "Current canary share of a route in percent (5 means 5%).", "route")

	m.ShadowRequests = f.counterVec("shadow_requests_total", "Mirrored requests by route, target, role (shadow, or secondary: a second copy of the primary that teaches noise) and outcome: ok, dropped, error, timeout or skipped.", "route", "target", "role", "outcome")
	m.ShadowDuration = f.histogramVec("shadow_duration_seconds", "Shadow request latency by route, target and role: shadow or secondary.", "route", "target", "role")
	m.ShadowQueue = f.gaugeVec("shadow_queue_depth", "Mirror jobs waiting for a worker, by route.", "route")
	m.ShadowInflight = f.gaugeVec("shadow_inflight", "Shadow requests in flight, by route, target and role: shadow or secondary.", "route", "target", "role")
	m.ShadowSkipped = f.counterVec("shadow_skipped_total", "Sampled requests not mirrored, by reason: method (not a mirrored method), body_too_large, compare_queue_full (the comparison stage was full), secondary_canary_served (the secondary is not asked about requests the canary served) or streamed (a body longer than limits.buffer_body).", "route", "reason")
	m.ShadowBodyTruncated = f.counterVec("shadow_body_truncated_total", "Shadow responses longer than shadow.max_body: read up to it, the rest discarded with the connection, by route, target and role.", "route", "target", "role")

	m.Comparisons = f.counterVec("comparisons_total", "Primary/shadow comparisons by route, target, endpoint (capped per route, then 'other') and result: match, mismatch, uncomparable or learning.", "route", "target", "endpoint", "result")
	m.DiffFields = f.counterVec("diff_fields_total", "Differences by normalized field path (capped per route, then 'other').", "route", "target", "field")
	m.NoiseFields = f.gaugeVec("noise_fields", "Field paths learnt as noise (primary and secondary disagree), by route.", "route")
	m.EndpointsOther = f.counterVec("endpoints_other_total", "Comparisons of endpoints beyond compare.max_endpoints, counted under endpoint 'other', by route.", "route")

	m.RolloutPercent = f.gaugeVec("rollout_percent", "Canary share set by the rollout controller, in percent.", "route")
	m.RolloutStep = f.gaugeVec("rollout_step", "Current rollout step (0-based index into steps).", "route")
	m.RolloutTransitions = f.counterVec("rollout_transitions_total", "Rollout transitions by route and action: start, promote, rollback, pause, resume, complete, waiting_for_samples (a step has waited for samples longer than its hold), gate_passed (a step's gates passed and its share was applied) or gate_held (a gate holds the step).", "route", "action")
	m.SyntheticRequests = f.counterVec("synthetic_requests_total", "Requests marked synthetic by a route's synthetic rules (smoke checks, test accounts); they are kept out of requests_total, the rollout statistics and, unless shadow.include_synthetic, mirroring.", "route")
	m.SmokeChecks = f.counterVec("smoke_checks_total", "Rollout smoke checks by route, check name and result: pass, fail (the canary failed), environment (stable failed too) or error.", "route", "check", "result")
	m.GateWebhooks = f.counterVec("rollout_gate_webhooks_total", "Rollout gating webhook calls by route, type (pre_step, confirm_promotion) and result: pass or fail.", "route", "type", "result")
	m.Evidence = f.counterVec("rollout_evidence_records_total", "Evidence records written for rollbacks and cutovers, by route and result: written or failed.", "route", "result")
	m.RolloutCompletedTimestamp = f.gaugeVec("rollout_completed_timestamp_seconds", "Unix time a route's rollout completed at 100%; a split left long after it is stale (see stale_after).", "route")
	m.CutoverActive = f.gaugeVec("cutover_active", "1 when the route's dark launch is cut over (the former shadow serves), else 0.", "route")

	m.ConfigReloads = f.counterVec("config_reloads_total", "Configuration reloads by result: success or failure.", "result")
	m.ConfigLastReloadOK = f.gauge("config_last_reload_successful", "1 when the last configuration load or reload succeeded, 0 otherwise.")
	m.ConfigLastReloadTime = f.gauge("config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration load.")
	m.BuildInfo = f.gaugeVec("build_info", "Always 1; labels carry the version of the running binary.", "version", "goversion")
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	// Series with fixed label sets exist from the start at zero, so that an
	// alert on their rate sees 0 rather than "no data" before the first event.
	for _, r := range ReloadResults {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, r := range RejectReasons {
		m.RejectedRequests.WithLabelValues(r)
	}

	m.TracingSpans = f.counterVec("tracing_spans_total", "Finished trace spans by result: exported, failed (the collector refused them or was unreachable) or dropped (export queue full).", "result")

	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Fixed label values, in one place so that the zero-valued series created at
// start and the HELP texts name the same set.
var (
	// ReloadResults are the result values of config_reloads_total.
	ReloadResults = []string{"success", "failure"}
	// RejectReasons are the reason values of rejected_requests_total.
	RejectReasons = []string{"body_too_large", "header_too_large", "timeout", "malformed", "too_many_connections", "connect"}
	// UpgradeResults are the result values of upgrades_total.
	UpgradeResults = []string{"tunnelled", "declined", "refused", "failed", "not_allowed"}
	// SkipReasons are the reason values of shadow_skipped_total.
	SkipReasons = []string{"method", "body_too_large", "compare_queue_full", "secondary_canary_served", "streamed"}
	// CompareResults are the result values of comparisons_total.
	CompareResults = []string{"match", "mismatch", "uncomparable", "learning"}
	// TransitionActions are the action values of rollout_transitions_total.
	TransitionActions = []string{"start", "promote", "rollback", "pause", "resume", "complete", "waiting_for_samples", "gate_passed", "gate_held"}
)

// RouteSeries describes one configured route for InitRoute.
type RouteSeries struct {
	Route string
	// Shadows are the shadow target names (not the secondary).
	Shadows []string
	// Rollout is true when the route has a rollout.
	Rollout bool
}

// InitRoute creates a configured route's series with fixed label values at
// zero (upgrades, shadow skips, comparisons, noise, rollout transitions), so that dashboards
// and alerts see 0 for a route that has had no such event yet rather than
// nothing. The proxy creates split decisions and shadow outcomes itself when
// it compiles a route; series keyed by status code or field path appear with
// their first event, as their values are not known in advance.
func (m *Metrics) InitRoute(rs RouteSeries) {
	for _, r := range UpgradeResults {
		m.Upgrades.WithLabelValues(rs.Route, r)
	}
	if len(rs.Shadows) > 0 {
		for _, r := range SkipReasons {
			m.ShadowSkipped.WithLabelValues(rs.Route, r)
		}
		for _, t := range rs.Shadows {
			for _, r := range CompareResults {
				// Endpoints are learnt from traffic; the "other" series,
				// which every endpoint past max_endpoints shares, exists
				// from the start so sums over endpoint see 0, not nothing.
				m.Comparisons.WithLabelValues(rs.Route, t, "other", r)
			}
		}
		m.NoiseFields.WithLabelValues(rs.Route)
	}
	if rs.Rollout {
		// increase() needs a sample before the first rollback to see it.
		for _, a := range TransitionActions {
			m.RolloutTransitions.WithLabelValues(rs.Route, a)
		}
	}
}

// NotifyStats are the cumulative counts of webhook deliveries.
type NotifyStats struct{ Delivered, Failed, Dropped uint64 }

// RegisterNotifications exports shadowproxy_notifications_total{result}
// from stats, read at scrape time (the dispatcher keeps the counts).
func (m *Metrics) RegisterNotifications(stats func() NotifyStats) {
	for _, result := range []string{"delivered", "failed", "dropped"} {
		result := result
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "notifications_total",
			Help:        "Rollout webhook notifications by result: delivered, failed (after retries) or dropped (queue full).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 {
			s := stats()
			switch result {
			case "delivered":
				return float64(s.Delivered)
			case "failed":
				return float64(s.Failed)
			}
			return float64(s.Dropped)
		}))
	}
}

// ForgetRoute deletes every series labelled with route, so that a route
// removed by a reload stops being exported.
func (m *Metrics) ForgetRoute(route string) {
	l := prometheus.Labels{"route": route}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.Requests, m.RequestDuration, m.UpstreamErrors, m.Upgrades, m.SplitDecisions, m.SplitPercent,
		m.ShadowRequests, m.ShadowDuration, m.ShadowQueue, m.ShadowInflight, m.ShadowSkipped, m.ShadowBodyTruncated,
		m.Comparisons, m.DiffFields, m.NoiseFields, m.RolloutPercent, m.RolloutStep, m.RolloutTransitions,
		m.EndpointsOther, m.SyntheticRequests, m.SmokeChecks, m.GateWebhooks, m.Evidence,
		m.RolloutCompletedTimestamp, m.CutoverActive,
	} {
		v.DeletePartialMatch(l)
	}
	m.statusMu.Lock()
	defer m.statusMu.Unlock()
	for k := range m.status {
		if k[0] == route {
			delete(m.status, k)
		}
	}
}

type factory struct{ r *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
	f.r.MustRegister(g)
	return g
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.r.MustRegister(g)
	return g
}

func (f factory) histogramVec(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: latencyBuckets}, labels)
	f.r.MustRegister(h)
	return h
}

// StatusCounters resolves requests_total children lazily per status code
// and caches them, so that after the first response with a code the request
// path does an array index and an atomic add instead of a label lookup (which
// hashes strings and may allocate). Codes never seen export no series.
type StatusCounters struct {
	vec      *prometheus.CounterVec
	route    string
	upstream string
	byCode   [600]atomic.Pointer[counterBox]
	other    atomic.Pointer[counterBox] // codes outside 100..599
}

type counterBox struct{ c prometheus.Counter }

// NewStatusCounters binds requests_total to one route and upstream. Every
// call for the same pair returns the same StatusCounters, until ForgetRoute.
func (m *Metrics) NewStatusCounters(route, upstream string) *StatusCounters {
	m.statusMu.Lock()
	defer m.statusMu.Unlock()
	k := [2]string{route, upstream}
	if s := m.status[k]; s != nil {
		return s
	}
	if m.status == nil {
		m.status = map[[2]string]*StatusCounters{}
	}
	s := &StatusCounters{vec: m.Requests, route: route, upstream: upstream}
	m.status[k] = s
	return s
}

// Inc counts one response with status code. Codes outside 100..599 are
// counted as "other" so that a broken upstream cannot create series.
func (s *StatusCounters) Inc(code int) {
	slot, label := &s.other, "other"
	if code >= 100 && code < 600 {
		slot, label = &s.byCode[code], codeStrings[code]
	}
	if b := slot.Load(); b != nil {
		b.c.Inc()
		return
	}
	// Two first responses racing resolve the same child: no count is lost.
	b := &counterBox{c: s.vec.WithLabelValues(s.route, s.upstream, label)}
	slot.Store(b)
	b.c.Inc()
}

// Total is the number of responses counted, every code included. It reads
// the children it holds, for the admin API; never on the request path.
func (s *StatusCounters) Total() float64 {
	var n float64
	for i := range s.byCode {
		if b := s.byCode[i].Load(); b != nil {
			n += Value(b.c)
		}
	}
	if b := s.other.Load(); b != nil {
		n += Value(b.c)
	}
	return n
}

var codeStrings = func() (t [600]string) {
	for i := 100; i < 600; i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// Value reads one counter, gauge or histogram child (a histogram's number
// of observations). It is for the admin API, which reads the children the
// components hold instead of collecting and filtering whole vectors.
func Value(m prometheus.Metric) float64 {
	var pb dto.Metric
	if m.Write(&pb) != nil {
		return 0
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Histogram != nil:
		return float64(pb.Histogram.GetSampleCount())
	}
	return 0
}
