package splitter

// Arm is which side of a canary comparison a request belongs to. It is the
// one definition shared by the proxy (which reports each request's arm to
// an observer) and the rollout controller (which compares the arms); a
// named user group is a cohort (CohortSpec), never an arm.
type Arm uint8

// Arms. Requests routed by a cohort rule or a force header are test
// traffic: they are reported apart and kept out of canary-vs-control
// statistics, because they are not a random sample and would bias both the
// comparison and the sample-size gate, unless a rollout opts to include them
// (analysis: {include: [percent, cohort]}).
const (
	// ArmControl: the percentage split sent the request to the stable upstream.
	ArmControl Arm = iota
	// ArmCanary: the percentage split sent the request to the canary.
	ArmCanary
	// ArmExcluded: a cohort rule or force header routed the request (to
	// stable, in the proxy's report).
	ArmExcluded
	// ArmExcludedCanary: a cohort rule or force header sent the request to
	// the canary. The proxy reports it; the rollout records it as canary or
	// excluded depending on its analysis settings.
	ArmExcludedCanary
)

var armNames = [...]string{"control", "canary", "excluded", "excluded_canary"}

// String names the arm as it appears in JSON and logs.
func (a Arm) String() string {
	if int(a) < len(armNames) {
		return armNames[a]
	}
	return "unknown"
}
