package app

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/shadowproxy/shadowproxy/config"
)

// TestRejectedReloadIsOneWarning: a bad file is the operator's mistake, not
// the process's: one warn line listing every error, no stack trace.
func TestRejectedReloadIsOneWarning(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	up := jsonService(t, false)
	good := noiseConfig(up, up, up)
	path := filepath.Join(t.TempDir(), "shadowproxy.yaml")
	writeAtomically(t, path, good)
	a := startApp(t, good, Options{ConfigPath: path, Logger: zap.New(core)})
	bad := strings.Replace(good, "upstream: primary", "upstream: primry\n    weight: 5", 1)
	writeAtomically(t, path, bad)
	if err := a.Reload(); err == nil {
		t.Fatal("reload of a bad file succeeded")
	}
	entries := logs.FilterMessageSnippet("reload rejected").All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries for one rejected reload, want 1", len(entries))
	}
	e := entries[0]
	if e.Level != zapcore.WarnLevel || e.Stack != "" {
		t.Errorf("rejected reload logged at %s with stack %q, want warn without a stack", e.Level, e.Stack)
	}
	errs, _ := e.ContextMap()["errors"].([]any)
	if len(errs) != 2 || !strings.Contains(errs[0].(string)+errs[1].(string), `"primry"`) ||
		!strings.Contains(errs[0].(string)+errs[1].(string), "weight") {
		t.Errorf("errors field = %q, want both errors (unknown upstream, unknown field weight), one per element", errs)
	}
}

// TestLoggerFormatsAgree: the console and JSON formats carry the same
// fields with the same types; durations are milliseconds in both, and no
// error level entry carries a stack trace.
func TestLoggerFormatsAgree(t *testing.T) {
	lines := map[string]string{}
	for _, format := range []string{"json", "console"} {
		var buf bytes.Buffer
		log, err := newLogger(config.Log{Level: "info", Format: format}, zapcore.AddSync(&buf))
		if err != nil {
			t.Fatal(err)
		}
		log.Error("upstream failed", zap.Duration("duration_ms", 1500*time.Millisecond), zap.Int("status", 502))
		lines[format] = buf.String()
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(lines["json"]), &j); err != nil {
		t.Fatalf("json line %q: %v", lines["json"], err)
	}
	if j["duration_ms"] != 1500.0 || j["status"] != 502.0 {
		t.Errorf("json fields duration_ms=%v status=%v, want the numbers 1500 and 502", j["duration_ms"], j["status"])
	}
	if _, ok := j["stacktrace"]; ok {
		t.Errorf("json line carries a stack trace: %s", lines["json"])
	}
	c := lines["console"]
	if !strings.Contains(c, `"duration_ms": 1500`) || !strings.Contains(c, `"status": 502`) || strings.Count(c, "\n") != 1 {
		t.Errorf("console line %q, want duration_ms 1500 and status 502 as numbers, on one line", c)
	}
}

// TestLabelValuesHaveNoSpaces: a secondary is told apart by a role label,
// not by a name with a suffix.
func TestLabelValuesHaveNoSpaces(t *testing.T) {
	up := jsonService(t, false)
	a := startApp(t, noiseConfig(up, up, up), Options{})
	resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "shadowproxy_") && strings.Contains(line, ` (`) {
			t.Errorf("label value with a space: %s", line)
		}
	}
	for _, want := range []string{
		`shadowproxy_shadow_requests_total{outcome="ok",role="secondary",route="api",target="twin"} 0`,
		`shadowproxy_shadow_requests_total{outcome="ok",role="shadow",route="api",target="shadow"} 0`,
		`shadowproxy_upgrades_total{result="refused",route="api"} 0`,
		`shadowproxy_config_reloads_total{result="failure"} 0`,
		`shadowproxy_rejected_requests_total{reason="header_too_large"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
