// Package config defines the YAML schema of shadowproxy, its defaults and its
// validation. Load reads a file, expands ${ENV} references, rejects unknown
// keys, applies defaults and reports every problem at once, each with its
// file, line and field path:
//
//	config.yaml:18: routes[0].upstream: unknown upstream "stabel" (did you mean "stable"?)
//
// A *Config that Load returns is valid and complete; the proxy compiles it
// into an immutable runtime snapshot. Config holds no runtime state.
package config

import (
	"path/filepath"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// Defaults for optional settings; the README's configuration reference lists
// the same values.
const (
	DefaultListen              = "127.0.0.1:8080"
	DefaultAdminListen         = "127.0.0.1:9901"
	DefaultMaxRequestBody      = 10 << 20
	DefaultMaxResponseBody     = 64 << 20
	DefaultMaxHeaderSize       = 16 << 10
	DefaultReadTimeout         = 30 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultIdleTimeout         = 90 * time.Second
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultMaxConnections      = 10000
	DefaultUpstreamTimeout     = 10 * time.Second
	DefaultConnectTimeout      = 2 * time.Second
	DefaultUpstreamMaxConns    = 512
	DefaultMaxIdleConnDuration = 60 * time.Second
	DefaultPipelineDepth       = 32
	DefaultPipelineMaxWait     = 5 * time.Millisecond
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the address of the proxy listener.
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin listener (health, metrics, API).
	AdminListen string `yaml:"admin_listen"`
	// Admin protects the admin listener.
	Admin Admin `yaml:"admin"`
	// Log selects the log level and encoding.
	Log Log `yaml:"log"`
	// Limits bounds what a client can make the proxy hold.
	Limits Limits `yaml:"limits"`
	// TrustedProxies lists CIDRs whose X-Forwarded-For is believed when the
	// client address is used as a split key.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Upstreams are the backends that routes, splits and shadows name.
	Upstreams []Upstream `yaml:"upstreams"`
	// Routes are matched in order; the first match wins.
	Routes []Route `yaml:"routes"`
	// TLS, when set, serves the proxy listener over TLS.
	TLS *TLS `yaml:"tls"`
	// RequestID keeps or generates a request id per request.
	RequestID RequestID `yaml:"request_id"`
	// AccessLog logs requests (sampled) through the structured logger.
	AccessLog AccessLog `yaml:"access_log"`
	// Upgrades configures WebSocket and other Connection: Upgrade requests.
	Upgrades Upgrades `yaml:"upgrades"`
	// WatchConfig reloads the file when it changes (polled every 2s).
	WatchConfig bool `yaml:"watch_config"`
	// Prometheus answers rollouts' external_metrics queries.
	Prometheus Prometheus `yaml:"prometheus"`
	// Tracing exports OpenTelemetry spans; nil turns tracing off.
	Tracing *Tracing `yaml:"tracing"`
	// HTTP2 serves HTTP/2 to clients (ALPN h2 with TLS, or h2c).
	HTTP2 HTTP2 `yaml:"http2"`
	// RolloutPolicies are named rollout sections that routes use with
	// "rollout: {policy: NAME}", overriding any field they set.
	RolloutPolicies map[string]*rollout.Spec `yaml:"rollout_policies"`
	// StateDir holds what the process must remember across restarts:
	// rollout state (for rollouts without their own state_file), evidence
	// records and cutovers. Empty: rollouts keep only their state_file and
	// evidence stays in memory.
	StateDir string `yaml:"state_dir"`
	// Fleet, when set, coordinates rollouts with other members through etcd.
	Fleet *Fleet `yaml:"fleet"`

	// Source is the file the config was read from ("" when from memory).
	Source string `yaml:"-"`
}

// Admin configures access to the admin listener.
type Admin struct {
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// mutating admin endpoints (and on reads with ProtectReads).
	Token string `yaml:"token"`
	// ProtectReads requires the token on read-only endpoints too.
	ProtectReads bool `yaml:"protect_reads"`
	// Hosts are the names (without port) the admin listener answers to
	// besides loopback names and addresses, the address a connection arrived
	// on and admin_listen's host; other Host values get 421 (DNS rebinding).
	Hosts []string `yaml:"hosts"`
	// Pprof serves /debug/pprof/ on the admin listener, behind the token.
	Pprof bool `yaml:"pprof"`
}

// Log configures the structured logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
}

// Limits bounds client connections and requests.
type Limits struct {
	MaxRequestBody  cfgtypes.Size     `yaml:"max_request_body"`
	MaxHeaderSize   cfgtypes.Size     `yaml:"max_header_size"`
	ReadTimeout     cfgtypes.Duration `yaml:"read_timeout"`
	WriteTimeout    cfgtypes.Duration `yaml:"write_timeout"`
	IdleTimeout     cfgtypes.Duration `yaml:"idle_timeout"`
	ShutdownTimeout cfgtypes.Duration `yaml:"shutdown_timeout"`
	// MaxConnections bounds concurrent client connections.
	MaxConnections int `yaml:"max_connections"`
	// MaxRequestsPerConn closes a client connection after this many requests
	// (0: unlimited).
	MaxRequestsPerConn int `yaml:"max_requests_per_conn"`
	// BufferBody is the largest request or response body held in memory
	// whole; a longer one streams through (and is not mirrored). Default
	// DefaultBufferBody.
	BufferBody cfgtypes.Size `yaml:"buffer_body"`
	// ReleaseIdleBuffers returns a keep-alive connection's read and write
	// buffers to shared pools while it waits for its next request: less
	// memory per idle connection, for one small allocation per request.
	ReleaseIdleBuffers bool `yaml:"release_idle_buffers"`
}

// DefaultBufferBody is limits.buffer_body when unset.
const DefaultBufferBody = 1 << 20

// Upstream is one backend.
type Upstream struct {
	// Name is how routes refer to the upstream.
	Name string `yaml:"name"`
	// URL is scheme://host:port of the backend; no path.
	URL string `yaml:"url"`
	// URLs lists several endpoints of the same backend instead of URL.
	URLs []string `yaml:"urls"`
	// Balance is round_robin (default) or least_conn across URLs.
	Balance string `yaml:"balance"`
	// TLS verifies https endpoints.
	TLS UpstreamTLS `yaml:"tls"`
	// Health ejects failing endpoints and optionally probes them.
	Health Health `yaml:"health"`
	// Timeout bounds a whole request to the upstream; past it the client gets 504.
	Timeout cfgtypes.Duration `yaml:"timeout"`
	// ConnectTimeout bounds dialing a new connection.
	ConnectTimeout cfgtypes.Duration `yaml:"connect_timeout"`
	// MaxConns bounds open connections to the upstream.
	MaxConns int `yaml:"max_conns"`
	// MaxIdleConnDuration closes pooled connections idle for longer.
	MaxIdleConnDuration cfgtypes.Duration `yaml:"max_idle_conn_duration"`
	// MaxResponseBody bounds what the upstream can make the proxy buffer.
	MaxResponseBody cfgtypes.Size `yaml:"max_response_body"`
	// RewriteHost sends the upstream's host:port as Host instead of the
	// client's Host (which is preserved by default).
	RewriteHost bool `yaml:"rewrite_host"`
	// PipelineConns, when above 0, sends GET, HEAD and OPTIONS requests
	// without a body over this many pipelined connections per endpoint:
	// requests that are ready together leave in one write and their answers
	// come back in one read, for upstreams known to handle HTTP/1.1
	// pipelining correctly. Other requests always use the pooled client.
	// Off by default.
	PipelineConns int `yaml:"pipeline_conns"`
	// PipelineDepth bounds the requests in flight on one pipelined
	// connection; a request finding every connection full uses the pool.
	PipelineDepth int `yaml:"pipeline_depth"`
	// PipelineMaxWait bounds head-of-line blocking: a request queued behind
	// an answer that has taken longer than this is sent again on a
	// connection of its own, and a connection in that state takes no new
	// requests until it catches up.
	PipelineMaxWait cfgtypes.Duration `yaml:"pipeline_max_wait"`
}

// Route sends matching requests to an upstream.
type Route struct {
	// Name identifies the route in metrics, logs and the API.
	Name string `yaml:"name"`
	// Match selects requests; an empty match matches everything.
	Match Match `yaml:"match"`
	// Upstream is the stable upstream's name.
	Upstream string `yaml:"upstream"`
	// Split sends a sticky share of users, or cohorts, to a canary.
	Split *splitter.Spec `yaml:"split"`
	// Shadow mirrors a sample of requests to shadow upstreams.
	Shadow *Shadow `yaml:"shadow"`
	// Rollout walks the split's canary through steps automatically.
	Rollout *rollout.Spec `yaml:"rollout"`
	// Synthetic marks test traffic (smoke checks, test accounts): a list of
	// conditions written like a cohort's "when", any one of which marks the
	// request. Synthetic requests are routed normally but kept out of the
	// rollout statistics, the match rate and the request counters.
	Synthetic []splitter.Conditions `yaml:"synthetic"`
	// Cutover declares when a dark launch's shadow is ready to become the
	// primary (shadow.targets[0] swaps with upstream).
	Cutover *Cutover `yaml:"cutover"`
}

// Match selects requests by host, path prefix and method; all given parts
// must match.
type Match struct {
	// Host matches the request's Host header without port, case-insensitively.
	// A leading "*." matches any subdomain.
	Host string `yaml:"host"`
	// PathPrefix matches the start of the path as the client sent it.
	PathPrefix string `yaml:"path_prefix"`
	// Methods lists the accepted methods; empty accepts all.
	Methods []string `yaml:"methods"`
}

// Prometheus is the query API external rollout metrics are read from.
type Prometheus struct {
	// URL of a Prometheus-compatible HTTP API, such as http://prometheus:9090.
	URL string `yaml:"url"`
	// Timeout bounds one query (default 5s).
	Timeout cfgtypes.Duration `yaml:"timeout"`
}

// ApplyDefaults fills every unset optional field.
func (c *Config) ApplyDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	l := &c.Limits
	setSize(&l.MaxRequestBody, DefaultMaxRequestBody)
	setSize(&l.MaxHeaderSize, DefaultMaxHeaderSize)
	setSize(&l.BufferBody, DefaultBufferBody)
	setDur(&l.ReadTimeout, DefaultReadTimeout)
	setDur(&l.WriteTimeout, DefaultWriteTimeout)
	setDur(&l.IdleTimeout, DefaultIdleTimeout)
	setDur(&l.ShutdownTimeout, DefaultShutdownTimeout)
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		setDur(&u.Timeout, DefaultUpstreamTimeout)
		setDur(&u.ConnectTimeout, DefaultConnectTimeout)
		setDur(&u.MaxIdleConnDuration, DefaultMaxIdleConnDuration)
		setSize(&u.MaxResponseBody, DefaultMaxResponseBody)
		if u.MaxConns == 0 {
			u.MaxConns = DefaultUpstreamMaxConns
		}
		if u.PipelineDepth == 0 {
			u.PipelineDepth = DefaultPipelineDepth
		}
		setDur(&u.PipelineMaxWait, DefaultPipelineMaxWait)
	}
	c.applyEdgeDefaults()
	setDur(&c.Prometheus.Timeout, 5*time.Second)
	c.Tracing.applyDefaults()
	c.HTTP2.applyDefaults()
	c.resolveRolloutPolicies()
	c.applyFleetDefaults()
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Rollout != nil && r.Rollout.StateFile == "" && c.StateDir != "" {
			r.Rollout.StateFile = filepath.Join(c.StateDir, "rollout-"+r.Name+".json")
		}
		if r.Cutover != nil {
			r.Cutover.applyDefaults()
		}
		for j, m := range r.Match.Methods {
			r.Match.Methods[j] = upperASCII(m)
		}
		if r.Split != nil && r.Split.Salt == "" {
			r.Split.Salt = r.Name
		}
		if r.Shadow != nil {
			r.Shadow.applyDefaults(r.Name)
		}
		if r.Rollout != nil {
			r.Rollout.ApplyDefaults()
		}
	}
}

// Upstream returns the upstream called name, or nil.
func (c *Config) Upstream(name string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i]
		}
	}
	return nil
}

func setDur(d *cfgtypes.Duration, def time.Duration) {
	if *d == 0 {
		*d = cfgtypes.Duration(def)
	}
}

func setSize(s *cfgtypes.Size, def int64) {
	if *s == 0 {
		*s = cfgtypes.Size(def)
	}
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// resolveRolloutPolicies replaces each route's rollout section that names
// a policy by the policy overlaid with the section's own fields. An
// unknown name is left for Validate to report.
func (c *Config) resolveRolloutPolicies() {
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Rollout == nil || r.Rollout.Policy == "" {
			continue
		}
		if base := c.RolloutPolicies[r.Rollout.Policy]; base != nil {
			merged := r.Rollout.Overlay(*base)
			r.Rollout = &merged
		}
	}
}
