package config

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Edge defaults.
const (
	DefaultRequestIDHeader  = "X-Request-Id"
	DefaultUpgradeIdle      = 5 * time.Minute
	DefaultMaxFailures      = 5
	DefaultEjectionDuration = 30 * time.Second
	DefaultHealthInterval   = 10 * time.Second
	DefaultHealthTimeout    = 2 * time.Second
	BalanceRoundRobin       = "round_robin"
	BalanceLeastConn        = "least_conn"
)

// DefaultRedactQuery lists query parameters whose values never reach the
// access log.
var DefaultRedactQuery = []string{"token", "access_token", "api_key", "apikey", "password", "secret", "signature", "sig", "code"}

// AccessLogFields are the fields an access log line can carry.
var AccessLogFields = []string{"method", "route", "upstream", "status", "bytes", "duration", "split", "request_id", "client", "path"}

// TLS configures the proxy listener's TLS.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is 1.2 (default) or 1.3.
	MinVersion string `yaml:"min_version"`
}

// Enabled reports whether TLS is configured.
func (t *TLS) Enabled() bool { return t != nil && (t.CertFile != "" || t.KeyFile != "") }

// MinTLSVersion maps MinVersion to the crypto/tls constant.
func (t *TLS) MinTLSVersion() uint16 {
	if t != nil && t.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// UpstreamTLS configures how the proxy verifies an https upstream.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name verified in the certificate (and sent
	// as SNI); default the URL's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification. For tests only:
	// logged as a warning at start and by validate.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Health configures passive and active health checking of an upstream's
// endpoints.
type Health struct {
	// MaxFailures consecutive connect errors or timeouts eject an endpoint.
	MaxFailures int `yaml:"max_failures"`
	// Ejection is how long an ejected endpoint gets no traffic before it is
	// tried again.
	Ejection cfgtypes.Duration `yaml:"ejection"`
	// Probe configures the active probes, which run only when its Path is
	// set: GET Path on every endpoint, with the upstream's TLS settings.
	cfgtypes.Probe `yaml:",inline"`
}

// DefaultHealthProbe returns the values an upstream's active probe takes
// for the fields it leaves out; there is no default path, so probes are off
// unless health.path is set.
func DefaultHealthProbe() cfgtypes.Probe {
	return cfgtypes.Probe{
		Interval:     cfgtypes.Duration(DefaultHealthInterval),
		Timeout:      cfgtypes.Duration(DefaultHealthTimeout),
		ExpectStatus: 200,
	}
}

// RequestID configures request id propagation.
type RequestID struct {
	// Disabled turns propagation off.
	Disabled bool `yaml:"disabled"`
	// Header carrying the id; default X-Request-Id.
	Header string `yaml:"header"`
}

// AccessLog configures the access log.
type AccessLog struct {
	Enabled bool `yaml:"enabled"`
	// Sample is the share of requests logged, 0.01 or "1%"; 5xx answers are
	// always logged. Default 1 (every request).
	Sample *cfgtypes.Ratio `yaml:"sample"`
	// Fields selects what a line carries; default all of AccessLogFields.
	Fields []string `yaml:"fields"`
	// RedactQuery names query parameters whose values are replaced by
	// "REDACTED", on top of DefaultRedactQuery.
	RedactQuery []string `yaml:"redact_query"`
}

// Upgrades configures Connection: Upgrade (WebSocket) requests.
type Upgrades struct {
	// Disabled refuses upgrades with 501 instead of tunnelling them.
	Disabled bool `yaml:"disabled"`
	// IdleTimeout closes a tunnel with no traffic in either direction.
	IdleTimeout cfgtypes.Duration `yaml:"idle_timeout"`
	// MaxTunnels bounds concurrent tunnels; more get 503.
	MaxTunnels int `yaml:"max_tunnels"`
	// Allow lists the protocols (Upgrade tokens, compared without case and
	// without a "/version") that may be tunnelled; default [websocket]. A
	// request asking for anything else is forwarded as a plain request
	// without its Upgrade field. h2c can never be allowed: after the switch
	// the client's requests would reach the upstream unrouted.
	Allow []string `yaml:"allow"`
}

// DefaultUpgradeAllow is upgrades.allow when unset.
var DefaultUpgradeAllow = []string{"websocket"}

func (c *Config) applyEdgeDefaults() {
	if c.RequestID.Header == "" {
		c.RequestID.Header = DefaultRequestIDHeader
	}
	if c.AccessLog.Sample == nil {
		one := cfgtypes.Ratio(1)
		c.AccessLog.Sample = &one
	}
	if len(c.AccessLog.Fields) == 0 {
		c.AccessLog.Fields = append([]string(nil), AccessLogFields...)
	}
	setDur(&c.Upgrades.IdleTimeout, DefaultUpgradeIdle)
	if c.Upgrades.MaxTunnels == 0 {
		c.Upgrades.MaxTunnels = 1000
	}
	if c.Upgrades.Allow == nil {
		c.Upgrades.Allow = append([]string(nil), DefaultUpgradeAllow...)
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Balance == "" {
			u.Balance = BalanceRoundRobin
		}
		h := &u.Health
		if h.MaxFailures == 0 {
			h.MaxFailures = DefaultMaxFailures
		}
		setDur(&h.Ejection, DefaultEjectionDuration)
		h.Probe = h.Probe.WithDefaults(DefaultHealthProbe())
	}
}

func (c *Config) validateEdge() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}
	if c.TLS.Enabled() {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			add("tls", "both cert_file and key_file are required")
		} else if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
			add("tls.cert_file", "cannot load the key pair: %v", err)
		}
		switch c.TLS.MinVersion {
		case "", "1.2", "1.3":
		default:
			add("tls.min_version", "unsupported %q: want 1.2 or 1.3", c.TLS.MinVersion)
		}
	}
	if !cfgtypes.IsToken(c.RequestID.Header) {
		add("request_id.header", "invalid header name %q", c.RequestID.Header)
	}
	if s := *c.AccessLog.Sample; s < 0 || s > 1 {
		add("access_log.sample", "must be between 0 and 1 (or 0%% and 100%%)")
	}
	for i, f := range c.AccessLog.Fields {
		if !contains(AccessLogFields, f) {
			add(fmt.Sprintf("access_log.fields[%d]", i), "unknown field %q%s", f, cfgtypes.Suggest(f, AccessLogFields))
		}
	}
	if c.Upgrades.MaxTunnels < 0 {
		add("upgrades.max_tunnels", "must not be negative")
	}
	if c.Admin.Pprof && c.Admin.Token == "" {
		add("admin.pprof", "profiles need admin.token: set a token (profiles expose memory contents) or turn pprof off")
	}
	for i, h := range c.Admin.Hosts {
		if h == "" || strings.ContainsAny(h, ":/@ ") && !strings.HasPrefix(h, "[") {
			add(fmt.Sprintf("admin.hosts[%d]", i), "%q: give a host name or address without port or scheme, such as admin.example.internal", h)
		}
	}
	for i, p := range c.Upgrades.Allow {
		path := fmt.Sprintf("upgrades.allow[%d]", i)
		switch {
		case strings.ContainsRune(p, '/'):
			add(path, "%q: give the protocol name without a version (websocket, not websocket/13)", p)
		case !cfgtypes.IsToken(p):
			add(path, "invalid protocol name %q: want a token such as websocket", p)
		case strings.EqualFold(p, "h2c"):
			add(path, "h2c cannot be tunnelled: after the switch the client's HTTP/2 requests would reach the upstream unrouted and unmirrored (remove it; h2c clients fall back to HTTP/1.1)")
		}
	}
	for i := range c.Upstreams {
		errs = append(errs, c.Upstreams[i].validateEdge(fmt.Sprintf("upstreams[%d]", i))...)
	}
	return errs
}

func (u *Upstream) validateEdge(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(p+"."+path, format, args...))
	}
	switch u.Balance {
	case BalanceRoundRobin, BalanceLeastConn:
	default:
		add("balance", "unknown %q: want round_robin or least_conn%s", u.Balance, cfgtypes.Suggest(u.Balance, []string{BalanceRoundRobin, BalanceLeastConn}))
	}
	if u.URL != "" && len(u.URLs) > 0 {
		add("urls", "give url or urls, not both")
	}
	for i, raw := range u.URLs {
		if _, _, err := ParseUpstreamURL(raw); err != nil {
			add(fmt.Sprintf("urls[%d]", i), "%v", err)
		}
	}
	if u.TLS.CAFile != "" {
		if _, err := os.ReadFile(u.TLS.CAFile); err != nil {
			add("tls.ca_file", "%v", err)
		}
	}
	h := u.Health
	if h.MaxFailures < 0 {
		add("health.max_failures", "must not be negative")
	}
	return append(errs, h.Probe.Validate(p+".health", DefaultHealthProbe())...)
}

// Endpoints returns the upstream's URLs: urls, or url alone.
func (u *Upstream) Endpoints() []string {
	if len(u.URLs) > 0 {
		return u.URLs
	}
	if u.URL == "" {
		return nil
	}
	return []string{u.URL}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
