package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/splitter"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate reports every problem in a defaulted config as *cfgtypes.FieldError
// values whose paths point into the YAML.
func (c *Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}

	if err := checkHostPort(c.Listen); err != "" {
		add("listen", "%s", err)
	}
	if err := checkHostPort(c.AdminListen); err != "" {
		add("admin_listen", "%s", err)
	}
	if c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		add("admin_listen", "must differ from listen (%s): the admin API needs its own port", c.Listen)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "unknown level %q: want debug, info, warn or error%s", c.Log.Level,
			cfgtypes.Suggest(c.Log.Level, []string{"debug", "info", "warn", "error"}))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "unknown format %q: want json or console", c.Log.Format)
	}
	errs = append(errs, c.Limits.validate()...)
	errs = append(errs, c.validateEdge()...)
	errs = append(errs, c.validateFleet()...)
	if c.Prometheus.URL != "" {
		if u, err := url.Parse(c.Prometheus.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("prometheus.url", "invalid url %q: want http(s)://host:port of a Prometheus-compatible API", c.Prometheus.URL)
		}
	}
	errs = append(errs, c.Tracing.validate()...)
	errs = append(errs, c.validateHTTP2()...)
	for i, cidr := range c.TrustedProxies {
		if _, err := parsePrefix(cidr); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "invalid CIDR %q: want an address or a network such as 10.0.0.0/8", cidr)
		}
	}

	if len(c.Upstreams) == 0 {
		add("upstreams", "at least one upstream is required")
	}
	for name, p := range c.RolloutPolicies {
		path := "rollout_policies." + name
		switch {
		case p == nil:
			add(path, "empty policy: give at least steps or conditions")
		default:
			if p.Policy != "" {
				add(path+".policy", "a policy cannot use another policy; copy the fields you need")
			}
			// Checked as written; each route checks the merged result.
			errs = append(errs, cfgtypes.Prefix(path, p.Validate())...)
		}
	}
	names := map[string]int{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		errs = append(errs, u.validate(p)...)
		if prev, dup := names[u.Name]; dup && u.Name != "" {
			add(p+".name", "duplicate upstream name %q (also upstreams[%d])", u.Name, prev)
		}
		names[u.Name] = i
	}

	if len(c.Routes) == 0 {
		add("routes", "at least one route is required")
	}
	routeNames := map[string]int{}
	stateFiles := map[string]int{}
	for i := range c.Routes {
		if ro := c.Routes[i].Rollout; ro != nil && ro.StateFile != "" {
			if j, dup := stateFiles[ro.StateFile]; dup {
				add(fmt.Sprintf("routes[%d].rollout.state_file", i), "%s is also the state_file of routes[%d]: give each route its own (a policy's state_file is shared by every route using it; set state_file in the route)", ro.StateFile, j)
			} else {
				stateFiles[ro.StateFile] = i
			}
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		p := fmt.Sprintf("routes[%d]", i)
		errs = append(errs, r.validate(p)...)
		if r.Rollout != nil && r.Rollout.Policy != "" && c.RolloutPolicies[r.Rollout.Policy] == nil {
			names := make([]string, 0, len(c.RolloutPolicies))
			for n := range c.RolloutPolicies {
				names = append(names, n)
			}
			add(p+".rollout.policy", "unknown rollout policy %q%s; define it under rollout_policies", r.Rollout.Policy, cfgtypes.Suggest(r.Rollout.Policy, names))
		}
		if prev, dup := routeNames[r.Name]; dup && r.Name != "" {
			add(p+".name", "duplicate route name %q (also routes[%d])", r.Name, prev)
		}
		routeNames[r.Name] = i
		for _, ref := range r.upstreamRefs() {
			errs = append(errs, c.checkUpstreamRef(cfgtypes.JoinPath(p, ref.path), ref.name)...)
		}
	}
	return errs
}

// Warnings lists things that are valid but probably not what was meant.
func (c *Config) Warnings() []string {
	var w []string
	for i, u := range c.Upstreams {
		if u.TLS.InsecureSkipVerify {
			w = append(w, fmt.Sprintf("upstreams[%d] (%s) has tls.insecure_skip_verify: its certificate is not checked, so anyone on the path can impersonate it", i, u.Name))
		}
	}
	if !isLoopbackAddr(c.AdminListen) && c.Admin.Token == "" {
		w = append(w, fmt.Sprintf("admin_listen %s is not loopback and admin.token is empty: mutating admin endpoints will refuse every request until a token is set", c.AdminListen))
	}
	w = append(w, c.fleetWarnings()...)
	for i, r := range c.Routes {
		if r.Shadow != nil {
			if unsafe := r.Shadow.UnsafeMethods(); len(unsafe) > 0 {
				w = append(w, fmt.Sprintf("routes[%d] (%s) mirrors non-safe methods %s: shadow upstreams must not have side effects (use a shadow database, or strip credentials)", i, r.Name, strings.Join(unsafe, ", ")))
			}
		}
		if r.Rollout != nil && len(r.Rollout.ExternalMetrics) > 0 && c.Prometheus.URL == "" {
			w = append(w, fmt.Sprintf("routes[%d] (%s) rollout declares external metrics but prometheus.url is not set: conditions on them report an error and block promotion", i, r.Name))
		}
		if r.Rollout != nil {
			for _, rw := range r.Rollout.Warnings() {
				w = append(w, fmt.Sprintf("routes[%d] (%s) rollout: %s", i, r.Name, rw))
			}
		}
		if r.Cutover != nil && c.StateDir == "" {
			w = append(w, fmt.Sprintf("routes[%d] (%s) has a cutover but state_dir is not set: a cutover is kept in memory only, so a restart serves the configured upstream again; set state_dir", i, r.Name))
		}
		if r.Rollout != nil && r.Rollout.Smoke != nil && r.Rollout.Smoke.AllowWrites {
			w = append(w, fmt.Sprintf("routes[%d] (%s) rollout smoke checks may write (allow_writes): they run against production canary and stable before every step; make sure smoke.cleanup undoes them", i, r.Name))
		}
		if r.Match.isCatchAll() && i < len(c.Routes)-1 {
			w = append(w, fmt.Sprintf("routes[%d] (%s) matches every request, so the %d route(s) after it are never used", i, r.Name, len(c.Routes)-1-i))
		}
	}
	return w
}

type upstreamRef struct{ path, name string }

func (r *Route) upstreamRefs() []upstreamRef {
	refs := []upstreamRef{{"upstream", r.Upstream}}
	if r.Split != nil {
		for _, ref := range r.Split.UpstreamRefs() {
			refs = append(refs, upstreamRef{cfgtypes.JoinPath("split", ref.Path), ref.Name})
		}
	}
	if r.Shadow != nil {
		refs = append(refs, r.Shadow.upstreamRefs()...)
	}
	return refs
}

func (c *Config) checkUpstreamRef(path, name string) []error {
	if name == "" {
		return []error{cfgtypes.Errorf(path, "an upstream name is required")}
	}
	if c.Upstream(name) != nil {
		return nil
	}
	known := make([]string, len(c.Upstreams))
	for i, u := range c.Upstreams {
		known[i] = u.Name
	}
	return []error{cfgtypes.Errorf(path, "unknown upstream %q%s", name, cfgtypes.Suggest(name, known))}
}

func (l *Limits) validate() []error {
	var errs []error
	if l.MaxRequestBody < 0 {
		errs = append(errs, cfgtypes.Errorf("limits.max_request_body", "must not be negative"))
	}
	if l.BufferBody < 4096 {
		errs = append(errs, cfgtypes.Errorf("limits.buffer_body", "%s is too small: at least 4KiB (bodies up to it are buffered, longer ones stream)", cfgtypes.FormatSize(int64(l.BufferBody))))
	}
	if l.MaxHeaderSize < 1024 {
		errs = append(errs, cfgtypes.Errorf("limits.max_header_size", "%s is too small for real requests: at least 1KiB", cfgtypes.FormatSize(int64(l.MaxHeaderSize))))
	}
	if l.MaxConnections < 0 {
		errs = append(errs, cfgtypes.Errorf("limits.max_connections", "must not be negative"))
	}
	if l.MaxRequestsPerConn < 0 {
		errs = append(errs, cfgtypes.Errorf("limits.max_requests_per_conn", "must not be negative (0 means unlimited)"))
	}
	return errs
}

func (u *Upstream) validate(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(p+"."+path, format, args...))
	}
	if u.Name == "" {
		add("name", "a name is required")
	} else if !nameRE.MatchString(u.Name) {
		add("name", "invalid name %q: use letters, digits, '-', '_' and '.'", u.Name)
	}
	if u.URL == "" && len(u.URLs) == 0 {
		add("url", "a url such as http://127.0.0.1:9001 (or urls: [...]) is required")
	} else if u.URL != "" {
		if _, _, err := ParseUpstreamURL(u.URL); err != nil {
			add("url", "%v", err)
		}
	}
	if u.Timeout <= 0 {
		add("timeout", "must be positive")
	}
	if u.MaxConns < 0 {
		add("max_conns", "must not be negative")
	}
	if u.PipelineConns < 0 || u.PipelineConns > 64 {
		add("pipeline_conns", "must be between 0 (off) and 64")
	}
	if u.PipelineDepth < 1 || u.PipelineDepth > 1024 {
		add("pipeline_depth", "must be between 1 and 1024 (default %d)", DefaultPipelineDepth)
	}
	if u.PipelineMaxWait <= 0 {
		add("pipeline_max_wait", "must be positive (default %s)", DefaultPipelineMaxWait)
	} else if u.Timeout > 0 && u.PipelineMaxWait >= u.Timeout {
		add("pipeline_max_wait", "must be shorter than timeout (%s): past the timeout the request has failed anyway", u.Timeout.D())
	}
	return errs
}

// ParseUpstreamURL splits an upstream URL into its address (host:port, with
// the scheme's default port filled in) and whether it uses TLS.
func ParseUpstreamURL(raw string) (addr string, tls bool, err error) {
	if raw != "" && !strings.Contains(raw, "://") {
		// url.Parse reads "127.0.0.1:9001" as a path and complains about
		// a colon; what is really missing is the scheme.
		return "", false, fmt.Errorf("invalid url %q: the scheme is missing; write http://%s (or https://%s)", raw, raw, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("invalid url %q: %v", raw, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		tls = true
	default:
		return "", false, fmt.Errorf("invalid url %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return "", false, fmt.Errorf("invalid url %q: no host", raw)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("invalid url %q: give only scheme://host:port; paths, queries and credentials are not supported", raw)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if tls {
			port = "443"
		}
	}
	if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
		return "", false, fmt.Errorf("invalid url %q: bad port %q", raw, port)
	}
	return net.JoinHostPort(host, port), tls, nil
}

func (r *Route) validate(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(p+"."+path, format, args...))
	}
	if r.Name == "" {
		add("name", "a name is required")
	} else if !nameRE.MatchString(r.Name) {
		add("name", "invalid name %q: use letters, digits, '-', '_' and '.'", r.Name)
	}
	if pp := r.Match.PathPrefix; pp != "" && !strings.HasPrefix(pp, "/") {
		add("match.path_prefix", "%q must start with '/'", pp)
	}
	if h := r.Match.Host; h != "" && (strings.ContainsAny(h, "/ :") || strings.Count(h, "*") > 1 || strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) {
		add("match.host", "invalid host %q: give a host name without port or scheme, optionally starting with *. for subdomains", h)
	}
	if r.Split != nil {
		errs = append(errs, cfgtypes.Prefix(p+".split", r.Split.ValidateRoute(r.Name, r.Upstream))...)
	}
	if r.Shadow != nil {
		errs = append(errs, cfgtypes.Prefix(p+".shadow", r.Shadow.validate())...)
	}
	if r.Cutover != nil {
		errs = append(errs, cfgtypes.Prefix(p, r.Cutover.validate(r))...)
	}
	if len(r.Synthetic) > 0 {
		errs = append(errs, cfgtypes.Prefix(p+".synthetic", splitter.ValidateSynthetic(r.Synthetic, r.Split != nil))...)
	}
	if r.Rollout != nil {
		if r.Split == nil {
			add("rollout", "a rollout moves the split's canary share: add a split section (key, to) to this route")
		}

		errs = append(errs, cfgtypes.Prefix(p+".rollout", r.Rollout.Validate())...)
	}
	seen := map[string]bool{}
	for i, m := range r.Match.Methods {
		if !cfgtypes.IsToken(m) {
			add(fmt.Sprintf("match.methods[%d]", i), "invalid method %q", m)
		}
		if seen[m] {
			add(fmt.Sprintf("match.methods[%d]", i), "method %s listed twice", m)
		}
		seen[m] = true
	}
	return errs
}

func (m Match) isCatchAll() bool {
	return m.Host == "" && (m.PathPrefix == "" || m.PathPrefix == "/") && len(m.Methods) == 0
}

func checkHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %q: want host:port such as 127.0.0.1:8080", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("invalid port in %q", addr)
	}
	_ = host
	return ""
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isLoopbackAddr reports whether a listen address only accepts loopback
// connections. "localhost" counts; an empty host (all interfaces) does not.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// AdminIsLoopback reports whether the admin listener is reachable only from
// this machine, which is when mutating endpoints may go without a token.
func (c *Config) AdminIsLoopback() bool { return isLoopbackAddr(c.AdminListen) }
