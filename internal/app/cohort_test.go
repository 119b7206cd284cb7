package app

import (
	"testing"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// analysis: {include: [percent, cohort]} analyses cohort-routed requests on
// the side they went to; by default they stay excluded.
func TestRecorderObserverCohorts(t *testing.T) {
	for _, tc := range []struct {
		include bool
		in      splitter.Arm
		want    splitter.Arm
	}{
		{false, splitter.ArmControl, splitter.ArmControl},
		{false, splitter.ArmCanary, splitter.ArmCanary},
		{false, splitter.ArmExcluded, splitter.ArmExcluded},
		{false, splitter.ArmExcludedCanary, splitter.ArmExcluded},
		{true, splitter.ArmExcluded, splitter.ArmControl},
		{true, splitter.ArmExcludedCanary, splitter.ArmCanary},
		{true, splitter.ArmCanary, splitter.ArmCanary},
	} {
		if got := (recorderObserver{includeCohort: tc.include}).cohort(tc.in); got != tc.want {
			t.Errorf("include=%v %d: got %s, want %s", tc.include, tc.in, got, tc.want)
		}
	}
}
