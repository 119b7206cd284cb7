package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reloadConfig routes /x to the upstream called name (the only primary
// upstream the config declares, so a reload away from it also closes its
// pool) and mirrors it to a shadow, so each reload also replaces the
// route's mirror workers.
func reloadConfig(name, url, shadowURL, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams:
  - {name: %s, url: %s}
  - {name: shadow, url: %s}
routes:
  - name: x
    match: {path_prefix: /x}
    upstream: %s
    shadow: {targets: [shadow], workers: 4, queue_size: 64}
%s`, name, url, shadowURL, name, extra)
}

// writeAtomically replaces path the way an editor or a ConfigMap update
// does, so that a reload never reads half a file.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadUnderLoad: 20 reloads while clients keep requests in flight.
// Valid reloads alternate between A (/x served by u1) and B (/x served by
// u2); every third reload is invalid (it would send /x to u3, and has a
// misspelt key). No client request may fail; every answer must come from
// u1 or u2, and from the one in force for the whole request whenever no
// reload overlapped it; the invalid configs must be rejected and counted
// and must never route a request; the final state is A's.
func TestReloadUnderLoad(t *testing.T) {
	u1, u2, u3 := startVersion(t, "u1"), startVersion(t, "u2"), startVersion(t, "u3")
	shadow := startVersion(t, "shadow")
	cfgA := reloadConfig("u1", u1.url, shadow.url, "")
	cfgB := reloadConfig("u2", u2.url, shadow.url, "")
	invalid := reloadConfig("u3", u3.url, shadow.url, "limits: {read_timout: 5s}\n")

	path := filepath.Join(t.TempDir(), "shadowproxy.yaml")
	writeAtomically(t, path, cfgA)
	a := startApp(t, cfgA, Options{ConfigPath: path})
	proxyURL := "http://" + a.ProxyAddr()

	// epoch is even while no reload runs and odd during one; inForce is
	// the upstream of the configuration in force while it is even.
	var epoch atomic.Int64
	var inForce atomic.Value
	inForce.Store("u1")

	const (
		clients       = 8
		reloads       = 20
		perReload     = 90  // requests completed between two reloads
		afterReloads  = 200 // requests after the last reload
		maxDuration   = 60 * time.Second
		totalExpected = reloads*perReload + afterReloads
	)
	ctx, cancel := context.WithTimeout(context.Background(), maxDuration)
	defer cancel()
	var (
		completed atomic.Int64
		stop      atomic.Bool
		mu        sync.Mutex
		failures  []string
		served    = map[string]int{}
		wg        sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	defer func() { stop.Store(true); wg.Wait() }() // also when a reload fails the test
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				e0, want := epoch.Load(), inForce.Load().(string)
				resp, err := client.Get(fmt.Sprintf("%s/x/%d/%d", proxyURL, c, i))
				if err != nil {
					fail("request failed: %v", err)
					completed.Add(1)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				e1 := epoch.Load()
				body := string(b)
				switch {
				case err != nil || resp.StatusCode != 200:
					fail("status %d body %q err %v", resp.StatusCode, body, err)
				case body != "u1" && body != "u2":
					fail("answered by %q, which no valid config routes to", body)
				case e0 == e1 && e0%2 == 0 && body != want:
					fail("answered by %s while %s was in force for the whole request", body, want)
				}
				mu.Lock()
				served[body]++
				mu.Unlock()
				completed.Add(1)
			}
		}()
	}

	// The reloads, each after another perReload requests have completed so
	// that every one of them happens under load.
	waitFor := func(n int64) {
		for completed.Load() < n {
			if ctx.Err() != nil {
				t.Fatalf("load stalled at %d requests (waiting for %d)", completed.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var rejected []error
	valid, next := 0, "u2"
	for i := 1; i <= reloads; i++ {
		waitFor(int64(i * perReload))
		text, target := invalid, ""
		switch {
		case i%3 == 0:
		case next == "u2":
			text, target, next = cfgB, "u2", "u1"
		default:
			text, target, next = cfgA, "u1", "u2"
		}
		writeAtomically(t, path, text)
		epoch.Add(1)
		err := a.Reload()
		switch {
		case target != "" && err != nil:
			t.Fatalf("reload %d (valid, to %s) failed: %v", i, target, err)
		case target != "":
			inForce.Store(target)
			valid++
		case err == nil:
			t.Fatalf("reload %d of an invalid config succeeded", i)
		default:
			rejected = append(rejected, err)
		}
		epoch.Add(1)
	}
	waitFor(int64(reloads*perReload + afterReloads))
	stop.Store(true)
	wg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	total := completed.Load()
	t.Logf("%d requests, served %v, %d valid and %d rejected reloads", total, served, valid, len(rejected))
	if total < totalExpected {
		t.Errorf("only %d requests completed", total)
	}
	if served["u1"] == 0 || served["u2"] == 0 {
		t.Errorf("served %v: both configs should have carried traffic", served)
	}
	if n := u3.hits.Load(); n != 0 {
		t.Errorf("u3, named only by the rejected config, received %d requests", n)
	}

	// The invalid reloads were rejected with the field and a suggestion,
	// and counted.
	if len(rejected) != reloads/3 {
		t.Errorf("%d reloads rejected, want %d", len(rejected), reloads/3)
	}
	for _, err := range rejected {
		if !strings.Contains(err.Error(), "read_timout") || !strings.Contains(err.Error(), `did you mean "read_timeout"`) {
			t.Errorf("rejection does not name the field and the fix: %v", err)
			break
		}
	}
	m := a.Metrics()
	if got := testutil.ToFloat64(m.ConfigReloads.WithLabelValues("failure")); got != float64(reloads/3) {
		t.Errorf("config_reloads_total{result=failure} = %v, want %d", got, reloads/3)
	}
	if got := testutil.ToFloat64(m.ConfigReloads.WithLabelValues("success")); got != float64(valid) || valid != reloads-reloads/3 {
		t.Errorf("config_reloads_total{result=success} = %v, %d valid reloads, want %d", got, valid, reloads-reloads/3)
	}
	if got := testutil.ToFloat64(m.ConfigLastReloadOK); got != 1 {
		t.Errorf("config_last_reload_successful = %v after a valid last reload", got)
	}
	resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`shadowproxy_config_reloads_total{result="failure"} %d`, reloads/3); !strings.Contains(string(metricsText), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	// Final state: 14 valid reloads alternating from A leave A in force.
	if up := a.Config().Routes[0].Upstream; up != "u1" {
		t.Errorf("final config routes /x to %s, want u1", up)
	}
	if snap := a.Proxy().Snapshot(); snap.Upstream("u1") == nil || snap.Upstream("u2") != nil || snap.Upstream("u3") != nil {
		t.Errorf("final snapshot upstreams: u1 %v, u2 %v, u3 %v; want only u1", snap.Upstream("u1") != nil, snap.Upstream("u2") != nil, snap.Upstream("u3") != nil)
	}
	resp, err = http.Get(proxyURL + "/x/final")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "u1" {
		t.Errorf("after the reloads /x is served by %q, want u1", b)
	}
}
