package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStatusCounters(t *testing.T) {
	m := New("test")
	s := m.NewStatusCounters("api", "stable")
	s.Inc(200)
	s.Inc(200)
	s.Inc(503)
	s.Inc(42)
	if v := testutil.ToFloat64(m.Requests.WithLabelValues("api", "stable", "200")); v != 2 {
		t.Errorf("200 = %v", v)
	}
	if v := testutil.ToFloat64(m.Requests.WithLabelValues("api", "stable", "other")); v != 1 {
		t.Errorf("other = %v", v)
	}
	// Only codes that happened are exported.
	if n := testutil.CollectAndCount(m.Requests); n != 3 {
		t.Errorf("series = %d, want 3", n)
	}
}

func TestStatusCountersNoAllocs(t *testing.T) {
	m := New("test")
	s := m.NewStatusCounters("api", "stable")
	s.Inc(200)
	if n := testing.AllocsPerRun(1000, func() { s.Inc(200) }); n != 0 {
		t.Errorf("Inc allocates %v per call", n)
	}
}

func TestNamingConventions(t *testing.T) {
	m := New("test")
	// Touch every vector so it is gathered.
	m.ForgetRoute("none")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "shadowproxy_") {
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		if mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestForgetRoute(t *testing.T) {
	m := New("test")
	m.Requests.WithLabelValues("gone", "u", "200").Inc()
	m.Requests.WithLabelValues("kept", "u", "200").Inc()
	m.ForgetRoute("gone")
	if n := testutil.CollectAndCount(m.Requests); n != 1 {
		t.Errorf("series after forget = %d", n)
	}
}

func TestValue(t *testing.T) {
	m := New("test")
	c := m.ShadowRequests.WithLabelValues("api", "v2", "shadow", "ok")
	c.Add(3)
	g := m.ShadowQueue.WithLabelValues("api")
	g.Set(7)
	h := m.RequestDuration.WithLabelValues("api", "v1")
	h.Observe(0.1)
	h.Observe(0.2)
	for name, got := range map[string]float64{"counter": Value(c), "gauge": Value(g), "histogram": Value(h.(prometheus.Metric))} {
		if want := map[string]float64{"counter": 3, "gauge": 7, "histogram": 2}[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// Total counts every code, "other" included, and a second snapshot of the
// same route and upstream counts into the same counters, until ForgetRoute.
func TestStatusCountersTotalAcrossSnapshots(t *testing.T) {
	m := New("test")
	s := m.NewStatusCounters("api", "stable")
	s.Inc(200)
	s.Inc(503)
	s.Inc(42)
	again := m.NewStatusCounters("api", "stable")
	again.Inc(200)
	if s.Total() != 4 || again.Total() != 4 {
		t.Errorf("totals %v and %v, want 4", s.Total(), again.Total())
	}
	if other := m.NewStatusCounters("api", "canary"); other.Total() != 0 {
		t.Errorf("another upstream's total = %v", other.Total())
	}
	m.ForgetRoute("api")
	if fresh := m.NewStatusCounters("api", "stable"); fresh == s || fresh.Total() != 0 {
		t.Errorf("after ForgetRoute: same counters %v, total %v", fresh == s, fresh.Total())
	}
}

// TestSeriesExistFromStart: alerts on rate() of these counters must see 0,
// not "no data", before the first event.
func TestSeriesExistFromStart(t *testing.T) {
	m := New("test")
	m.InitRoute(RouteSeries{Route: "api", Shadows: []string{"v2"}, Rollout: true})
	want := map[string]int{
		"shadowproxy_rollout_transitions_total": len(TransitionActions),
		"shadowproxy_config_reloads_total":      len(ReloadResults),
		"shadowproxy_rejected_requests_total":   len(RejectReasons),
		"shadowproxy_upgrades_total":            len(UpgradeResults),
		"shadowproxy_shadow_skipped_total":      len(SkipReasons),
		"shadowproxy_comparisons_total":         len(CompareResults),
		"shadowproxy_noise_fields":              1,
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue()
			if _, ok := want[mf.GetName()]; ok && v == 0 {
				got[mf.GetName()]++
			}
		}
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d zero-valued series at start, want %d", name, got[name], n)
		}
	}
}

// TestHelpNamesEveryLabelValue: a HELP text is where an operator learns
// which values a label takes; it must list all of them.
func TestHelpNamesEveryLabelValue(t *testing.T) {
	m := New("test")
	m.InitRoute(RouteSeries{Route: "api", Shadows: []string{"v2"}})
	m.ShadowRequests.WithLabelValues("api", "v2", "shadow", "ok")
	m.RolloutTransitions.WithLabelValues("api", "start")
	help := map[string]string{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		help[mf.GetName()] = mf.GetHelp()
	}
	for _, tc := range []struct {
		metric string
		values []string
	}{
		{"shadowproxy_config_reloads_total", ReloadResults},
		{"shadowproxy_rejected_requests_total", RejectReasons},
		{"shadowproxy_upgrades_total", UpgradeResults},
		{"shadowproxy_shadow_skipped_total", SkipReasons},
		{"shadowproxy_comparisons_total", CompareResults},
		{"shadowproxy_shadow_requests_total", []string{"ok", "dropped", "error", "timeout", "skipped", "shadow", "secondary"}},
		{"shadowproxy_rollout_transitions_total", TransitionActions},
	} {
		h, ok := help[tc.metric]
		if !ok {
			t.Errorf("%s not exported", tc.metric)
			continue
		}
		for _, v := range tc.values {
			if !strings.Contains(h, v) {
				t.Errorf("%s HELP %q does not name %q", tc.metric, h, v)
			}
		}
	}
}
