package analysis

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/proxy"
)

func testConfig(t *testing.T, compare string) *config.Config {
	t.Helper()
	cfg, err := config.Load("t.yaml", []byte(`
upstreams:
  - {name: p, url: "http://127.0.0.1:1"}
  - {name: s, url: "http://127.0.0.1:2"}
routes:
  - name: api
    upstream: p
    shadow: {targets: [s], compare: {`+compare+`}}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func exchange(primary, shadow string, shadowOutcome proxy.ShadowOutcome) *proxy.Exchange {
	return &proxy.Exchange{
		Route: "api", Method: "GET", URI: "/x", Time: time.Unix(1000, 0), PrimaryLatency: 2 * time.Millisecond,
		Primary: diff.Capture{Status: 200, ContentType: "application/json", Body: []byte(primary)},
		Shadows: []proxy.ShadowResult{{Target: "s", Outcome: shadowOutcome, Latency: 5 * time.Millisecond,
			Capture: diff.Capture{Status: 200, ContentType: "application/json", Body: []byte(shadow)}}},
	}
}

func TestCompareCountsAndHook(t *testing.T) {
	m := metrics.New("t")
	a := New(m, nil, nil)
	if err := a.Configure(testConfig(t, "ignore: [/ts]")); err != nil {
		t.Fatal(err)
	}
	var verdicts []bool
	a.SetComparisonHook("api", func(match bool) { verdicts = append(verdicts, match) })
	a.Compare(exchange(`{"a":1,"ts":1}`, `{"a":1,"ts":2}`, proxy.ShadowOK))
	a.Compare(exchange(`{"a":1}`, `{"a":2}`, proxy.ShadowOK))
	a.Compare(exchange(`{"a":1}`, `{"a":2}`, proxy.ShadowSkipped))
	if v := testutil.ToFloat64(m.Comparisons.WithLabelValues("api", "s", "GET /x", "match")); v != 1 {
		t.Errorf("match = %v", v)
	}
	if v := testutil.ToFloat64(m.Comparisons.WithLabelValues("api", "s", "GET /x", "mismatch")); v != 1 {
		t.Errorf("mismatch = %v", v)
	}
	if v := testutil.ToFloat64(m.DiffFields.WithLabelValues("api", "s", "/a")); v != 1 {
		t.Errorf("diff_fields{/a} = %v", v)
	}
	if len(verdicts) != 2 || !verdicts[0] || verdicts[1] {
		t.Errorf("hook saw %v; skipped exchanges must not be compared", verdicts)
	}
	if _, err := a.Diffs("nope", 1, ""); err != ErrUnknownRoute {
		t.Errorf("unknown route err = %v", err)
	}
}

func TestConfigureKeepsStateOnlyWhenUnchanged(t *testing.T) {
	a := New(metrics.New("t"), nil, nil)
	a.Configure(testConfig(t, "ignore: [/ts]"))
	a.Compare(exchange(`{"a":1}`, `{"a":2}`, proxy.ShadowOK))
	a.Configure(testConfig(t, "ignore: [/ts]"))
	if s, _ := a.Diffs("api", 10, ""); len(s) != 1 {
		t.Errorf("unchanged compare section lost samples: %d", len(s))
	}
	a.Configure(testConfig(t, "ignore: [/other]"))
	if s, _ := a.Diffs("api", 10, ""); len(s) != 0 {
		t.Errorf("changed rules kept old samples: %d", len(s))
	}
}

func TestHistoryIntervals(t *testing.T) {
	a := New(metrics.New("t"), nil, nil)
	a.Configure(testConfig(t, ""))
	a.Compare(exchange(`{"a":1}`, `{"a":1}`, proxy.ShadowOK))
	a.Compare(exchange(`{"a":1}`, `{"a":2}`, proxy.ShadowOK))
	a.Tick(time.Unix(10, 0))
	a.Tick(time.Unix(20, 0)) // an empty interval
	h, err := a.History("api")
	if err != nil || len(h.Points) != 2 {
		t.Fatalf("history %+v %v", h, err)
	}
	p := h.Points[0]
	if p.Comparisons != 2 || p.MatchRate == nil || *p.MatchRate != 0.5 {
		t.Errorf("first point %+v", p)
	}
	if math.Abs(p.ShadowP99-0.005)/0.005 > 0.1 || math.Abs(p.PrimaryP50-0.002)/0.002 > 0.1 {
		t.Errorf("latencies %v %v not within 10%%", p.ShadowP99, p.PrimaryP50)
	}
	if h.Points[1].MatchRate != nil || h.Points[1].Comparisons != 0 {
		t.Errorf("empty interval %+v", h.Points[1])
	}
	for i := 0; i < HistoryPoints+5; i++ {
		a.Tick(time.Unix(int64(100+i), 0))
	}
	h, _ = a.History("api")
	if len(h.Points) != HistoryPoints || !h.Points[0].Time.Before(h.Points[1].Time) {
		t.Errorf("ring: %d points", len(h.Points))
	}
}

// TestHistoryAndRoutesAgree: /routes and /history estimate quantiles with
// the one histogram, so the same comparisons give the same p95 in both.
func TestHistoryAndRoutesAgree(t *testing.T) {
	a := New(metrics.New("t"), nil, nil)
	if err := a.Configure(testConfig(t, "")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 500; i++ {
		ex := exchange(`1`, `1`, proxy.ShadowOK)
		ex.PrimaryLatency = time.Duration(i*37%1000+1) * 100 * time.Microsecond
		ex.Shadows[0].Latency = ex.PrimaryLatency * 2
		a.Compare(ex)
	}
	a.Tick(time.Unix(2000, 0))
	s, _ := a.Summary("api")
	h, _ := a.History("api")
	lat := s.Targets[0].Latency
	p := h.Points[0]
	if lat.Primary.P95 != p.PrimaryP95 || lat.Shadow.P99 != p.ShadowP99 || lat.Primary.P50 != p.PrimaryP50 {
		t.Errorf("routes %+v, history %+v", lat, p)
	}
	if math.Abs(lat.Primary.P95-0.095)/0.095 > 0.125 {
		t.Errorf("p95 = %v, want about 0.095", lat.Primary.P95)
	}
}

// TestEndpointsBoundedAndSeparate: each endpoint learns and counts on its
// own; past max_endpoints the rest share "other", counted.
func TestEndpointsBoundedAndSeparate(t *testing.T) {
	m := metrics.New("t")
	a := New(m, nil, nil)
	if err := a.Configure(testConfig(t, "secondary: p, max_endpoints: 2, noise: {min_observations: 3}")); err != nil {
		t.Fatal(err)
	}
	send := func(uri, primary, secondary, shadow string) {
		ex := exchange(primary, shadow, proxy.ShadowOK)
		ex.URI = uri
		ex.Secondary = &proxy.ShadowResult{Target: "p", Outcome: proxy.ShadowOK,
			Capture: diff.Capture{Status: 200, ContentType: "application/json", Body: []byte(secondary)}}
		a.Compare(ex)
	}
	for i := 0; i < 5; i++ {
		// /users/{id}: ts is noise there; the shadow really changes name.
		send(fmt.Sprintf("/users/%d", i), `{"ts":1,"name":"a"}`, fmt.Sprintf(`{"ts":%d,"name":"a"}`, i+2), `{"ts":9,"name":"b"}`)
		// /orders: clean, and the shadow changes ts, which is no noise here.
		send("/orders?page=1", `{"ts":1}`, `{"ts":1}`, `{"ts":2}`)
		send(fmt.Sprintf("/x%d", i), `1`, `1`, `1`)
	}
	s, _ := a.Summary("api")
	if len(s.Endpoints) != 3 || s.EndpointsOther != 5 {
		t.Fatalf("endpoints %d, other %d", len(s.Endpoints), s.EndpointsOther)
	}
	byName := map[string]EndpointSummary{}
	for _, e := range s.Endpoints {
		byName[e.Endpoint] = e
	}
	users, orders := byName["GET /users/{id}"], byName["GET /orders"]
	if users.Learning || users.Observations != 5 || users.Targets[0].Counts.Learning != 2 || users.Targets[0].Counts.Mismatch != 3 {
		t.Errorf("users: %+v", users)
	}
	if f := users.Targets[0].TopFields; len(f) != 2 || f[0].Field != "/name" || f[0].Count != 3 || f[1].Field != "/ts" || f[1].Count != 0 || f[1].Raw != 3 {
		t.Errorf("users fields: %+v", f)
	}
	if orders.Targets[0].Counts.Mismatch != 3 || len(orders.Noise) != 0 {
		t.Errorf("orders: noise of /users leaked or verdicts wrong: %+v", orders)
	}
	if _, ok := byName[diff.OtherEndpoint]; !ok {
		t.Error("no other endpoint")
	}
	if v := testutil.ToFloat64(m.EndpointsOther.WithLabelValues("api")); v != 5 {
		t.Errorf("endpoints_other_total = %v", v)
	}
	if v := testutil.ToFloat64(m.Comparisons.WithLabelValues("api", "s", "GET /users/{id}", "learning")); v != 2 {
		t.Errorf("comparisons{learning} = %v", v)
	}
}
