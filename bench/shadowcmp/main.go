// Command shadowcmp measures, side by side in one run and with nothing but
// Go, what shadowing costs the primary path of shadowproxy: throughput and
// latency with no shadow, with 100% of requests mirrored to a fast shadow,
// and with 100% mirrored to a slow (200 ms) shadow.
//
//	go run ./bench/shadowcmp                      # about 35 s
//	go run ./bench/shadowcmp -profile /tmp/prof   # plus CPU and allocation profiles
//
// It starts child processes of its own executable, all pinned to CPU 1 with
// GOMAXPROCS=1: the backends (one fast primary per configuration, a fast
// shadow and a slow shadow, each answering ~1 KiB of JSON) and one
// shadowproxy per configuration, assembled in-process by package app from a
// generated YAML file, exactly as `shadowproxy run` does. The load generator
// (a fasthttp client with a fixed number of keep-alive connections per
// configuration) runs in this process, pinned to CPU 0. With fewer than two
// CPUs nothing is pinned.
//
// Every proxy stays up for the whole run and the load moves from one to the
// next in short slices (A B C C B A ...), so the noise of a shared machine
// (other tenants, frequency changes) falls on every configuration alike
// instead of on whichever ran during a bad second. Saturation slices (64
// connections, closed loop) give throughput, latency and the proxy's CPU per
// request (/proc/PID/stat); light-load slices (16 connections, each pausing
// 4 ms between requests) give latency without queueing. The table ends with
// the issue-9 goals, among them: with a slow shadow, primary p99 within 1.2x
// of no shadow.
//
// With -profile DIR each proxy writes DIR/<config>-cpu.pprof covering its
// saturation slices and DIR/<config>-allocs.pprof with
// DIR/<config>-allocs-base.pprof (compare with go tool pprof -base).
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
	"github.com/shadowproxy/shadowproxy/bench/internal/child"
	"github.com/shadowproxy/shadowproxy/bench/internal/proxychild"
	"github.com/shadowproxy/shadowproxy/bench/internal/scrape"
)

// options are the driver's flags.
type options struct {
	duration, light, slice, warmup time.Duration
	conns, lightConns              int
	lightPause, slowDelay          time.Duration
	workers, queue                 int
	configs                        []string
	proxyEnv                       []string
	profileDir                     string
	out                            string
}

func main() {
	role := flag.String("role", "", "internal: run as a child (backends or proxy)")
	addrFile := flag.String("addr-file", "", "internal: where a child writes its addresses")
	cfgFile := flag.String("config", "", "internal: the proxy child's configuration")
	profPrefix := flag.String("prof-prefix", "", "internal: the proxy child's profile path prefix")
	primaries := flag.Int("primaries", 1, "internal: how many primary backends the backends child serves")

	var o options
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "saturation time per configuration (in slices)")
	flag.DurationVar(&o.light, "light", 5*time.Second, "light-load time per configuration (in slices)")
	flag.DurationVar(&o.slice, "slice", time.Second, "length of one slice of load before moving to the next configuration")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "warm-up per configuration")
	flag.IntVar(&o.conns, "conns", 64, "saturation connections")
	flag.IntVar(&o.lightConns, "light-conns", 16, "light-load connections")
	flag.DurationVar(&o.lightPause, "light-pause", 4*time.Millisecond, "pause of each light-load connection between requests")
	flag.DurationVar(&o.slowDelay, "slow-delay", 200*time.Millisecond, "delay of the slow shadow")
	flag.IntVar(&o.workers, "workers", 64, "shadow.workers (shadow requests in flight)")
	flag.IntVar(&o.queue, "queue", 4096, "shadow.queue_size")
	configs := flag.String("configs", "none,fast,slow", "configurations, comma-separated: direct (no proxy), none, fast, slow")
	proxyEnv := flag.String("proxy-env", "", "extra environment for the proxies, space-separated NAME=VALUE (e.g. GOGC=400)")
	flag.StringVar(&o.profileDir, "profile", "", "write CPU and allocation profiles of each proxy to this `dir`")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this `file`")
	flag.Parse()

	var err error
	switch *role {
	case "backends":
		err = runBackends(*addrFile, *primaries, o.slowDelay)
	case "proxy":
		err = proxychild.Run(*addrFile, *cfgFile, *profPrefix, "shadowcmp")
	case "":
		o.proxyEnv = strings.Fields(*proxyEnv)
		for _, c := range strings.Split(*configs, ",") {
			if c = strings.TrimSpace(c); c != "" && !slices.Contains(o.configs, c) {
				o.configs = append(o.configs, c)
			}
		}
		err = drive(o)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "shadowcmp: %v\n", err)
		os.Exit(1)
	}
}

// run is one configuration: its proxy (nil for direct), its backends and
// what was measured.
type run struct {
	name                  string
	px                    *child.Child
	target, admin         string // where the load goes; the proxy's admin listener
	primary, shadow       string // backend addresses
	prof                  string // profile path prefix, "" for none
	client                *fasthttp.HostClient
	p0, s0                backend.Stats
	sat, light            loadResult
	cpu                   time.Duration // proxy CPU during saturation slices; -1 without a proxy
	rssKiB                int64
	primaryReqs           int64
	shadowReqs, shadowNew int64
	dropped, shadowOK     float64
	// Go heap activity of the proxy over the saturation slices (from its
	// go_memstats_* and go_gc_* metrics, less the cost of one scrape).
	mem0, mem1, scrapeCost memSample
}

// memSample is the proxy's cumulative allocation counters.
type memSample struct{ mallocs, bytes, gcs float64 }

func (m memSample) sub(o memSample) memSample {
	return memSample{m.mallocs - o.mallocs, m.bytes - o.bytes, m.gcs - o.gcs}
}

// readMem scrapes the proxy's allocation counters.
func readMem(admin string) (memSample, error) {
	var m memSample
	var err error
	if m.mallocs, err = scrape.MetricSum(admin, "go_memstats_mallocs_total", ""); err != nil {
		return m, err
	}
	if m.bytes, err = scrape.MetricSum(admin, "go_memstats_alloc_bytes_total", ""); err != nil {
		return m, err
	}
	m.gcs, err = scrape.MetricSum(admin, "go_gc_duration_seconds_count", "")
	return m, err
}

func drive(o options) error {
	for _, c := range o.configs {
		if c != "direct" && c != "none" && c != "fast" && c != "slow" {
			return fmt.Errorf("unknown configuration %q (want direct, none, fast or slow)", c)
		}
	}
	if o.slice <= 0 {
		return fmt.Errorf("-slice must be positive")
	}
	pin, err := child.PinLoad()
	if err != nil {
		return err
	}
	dir, cleanup, err := child.TempDir("shadowcmp")
	if err != nil {
		return err
	}
	defer cleanup()
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	n := len(o.configs)
	backends, err := child.Start(dir, "backends", pin, nil, "-role", "backends",
		"-primaries", fmt.Sprint(n), "-slow-delay", o.slowDelay.String())
	if err != nil {
		return err
	}
	defer backends.Stop()
	if len(backends.Addr) != n+2 {
		return fmt.Errorf("backends wrote %d addresses, want %d", len(backends.Addr), n+2)
	}
	shadowAddr := map[string]string{"fast": backends.Addr[n], "slow": backends.Addr[n+1]}

	satSlices := max(1, int((o.duration+o.slice-1)/o.slice))
	lightSlices := max(1, int((o.light+o.slice-1)/o.slice))
	est := time.Duration(n) * (o.warmup + time.Duration(satSlices+lightSlices)*o.slice)
	fmt.Fprintf(os.Stderr, "shadowcmp: %s; %d saturation and %d light-load slices of %s each; about %s; pinning: %s\n",
		strings.Join(o.configs, " "), satSlices, lightSlices, o.slice, est.Round(time.Second), pin)

	runs := make([]*run, n)
	for i, name := range o.configs {
		r := &run{name: name, primary: backends.Addr[i], shadow: shadowAddr[name], cpu: -1}
		runs[i] = r
		if name == "direct" {
			r.target = r.primary
		} else {
			if o.profileDir != "" {
				r.prof = o.profileDir + "/" + name + "-"
			}
			if err := r.start(o, dir, pin); err != nil {
				return err
			}
			defer r.px.Stop()
		}
		r.client = child.LoadClient(r.target, max(o.conns, o.lightConns))
		defer r.client.CloseIdleConnections()
		if r.p0, err = scrape.Backend(r.primary); err != nil {
			return err
		}
		if r.shadow != "" {
			if r.s0, err = scrape.Backend(r.shadow); err != nil {
				return err
			}
		}
	}
	for _, r := range runs {
		if w := runLoad(r.client, r.target, o.conns, 0, o.warmup); w.requests == 0 || w.failures*100 > w.requests {
			return fmt.Errorf("%s: warm-up: %d of %d requests failed", r.name, w.failures, w.requests)
		}
		if r.px != nil {
			r.cpu = 0
			if r.prof != "" {
				r.px.Signal(syscall.SIGUSR1)
			}
			// Two scrapes back to back tell what one scrape allocates.
			m, err := readMem(r.admin)
			if err != nil {
				return err
			}
			if r.mem0, err = readMem(r.admin); err != nil {
				return err
			}
			r.scrapeCost = r.mem0.sub(m)
			r.scrapeCost.gcs = 0 // a collection during the scrapes is not the scrape's cost
		}
	}
	// Saturation slices, then light-load slices, each pass over the
	// configurations in the opposite order of the one before.
	order := slices.Clone(runs)
	for i := 0; i < satSlices; i++ {
		for _, r := range order {
			if err := r.slice(o, o.conns, 0); err != nil {
				return err
			}
		}
		slices.Reverse(order)
	}
	for _, r := range runs {
		if r.px != nil {
			if r.mem1, err = readMem(r.admin); err != nil {
				return err
			}
		}
		if r.prof != "" {
			r.px.Signal(syscall.SIGUSR2)
			if err := waitFile(r.prof+"done", 30*time.Second); err != nil {
				return err
			}
			os.Remove(r.prof + "done")
		}
	}
	for i := 0; i < lightSlices; i++ {
		for _, r := range order {
			if err := r.slice(o, o.lightConns, o.lightPause); err != nil {
				return err
			}
		}
		slices.Reverse(order)
	}
	for _, r := range runs {
		if err := r.finish(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  %-6s %7.0f req/s  sat p99 %6.2f ms  light p99 %5.2f ms\n",
			r.name, r.sat.rps(), r.sat.pct(0.99)/1e6, r.light.pct(0.99)/1e6)
	}
	md := render(o, pin, satSlices, lightSlices, runs, child.LoadAvg())
	fmt.Print(md)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(md), 0o644)
	}
	return nil
}

func proxyConfig(o options, primary, shadow string) string {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n")
	b.WriteString("log: {level: warn, format: json}\n")
	b.WriteString("limits: {shutdown_timeout: 2s}\n")
	fmt.Fprintf(&b, "upstreams:\n  - {name: primary, url: \"http://%s\"}\n", primary)
	if shadow != "" {
		fmt.Fprintf(&b, "  - {name: shadow, url: \"http://%s\"}\n", shadow)
	}
	b.WriteString("routes:\n  - name: all\n    upstream: primary\n")
	if shadow != "" {
		fmt.Fprintf(&b, "    shadow: {targets: [shadow], percent: 100, workers: %d, queue_size: %d, timeout: 5s}\n", o.workers, o.queue)
	}
	return b.String()
}

// start writes the configuration and starts the proxy child.
func (r *run) start(o options, dir string, pin child.Pinning) error {
	cfgFile := dir + "/" + r.name + ".yaml"
	if err := os.WriteFile(cfgFile, []byte(proxyConfig(o, r.primary, r.shadow)), 0o644); err != nil {
		return err
	}
	args := []string{"-role", "proxy", "-config", cfgFile}
	if r.prof != "" {
		args = append(args, "-prof-prefix", r.prof)
	}
	px, err := child.Start(dir, "proxy-"+r.name, pin, o.proxyEnv, args...)
	if err != nil {
		return err
	}
	if len(px.Addr) != 2 {
		px.Stop()
		return fmt.Errorf("%s: proxy wrote %d addresses, want 2", r.name, len(px.Addr))
	}
	r.px, r.target, r.admin = px, px.Addr[0], px.Addr[1]
	return nil
}

// slice runs one slice of load and adds it to the run's results; CPU time
// is counted for saturation slices only.
func (r *run) slice(o options, conns int, pause time.Duration) error {
	var t0 time.Duration
	if r.px != nil && pause == 0 {
		var err error
		if t0, err = child.CPUTime(r.px.Pid()); err != nil {
			return err
		}
	}
	res := runLoad(r.client, r.target, conns, pause, o.slice)
	if res.requests == 0 || res.failures*100 > res.requests {
		return fmt.Errorf("%s: %d of %d requests failed", r.name, res.failures, res.requests)
	}
	if r.px != nil && pause == 0 {
		t1, err := child.CPUTime(r.px.Pid())
		if err != nil {
			return err
		}
		r.cpu += t1 - t0
	}
	if pause == 0 {
		r.sat.add(res)
	} else {
		r.light.add(res)
	}
	return nil
}

// finish reads the counters and the proxy's peak RSS.
func (r *run) finish() error {
	r.sat.lat = sortedCopy(r.sat.lat)
	r.light.lat = sortedCopy(r.light.lat)
	p1, err := scrape.Backend(r.primary)
	if err != nil {
		return err
	}
	r.primaryReqs = p1.Requests - r.p0.Requests
	if r.px != nil {
		r.rssKiB = child.PeakRSS(r.px.Pid())
	}
	if r.shadow == "" {
		return nil
	}
	s1, err := scrape.Backend(r.shadow)
	if err != nil {
		return err
	}
	r.shadowReqs, r.shadowNew = s1.Requests-r.s0.Requests, s1.Conns-r.s0.Conns
	if r.dropped, err = scrape.MetricSum(r.admin, "shadowproxy_shadow_requests_total", `outcome="dropped"`); err != nil {
		return err
	}
	r.shadowOK, err = scrape.MetricSum(r.admin, "shadowproxy_shadow_requests_total", `outcome="ok"`)
	return err
}

func waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not written within %s", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func render(o options, pin child.Pinning, satSlices, lightSlices int, runs []*run, load string) string {
	labels := map[string]string{
		"direct": "direct to backend (no proxy)",
		"none":   "no shadow",
		"fast":   "100% shadow, fast target",
		"slow":   "100% shadow, 200 ms target",
	}
	by := map[string]*run{}
	for _, r := range runs {
		by[r.name] = r
	}
	val := func(name string, f func(*run) float64) float64 {
		if r := by[name]; r != nil {
			return f(r)
		}
		return math.NaN()
	}
	rps := func(r *run) float64 { return r.sat.rps() }
	lp99 := func(r *run) float64 { return r.light.pct(0.99) }
	sp99 := func(r *run) float64 { return r.sat.pct(0.99) }
	cpu := func(r *run) float64 {
		if r.cpu < 0 {
			return math.NaN()
		}
		return float64(r.cpu.Microseconds()) / float64(r.sat.requests)
	}

	var b strings.Builder
	b.WriteString("\n## shadowproxy: what shadowing costs the primary path (bench/shadowcmp)\n\n")
	fmt.Fprintf(&b, "Saturation: %d connections, %d x %s per configuration; light load: %d connections pausing %s, %d x %s; "+
		"configurations interleaved slice by slice. Shadow: percent 100, workers %d, queue_size %d. Pinning: %s. Proxy env: %q. "+
		"Load average at the end: %s.\n\n",
		o.conns, satSlices, o.slice, o.lightConns, o.lightPause, lightSlices, o.slice, o.workers, o.queue, pin, strings.Join(o.proxyEnv, " "), load)
	b.WriteString("| configuration | req/s | vs no shadow | sat p50 ms | sat p99 ms | light p50 ms | light p99 ms | light p99.9 ms | light p99 vs no shadow | proxy CPU µs/req | allocs/req | B/req | GCs | peak RSS MiB | shadow received | delivered | dropped | shadow new conns |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		recv, delivered, dropped, conns := "–", "–", "–", "–"
		if r.shadow != "" {
			recv = fmt.Sprint(r.shadowReqs)
			delivered = num(float64(r.shadowReqs)/float64(r.primaryReqs)*100, 1) + "%"
			dropped = num(r.dropped, 0)
			conns = fmt.Sprint(r.shadowNew)
		}
		rss, allocs, bytes, gcs := "–", "–", "–", "–"
		if r.px != nil {
			rss = num(float64(r.rssKiB)/1024, 1)
			d := r.mem1.sub(r.mem0).sub(r.scrapeCost)
			n := float64(r.sat.requests)
			allocs, bytes, gcs = num(max(d.mallocs, 0)/n, 2), num(max(d.bytes, 0)/n, 0), num(d.gcs, 0)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			labels[r.name], num(rps(r), 0), ratio(rps(r), val("none", rps)),
			num(r.sat.pct(0.5)/1e6, 2), num(sp99(r)/1e6, 2),
			num(r.light.pct(0.5)/1e6, 2), num(lp99(r)/1e6, 2), num(r.light.pct(0.999)/1e6, 2),
			ratio(lp99(r), val("none", lp99)), num(cpu(r), 1), allocs, bytes, gcs, rss, recv, delivered, dropped, conns)
	}
	b.WriteString("\n| goal (issue 9) | measured | status |\n|---|---:|---|\n")
	goal := func(name string, v, limit float64, atMost bool) {
		status := "–"
		if !math.IsNaN(v) {
			ok := v >= limit
			if atMost {
				ok = v <= limit
			}
			status = "met"
			if !ok {
				status = "**not met**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, num(v, 2), status)
	}
	goal("slow shadow: light-load p99 / no shadow <= 1.2", val("slow", lp99)/val("none", lp99), 1.2, true)
	goal("slow shadow: saturation p99 / no shadow <= 1.2", val("slow", sp99)/val("none", sp99), 1.2, true)
	goal("fast shadow: req/s / no shadow >= 0.8", val("fast", rps)/val("none", rps), 0.8, false)
	goal("fast shadow: delivered >= 99%", val("fast", func(r *run) float64 { return float64(r.shadowReqs) / float64(r.primaryReqs) }), 0.99, false)
	return b.String()
}
