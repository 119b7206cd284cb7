package config

import (
	"strings"
	"testing"
)

func TestTracingDefaults(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(base+`
tracing:
  otlp_endpoint: http://127.0.0.1:4318
  headers: {X-Api-Key: "${KEY}"}
`), func(k string) (string, bool) { return "secret", k == "KEY" })
	if err != nil {
		t.Fatal(err)
	}
	tr := cfg.Tracing
	if tr == nil || tr.Ratio() != DefaultTraceSampleRatio || tr.ServiceName != DefaultTraceServiceName || tr.QueueSize != DefaultTraceQueueSize {
		t.Fatalf("tracing defaults: %+v", tr)
	}
	if tr.Headers["X-Api-Key"] != "secret" {
		t.Errorf("headers %v: ${KEY} not expanded", tr.Headers)
	}
	for _, tc := range []struct{ endpoint, want string }{
		{"http://c:4318", "http://c:4318/v1/traces"},
		{"http://c:4318/", "http://c:4318/v1/traces"},
		{"https://c/otlp/v1/traces", "https://c/otlp/v1/traces"},
	} {
		if got := (&Tracing{OTLPEndpoint: tc.endpoint}).TracesURL(); got != tc.want {
			t.Errorf("TracesURL(%s) = %s, want %s", tc.endpoint, got, tc.want)
		}
	}
	// No tracing section: tracing off.
	cfg, err = Load("t.yaml", []byte(base), noEnv)
	if err != nil || cfg.Tracing != nil {
		t.Errorf("without a tracing section: %+v, %v", cfg.Tracing, err)
	}
	// An explicit 0 stays 0 (only parent-sampled requests are traced).
	cfg, err = Load("t.yaml", []byte(base+"tracing: {otlp_endpoint: 'http://c:4318', sample_ratio: 0}\n"), noEnv)
	if err != nil || cfg.Tracing.Ratio() != 0 {
		t.Errorf("sample_ratio 0: %v, %v", cfg.Tracing, err)
	}
}

func TestTracingValidation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"tracing: {sample_ratio: 0.5}", `t.yaml:8: tracing.otlp_endpoint: required`},
		{"tracing: {otlp_endpoint: 'collector:4318'}", `tracing.otlp_endpoint: invalid url "collector:4318": want http(s)://host:port`},
		{"tracing: {otlp_endpoint: 'grpc://c:4317'}", `tracing.otlp_endpoint: invalid url "grpc://c:4317"`},
		{"tracing: {otlp_endpoint: 'http://c:4318', sample_ratio: 1.5}", `tracing.sample_ratio: 1.5 is not a ratio: want 0..1`},
		{"tracing: {otlp_endpoint: 'http://c:4318', sample_ratio: -0.1}", `tracing.sample_ratio: -0.1 is not a ratio`},
		{"tracing: {otlp_endpoint: 'http://c:4318', queue_size: -1}", `tracing.queue_size: -1 out of range: want 1..1048576`},
		{"tracing: {otlp_endpoint: 'http://c:4318', headers: {'bad header': x}}", `tracing.headers: "bad header" is not a valid header name`},
		{"tracing: {otlp_endpoint: 'http://c:4318', sample_rate: 0.1}", `tracing.sample_rate: unknown field (did you mean "sample_ratio"?)`},
	} {
		_, err := Load("t.yaml", []byte(base+tc.yaml+"\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

func TestHTTP2Validation(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(base+"http2: {enabled: true, h2c: true}\n"), noEnv)
	if err != nil || cfg.HTTP2.MaxConcurrentStreams != DefaultHTTP2MaxConcurrentStreams {
		t.Fatalf("h2c: %+v %v", cfg, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"http2: {h2c: true}", `t.yaml:8: http2.h2c: needs http2.enabled: true`},
		{"http2: {enabled: true}", `http2.enabled: without tls, HTTP/2 needs h2c: true`},
		{"http2: {enabled: true, h2c: true, max_concurrent_streams: -1}", `http2.max_concurrent_streams: -1 out of range: want 1..10000`},
		{"http2: {enabled: true, h2c: true, upgrade: true}", `http2.upgrade: unknown field`},
	} {
		_, err := Load("t.yaml", []byte(base+tc.yaml+"\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}
