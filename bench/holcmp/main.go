// Command holcmp measures head-of-line blocking on shadowproxy's upstream
// hop, pipelined (upstream pipeline_conns) against the keep-alive pool, in
// one bounded run of about 30 s with nothing but Go.
//
//	go run ./bench/holcmp -out bench/results/holcmp.md
//
// Every configuration is a shadowproxy in front of a backend of its own
// that answers paths under /slow after -slow-delay (50 ms) and every other
// path at once: `pool` (the defaults), `pipelined` (pipeline_conns 4, the
// other pipeline settings at their defaults) and `pipelined-flush` (the
// same, in front of a backend that sends each answer at once). The
// backend is fasthttp, which holds an answer back while the next pipelined
// request is already buffered, so on `pipelined` a fast answer queued in
// front of a slow one waits for it too; `pipelined-flush` answers as
// net/http and nginx do, which isolates the proxy's own bound. The load
// sends a share
// (-slow-frac, 1%) of its requests to /slow and the rest to a fast path.
// On the pool a fast request never waits for a slow one; on a pipelined
// connection it may be queued behind one, and shadowproxy promises that it
// waits at most pipeline_max_wait × 1.25 (6.25 ms by default) before it is
// sent again on the pool (a rescue). The fast requests' tail, side by side
// with the pool's, shows whether that bound holds and what it costs.
//
// Two load shapes: saturation (64 connections, closed loop) and light load
// (16 connections, each pausing 4 ms between requests), where queues are
// short and the only long waits left are head-of-line ones. The processes
// are started and pinned as in bench/shadowcmp (package child): load
// generator on CPU 0, backends and proxies on CPU 1 with GOMAXPROCS=1, and
// the load moves from one configuration to the other in short slices
// (A B B A ...). Every slice is bounded in time and in request count.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
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
	lightPause                     time.Duration
	slowFrac                       float64
	slowDelay                      time.Duration
	pipelineConns                  int
	maxWait                        time.Duration // pipeline_max_wait; 0 leaves the default
	maxRequests                    int64
	configs                        []string
	proxyEnv                       []string
	out                            string
}

// defaultMaxWait is config.DefaultPipelineMaxWait, the bound's base when
// -max-wait is 0 (restated so the report needs no import of config).
const defaultMaxWait = 5 * time.Millisecond

func main() {
	role := flag.String("role", "", "internal: run as a child (backends or proxy)")
	addrFile := flag.String("addr-file", "", "internal: where a child writes its addresses")
	cfgFile := flag.String("config", "", "internal: the proxy child's configuration")
	flush := flag.String("flush", "0", "internal: per backend the backends child serves, 1 to send each answer at once, 0 for fasthttp's batching")

	var o options
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "saturation time per configuration (in slices)")
	flag.DurationVar(&o.light, "light", 4*time.Second, "light-load time per configuration (in slices); 0 skips light load")
	flag.DurationVar(&o.slice, "slice", time.Second, "length of one slice of load before moving to the next configuration")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "warm-up per configuration")
	flag.IntVar(&o.conns, "conns", 64, "saturation connections")
	flag.IntVar(&o.lightConns, "light-conns", 16, "light-load connections")
	flag.DurationVar(&o.lightPause, "light-pause", 4*time.Millisecond, "pause of each light-load connection between requests")
	flag.Float64Var(&o.slowFrac, "slow-frac", 0.01, "share of requests sent to /slow (0..1)")
	flag.DurationVar(&o.slowDelay, "slow-delay", 50*time.Millisecond, "delay of the backend's /slow answers")
	flag.IntVar(&o.pipelineConns, "pipeline-conns", 4, "pipeline_conns of the pipelined configuration")
	flag.DurationVar(&o.maxWait, "max-wait", 0, "pipeline_max_wait of the pipelined configuration (0: the default, 5ms)")
	flag.Int64Var(&o.maxRequests, "max-requests", 1_000_000, "at most this many requests per configuration and load shape")
	configs := flag.String("configs", "pool,pipelined,pipelined-flush", "configurations, comma-separated: pool, pipelined, pipelined-flush")
	proxyEnv := flag.String("proxy-env", "", "extra environment for the proxies, space-separated NAME=VALUE (e.g. GOGC=400)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this `file`")
	flag.Parse()

	var err error
	switch *role {
	case "backends":
		err = runBackends(*addrFile, *flush, o.slowDelay)
	case "proxy":
		err = proxychild.Run(*addrFile, *cfgFile, "", "holcmp")
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
		fmt.Fprintf(os.Stderr, "holcmp: %v\n", err)
		os.Exit(1)
	}
}

// runBackends is the backend child: one backend per character of flush
// (one per configuration, so each one's counts are its own), each on its
// own ephemeral loopback port, answering /slow paths after slowDelay and
// sending each answer at once where flush has a 1, until SIGTERM.
func runBackends(addrFile, flush string, slowDelay time.Duration) error {
	var servers []child.Server
	for _, f := range flush {
		s, err := backend.Listen("127.0.0.1:0", 0, 1024)
		if err != nil {
			return err
		}
		s.SetSlowDelay(slowDelay)
		s.SetFlushEach(f == '1')
		servers = append(servers, s)
	}
	return child.Serve(addrFile, servers...)
}

// pipeResults are the series of shadowproxy_upstream_pipeline_requests_total.
var pipeResults = []string{"answered", "bypassed", "rescued", "retried", "rescue_denied"}

// counters are a proxy's pipeline counters by result and its backend's
// request count, at one moment.
type counters struct {
	pipe    map[string]float64
	backend int64
}

func (c counters) sub(o counters) counters {
	d := counters{pipe: map[string]float64{}, backend: c.backend - o.backend}
	for _, k := range pipeResults {
		d.pipe[k] = c.pipe[k] - o.pipe[k]
	}
	return d
}

// measured is one configuration under one load shape.
type measured struct {
	load  loadResult
	delta counters
}

// run is one configuration: its proxy, its backend and what was measured.
type run struct {
	name           string
	px             *child.Child
	target, admin  string // the proxy's listener and admin listener
	backend        string
	client         *fasthttp.HostClient
	sat, light     measured
	satN, lightN   int64 // requests sent so far, against -max-requests
	before, middle counters
}

func (r *run) read() (counters, error) {
	c := counters{pipe: map[string]float64{}}
	series, err := scrape.Series(r.admin)
	if err != nil {
		return c, err
	}
	for _, k := range pipeResults {
		c.pipe[k] = series[`shadowproxy_upstream_pipeline_requests_total{result="`+k+`",upstream="primary"}`]
	}
	st, err := scrape.Backend(r.backend)
	c.backend = st.Requests
	return c, err
}

func proxyConfig(o options, name, backendAddr string) string {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n")
	b.WriteString("log: {level: warn, format: json}\n")
	b.WriteString("limits: {shutdown_timeout: 2s}\n")
	fmt.Fprintf(&b, "upstreams:\n  - name: primary\n    url: \"http://%s\"\n", backendAddr)
	if name != "pool" {
		fmt.Fprintf(&b, "    pipeline_conns: %d\n", o.pipelineConns)
		if o.maxWait > 0 {
			fmt.Fprintf(&b, "    pipeline_max_wait: %s\n", o.maxWait)
		}
	}
	b.WriteString("routes:\n  - name: all\n    upstream: primary\n")
	return b.String()
}

func drive(o options) error {
	for _, c := range o.configs {
		if c != "pool" && c != "pipelined" && c != "pipelined-flush" {
			return fmt.Errorf("unknown configuration %q (want pool, pipelined or pipelined-flush)", c)
		}
	}
	switch {
	case len(o.configs) == 0:
		return fmt.Errorf("-configs is empty")
	case o.slice <= 0:
		return fmt.Errorf("-slice must be positive")
	case o.slowFrac < 0 || o.slowFrac > 1:
		return fmt.Errorf("-slow-frac %v is not within 0..1", o.slowFrac)
	case o.conns < 1 || o.lightConns < 1:
		return fmt.Errorf("-conns and -light-conns must be at least 1")
	case o.maxRequests < 1:
		return fmt.Errorf("-max-requests must be at least 1")
	}
	started := time.Now().UTC()
	uptimeBefore := child.Uptime()
	pin, err := child.PinLoad()
	if err != nil {
		return err
	}
	dir, cleanup, err := child.TempDir("holcmp")
	if err != nil {
		return err
	}
	defer cleanup()

	n := len(o.configs)
	var flush strings.Builder
	for _, c := range o.configs {
		flush.WriteByte("01"[btoi(c == "pipelined-flush")])
	}
	bk, err := child.Start(dir, "backends", pin, nil, "-role", "backends",
		"-flush", flush.String(), "-slow-delay", o.slowDelay.String())
	if err != nil {
		return err
	}
	defer bk.Stop()
	if len(bk.Addr) != n {
		return fmt.Errorf("backends wrote %d addresses, want %d", len(bk.Addr), n)
	}
	sat := shape{name: "saturation", conns: o.conns, slowFrac: o.slowFrac}
	light := shape{name: "light", conns: o.lightConns, pause: o.lightPause, slowFrac: o.slowFrac}
	satSlices := max(1, int((o.duration+o.slice-1)/o.slice))
	lightSlices := 0
	if o.light > 0 {
		lightSlices = max(1, int((o.light+o.slice-1)/o.slice))
	}
	est := time.Duration(n) * (o.warmup + time.Duration(satSlices+lightSlices)*o.slice)
	fmt.Fprintf(os.Stderr, "holcmp: %s; %d saturation and %d light-load slices of %s each; about %s; pinning: %s\n",
		strings.Join(o.configs, " "), satSlices, lightSlices, o.slice, est.Round(time.Second), pin)

	runs := make([]*run, n)
	for i, name := range o.configs {
		r := &run{name: name, backend: bk.Addr[i]}
		runs[i] = r
		cfgFile := dir + "/" + name + ".yaml"
		if err := os.WriteFile(cfgFile, []byte(proxyConfig(o, name, r.backend)), 0o644); err != nil {
			return err
		}
		px, err := child.Start(dir, "proxy-"+name, pin, o.proxyEnv, "-role", "proxy", "-config", cfgFile)
		if err != nil {
			return err
		}
		defer px.Stop()
		if len(px.Addr) != 2 {
			return fmt.Errorf("%s: proxy wrote %d addresses, want 2", name, len(px.Addr))
		}
		r.px, r.target, r.admin = px, px.Addr[0], px.Addr[1]
		r.client = child.LoadClient(r.target, max(o.conns, o.lightConns))
		defer r.client.CloseIdleConnections()
	}
	for _, r := range runs {
		if w := runLoad(r.client, r.target, sat, o.warmup, o.maxRequests, 0); w.requests == 0 || w.failures*100 > w.requests {
			return fmt.Errorf("%s: warm-up: %d of %d requests failed", r.name, w.failures, w.requests)
		}
		if r.before, err = r.read(); err != nil {
			return err
		}
	}
	// Saturation slices, then light-load slices, each pass over the
	// configurations in the opposite order of the one before; every
	// configuration sees the same seeds.
	order := slices.Clone(runs)
	seed := uint64(1)
	for i := 0; i < satSlices; i++ {
		for _, r := range order {
			if err := r.slice(o, sat, seed, &r.sat, &r.satN); err != nil {
				return err
			}
		}
		seed++
		slices.Reverse(order)
	}
	for _, r := range runs {
		if r.middle, err = r.read(); err != nil {
			return err
		}
		r.sat.delta = r.middle.sub(r.before)
	}
	for i := 0; i < lightSlices; i++ {
		for _, r := range order {
			if err := r.slice(o, light, seed, &r.light, &r.lightN); err != nil {
				return err
			}
		}
		seed++
		slices.Reverse(order)
	}
	for _, r := range runs {
		end, err := r.read()
		if err != nil {
			return err
		}
		r.light.delta = end.sub(r.middle)
		r.sat.load.finish()
		r.light.load.finish()
	}
	rep := report{
		command:  "go run ./bench/holcmp " + strings.Join(os.Args[1:], " "),
		started:  started,
		uptime:   uptimeBefore,
		loadEnd:  child.LoadAvg(),
		pin:      pin.String(),
		o:        o,
		sat:      sat,
		light:    light,
		satN:     satSlices,
		lightN:   lightSlices,
		bound:    bound(o.maxWait),
		maxWait:  max(o.maxWait, 0),
		proxyEnv: strings.Join(o.proxyEnv, " "),
	}
	if rep.maxWait == 0 {
		rep.maxWait = defaultMaxWait
	}
	for _, r := range runs {
		rep.rows = append(rep.rows, row{config: r.name, shape: sat.name, m: r.sat})
		if lightSlices > 0 {
			rep.rows = append(rep.rows, row{config: r.name, shape: light.name, m: r.light})
		}
	}
	md := rep.render()
	fmt.Print(md)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(md), 0o644)
	}
	return nil
}

// slice runs one slice of sh on the run and adds it to m, within what is
// left of -max-requests (*sent).
func (r *run) slice(o options, sh shape, seed uint64, m *measured, sent *int64) error {
	left := o.maxRequests - *sent
	if left <= 0 {
		return nil
	}
	res := runLoad(r.client, r.target, sh, o.slice, left, seed)
	*sent += res.requests
	if res.requests == 0 || res.failures*100 > res.requests {
		return fmt.Errorf("%s, %s: %d of %d requests failed", r.name, sh.name, res.failures, res.requests)
	}
	m.load.add(res)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
