// Package proxychild is the proxy role of the pure-Go benchmark harnesses:
// shadowproxy assembled in-process by package app from a YAML file, exactly
// as `shadowproxy run` does, in a child process started by package child.
package proxychild

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/child"
	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
)

// Run serves the configuration in cfgFile until SIGTERM or SIGINT, after
// writing the proxy and admin addresses to addrFile. With a profPrefix,
// SIGUSR1 starts a CPU profile (and writes the allocation profile so far
// as a base); SIGUSR2 stops it and writes the allocation profile again, so
// that `go tool pprof -base` shows what the measured window allocated, and
// then writes profPrefix+"done".
func Run(addrFile, cfgFile, profPrefix, version string) error {
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, app.Options{Version: version})
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	if err := child.WriteAddrs(addrFile, a.ProxyAddr(), a.AdminAddr()); err != nil {
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
				if err := child.WriteAddrs(profPrefix+"done", "ok"); err != nil {
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
