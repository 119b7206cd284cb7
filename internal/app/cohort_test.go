package app

import (
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// analysis: {include: [percent, cohort]} analyses cohort-routed requests on
// the side they went to; by default they stay excluded.
func TestRecorderObserverCohorts(t *testing.T) {
	for _, tc := range []struct {
		include bool
		in      proxy.Cohort
		want    rollout.Cohort
	}{
		{false, proxy.CohortControl, rollout.Control},
		{false, proxy.CohortCanary, rollout.Canary},
		{false, proxy.CohortExcluded, rollout.Excluded},
		{false, proxy.CohortExcludedCanary, rollout.Excluded},
		{true, proxy.CohortExcluded, rollout.Control},
		{true, proxy.CohortExcludedCanary, rollout.Canary},
		{true, proxy.CohortCanary, rollout.Canary},
	} {
		if got := (recorderObserver{includeCohort: tc.include}).cohort(tc.in); got != tc.want {
			t.Errorf("include=%v %d: got %s, want %s", tc.include, tc.in, got, tc.want)
		}
	}
}
