package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/scrape"
)

// harness is one proxy process, its backends, the load and the samples.
type harness struct {
	st                   settings
	b                    *backends
	dir                  string
	cfgPath, logPath     string
	proxyAddr, adminAddr string
	cmd                  *exec.Cmd
	exited               chan error
	logFile              *os.File

	stats     *loadStats
	kinds     []kind // the load mix, in report order
	samples   []sample
	reloads   int
	started   time.Time
	failureAt [2]time.Duration // v2 failing window, from start
	exitCode  int
	exitErr   error
	cleaned   bool
}

type sample struct {
	at         time.Duration
	rss        float64 // bytes, /proc VmRSS (process_resident_memory_bytes without /proc)
	goroutines float64 // go_goroutines
	fds        float64 // process_open_fds
	procFDs    float64 // /proc/PID/fd, a cross-check
	requests   int64
}

func (h *harness) start() error {
	var err error
	if h.b, err = startBackends(); err != nil {
		return err
	}
	if h.dir, err = os.MkdirTemp("", "shadowproxy-soak-"); err != nil {
		return err
	}
	if h.proxyAddr, err = freeAddr(); err != nil {
		return err
	}
	if h.adminAddr, err = freeAddr(); err != nil {
		return err
	}
	h.cfgPath = filepath.Join(h.dir, "soak.yaml")
	h.logPath = filepath.Join(h.dir, "shadowproxy.log")
	text, err := configYAML(h, 0)
	if err != nil {
		return err
	}
	if err := writeAtomic(h.cfgPath, text); err != nil {
		return err
	}
	if h.logFile, err = os.Create(h.logPath); err != nil {
		return err
	}
	h.cmd = exec.Command(h.st.bin, "run", "-config", h.cfgPath)
	h.cmd.Stdout, h.cmd.Stderr = h.logFile, h.logFile
	dieWithParent(h.cmd)
	if err := h.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", h.st.bin, err)
	}
	h.exited = make(chan error, 1)
	go func() { h.exited <- h.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + h.adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case err := <-h.exited:
			h.exited <- err
			return fmt.Errorf("shadowproxy exited at start (%v); log:\n%s", err, tail(h.logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shadowproxy not ready after 15s; log:\n%s", tail(h.logPath, 20))
		}
	}
}

// cleanup stops the proxy (SIGTERM, then SIGKILL after 15s) and every
// backend, and removes the temporary directory. It runs on every exit path.
func (h *harness) cleanup() {
	if h.cleaned {
		return
	}
	h.cleaned = true
	h.stopProxy()
	if h.b != nil {
		h.b.close()
	}
	if h.logFile != nil {
		h.logFile.Close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

func (h *harness) stopProxy() {
	if h.cmd == nil || h.cmd.Process == nil || h.exited == nil {
		return
	}
	select {
	case err := <-h.exited:
		h.exited <- err
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		h.exitErr, h.exitCode = err, h.cmd.ProcessState.ExitCode()
		h.exited <- err
	case <-time.After(15 * time.Second):
		h.cmd.Process.Kill()
		err := <-h.exited
		h.exitErr, h.exitCode = fmt.Errorf("did not exit within 15s of SIGTERM; killed (%v)", err), -1
		h.exited <- err
	}
}

func (h *harness) alive() bool {
	select {
	case err := <-h.exited:
		h.exited <- err
		return false
	default:
		return true
	}
}

// runFor drives load, reloads, the canary failure and sampling until the
// duration has passed, the proxy dies or ctx ends.
func (h *harness) runFor(ctx context.Context) {
	h.started = time.Now()
	ctx, cancel := context.WithTimeout(ctx, h.st.duration)
	defer cancel()
	var wg sync.WaitGroup
	gen := newGenerator(h)
	h.kinds = gen.kinds
	wg.Add(1)
	go func() { defer wg.Done(); gen.run(ctx) }()

	// v2 fails while the rollout is past its first steps (holds are a
	// sixth of the run each), so the controller has something to roll back.
	h.failureAt = [2]time.Duration{h.st.duration * 35 / 100, h.st.duration*35/100 + max(h.st.duration/10, 5*time.Second)}
	reloadEvery := max(h.st.duration/6, 5*time.Second)
	nextReload := reloadEvery
	tick := time.NewTicker(h.st.sampleEvery)
	defer tick.Stop()
	reloadTick := time.NewTicker(time.Second)
	defer reloadTick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if !h.alive() {
				break loop
			}
			h.sample()
		case <-reloadTick.C:
			el := time.Since(h.started)
			h.b.demo.V2.SetFailing(el >= h.failureAt[0] && el < h.failureAt[1])
			if el >= nextReload {
				nextReload += reloadEvery
				h.reloads++
				if text, err := configYAML(h, h.reloads); err == nil && writeAtomic(h.cfgPath, text) == nil {
					h.cmd.Process.Signal(syscall.SIGHUP)
				}
			}
		}
	}
	cancel()
	wg.Wait()
	h.b.demo.V2.SetFailing(false)
}

func (h *harness) sample() {
	s := sample{at: time.Since(h.started).Round(time.Second), requests: h.stats.total.Load()}
	m, err := scrape.Series(h.adminAddr)
	pid := h.cmd.Process.Pid
	if err == nil {
		s.goroutines, s.fds = m["go_goroutines"], m["process_open_fds"]
		s.rss = m["process_resident_memory_bytes"]
	}
	if rss, err := processRSS(pid); err == nil {
		s.rss = rss
	}
	if n, err := processFDs(pid); err == nil {
		s.procFDs = n
	}
	h.samples = append(h.samples, s)
}
