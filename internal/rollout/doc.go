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
// Decisions follow the seed's "canary vs control" rule, and hold up over a
// whole rollout, not only one evaluation: every rate and latency condition
// is an always-valid sequential test (a mixture SPRT, see seq.go), so the
// hundreds of looks a rollout takes cannot inflate its error. Rollback
// conditions test consecutive blocks of one window from the step's start,
// spending the policy's alpha over the planned blocks, so that an equal
// canary is rolled back with probability at most alpha over the whole
// rollout; promote conditions test the whole step at alpha. above_baseline
// Kx tests canary <= K × max(control, floor) directly. A policy is compiled
// once per route (compile.go); Spec.Plan states the traffic each step needs.
//
// Every transition is persisted atomically to the route's state_file (through
// the StateStore interface) so that a restart resumes the same step, hold
// clock, breach streaks and evidence instead of silently going back to step 1
// or forward to 100%.
package rollout
