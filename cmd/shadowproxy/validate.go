package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shadowproxy.yaml", "configuration `file`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy validate -config FILE\n\nExit 0 and a summary when valid; exit 1 and every error, each with its line and field path,\nwhen not; exit 2 when the file cannot be read.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		return reportLoadError(stderr, "validate", *path, err)
	}
	printSummary(stdout, cfg)
	return exitOK
}

// printSummary is the one-screen view of a valid configuration.
func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "%s: valid\n\n", cfg.Source)
	fmt.Fprintf(w, "listen %s, admin %s\n\n", cfg.Listen, cfg.AdminListen)
	// One column width for every name, so long names do not push their
	// line out of line with the others.
	width := 8
	for _, u := range cfg.Upstreams {
		width = max(width, len(u.Name))
	}
	for _, r := range cfg.Routes {
		width = max(width, len(r.Name))
	}
	fmt.Fprintf(w, "upstreams (%d):\n", len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		urls := u.URL
		if len(u.URLs) > 0 {
			urls = strings.Join(u.URLs, ", ") + " (" + orDefault(u.Balance, "round_robin") + ")"
		}
		pipelined := ""
		if u.PipelineConns > 0 {
			// Say what pipelining can cost a request, since it is the one
			// upstream setting that lets requests wait for each other.
			pipelined = fmt.Sprintf(", GET/HEAD/OPTIONS pipelined on %d connections (depth %d; head-of-line wait at most %s)",
				u.PipelineConns, u.PipelineDepth, u.PipelineMaxWait.D()*5/4)
		}
		fmt.Fprintf(w, "  %-*s  %s  timeout %s, max_conns %d%s\n", width, u.Name, urls, u.Timeout.D(), u.MaxConns, pipelined)
	}
	fmt.Fprintf(w, "\nroutes (%d, first match wins):\n", len(cfg.Routes))
	for _, r := range cfg.Routes {
		fmt.Fprintf(w, "  %-*s  %s -> %s\n", width, r.Name, describeMatch(r.Match), r.Upstream)
		for _, line := range routeDetails(r) {
			fmt.Fprintf(w, "  %-*s    %s\n", width, "", line)
		}
	}
	if ws := append(cfg.Warnings(), cfg.StaleSplitWarnings(time.Now())...); len(ws) > 0 {
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
