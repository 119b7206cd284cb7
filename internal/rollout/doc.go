// Package rollout walks a route's canary through percentage steps on its own,
// comparing the canary cohort against the control cohort in real time, and
// rolls the canary back within seconds when a guardrail breaks.
//
// The package knows nothing of HTTP. The proxy feeds a per-route Recorder on
// every request (lock-free, allocation-free); the Controller reads sliding
// windows out of it on every tick, runs the statistics, and drives the route
// through a RouteHandle. Webhooks (package notify) and active health probes
// (package healthcheck) are reached through the small Notifier and
// HealthProber interfaces so that this package stays testable with stubs.
//
// Decisions follow the seed's "canary vs control" rule: a guardrail fires
// only when the canary is both statistically worse than the control at the
// policy's alpha (two-proportion z-test, Fisher's exact test for small
// counts, Mann-Whitney U plus a tail-exceedance test for latency) and worse
// by more than the configured factor. Either test alone is not enough: a
// significant but tiny difference is not worth a rollback, and a large ratio
// on a handful of requests is noise.
//
// Every transition is persisted atomically to the route's state_file so that
// a restart resumes the same step and hold clock instead of silently going
// back to step 1 or forward to 100%.
package rollout
