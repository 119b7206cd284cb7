package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shadowproxy/shadowproxy/config"
)

// writeSelfSigned writes a loopback certificate and key to dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestReloadRejectedByProxyChangesNothing: a configuration that passes
// validation and compiles everywhere except in the proxy (it turns TLS on,
// which only a restart can do) must leave every part of the running
// configuration as it was. Before, the analyzer's rules and the Prometheus
// source were already replaced when the proxy refused, while the log said
// the previous configuration was kept.
func TestReloadRejectedByProxyChangesNothing(t *testing.T) {
	u1, shadow := startVersion(t, "u1"), startVersion(t, "shadow")
	cfgA := reloadConfig("u1", u1.url, shadow.url, "")
	certFile, keyFile := writeSelfSigned(t, t.TempDir())
	// B: a second shadowed route with its own compare rules, a Prometheus
	// source, and TLS on.
	cfgB := reloadConfig("u1", u1.url, shadow.url, fmt.Sprintf(`  - name: y
    match: {path_prefix: /y}
    upstream: u1
    shadow: {targets: [shadow], compare: {ignore: [/ts]}}
prometheus: {url: "http://127.0.0.1:1"}
tls: {cert_file: %s, key_file: %s}
`, certFile, keyFile))
	next := mustConfig(t, cfgB) // valid on its own: only the proxy can refuse it
	a := startApp(t, cfgA, Options{ReloadFunc: func() (*config.Config, error) { return next, nil }})

	cfgBefore, snapBefore := a.Config(), a.Proxy().Snapshot()
	routesBefore := fmt.Sprint(a.analyzer.Routes())
	seriesBefore := testutil.CollectAndCount(a.metrics.Comparisons) + testutil.CollectAndCount(a.metrics.NoiseFields)

	err := a.Reload()
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("Reload = %v, want the proxy's refusal to turn TLS on", err)
	}
	if a.Config() != cfgBefore {
		t.Error("the configuration in force changed")
	}
	if a.Proxy().Snapshot() != snapBefore {
		t.Error("the proxy snapshot changed")
	}
	if got := fmt.Sprint(a.analyzer.Routes()); got != routesBefore {
		t.Errorf("the analyzer's routes changed: %s, want %s", got, routesBefore)
	}
	if src := a.rollouts.external.Load(); src != nil {
		t.Error("the Prometheus source of the rejected configuration is in force")
	}
	a.rollouts.mu.Lock()
	pending := a.rollouts.pending
	a.rollouts.mu.Unlock()
	if pending != nil {
		t.Error("the rejected rollout plan is still pending")
	}
	if got := testutil.CollectAndCount(a.metrics.Comparisons) + testutil.CollectAndCount(a.metrics.NoiseFields); got != seriesBefore {
		t.Errorf("the rejected configuration created metric series: %d, want %d", got, seriesBefore)
	}
	if v := testutil.ToFloat64(a.metrics.ConfigReloads.WithLabelValues("failure")); v != 1 {
		t.Errorf("config_reloads_total{result=failure} = %v, want 1", v)
	}
	// Still served by A.
	resp, err := http.Get("http://" + a.ProxyAddr() + "/x/1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "u1" {
		t.Errorf("GET /x/1 after the rejected reload: %q", b)
	}
}

// TestReloadsAreSerialized: reloads asked for at once (SIGHUP, the file
// watcher and the API each call Reload) run one after the other.
func TestReloadsAreSerialized(t *testing.T) {
	u1, u2, shadow := startVersion(t, "u1"), startVersion(t, "u2"), startVersion(t, "shadow")
	cfgs := []*config.Config{mustConfig(t, reloadConfig("u1", u1.url, shadow.url, "")), mustConfig(t, reloadConfig("u2", u2.url, shadow.url, ""))}
	var active, overlaps, n atomic.Int64
	a := startApp(t, reloadConfig("u1", u1.url, shadow.url, ""), Options{ReloadFunc: func() (*config.Config, error) {
		if active.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer active.Add(-1)
		time.Sleep(2 * time.Millisecond) // widen the window an overlap would need
		return cfgs[n.Add(1)%2], nil
	}})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if err := a.Reload(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if o := overlaps.Load(); o != 0 {
		t.Errorf("%d reloads ran while another was running", o)
	}
	if v := testutil.ToFloat64(a.metrics.ConfigReloads.WithLabelValues("success")); v != 40 {
		t.Errorf("config_reloads_total{result=success} = %v, want 40", v)
	}
}
