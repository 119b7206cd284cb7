package proxy

import (
	"fmt"
	"net/http"
	"testing"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// The observer tells cohort-routed requests that went to the canary from
// those that went to stable, so a rollout can choose to analyse them.
func TestObserverSeparatesCohortRoutedCanaryTraffic(t *testing.T) {
	stable := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "stable") })
	canary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "canary") })
	cfg := mustLoad(t, fmt.Sprintf(`
upstreams:
  - {name: stable, url: "%s"}
  - {name: canary, url: "%s"}
routes:
  - name: api
    upstream: stable
    split:
      key: "header:X-User"
      to: canary
      percent: 0
      cohorts:
        - {name: testers, when: {header: {X-Tester: "1"}}, to: canary}
        - {name: bots, when: {header: {X-Bot: "1"}}, to: stable}
`, stable.URL, canary.URL))
	rec := &cohortRecorder{}
	srv, err := New(cfg, Options{Logger: zap.NewNop(), Metrics: metrics.New("test"),
		Observers: func(string) RequestObserver { return rec }})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, srv)
	for _, h := range []string{"X-Tester", "X-Bot", "X-User"} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set(h, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := map[splitter.Arm]int{}
	for _, line := range rec.all() {
		var co splitter.Arm
		if _, err := fmt.Sscanf(line, "cohort=%d", &co); err != nil {
			t.Fatalf("observation %q: %v", line, err)
		}
		got[co]++
	}
	if got[splitter.ArmExcludedCanary] != 1 || got[splitter.ArmExcluded] != 1 || got[splitter.ArmControl] != 1 || len(got) != 3 {
		t.Fatalf("cohorts observed: %v", got)
	}
}
