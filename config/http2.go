package config

import "github.com/shadowproxy/shadowproxy/internal/cfgtypes"

// HTTP/2 defaults.
const (
	DefaultHTTP2MaxConcurrentStreams = 100
	MaxHTTP2ConcurrentStreams        = 10000
)

// HTTP2 serves HTTP/2 to clients: negotiated by ALPN ("h2") on a TLS
// listener, or with prior knowledge (h2c) on a plaintext one. Upstreams
// stay HTTP/1.1. The limits of the limits section apply to HTTP/2 requests
// too: max_header_size bounds the header list, max_request_body the body,
// the timeouts the connection, max_connections the HTTP/2 connections.
type HTTP2 struct {
	// Enabled offers h2 (with TLS) or accepts h2c prior knowledge (with h2c).
	Enabled bool `yaml:"enabled"`
	// H2C accepts HTTP/2 without TLS from clients that know in advance
	// (the connection preface). The HTTP/1.1 Upgrade to h2c is never
	// honoured.
	H2C bool `yaml:"h2c"`
	// MaxConcurrentStreams bounds the requests in progress on one
	// connection (SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

func (h *HTTP2) applyDefaults() {
	if h.MaxConcurrentStreams == 0 {
		h.MaxConcurrentStreams = DefaultHTTP2MaxConcurrentStreams
	}
}

func (c *Config) validateHTTP2() []error {
	h := &c.HTTP2
	var errs []error
	switch {
	case !h.Enabled && h.H2C:
		errs = append(errs, cfgtypes.Errorf("http2.h2c", "needs http2.enabled: true"))
	case h.Enabled && c.TLS.Enabled() && h.H2C:
		errs = append(errs, cfgtypes.Errorf("http2.h2c", "the listener uses tls, where HTTP/2 is negotiated by ALPN: remove h2c (it is for a plaintext listener)"))
	case h.Enabled && !c.TLS.Enabled() && !h.H2C:
		errs = append(errs, cfgtypes.Errorf("http2.enabled", "without tls, HTTP/2 needs h2c: true (prior knowledge); or configure tls to offer h2 by ALPN"))
	}
	if h.MaxConcurrentStreams < 1 || h.MaxConcurrentStreams > MaxHTTP2ConcurrentStreams {
		errs = append(errs, cfgtypes.Errorf("http2.max_concurrent_streams", "%d out of range: want 1..%d (default %d)",
			h.MaxConcurrentStreams, MaxHTTP2ConcurrentStreams, DefaultHTTP2MaxConcurrentStreams))
	}
	return errs
}
