package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/shadowproxy/shadowproxy/diff"
)

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ignore, mask stringList
	fs.Var(&ignore, "ignore", "JSON Pointer `pattern` to ignore (* one segment, ** any depth); repeatable")
	fs.Var(&mask, "mask", "`regex` blanked in non-JSON bodies before comparing; repeatable")
	arrayOrder := fs.String("array-order", "strict", "strict, or ignore to compare arrays as multisets")
	tolerance := fs.Float64("float-tolerance", 0, "largest absolute difference between numbers that still counts as equal")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy diff [flags] A B\n\nCompares two JSON (or text) files with the proxy's diff engine, A as primary and B as\nshadow. Exit 0 when they match, 1 when they differ, 2 on a usage or file error.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	spec := diff.Spec{Ignore: ignore, Mask: mask, ArrayOrder: *arrayOrder, FloatTolerance: *tolerance, MaxBody: 256 << 20}
	rules, err := diff.CompileRules(spec)
	if err != nil {
		fmt.Fprintf(stderr, "shadowproxy diff: %v\n", err)
		return exitUsage
	}
	var bodies [2][]byte
	for i, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "shadowproxy diff: %v\n", err)
			return exitUsage
		}
		bodies[i] = b
	}
	// A file that is one JSON document (any top-level value, BOM allowed) is
	// compared as the proxy compares a body declared application/json, so
	// "1" and "1.0" match here as they do there.
	var res diff.Result
	if diff.IsJSON(bodies[0]) || diff.IsJSON(bodies[1]) {
		res = diff.CompareJSON(bodies[0], bodies[1], rules)
	} else {
		res = diff.Compare(&diff.Capture{Status: 200, Body: bodies[0]}, &diff.Capture{Status: 200, Body: bodies[1]}, rules)
	}
	if err := diff.FormatText(stdout, res); err != nil {
		fmt.Fprintf(stderr, "shadowproxy diff: %v\n", err)
		return exitUsage
	}
	if res.Outcome == diff.Match {
		return exitOK
	}
	return exitNo
}
