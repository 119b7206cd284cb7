package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/shadowproxy/shadowproxy/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shadowproxy.yaml", "configuration `file`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy validate -config FILE\n\nExit 0 and a summary when valid; exit 1 and every error, each with its line and field path, when not.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		var errs config.Errors
		if e, ok := err.(config.Errors); ok {
			errs = e
		}
		if len(errs) > 0 {
			fmt.Fprintf(stderr, "%s: %d error(s)\n%v\n", *path, len(errs), err)
		} else {
			fmt.Fprintf(stderr, "%v\n", err)
		}
		return 1
	}
	printSummary(stdout, cfg)
	return 0
}

// printSummary is the one-screen view of a valid configuration.
func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "%s: valid\n\n", cfg.Source)
	fmt.Fprintf(w, "listen %s, admin %s\n\n", cfg.Listen, cfg.AdminListen)
	fmt.Fprintf(w, "upstreams (%d):\n", len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		fmt.Fprintf(w, "  %-14s %s  timeout %s, max_conns %d\n", u.Name, u.URL, u.Timeout.D(), u.MaxConns)
	}
	fmt.Fprintf(w, "\nroutes (%d, first match wins):\n", len(cfg.Routes))
	for _, r := range cfg.Routes {
		fmt.Fprintf(w, "  %-14s %-30s -> %s\n", r.Name, describeMatch(r.Match), r.Upstream)
		for _, line := range routeDetails(r) {
			fmt.Fprintf(w, "  %-14s   %s\n", "", line)
		}
	}
	if ws := cfg.Warnings(); len(ws) > 0 {
		fmt.Fprintf(w, "\nwarnings (%d):\n", len(ws))
		for _, s := range ws {
			fmt.Fprintf(w, "  - %s\n", s)
		}
	}
}

func describeMatch(m config.Match) string {
	var parts []string
	if m.Host != "" {
		parts = append(parts, "host "+m.Host)
	}
	if m.PathPrefix != "" {
		parts = append(parts, m.PathPrefix+"*")
	}
	if len(m.Methods) > 0 {
		parts = append(parts, strings.Join(m.Methods, ","))
	}
	if len(parts) == 0 {
		return "(everything)"
	}
	return strings.Join(parts, " ")
}

// routeDetails describes a route's split, shadow and rollout sections.
func routeDetails(r config.Route) []string {
	var out []string
	if s := r.Split; s != nil {
		line := fmt.Sprintf("split %s%% of %s to %s (salt %q, missing key: %s)", s.Percent.BP(), s.Key, s.To, s.Salt, orDefault(s.OnMissing, "stable"))
		out = append(out, line)
		for _, c := range s.Cohorts {
			out = append(out, fmt.Sprintf("  cohort %s -> %s", c.Name, orDefault(c.To, s.To)))
		}
	}
	if sh := r.Shadow; sh != nil {
		var targets []string
		for _, t := range sh.Targets {
			targets = append(targets, t.Name)
		}
		line := fmt.Sprintf("shadow %s%% of %s to %s (workers %d, queue %d, timeout %s)",
			sh.Percent.BP(), strings.Join(sh.Methods, ","), strings.Join(targets, ","), sh.Workers, sh.QueueSize, sh.Timeout.D())
		out = append(out, line)
		if sh.Compare.Secondary != "" {
			line := fmt.Sprintf("  noise learnt from secondary %s", sh.Compare.Secondary)
			if r.Split != nil {
				// Split-aware: the secondary runs the stable version, so it
				// is only asked about requests the stable upstream served.
				line += fmt.Sprintf(" on requests %s served only (the canary's share, now %s%%, is skipped)", r.Upstream, r.Split.Percent.BP())
			}
			out = append(out, line)
		}
		if len(sh.Compare.Ignore) > 0 {
			out = append(out, fmt.Sprintf("  ignoring %s", strings.Join(sh.Compare.Ignore, " ")))
		}
	}
	if ro := r.Rollout; ro != nil {
		var steps []string
		for _, st := range ro.Steps {
			steps = append(steps, st.Percent.BP().String()+"%")
		}
		out = append(out, fmt.Sprintf("rollout %s: %s (every %s, %d promote and %d rollback conditions)",
			ro.Mode, strings.Join(steps, " -> "), ro.Interval.D(), len(ro.PromoteWhen), len(ro.RollbackWhen)))
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
