package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
)

// writeAddrs writes the listen addresses, one per line, for the driver.
func writeAddrs(file string, addrs ...string) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

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
	if err := writeAddrs(addrFile, addrs...); err != nil {
		return err
	}
	select {
	case <-sigs:
		return nil
	case err := <-errc:
		return err
	}
}

// runProxy is the proxy child: shadowproxy assembled in-process by package
// app from the YAML file, exactly as `shadowproxy run` does. SIGUSR1 starts
// a CPU profile (and writes the allocation profile so far as a base);
// SIGUSR2 stops it and writes the allocation profile again, so that
// `go tool pprof -base` shows what the measured window allocated.
func runProxy(addrFile, cfgFile, profPrefix string) error {
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, app.Options{Version: "shadowcmp"})
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	if err := writeAddrs(addrFile, a.ProxyAddr(), a.AdminAddr()); err != nil {
		return err
	}
	var cpuFile *os.File
	for {
		select {
		case err := <-a.Errors():
			return err
		case s := <-sigs:
			switch s {
			case syscall.SIGUSR1:
				if profPrefix == "" || cpuFile != nil {
					continue
				}
				if err := writeHeap(profPrefix + "allocs-base.pprof"); err != nil {
					return err
				}
				if cpuFile, err = os.Create(profPrefix + "cpu.pprof"); err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(cpuFile); err != nil {
					return err
				}
			case syscall.SIGUSR2:
				if cpuFile == nil {
					continue
				}
				pprof.StopCPUProfile()
				cpuFile.Close()
				if err := writeHeap(profPrefix + "allocs.pprof"); err != nil {
					return err
				}
				// The driver waits for this file: written last, atomically.
				if err := writeAddrs(profPrefix+"done", "ok"); err != nil {
					return err
				}
			default:
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				a.Shutdown(ctx)
				return nil
			}
		}
	}
}

func writeHeap(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
