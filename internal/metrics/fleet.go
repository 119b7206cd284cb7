package metrics

import "github.com/prometheus/client_golang/prometheus"

// Fleet holds the collectors of fleet mode (internal/fleet). They are
// registered only when a fleet is configured, so a standalone instance
// exports none of them.
type Fleet struct {
	// EtcdUp is 1 while the last request to etcd succeeded.
	EtcdUp prometheus.Gauge
	// IsLeader is 1 while this member holds the fleet's leadership.
	IsLeader prometheus.Gauge
	// Members counts the members registered under the prefix.
	Members prometheus.Gauge
	// StateWrites counts rollout state writes by result: ok, conflict
	// (another writer won the revision check) or error.
	StateWrites *prometheus.CounterVec
	// WindowFetchFailures counts members that did not answer a window
	// request of the leader.
	WindowFetchFailures prometheus.Counter
	// Holds counts leader evaluations held for the fleet's sake, by reason:
	// missing_members or policy_mismatch.
	Holds *prometheus.CounterVec
}

// NewFleet creates and registers the fleet collectors; call it once.
func (m *Metrics) NewFleet() *Fleet {
	f := factory{m.Registry}
	return &Fleet{
		EtcdUp:              f.gauge("fleet_etcd_up", "1 while this member reaches etcd, 0 while it does not (shares stay as they were; no transitions happen)."),
		IsLeader:            f.gauge("fleet_is_leader", "1 while this member is the fleet leader that evaluates rollouts."),
		Members:             f.gauge("fleet_members", "Fleet members registered in etcd, as last seen by this member."),
		StateWrites:         f.counterVec("fleet_state_writes_total", "Rollout state writes to etcd by result: ok, conflict or error.", "result"),
		WindowFetchFailures: f.counter("fleet_window_fetch_failures_total", "Members that did not answer the leader's request for their recorder windows."),
		Holds:               f.counterVec("fleet_holds_total", "Leader evaluations held for the fleet, by reason: missing_members or policy_mismatch.", "reason"),
	}
}
