package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/shadowproxy/shadowproxy/config"
)

// cmdPlan prints every route's rollout plan: steps, holds, deadlines,
// conditions with the traffic each needs, guardrails, notifications.
func cmdPlan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shadowproxy.yaml", "configuration `file`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy plan -config FILE\n\nPrint each route's rollout plan and the traffic every step needs to reach its sample sizes;\nset rollout.expected_rps to be told which steps cannot.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	n := 0
	for _, r := range cfg.Routes {
		if r.Rollout == nil {
			continue
		}
		n++
		p := r.Rollout.Plan()
		fmt.Fprintf(stdout, "route %s\n%s", r.Name, p.Text())
		if short := p.Short(); len(short) > 0 {
			fmt.Fprintf(stdout, "\nsteps that expected_rps cannot carry (%d):\n", len(short))
			for _, s := range short {
				fmt.Fprintf(stdout, "  - %s\n", s)
			}
		}
		fmt.Fprintln(stdout)
	}
	if n == 0 {
		fmt.Fprintf(stdout, "%s: no route has a rollout section\n", cfg.Source)
	}
	return 0
}
