package app

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/proxy"
	"github.com/shadowproxy/shadowproxy/splitter"
)

func apiKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func apiEnumNames[T fmt.Stringer](values []T) []string {
	out := make([]string, 0, len(values))
	for _, v := range values {
		out = append(out, v.String())
	}
	sort.Strings(out)
	return out
}

func apiSum(m map[string]float64) float64 {
	var n float64
	for _, v := range m {
		n += v
	}
	return n
}

// GET /api/v1/routes reports every split reason, shadow outcome and skip
// reason that the proxy's enums define (so a new one cannot silently go
// missing from the API), with the counts of the traffic sent, and keeps
// counting across a reload that keeps the route.
func TestRoutesAPIReportsEveryEnumValue(t *testing.T) {
	backend := func(name string) string {
		return testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) }))
	}
	stable, canary, shadow := backend("stable"), backend("canary"), backend("shadow")
	var percent atomic.Int32
	percent.Store(50)
	text := func() string {
		return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
  - {name: shadow, url: %s}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: %d}
    shadow:
      targets: [shadow]
`, stable, canary, shadow, percent.Load())
	}
	a := startApp(t, text(), Options{ReloadFunc: func() (*config.Config, error) {
		return config.Load("test.yaml", []byte(text()), func(string) (string, bool) { return "", false })
	}})
	proxyURL, adminURL := "http://"+a.ProxyAddr(), "http://"+a.AdminAddr()
	send := func(method, user string) {
		t.Helper()
		req, _ := http.NewRequest(method, proxyURL+"/x", strings.NewReader(""))
		if user != "" {
			req.Header.Set("X-User-ID", user)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for i := 0; i < 4; i++ {
		send("GET", fmt.Sprintf("user-%d", i))
	}
	send("GET", "")        // missing_key
	send("POST", "user-0") // not mirrored: method

	shop := func() RouteView {
		var routes []RouteView
		testkit.GetJSON(t, nil, adminURL+"/api/v1/routes", &routes)
		if len(routes) != 1 || routes[0].Split == nil || routes[0].Shadow == nil {
			t.Fatalf("routes %+v", routes)
		}
		return routes[0]
	}
	testkit.Eventually(t, "five shadow requests ended", func() bool { return apiSum(shop().Shadow.Outcomes) == 5 })
	check := func(when string) {
		t.Helper()
		v := shop()
		if got, want := apiKeys(v.Split.Decisions), apiEnumNames(splitter.Reasons()); !slices.Equal(got, want) {
			t.Errorf("%s: decisions_by_reason has %v, want every splitter.Reason %v", when, got, want)
		}
		if got, want := apiKeys(v.Shadow.Outcomes), apiEnumNames(proxy.ShadowOutcomes()); !slices.Equal(got, want) {
			t.Errorf("%s: outcomes has %v, want every proxy.Outcome %v", when, got, want)
		}
		if got, want := apiKeys(v.Shadow.Skipped), apiEnumNames(proxy.SkipReasons()); !slices.Equal(got, want) {
			t.Errorf("%s: skipped has %v, want every proxy.SkipReason %v", when, got, want)
		}
		if v.Requests != 6 || apiSum(v.Split.Requests) != 6 || apiSum(v.Split.Decisions) != 6 {
			t.Errorf("%s: requests %v, by upstream %v, decisions %v; want 6 each", when, v.Requests, v.Split.Requests, v.Split.Decisions)
		}
		if v.Split.Decisions[splitter.ReasonMissingKey.String()] != 1 || v.Shadow.Skipped[proxy.SkipMethod.String()] != 1 {
			t.Errorf("%s: missing_key %v, skipped for method %v; want 1 each", when, v.Split.Decisions, v.Shadow.Skipped)
		}
		if v.Shadow.Outcomes[proxy.ShadowOK.String()] != 5 || !slices.Equal(v.Shadow.Targets, []string{"shadow"}) {
			t.Errorf("%s: shadow %+v", when, v.Shadow)
		}
	}
	check("before the reload")
	percent.Store(40)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if v := shop(); v.Split.Percent != 40 {
		t.Fatalf("the reload did not apply: percent %v", v.Split.Percent)
	}
	check("after a reload that keeps the route")
}
