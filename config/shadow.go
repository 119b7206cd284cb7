package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Shadow defaults.
const (
	DefaultShadowQueueSize = 1024
	DefaultShadowWorkers   = 64
	DefaultShadowTimeout   = 5 * time.Second
	// DefaultShadowMarker is set on every mirrored request so that a shadow
	// service (and its logs) can tell mirrored traffic from real traffic.
	DefaultShadowMarker = "X-Shadowproxy-Shadow"
	maxShadowQueue      = 1 << 20
	maxShadowWorkers    = 4096
)

// DefaultShadowMethods are mirrored unless a route lists others: only safe
// methods, so a shadow can never create, change or delete anything by default.
var DefaultShadowMethods = []string{"GET", "HEAD", "OPTIONS"}

// Shadow is a route's shadow: section: which requests are mirrored where.
type Shadow struct {
	// Targets are the shadow upstreams.
	Targets []ShadowTarget `yaml:"targets"`
	// Percent of requests mirrored (default 100). Sampling hashes the split
	// key (route split key, or Key) with Salt so a user is consistently
	// shadowed or not; requests without a key are sampled at random.
	Percent *cfgtypes.Percent `yaml:"percent"`
	// Key overrides the key used for sampling (same syntax as split.key).
	Key string `yaml:"key"`
	// Salt for sampling; default "<route>:shadow".
	Salt string `yaml:"salt"`
	// Methods mirrored; default GET, HEAD, OPTIONS. Listing a non-safe
	// method is an explicit opt-in (validate warns).
	Methods []string `yaml:"methods"`
	// QueueSize bounds mirror jobs waiting for a worker; when full, new
	// ones are dropped and counted.
	QueueSize int `yaml:"queue_size"`
	// Workers bounds shadow requests in flight for the route.
	Workers int `yaml:"workers"`
	// Timeout bounds each shadow request.
	Timeout cfgtypes.Duration `yaml:"timeout"`
	// MaxBody bounds a mirrored request body and each captured response
	// body. A request with a larger body is not mirrored (counted as
	// skipped); a larger response is captured up to the limit and its
	// comparison is uncomparable. Default: compare.max_body, else 1MiB.
	MaxBody cfgtypes.Size `yaml:"max_body"`
	// Compare configures the diff of primary and shadow responses.
	Compare *diff.Spec `yaml:"compare"`
	// IncludeSynthetic mirrors synthetic requests too (default false: test
	// traffic does not count toward the match rate).
	IncludeSynthetic bool `yaml:"include_synthetic"`
}

// ShadowTarget is one shadow upstream, written as its name or as a mapping
// with per-target request changes.
type ShadowTarget struct {
	// Name of the upstream.
	Name string `yaml:"name"`
	// Headers set or removed on requests to this target (on top of the
	// marker header).
	Headers HeaderRules `yaml:"headers"`
	// Host, when set, replaces the Host header sent to this target.
	Host string `yaml:"host"`
}

// HeaderRules change a mirrored request's headers.
type HeaderRules struct {
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// UnmarshalYAML accepts "name" as well as {name: ..., headers: ..., host: ...}.
func (t *ShadowTarget) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		t.Name = n.Value
		return nil
	}
	type plain ShadowTarget
	return n.Decode((*plain)(t))
}

func (s *Shadow) applyDefaults(route string) {
	if s.Percent == nil {
		p := cfgtypes.Percent(cfgtypes.MaxBasisPoints)
		s.Percent = &p
	}
	if s.Salt == "" {
		s.Salt = route + ":shadow"
	}
	if len(s.Methods) == 0 {
		s.Methods = append([]string(nil), DefaultShadowMethods...)
	}
	for i, m := range s.Methods {
		s.Methods[i] = upperASCII(m)
	}
	if s.QueueSize == 0 {
		s.QueueSize = DefaultShadowQueueSize
	}
	if s.Workers == 0 {
		s.Workers = DefaultShadowWorkers
	}
	setDur(&s.Timeout, DefaultShadowTimeout)
	if s.Compare == nil {
		s.Compare = &diff.Spec{}
	}
	if s.MaxBody == 0 {
		s.MaxBody = s.Compare.MaxBody
	}
	s.Compare.ApplyDefaults()
	if s.MaxBody == 0 {
		s.MaxBody = s.Compare.MaxBody
	}
}

func (s *Shadow) validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}
	if len(s.Targets) == 0 {
		add("targets", "at least one shadow target is required")
	}
	seen := map[string]bool{}
	for i, t := range s.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		if seen[t.Name] && t.Name != "" {
			add(p, "target %q listed twice", t.Name)
		}
		seen[t.Name] = true
		for name := range t.Headers.Set {
			if !cfgtypes.IsToken(name) {
				add(p+".headers.set."+name, "invalid header name %q", name)
			}
		}
		for j, name := range t.Headers.Remove {
			if !cfgtypes.IsToken(name) {
				add(fmt.Sprintf("%s.headers.remove[%d]", p, j), "invalid header name %q", name)
			}
		}
		if strings.ContainsAny(t.Host, " /\r\n") {
			add(p+".host", "invalid host %q", t.Host)
		}
	}
	for i, m := range s.Methods {
		if !cfgtypes.IsToken(m) {
			add(fmt.Sprintf("methods[%d]", i), "invalid method %q", m)
		}
	}
	if s.QueueSize < 1 || s.QueueSize > maxShadowQueue {
		add("queue_size", "must be between 1 and %d", maxShadowQueue)
	}
	if s.Workers < 1 || s.Workers > maxShadowWorkers {
		add("workers", "must be between 1 and %d", maxShadowWorkers)
	}
	if s.Timeout <= 0 {
		add("timeout", "must be positive")
	}
	if s.MaxBody < 0 {
		add("max_body", "must not be negative")
	}
	if s.Compare != nil {
		errs = append(errs, cfgtypes.Prefix("compare", s.Compare.Validate())...)
	}
	return errs
}

func (s *Shadow) upstreamRefs() []upstreamRef {
	var refs []upstreamRef
	for i, t := range s.Targets {
		refs = append(refs, upstreamRef{fmt.Sprintf("shadow.targets[%d]", i), t.Name})
	}
	if s.Compare != nil {
		for _, r := range s.Compare.UpstreamRefs() {
			refs = append(refs, upstreamRef{"shadow.compare." + r.Path, r.Name})
		}
	}
	return refs
}

// UnsafeMethods lists mirrored methods that can change state.
func (s *Shadow) UnsafeMethods() []string {
	var out []string
	for _, m := range s.Methods {
		switch m {
		case "GET", "HEAD", "OPTIONS", "TRACE":
		default:
			out = append(out, m)
		}
	}
	return out
}
