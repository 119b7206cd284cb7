// Command shadowproxy is a traffic-shadowing reverse proxy: it forwards
// every request to the primary upstream, routes a sticky share of users to a
// canary, mirrors a sample of requests to shadow upstreams without the client
// waiting, diffs the responses ignoring noise, and can walk a canary through
// a progressive rollout by itself.
//
// Usage:
//
//	shadowproxy run -config FILE       run the proxy
//	shadowproxy validate -config FILE  check a configuration and summarize it
//	shadowproxy plan -config FILE      print each route's rollout plan and the traffic it needs
//	shadowproxy demo                   run the proxy in front of built-in demo backends
//	shadowproxy diff A.json B.json     compare two JSON documents with the proxy's diff engine
//	shadowproxy version                print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `shadowproxy: a traffic-shadowing reverse proxy

Usage:
  shadowproxy run -config FILE        run the proxy
  shadowproxy validate -config FILE   check a configuration; print a summary, or every error with its line
  shadowproxy plan -config FILE       print each route's rollout plan and the traffic every step needs
  shadowproxy demo [flags]            run the proxy in front of built-in demo backends
  shadowproxy diff [flags] A B        compare two JSON (or text) files with the proxy's diff engine
  shadowproxy version                 print the version

Run "shadowproxy COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "plan":
		return cmdPlan(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "diff":
		return cmdDiff(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "shadowproxy %s\n", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "shadowproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
