package main

import (
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
	"github.com/shadowproxy/shadowproxy/bench/internal/child"
)

// runBackends is the backend child: n fast primaries (one per
// configuration, so each one's counts are its own), a fast shadow and a slow
// shadow, each on its own ephemeral loopback port, until SIGTERM.
func runBackends(addrFile string, n int, slowDelay time.Duration) error {
	var servers []child.Server
	delays := append(make([]time.Duration, n+1), slowDelay)
	for _, d := range delays {
		s, err := backend.Listen("127.0.0.1:0", d, 1024)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	return child.Serve(addrFile, servers...)
}
