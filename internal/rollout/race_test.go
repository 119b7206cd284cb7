//go:build race

package rollout

// raceEnabled: the race detector slows the whole-rollout simulation about
// fifteenfold, so it runs fewer rollouts (see mcRuns).
const raceEnabled = true
