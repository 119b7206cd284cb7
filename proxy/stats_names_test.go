package proxy

import (
	"slices"
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// TestSkipReasonsMatchMetrics: the metrics package creates every skip
// reason's series at zero and names them in HELP; a reason added here but
// not there would be missing from dashboards until its first event.
func TestSkipReasonsMatchMetrics(t *testing.T) {
	var names []string
	for _, r := range SkipReasons() {
		names = append(names, r.String())
	}
	if !slices.Equal(names, metrics.SkipReasons) {
		t.Errorf("proxy skip reasons %v, metrics.SkipReasons %v", names, metrics.SkipReasons)
	}
}
