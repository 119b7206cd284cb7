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
// the end. The report goes to soak/results/latest.md.
//
// Settings (environment): SOAK_DURATION (default 2m), SOAK_SAMPLE_EVERY
// (5s), SOAK_RPS (300), SOAK_BIN (bin/shadowproxy), SOAK_REPORT
// (soak/results/latest.md).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/demo"
)

func main() { os.Exit(run()) }

type settings struct {
	duration, sampleEvery time.Duration
	rps                   int
	bin, report           string
}

func loadSettings() (settings, error) {
	s := settings{duration: 2 * time.Minute, sampleEvery: 5 * time.Second, rps: 300,
		bin: "bin/shadowproxy", report: "soak/results/latest.md"}
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

// ---------------------------------------------------------------------------
// Backends.

type backends struct {
	demo  *demo.Backends
	slow  *http.Server
	flaky net.Listener
	wg    sync.WaitGroup

	slowURL, flakyURL, deadURL string
}

func startBackends() (*backends, error) {
	d, err := demo.StartBackends()
	if err != nil {
		return nil, err
	}
	b := &backends{demo: d}
	// slow answers in 20-400ms, and 3% of the time in 3s: a shadow with a
	// 200ms timeout behind it times out often and sometimes hangs.
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.close()
		return nil, err
	}
	b.slowURL = "http://" + sl.Addr().String()
	b.slow = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := time.Duration(20+rand.IntN(380)) * time.Millisecond
		if rand.IntN(100) < 3 {
			d = 3 * time.Second
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"slow":true,"ms":%d}`, d.Milliseconds())
	}), ReadHeaderTimeout: 5 * time.Second}
	go b.slow.Serve(sl)

	// flaky resets 8% of requests, answers 8% with a 500 and 4% with
	// garbage, and the rest with a keep-alive 200.
	if b.flaky, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.close()
		return nil, err
	}
	b.flakyURL = "http://" + b.flaky.Addr().String()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := b.flaky.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				serveFlaky(c)
			}()
		}
	}()

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.close()
		return nil, err
	}
	b.deadURL = "http://" + dead.Addr().String()
	dead.Close()
	return b, nil
}

func serveFlaky(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		switch n := rand.IntN(100); {
		case n < 8:
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return
		case n < 16:
			io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
		case n < 20:
			io.WriteString(c, "HTTP/1.1 ok\r\n\r\n")
			return
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
		}
	}
}

func (b *backends) close() {
	if b.demo != nil {
		b.demo.Close()
	}
	if b.slow != nil {
		b.slow.Close()
	}
	if b.flaky != nil {
		b.flaky.Close()
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// ---------------------------------------------------------------------------
// Configuration.

// configYAML is the soak configuration; variant toggles what SIGHUP
// reloads change (the slow route's shadow sampling and queue), leaving the
// api and checkout routes, and so their learnt noise and rollout state,
// unchanged.
func configYAML(h *harness, variant int) string {
	percent, queue := 100, 32
	if variant%2 == 1 {
		percent, queue = 50, 16
	}
	hold := max(h.st.duration/6, 5*time.Second).Round(time.Second)
	return fmt.Sprintf(`# generated by soak/main.go
listen: %s
admin_listen: %s
log: {level: warn, format: json}
access_log: {enabled: true, sample: 1%%}
limits: {read_timeout: 2s, write_timeout: 5s, idle_timeout: 15s, max_header_size: 8KiB, max_request_body: 1MiB}
upstreams:
  - {name: v1, url: %s, timeout: 3s}
  - {name: v1-twin, url: %s, timeout: 3s}
  - {name: v2, url: %s, timeout: 3s}
  - {name: slow, url: %s, timeout: 3s}
  - name: flaky
    urls: [%s, %s]
    timeout: 1s
    connect_timeout: 200ms
    health: {max_failures: 3, ejection: 5s}
  - {name: dead, url: %s, connect_timeout: 200ms}
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: v1
    shadow:
      targets:
        - name: v2
          headers: {remove: [Authorization, Cookie]}
      percent: 100
      compare: {secondary: v1-twin, headers: [Content-Type]}
  - name: checkout
    match: {path_prefix: /checkout/}
    upstream: v1
    split:
      key: header:X-User-ID
      salt: checkout
      to: v2
      percent: 10
      response_header: X-Shadowproxy-Upstream
    rollout:
      interval: 1s
      window: 20s
      min_samples: 20
      state_file: %s
      steps:
        - {percent: 10, hold: %s}
        - {percent: 25, hold: %s}
        - {percent: 50, hold: %s}
        - {percent: 100}
      promote_when:
        - {metric: error_rate_5xx, below: 2%%}
      rollback_when:
        - {metric: error_rate_5xx, above_baseline: 2x, for: 3s}
  - name: slow
    match: {path_prefix: /slow/}
    upstream: v1
    shadow: {targets: [slow], percent: %d, timeout: 200ms, workers: 8, queue_size: %d}
  - name: flaky
    match: {path_prefix: /flaky/}
    upstream: flaky
  - name: dead
    match: {path_prefix: /dead/}
    upstream: dead
  - name: default
    upstream: v1
`, h.proxyAddr, h.adminAddr, h.b.demo.V1.URL, h.b.demo.Twin.URL, h.b.demo.V2.URL, h.b.slowURL,
		h.b.flakyURL, h.b.deadURL, h.b.deadURL, filepath.Join(h.dir, "rollout-checkout.json"),
		hold, hold, hold, percent, queue)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func writeAtomic(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---------------------------------------------------------------------------
// The harness: one proxy process, its backends, the load and the samples.

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
	if err := writeAtomic(h.cfgPath, configYAML(h, 0)); err != nil {
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
				if err := writeAtomic(h.cfgPath, configYAML(h, h.reloads)); err == nil {
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
	m, err := scrape(h.adminAddr)
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

// scrape reads the plain (unlabelled) metrics from /metrics, plus labelled
// ones under their full "name{labels}" text.
func scrape(adminAddr string) (map[string]float64, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// ---------------------------------------------------------------------------
// Load.

// kind is one sort of request in the mix.
type kind struct {
	name   string
	weight int
	// healthy kinds must not see a 5xx or a transport error (the checkout
	// canary is exempt while v2 is made to fail).
	healthy bool
	do      func(g *generator, n int) result
}

type result struct {
	status int  // 0: no HTTP answer
	closed bool // hostile kinds: the proxy closed the connection
	err    error
}

type kindStats struct {
	sent, s2xx, s3xx, s4xx, s5xx, closed, errs atomic.Int64
	lastErr                                    atomic.Value
}

type loadStats struct {
	total, dropped atomic.Int64
	kinds          map[string]*kindStats
	unexpected     atomic.Int64 // healthy kinds: 5xx or transport error
}

func newLoadStats() *loadStats { return &loadStats{kinds: map[string]*kindStats{}} }

type generator struct {
	h          *harness
	kinds      []kind
	totalW     int
	keepAlive  *http.Client
	fresh      *http.Client
	base       string
	slowlorisN atomic.Int64
}

func newGenerator(h *harness) *generator {
	g := &generator{h: h, base: "http://" + h.proxyAddr}
	g.keepAlive = &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	g.fresh = &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	get := func(c func(*generator) *http.Client, path func(n int) string, user bool) func(*generator, int) result {
		return func(g *generator, n int) result {
			req, _ := http.NewRequest(http.MethodGet, g.base+path(n), nil)
			if user {
				req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", n%500))
			}
			return g.send(c(g), req)
		}
	}
	ka := func(g *generator) *http.Client { return g.keepAlive }
	fr := func(g *generator) *http.Client { return g.fresh }
	g.kinds = []kind{
		{name: "api users (shadowed, diffed)", weight: 34, healthy: true, do: get(ka, func(n int) string { return fmt.Sprintf("/api/users/u%d", n%1000) }, true)},
		{name: "api products (shadowed, diffed)", weight: 10, healthy: true, do: get(ka, func(int) string { return "/api/products" }, false)},
		{name: "checkout (split, rollout)", weight: 20, healthy: false, do: get(ka, func(n int) string { return fmt.Sprintf("/checkout/cart-%d", n%200) }, true)},
		{name: "POST api (not mirrored)", weight: 5, healthy: true, do: func(g *generator, n int) result {
			body := fmt.Sprintf(`{"order":%d,"items":[1,2,3]}`, n)
			req, _ := http.NewRequest(http.MethodPost, g.base+"/api/users/u1", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			return g.send(g.keepAlive, req)
		}},
		{name: "slow shadow (timeouts; v1 answers 404)", weight: 8, healthy: true, do: get(ka, func(n int) string { return fmt.Sprintf("/slow/%d", n) }, false)},
		{name: "new connection per request", weight: 5, healthy: true, do: get(fr, func(n int) string { return fmt.Sprintf("/api/users/u%d", n%50) }, true)},
		{name: "flaky upstream (502s)", weight: 5, do: get(ka, func(n int) string { return fmt.Sprintf("/flaky/%d", n) }, false)},
		{name: "dead upstream (502)", weight: 3, do: get(ka, func(n int) string { return "/dead/x" }, false)},
		{name: "hostile: duplicate Content-Length", weight: 3, do: rawKind("POST /api/x HTTP/1.1\r\nHost: soak\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0)},
		{name: "hostile: CL+TE smuggling", weight: 2, do: rawKind("POST /api/x HTTP/1.1\r\nHost: soak\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/products HTTP/1.1\r\nHost: soak\r\n\r\n", 0)},
		{name: "hostile: oversized head (431)", weight: 2, do: rawKind("GET /api/x HTTP/1.1\r\nHost: soak\r\nX-Big: "+strings.Repeat("x", 12<<10)+"\r\n\r\n", 0)},
		{name: "hostile: abandoned request", weight: 2, do: rawKind("GET /api/x HTTP/1.1\r\nHost: so", 50*time.Millisecond)},
		{name: "hostile: slowloris (read_timeout)", weight: 1, do: func(g *generator, n int) result {
			// At most 4 at a time: each holds a worker for read_timeout.
			if g.slowlorisN.Add(1) > 4 {
				g.slowlorisN.Add(-1)
				return result{closed: true}
			}
			defer g.slowlorisN.Add(-1)
			return slowloris(g.h.proxyAddr)
		}},
	}
	for _, k := range g.kinds {
		g.totalW += k.weight
		h.stats.kinds[k.name] = &kindStats{}
	}
	return g
}

func (g *generator) send(c *http.Client, req *http.Request) result {
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return result{status: resp.StatusCode, err: err}
}

// rawKind writes raw bytes on a new connection (then waits hold, for
// abandoned requests) and reads whatever answer comes until the proxy
// closes or 3s pass.
func rawKind(payload string, hold time.Duration) func(*generator, int) result {
	return func(g *generator, _ int) result {
		c, err := net.DialTimeout("tcp", g.h.proxyAddr, 2*time.Second)
		if err != nil {
			return result{err: err}
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, payload); err != nil {
			return result{closed: true}
		}
		if hold > 0 {
			time.Sleep(hold)
			return result{closed: true}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return result{closed: true}
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return result{status: resp.StatusCode}
	}
}

// slowloris sends a request head one line every 300ms and reports whether
// the proxy cut it off (it must, at read_timeout: 2s).
func slowloris(addr string) result {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return result{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(6 * time.Second))
	if _, err := io.WriteString(c, "GET /api/x HTTP/1.1\r\nHost: soak\r\n"); err != nil {
		return result{closed: true}
	}
	for i := 0; i < 15; i++ {
		time.Sleep(300 * time.Millisecond)
		if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
			return result{closed: true}
		}
	}
	return result{err: errors.New("a slowloris client kept its connection for 4.5s past a 2s read_timeout")}
}

func (g *generator) run(ctx context.Context) {
	const workers = 48
	jobs := make(chan int, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				g.one(n)
			}
		}()
	}
	tick := time.NewTicker(time.Second / 100)
	defer tick.Stop()
	perTick := float64(g.h.st.rps) / 100
	credit := 0.0
	n := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		for credit += perTick; credit >= 1; credit-- {
			n++
			select {
			case jobs <- n:
			default:
				g.h.stats.dropped.Add(1) // every worker busy: the client, not the proxy, is saturated
			}
		}
	}
	close(jobs)
	wg.Wait()
	g.keepAlive.CloseIdleConnections()
}

func (g *generator) one(n int) {
	r := rand.IntN(g.totalW)
	var k kind
	for _, k = range g.kinds {
		if r < k.weight {
			break
		}
		r -= k.weight
	}
	res := k.do(g, n)
	st := g.h.stats
	ks := st.kinds[k.name]
	st.total.Add(1)
	ks.sent.Add(1)
	switch {
	case res.err != nil:
		ks.errs.Add(1)
		ks.lastErr.Store(res.err.Error())
	case res.status >= 500:
		ks.s5xx.Add(1)
	case res.status >= 400:
		ks.s4xx.Add(1)
	case res.status >= 300:
		ks.s3xx.Add(1)
	case res.status >= 200:
		ks.s2xx.Add(1)
	case res.closed:
		ks.closed.Add(1)
	}
	if k.healthy && (res.err != nil || res.status >= 500) {
		st.unexpected.Add(1)
	}
}

// ---------------------------------------------------------------------------
// Verdict and report.

type trend struct {
	name                 string
	unit                 string
	first, last, slope   float64 // slope per minute, over the last third
	factor, slack        float64
	grows, enoughSamples bool
}

// analyze flags a series that grows without bound: the mean of its last
// third exceeds factor × the first third's mean + slack, AND it is still
// rising: a positive slope over the last third and a final value at or
// above everything before the last third. A series that jumped once and
// then stayed flat (a pool filling up, a heap settling) passes.
func analyze(name, unit string, xs []float64, at []time.Duration, factor, slack float64) trend {
	t := trend{name: name, unit: unit, factor: factor, slack: slack}
	n := len(xs)
	if n < 6 {
		return t
	}
	t.enoughSamples = true
	k := n / 3
	t.first, t.last = mean(xs[:k]), mean(xs[n-k:])
	t.slope = slopePerMinute(xs[n-k:], at[n-k:])
	earlier := xs[0]
	for _, x := range xs[:n-k] {
		earlier = math.Max(earlier, x)
	}
	t.grows = t.last > factor*t.first+slack && t.slope > 0 && xs[n-1] >= earlier
	return t
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func slopePerMinute(ys []float64, at []time.Duration) float64 {
	n := float64(len(ys))
	var sx, sy, sxx, sxy float64
	for i, y := range ys {
		x := at[i].Minutes()
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

type outcome struct {
	pass          bool
	trends        []trend
	problems      []string
	summary       string
	rolloutStatus string
	finalMetrics  map[string]float64
	elapsed       time.Duration
}

func (h *harness) finish() outcome {
	var o outcome
	o.elapsed = time.Since(h.started).Round(time.Second)
	alive := h.alive()
	if alive {
		o.finalMetrics, _ = scrape(h.adminAddr)
		o.rolloutStatus = h.rolloutStatus()
	}
	h.stopProxy()

	at := make([]time.Duration, len(h.samples))
	var rss, gor, fds []float64
	for i, s := range h.samples {
		at[i] = s.at
		rss, gor, fds = append(rss, s.rss/(1<<20)), append(gor, s.goroutines), append(fds, s.fds)
	}
	o.trends = []trend{
		analyze("RSS", "MiB", rss, at, 2, 32),
		analyze("goroutines", "", gor, at, 2, 50),
		analyze("open file descriptors", "", fds, at, 2, 50),
	}
	for _, t := range o.trends {
		if t.grows {
			o.problems = append(o.problems, fmt.Sprintf("%s keeps growing: %.1f -> %.1f%s (last third's mean > %.0fx first third's + %.0f, still rising %+.1f/min)",
				t.name, t.first, t.last, t.unit, t.factor, t.slack, t.slope))
		}
		if !t.enoughSamples {
			o.problems = append(o.problems, fmt.Sprintf("%s: fewer than 6 samples; run longer or sample more often", t.name))
		}
	}
	if !alive {
		o.problems = append(o.problems, "shadowproxy exited during the run; log tail:\n"+tail(h.logPath, 20))
	} else if h.exitErr != nil || h.exitCode != 0 {
		o.problems = append(o.problems, fmt.Sprintf("shadowproxy did not drain and exit 0 on SIGTERM: code %d, %v", h.exitCode, h.exitErr))
	}
	st := h.stats
	healthy := int64(0)
	for _, k := range h.kinds {
		if k.healthy {
			healthy += st.kinds[k.name].sent.Load()
		}
	}
	if healthy == 0 {
		o.problems = append(o.problems, "no request on a healthy route was sent")
	} else if u := st.unexpected.Load(); float64(u) > 0.01*float64(healthy) {
		o.problems = append(o.problems, fmt.Sprintf("%d of %d requests on healthy routes got a 5xx or no answer (more than 1%%)", u, healthy))
	}
	if ks := st.kinds["hostile: slowloris (read_timeout)"]; ks != nil && ks.errs.Load() > 0 {
		o.problems = append(o.problems, fmt.Sprintf("%d slowloris clients were not cut off at read_timeout", ks.errs.Load()))
	}
	if o.finalMetrics != nil {
		if ok := o.finalMetrics[`shadowproxy_config_reloads_total{result="success"}`]; int(ok) != h.reloads {
			o.problems = append(o.problems, fmt.Sprintf("%d SIGHUP reloads sent, %v counted as successful", h.reloads, ok))
		}
	}
	o.pass = len(o.problems) == 0
	var b strings.Builder
	verdict := "PASS"
	if !o.pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "soak: %s after %v, %d requests (%.0f/s), %d reloads\n", verdict, o.elapsed, st.total.Load(), float64(st.total.Load())/o.elapsed.Seconds(), h.reloads)
	for _, t := range o.trends {
		fmt.Fprintf(&b, "soak:   %-22s first third %8.1f%s  last third %8.1f%s  slope %+7.1f/min  %s\n", t.name, t.first, t.unit, t.last, t.unit, t.slope, map[bool]string{true: "GROWING", false: "bounded"}[t.grows])
	}
	for _, p := range o.problems {
		fmt.Fprintf(&b, "soak:   problem: %s\n", p)
	}
	o.summary = b.String()
	return o
}

func (h *harness) rolloutStatus() string {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + h.adminAddr + "/api/v1/routes")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var routes []struct {
		Route   string          `json:"route"`
		Split   json.RawMessage `json:"split"`
		Rollout json.RawMessage `json:"rollout"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&routes); err != nil {
		return err.Error()
	}
	for _, r := range routes {
		if r.Route == "checkout" {
			var out bytes.Buffer
			json.Indent(&out, r.Rollout, "", "  ")
			return out.String()
		}
	}
	return "(no checkout route in /api/v1/routes)"
}

func writeReport(path string, h *harness, o outcome) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	verdict := "PASS"
	if !o.pass {
		verdict = "FAIL"
	}
	st := h.stats
	fmt.Fprintf(&b, "# Soak run: %s\n\n", verdict)
	fmt.Fprintf(&b, "%s, %v (of %v requested), target %d req/s, %s on %s/%s with %d CPUs.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), o.elapsed, h.st.duration, h.st.rps, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Fprintf(&b, "`%s run` in front of the demo backends (v1, v1-twin, v2), a slow shadow, a flaky upstream and a dead port; "+
		"shadowing with diffing on /api/, a canary split walked by a rollout on /checkout/ (v2 made to fail from %v to %v), "+
		"%d SIGHUP reloads, hostile clients. Generated by `soak/main.go`.\n\n", h.st.bin, h.failureAt[0].Round(time.Second), h.failureAt[1].Round(time.Second), h.reloads)
	fmt.Fprintf(&b, "## Growth\n\nA series fails when its last third's mean exceeds factor x its first third's mean + slack and it is still rising at the end.\n\n")
	fmt.Fprintf(&b, "| series | first third | last third | slope (last third) | factor + slack | verdict |\n|---|---|---|---|---|---|\n")
	for _, t := range o.trends {
		v := "bounded"
		if t.grows {
			v = "**GROWING**"
		}
		fmt.Fprintf(&b, "| %s | %.1f %s | %.1f %s | %+.1f/min | %.0fx + %.0f | %s |\n", t.name, t.first, t.unit, t.last, t.unit, t.slope, t.factor, t.slack, v)
	}
	if len(o.problems) > 0 {
		fmt.Fprintf(&b, "\n### Problems\n\n")
		for _, p := range o.problems {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(p, "\n", "\n  "))
		}
	}
	fmt.Fprintf(&b, "\n## Load\n\n%d requests (%.0f/s achieved); %d not sent because every client worker was busy. "+
		"Healthy routes: %d requests with a 5xx or no answer.\n\n", st.total.Load(), float64(st.total.Load())/o.elapsed.Seconds(), st.dropped.Load(), st.unexpected.Load())
	fmt.Fprintf(&b, "| kind | sent | 2xx | 3xx | 4xx | 5xx | closed | client errors | last error |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, k := range h.kinds {
		ks := st.kinds[k.name]
		last, _ := ks.lastErr.Load().(string)
		if len(last) > 80 {
			last = last[:80] + "..."
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %s |\n", k.name, ks.sent.Load(), ks.s2xx.Load(), ks.s3xx.Load(), ks.s4xx.Load(), ks.s5xx.Load(), ks.closed.Load(), ks.errs.Load(), strings.ReplaceAll(last, "|", "/"))
	}
	if o.finalMetrics != nil {
		fmt.Fprintf(&b, "\n## Proxy counters at the end\n\n")
		var keys []string
		for k := range o.finalMetrics {
			if strings.HasPrefix(k, "shadowproxy_shadow_requests_total") || strings.HasPrefix(k, "shadowproxy_config_reloads_total") ||
				strings.HasPrefix(k, "shadowproxy_rejected_requests_total") || strings.HasPrefix(k, "shadowproxy_upstream_errors_total") ||
				strings.HasPrefix(k, "shadowproxy_comparisons_total") || strings.HasPrefix(k, "shadowproxy_rollout") {
				if o.finalMetrics[k] != 0 {
					keys = append(keys, k)
				}
			}
		}
		sort.Strings(keys)
		b.WriteString("```\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %g\n", k, o.finalMetrics[k])
		}
		b.WriteString("```\n")
		fmt.Fprintf(&b, "\n## Rollout of checkout at the end\n\n```json\n%s\n```\n", o.rolloutStatus)
	}
	fmt.Fprintf(&b, "\n## Samples\n\n| t | RSS MiB | goroutines | open fds (/metrics) | fds (/proc) | requests |\n|---|---|---|---|---|---|\n")
	for _, s := range h.samples {
		fmt.Fprintf(&b, "| %v | %.1f | %.0f | %.0f | %.0f | %d |\n", s.at, s.rss/(1<<20), s.goroutines, s.fds, s.procFDs, s.requests)
	}
	fmt.Fprintf(&b, "\nShutdown: SIGTERM, exit code %d.\n", h.exitCode)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
