// Command backend is the upstream of bench/compare.sh: a small, fast
// fasthttp server answering every request with a ~1 KiB JSON body
// (optionally after a fixed delay, to play a slow shadow). It counts the
// requests it served and the TCP connections it accepted, so the harness can
// tell how many requests a shadow received and whether a proxy reuses its
// upstream connections: GET /__stats answers {"requests":N,"conns":N}
// (itself not counted), and SIGTERM or SIGINT prints the same to stderr.
//
//	backend -listen 127.0.0.1:0 -addr-file /tmp/b.addr -delay 200ms
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen `address` (loopback)")
	addrFile := flag.String("addr-file", "", "write the bound address to this `file` once listening")
	delay := flag.Duration("delay", 0, "wait this long before answering (a slow upstream)")
	slowDelay := flag.Duration("slow-delay", 0, "wait this long before answering paths that start with /slow (0: like any other path)")
	flushEach := flag.Bool("flush-each", false, "send each answer at once, even when the next pipelined request is already buffered (as net/http and nginx do)")
	size := flag.Int("body-size", 1024, "approximate response body size in bytes")
	name := flag.String("name", "backend", "name used in the exit line")
	flag.Parse()

	s, err := backend.Listen(*listen, *delay, *size)
	if err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
	s.SetSlowDelay(*slowDelay)
	s.SetFlushEach(*flushEach)
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(s.Addr()+"\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "backend: %v\n", err)
			os.Exit(1)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case <-sigs:
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "backend %s: %v\n", *name, err)
		os.Exit(1)
	}
	st := s.Stats()
	fmt.Fprintf(os.Stderr, "backend %s: requests=%d conns=%d\n", *name, st.Requests, st.Conns)
}
