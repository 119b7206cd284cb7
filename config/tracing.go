package config

import (
	"net/url"
	"regexp"
	"sort"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Tracing defaults.
const (
	DefaultTraceSampleRatio = 0.01
	DefaultTraceServiceName = "shadowproxy"
	DefaultTraceQueueSize   = 2048
	// MaxTraceQueueSize bounds the span queue a config may ask for.
	MaxTraceQueueSize = 1 << 20
)

// Tracing exports OpenTelemetry spans over OTLP/HTTP. Absent: no tracing,
// and the request path pays nothing.
type Tracing struct {
	// OTLPEndpoint is the collector's OTLP/HTTP URL, such as
	// http://otel-collector:4318 (/v1/traces is appended when the URL has
	// no path).
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of requests without a sampled parent that
	// start a trace (0..1, default 0.01). A request whose traceparent says
	// sampled is always traced, one that says not sampled never is.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute.
	ServiceName string `yaml:"service_name"`
	// Headers are sent with every export (for example an API key:
	// "${OTLP_TOKEN}").
	Headers map[string]string `yaml:"headers"`
	// QueueSize bounds finished spans waiting for export; past it spans
	// are dropped and counted (shadowproxy_tracing_spans_total{result="dropped"}).
	QueueSize int `yaml:"queue_size"`
}

// Ratio returns the configured sample ratio (after defaults).
func (t *Tracing) Ratio() float64 {
	if t == nil || t.SampleRatio == nil {
		return DefaultTraceSampleRatio
	}
	return *t.SampleRatio
}

// TracesURL is the URL spans are posted to.
func (t *Tracing) TracesURL() string {
	u, err := url.Parse(t.OTLPEndpoint)
	if err != nil {
		return t.OTLPEndpoint
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String()
}

func (t *Tracing) applyDefaults() {
	if t == nil {
		return
	}
	if t.SampleRatio == nil {
		r := DefaultTraceSampleRatio
		t.SampleRatio = &r
	}
	if t.ServiceName == "" {
		t.ServiceName = DefaultTraceServiceName
	}
	if t.QueueSize == 0 {
		t.QueueSize = DefaultTraceQueueSize
	}
}

var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (t *Tracing) validate() []error {
	if t == nil {
		return nil
	}
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf("tracing."+path, format, args...))
	}
	if t.OTLPEndpoint == "" {
		add("otlp_endpoint", "required: the OTLP/HTTP URL of a collector, such as http://otel-collector:4318 (or remove the tracing section)")
	} else if u, err := url.Parse(t.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		add("otlp_endpoint", "invalid url %q: want http(s)://host:port[/path] of an OTLP/HTTP receiver, such as http://otel-collector:4318", t.OTLPEndpoint)
	}
	if r := t.Ratio(); r < 0 || r > 1 || r != r {
		add("sample_ratio", "%v is not a ratio: want 0..1 (0.01 traces 1%% of requests)", r)
	}
	if t.QueueSize < 0 || t.QueueSize > MaxTraceQueueSize {
		add("queue_size", "%d out of range: want 1..%d (default %d)", t.QueueSize, MaxTraceQueueSize, DefaultTraceQueueSize)
	}
	names := make([]string, 0, len(t.Headers))
	for k := range t.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !headerNameRE.MatchString(k) {
			add("headers", "%q is not a valid header name", k)
		}
	}
	return errs
}
