package cfgtypes

import "strings"

// Probe configures active HTTP health probes: an upstream's health section
// (upstreams[].health) and a rollout's canary check
// (routes[].rollout.health_check) are both written as one, so they parse,
// default and validate alike and are wired to the same prober.
type Probe struct {
	// Path is requested with GET on every endpoint of the upstream.
	Path string `yaml:"path,omitempty"`
	// Interval between two probes of one endpoint.
	Interval Duration `yaml:"interval,omitempty"`
	// Timeout of one probe, connect to last byte; at most Interval.
	Timeout Duration `yaml:"timeout,omitempty"`
	// ExpectStatus is the status a healthy endpoint answers.
	ExpectStatus int `yaml:"expect_status,omitempty"`
}

// WithDefaults returns p with every zero field taken from d.
func (p Probe) WithDefaults(d Probe) Probe {
	if p.Path == "" {
		p.Path = d.Path
	}
	if p.Interval == 0 {
		p.Interval = d.Interval
	}
	if p.Timeout == 0 {
		p.Timeout = d.Timeout
	}
	if p.ExpectStatus == 0 {
		p.ExpectStatus = d.ExpectStatus
	}
	return p
}

// Validate checks p as it will run, with the zero fields taken from d, and
// returns one error per bad field, each under path (for example
// "upstreams[0].health").
func (p Probe) Validate(path string, d Probe) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, Errorf(JoinPath(path, field), format, args...))
	}
	if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
		add("path", "must start with \"/\", got %q", p.Path)
	}
	run := p.WithDefaults(d)
	if run.Timeout > run.Interval {
		add("timeout", "must not exceed the interval (%s), got %s", run.Interval.D(), run.Timeout.D())
	}
	if p.ExpectStatus != 0 && (p.ExpectStatus < 100 || p.ExpectStatus > 599) {
		add("expect_status", "must be an HTTP status between 100 and 599, got %d", p.ExpectStatus)
	}
	return errs
}
