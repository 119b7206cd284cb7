// Command soak runs bin/shadowproxy under a bounded, mixed load on loopback
// and fails when its memory, goroutines or open file descriptors keep
// growing. `make soak` runs it; it is not part of `make test`.
//
// The proxy runs as its own process (`shadowproxy run`) in front of backends
// this program serves: the demo's v1, v1-twin and v2 (JSON with volatile
// fields, so shadowing and diffing do real work), a slow shadow that often
// misses its timeout, a flaky upstream that resets, fails and answers
// garbage, and a port nobody listens on. The load mixes shadowed and diffed
// GETs, a canary split walked by a rollout (which is made to roll back
// by failing v2 for a while), POSTs, new connections per
// request, errors of every kind and hostile clients (malformed framing,
// oversized heads, abandoned and slow requests). SIGHUP reloads alternate
// between two configurations throughout.
//
// Every few seconds it samples the proxy's RSS (/proc), goroutines
// (go_goroutines from the admin /metrics) and open file descriptors
// (process_open_fds). A series fails when the mean of its last third
// exceeds the first third's by a generous factor and it is still rising at
// the end. The report goes to bench/soak/results/latest.md.
//
// Settings (environment): SOAK_DURATION (default 2m), SOAK_SAMPLE_EVERY
// (5s), SOAK_RPS (300), SOAK_BIN (bin/shadowproxy), SOAK_REPORT
// (bench/soak/results/latest.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

type settings struct {
	duration, sampleEvery time.Duration
	rps                   int
	bin, report           string
}

func loadSettings() (settings, error) {
	s := settings{duration: 2 * time.Minute, sampleEvery: 5 * time.Second, rps: 300,
		bin: "bin/shadowproxy", report: "bench/soak/results/latest.md"}
	var err error
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		if s.duration, err = time.ParseDuration(v); err != nil || s.duration < 15*time.Second {
			return s, fmt.Errorf("SOAK_DURATION=%q: want a duration of at least 15s", v)
		}
	}
	if v := os.Getenv("SOAK_SAMPLE_EVERY"); v != "" {
		if s.sampleEvery, err = time.ParseDuration(v); err != nil || s.sampleEvery < 500*time.Millisecond {
			return s, fmt.Errorf("SOAK_SAMPLE_EVERY=%q: want a duration of at least 500ms", v)
		}
	}
	if v := os.Getenv("SOAK_RPS"); v != "" {
		if s.rps, err = strconv.Atoi(v); err != nil || s.rps < 1 || s.rps > 20000 {
			return s, fmt.Errorf("SOAK_RPS=%q: want 1-20000", v)
		}
	}
	if v := os.Getenv("SOAK_BIN"); v != "" {
		s.bin = v
	}
	if v := os.Getenv("SOAK_REPORT"); v != "" {
		s.report = v
	}
	return s, nil
}

func run() int {
	st, err := loadSettings()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	if _, err := os.Stat(st.bin); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %s not found: run make build first (or set SOAK_BIN)\n", st.bin)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	h := &harness{st: st, stats: newLoadStats()}
	defer h.cleanup()
	if err := h.start(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	fmt.Printf("soak: shadowproxy pid %d on %s (admin %s) for %v at ~%d req/s\n", h.cmd.Process.Pid, h.proxyAddr, h.adminAddr, st.duration, st.rps)
	h.runFor(ctx)
	res := h.finish()
	if err := writeReport(st.report, h, res); err != nil {
		fmt.Fprintln(os.Stderr, "soak: report:", err)
	}
	fmt.Print(res.summary)
	fmt.Printf("soak: report written to %s\n", st.report)
	if !res.pass {
		return 1
	}
	return 0
}
