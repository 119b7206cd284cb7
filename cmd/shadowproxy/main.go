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
//	shadowproxy demo                   run the proxy in front of built-in demo backends
//	shadowproxy diff A.json B.json     compare two JSON documents with the proxy's diff engine
//	shadowproxy version                print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; when it
// is not (go build, go install), the module and VCS information Go embeds
// stands in (see buildVersion).
var version = ""

// Exit codes: one convention for every command (the README's CLI section
// documents it), that of diff(1) and grep(1).
const (
	// exitOK: done; for diff, the documents match; -h and help too.
	exitOK = 0
	// exitNo: the command ran and the answer is no: the configuration is
	// invalid, the documents differ, or the proxy stopped on a failure.
	exitNo = 1
	// exitUsage: bad usage, or an input file that cannot be read.
	exitUsage = 2
)

// parseFlags parses a command's flags. done reports that the command must
// end now with code: after -h (the usage was asked for: exit 0) or a bad
// flag (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK, true
	case err != nil:
		return exitUsage, true
	}
	return exitOK, false
}

// buildVersion is the stamped version, else the module version Go recorded
// (go install m@v1.2.3), else the VCS revision (go build in a checkout),
// else "dev".
func buildVersion(stamped string, bi *debug.BuildInfo, ok bool) string {
	if stamped != "" {
		return stamped
	}
	if !ok || bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return "devel-" + rev
}

func init() {
	bi, ok := debug.ReadBuildInfo()
	version = buildVersion(version, bi, ok)
}

const usage = `shadowproxy: a traffic-shadowing reverse proxy

Usage:
  shadowproxy run -config FILE        run the proxy
  shadowproxy validate -config FILE   check a configuration; print a summary, or every error with its line
  shadowproxy demo [flags]            run the proxy in front of built-in demo backends
  shadowproxy diff [flags] A B        compare two JSON (or text) files with the proxy's diff engine
  shadowproxy version                 print the version

Run "shadowproxy COMMAND -h" for a command's flags.

Exit status: 0 done (diff: the documents match), 1 the answer is no (invalid
configuration, documents differ, the proxy stopped on a failure), 2 bad usage
or an input that cannot be read.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "diff":
		return cmdDiff(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "shadowproxy %s\n", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "shadowproxy: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}
