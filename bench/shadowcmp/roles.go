package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
	"github.com/shadowproxy/shadowproxy/bench/internal/child"
)

// runBackends is the backend child: n fast primaries (one per
// configuration, so each one's counts are its own), a fast shadow and a slow
// shadow, each on its own ephemeral loopback port, until SIGTERM.
func runBackends(addrFile string, n int, slowDelay time.Duration) error {
	var servers []*backend.Server
	var addrs []string
	delays := append(make([]time.Duration, n+1), slowDelay)
	for _, d := range delays {
		s, err := backend.Listen("127.0.0.1:0", d, 1024)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		addrs = append(addrs, s.Addr())
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.Serve() }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := child.WriteAddrs(addrFile, addrs...); err != nil {
		return err
	}
	select {
	case <-sigs:
		return nil
	case err := <-errc:
		return err
	}
}
