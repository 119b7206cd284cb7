package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

// jsonService answers like a real service: a stable document per path plus
// a fresh request id and timestamp in every response. With realDiff, items
// whose id is divisible by 4 carry a different price.
func jsonService(t testing.TB, realDiff bool) string {
	t.Helper()
	return testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/api/items/"))
		price := 10
		if realDiff && id%4 == 0 {
			price = 11
		}
		var rid [8]byte
		rand.Read(rid[:])
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": id, "name": fmt.Sprintf("item %d", id), "price": price,
			"requestId": hex.EncodeToString(rid[:]),
			"meta":      map[string]any{"timestamp": time.Now().UnixNano()},
		})
	}))
}

func mustConfig(t testing.TB, cfgText string) *config.Config {
	t.Helper()
	cfg, err := config.Load("test.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func startApp(t testing.TB, cfgText string, opts Options) *App {
	t.Helper()
	cfg, err := config.Load("test.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	return a
}

func noiseConfig(primary, twin, shadow string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams:
  - {name: primary, url: %s}
  - {name: twin, url: %s}
  - {name: shadow, url: %s}
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: primary
    shadow:
      targets: [shadow]
      compare: {secondary: twin}
`, primary, twin, shadow)
}

// TestNoiseLearningEndToEnd: primary and secondary are the same program,
// the shadow really differs in one field for a quarter of the items. After
// a few hundred requests the volatile fields are learnt as noise, the
// mismatches are exactly the real differences, and the diff samples name
// the real field.
func TestNoiseLearningEndToEnd(t *testing.T) {
	a := startApp(t, noiseConfig(jsonService(t, false), jsonService(t, false), jsonService(t, true)), Options{})
	proxyURL, adminURL := "http://"+a.ProxyAddr(), "http://"+a.AdminAddr()
	comparisons := func(result string) float64 {
		return testutil.ToFloat64(a.Metrics().Comparisons.WithLabelValues("api", "shadow", "GET /api/items/{id}", result))
	}
	send := func(from, n int) {
		for i := from; i < from+n; i++ {
			resp, err := http.Get(fmt.Sprintf("%s/api/items/%d", proxyURL, i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		testkit.Eventually(t, "comparisons caught up", func() bool {
			return comparisons("match")+comparisons("mismatch")+comparisons("uncomparable")+comparisons("learning") >= float64(from+n)
		})
	}
	send(0, 200) // learning
	var routes []RouteView
	testkit.GetJSON(t, nil, adminURL+"/api/v1/routes", &routes)
	noisy := map[string]bool{}
	for _, nf := range routes[0].Comparison.Noise {
		if nf.Noisy {
			noisy[nf.Path] = true
		}
	}
	if !noisy["/requestId"] || !noisy["/meta/timestamp"] || noisy["/price"] {
		t.Fatalf("noise learnt %v; want /requestId and /meta/timestamp, never /price", noisy)
	}

	m0, mm0 := comparisons("match"), comparisons("mismatch")
	send(200, 200) // measured
	matches, mismatches := comparisons("match")-m0, comparisons("mismatch")-mm0
	if mismatches != 50 || matches != 150 {
		t.Errorf("after learning: %v matches, %v mismatches; want 150 and 50 (every 4th item really differs)", matches, mismatches)
	}

	var samples []struct {
		URI         string `json:"uri"`
		Differences []struct {
			Path, Kind, Primary, Shadow string
		} `json:"differences"`
	}
	testkit.GetJSON(t, nil, adminURL+"/api/v1/diffs?route=api&limit=10", &samples)
	if len(samples) != 10 {
		t.Fatalf("samples = %d", len(samples))
	}
	for _, s := range samples {
		if len(s.Differences) != 1 || s.Differences[0].Path != "/price" || s.Differences[0].Primary != "10" || s.Differences[0].Shadow != "11" {
			t.Errorf("sample %s differences %+v; want only /price 10 -> 11", s.URI, s.Differences)
		}
	}
	var filtered []json.RawMessage
	testkit.GetJSON(t, nil, adminURL+"/api/v1/diffs?route=api&limit=10&field=/name", &filtered)
	if len(filtered) != 0 {
		t.Errorf("filter by a field that never differs returned %d samples", len(filtered))
	}
	if v := testutil.ToFloat64(a.Metrics().DiffFields.WithLabelValues("api", "shadow", "/price")); v < 50 {
		t.Errorf("diff_fields_total{/price} = %v", v)
	}
	if v := testutil.ToFloat64(a.Metrics().NoiseFields.WithLabelValues("api")); v < 2 {
		t.Errorf("noise_fields = %v", v)
	}

	a.analyzer.Tick(time.Now())
	var hist struct {
		Points []struct {
			Target      string   `json:"target"`
			MatchRate   *float64 `json:"match_rate"`
			Comparisons int      `json:"comparisons"`
			ShadowP99   float64  `json:"shadow_p99"`
		} `json:"points"`
	}
	testkit.GetJSON(t, nil, adminURL+"/api/v1/history?route=api", &hist)
	if len(hist.Points) != 1 || hist.Points[0].Comparisons != 400 || hist.Points[0].MatchRate == nil || hist.Points[0].ShadowP99 <= 0 {
		t.Errorf("history = %+v", hist.Points)
	}
}

func TestReloadKeepsLearntNoiseAndRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	primary, twin, shadow := jsonService(t, false), jsonService(t, false), jsonService(t, true)
	good := noiseConfig(primary, twin, shadow)
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, good, Options{ConfigPath: path})
	for i := 0; i < 120; i++ {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/items/%d", a.ProxyAddr(), i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	testkit.Eventually(t, "noise learnt", func() bool {
		s, _ := a.analyzer.Summary("api")
		return len(s.Noise) > 0 && s.Noise[0].Noisy
	})
	// An unrelated change keeps the route's learnt state.
	os.WriteFile(path, []byte(good+"  - {name: extra, match: {path_prefix: /extra}, upstream: primary}\n"), 0o600)
	if err := a.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if s, _ := a.analyzer.Summary("api"); len(s.Noise) == 0 || !s.Noise[0].Noisy {
		t.Error("reload of an unchanged route forgot the learnt noise")
	}
	if len(a.Config().Routes) != 2 {
		t.Errorf("routes after reload = %d", len(a.Config().Routes))
	}
	// An invalid file is rejected and the old config stays.
	os.WriteFile(path, []byte(strings.Replace(good, "upstream: primary", "upstream: primry", 1)), 0o600)
	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), `unknown upstream "primry" (did you mean "primary"?)`) {
		t.Errorf("reload error = %v", err)
	}
	if len(a.Config().Routes) != 2 {
		t.Error("rejected reload changed the config")
	}
	if testutil.ToFloat64(a.Metrics().ConfigReloads.WithLabelValues("failure")) != 1 ||
		testutil.ToFloat64(a.Metrics().ConfigLastReloadOK) != 0 {
		t.Error("reload failure not counted")
	}
	resp, err := adminPost("http://" + a.AdminAddr() + "/api/v1/reload")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 422 || !strings.Contains(string(b), "primry") {
		t.Errorf("POST /api/v1/reload = %d %s", resp.StatusCode, b)
	}

	// Resetting the noise puts the endpoints back to learning.
	for _, tc := range []struct {
		route string
		code  int
	}{{"nope", 404}, {"api", 200}} {
		resp, err = adminPost("http://" + a.AdminAddr() + "/api/v1/routes/" + tc.route + "/noise/reset")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("noise reset of %q = %d %s", tc.route, resp.StatusCode, b)
		}
	}
	s, _ := a.analyzer.Summary("api")
	if len(s.Noise) != 0 || len(s.Endpoints) != 1 || !s.Endpoints[0].Learning {
		t.Errorf("after reset: noise %v, endpoints %+v", s.Noise, s.Endpoints)
	}
}

func TestWatchConfigReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	up := jsonService(t, false)
	base := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstreams: [{name: u, url: %s}]\nroutes:\n  - {name: a, upstream: u}\n", up)
	os.WriteFile(path, []byte(base), 0o600)
	a := startApp(t, base, Options{ConfigPath: path})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.watchConfig(ctx, path, 20*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	os.WriteFile(path, []byte(base+"  - {name: b, match: {path_prefix: /b}, upstream: u}\n"), 0o600)
	testkit.Eventually(t, "reload after the file changed", func() bool { return len(a.Config().Routes) == 2 })
}
