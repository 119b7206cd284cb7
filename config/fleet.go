package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Fleet defaults.
const (
	DefaultEtcdDialTimeout = 5 * time.Second
	DefaultFleetLeaseTTL   = 5 * time.Second
	// MinFleetLeaseTTL is etcd's own floor for a lease with its default
	// heartbeat and election timeouts; a shorter TTL is silently raised by
	// the server, so it is refused here instead.
	MinFleetLeaseTTL = 2 * time.Second
	// DefaultFleetMaxMissingShare is the share of the fleet's traffic that
	// may come from members that did not answer before the leader holds
	// every evaluation (see the README's "Fleet mode").
	DefaultFleetMaxMissingShare = 0.25
)

// Fleet makes this process one member of a fleet that runs each rollout
// once, coordinated through etcd. Nil (no fleet: section): a standalone
// instance, as before.
type Fleet struct {
	// Name is this member's name within the fleet (default: the hostname).
	Name string `yaml:"name"`
	// Advertise is the admin URL other members use to reach this one
	// (http(s)://host:port).
	Advertise string `yaml:"advertise"`
	// Etcd is the coordination store.
	Etcd Etcd `yaml:"etcd"`
	// LeaseTTL is how long a member (and a leader) stays registered without
	// reaching etcd: a killed leader is replaced within about this time.
	LeaseTTL cfgtypes.Duration `yaml:"lease_ttl"`
	// MaxMissingShare is the largest share of the fleet's traffic that
	// non-answering members may carry while the leader still evaluates.
	MaxMissingShare *cfgtypes.Ratio `yaml:"max_missing_share"`
	// StateDir is where this member keeps its copy of the fleet's rollout
	// state (one file per route), so a restart while etcd is down serves
	// the last known shares. Default: <tmp>/shadowproxy-fleet/<name>.
	StateDir string `yaml:"state_dir"`
}

// Etcd says how to reach etcd. Nothing secret is ever written to it.
type Etcd struct {
	// Endpoints are the etcd client URLs.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix; one fleet per prefix.
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting to an endpoint.
	DialTimeout cfgtypes.Duration `yaml:"dial_timeout"`
	// Username and Password authenticate to etcd (both or neither).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TLS verifies etcd's certificate and optionally presents a client one.
	TLS EtcdTLS `yaml:"tls"`
}

// EtcdTLS configures TLS to etcd.
type EtcdTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether any TLS setting is given.
func (t EtcdTLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

func (c *Config) applyFleetDefaults() {
	f := c.Fleet
	if f == nil {
		return
	}
	if f.Name == "" {
		if h, err := os.Hostname(); err == nil {
			f.Name = h
		}
	}
	if f.Etcd.Prefix == "" {
		f.Etcd.Prefix = "/shadowproxy/default"
	}
	f.Etcd.Prefix = "/" + strings.Trim(f.Etcd.Prefix, "/")
	if f.StateDir == "" {
		f.StateDir = filepath.Join(os.TempDir(), "shadowproxy-fleet", f.Name)
	}
	// In a fleet the state file is the member's copy of the fleet's state.
	for i := range c.Routes {
		if r := c.Routes[i].Rollout; r != nil && r.StateFile == "" {
			r.StateFile = filepath.Join(f.StateDir, c.Routes[i].Name+".json")
		}
	}
	setDur(&f.Etcd.DialTimeout, DefaultEtcdDialTimeout)
	setDur(&f.LeaseTTL, DefaultFleetLeaseTTL)
	if f.MaxMissingShare == nil {
		r := cfgtypes.Ratio(DefaultFleetMaxMissingShare)
		f.MaxMissingShare = &r
	}
}

func (c *Config) validateFleet() []error {
	f := c.Fleet
	if f == nil {
		return nil
	}
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf("fleet."+path, format, args...))
	}
	if !nameRE.MatchString(f.Name) {
		add("name", "invalid member name %q: want letters, digits, '.', '_' or '-' (at most 63), such as ${HOSTNAME}", f.Name)
	}
	if f.Advertise == "" {
		add("advertise", "required: the admin URL other members reach this one at, such as http://10.1.2.3:9901")
	} else if u, err := url.Parse(f.Advertise); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		add("advertise", "invalid URL %q: want http(s)://host:port of this member's admin listener, without a path", f.Advertise)
	}
	e := f.Etcd
	if len(e.Endpoints) == 0 {
		add("etcd.endpoints", "at least one etcd endpoint is required, such as http://127.0.0.1:2379")
	}
	for i, ep := range e.Endpoints {
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(fmt.Sprintf("etcd.endpoints[%d]", i), "invalid URL %q: want http(s)://host:port of an etcd client listener", ep)
		}
	}
	if strings.Contains(e.Prefix, "//") || e.Prefix == "/" {
		add("etcd.prefix", "invalid prefix %q: want a path such as /shadowproxy/prod (one fleet per prefix)", e.Prefix)
	}
	if e.DialTimeout.D() < 0 {
		add("etcd.dial_timeout", "must not be negative")
	}
	if (e.Username == "") != (e.Password == "") {
		add("etcd.username", "give both username and password, or neither")
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		add("etcd.tls", "give both cert_file and key_file for a client certificate, or neither")
	}
	for _, fl := range []struct{ path, file string }{{"ca_file", e.TLS.CAFile}, {"cert_file", e.TLS.CertFile}, {"key_file", e.TLS.KeyFile}} {
		if fl.file == "" {
			continue
		}
		if _, err := os.Stat(fl.file); err != nil {
			add("etcd.tls."+fl.path, "%v", err)
		}
	}
	if f.LeaseTTL.D() < MinFleetLeaseTTL {
		add("lease_ttl", "%s is below etcd's minimum lease of %s", f.LeaseTTL.D(), MinFleetLeaseTTL)
	}
	if s := float64(*f.MaxMissingShare); s < 0 || s >= 1 {
		add("max_missing_share", "must be at least 0 and below 1 (such as 25%%)")
	}
	return errs
}

// fleetWarnings lists fleet settings that work but are probably unsafe.
func (c *Config) fleetWarnings() []string {
	f := c.Fleet
	if f == nil {
		return nil
	}
	var w []string
	if c.Admin.Token == "" {
		w = append(w, "fleet is set but admin.token is empty: members fetch each other's windows without a token, so anyone who reaches an admin listener can read them; set admin.token (the same on every member)")
	}
	for _, ep := range f.Etcd.Endpoints {
		if strings.HasPrefix(ep, "http://") && f.Etcd.Username != "" {
			w = append(w, fmt.Sprintf("fleet.etcd: password authentication over plain http (%s) sends the password in clear; use https endpoints", ep))
			break
		}
	}
	return w
}
