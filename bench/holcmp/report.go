package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// quantile is the q-quantile (0..1) of sorted by the nearest-rank method,
// or -1 without samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return -1
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// over counts the samples of sorted above limit.
func over(sorted []time.Duration, limit time.Duration) int {
	lo, hi := 0, len(sorted)
	for lo < hi {
		m := (lo + hi) / 2
		if sorted[m] > limit {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return len(sorted) - lo
}

// bound is the documented head-of-line bound for pipeline_max_wait
// maxWait (0: the default): the watchdog looks four times per
// pipeline_max_wait, so a rescue comes at most a quarter late.
func bound(maxWait time.Duration) time.Duration {
	if maxWait <= 0 {
		maxWait = defaultMaxWait
	}
	return maxWait + maxWait/4
}

// ms formats d in milliseconds, "–" for a missing value (d < 0).
func ms(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

// row is one configuration under one load shape.
type row struct {
	config, shape string
	m             measured
}

// report is everything the Markdown report shows.
type report struct {
	command       string
	started       time.Time
	uptime        string // before the run
	loadEnd       string // load average at the end
	pin, proxyEnv string
	o             options
	sat, light    shape
	satN, lightN  int // slices per configuration
	bound         time.Duration
	maxWait       time.Duration
	rows          []row
}

func (rep *report) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- `%s`, %s, uptime before: %s -->\n\n", rep.command, rep.started.Format("2006-01-02 15:04 UTC"), rep.uptime)
	b.WriteString("## shadowproxy: head-of-line blocking, pipelined vs pooled upstream connections (bench/holcmp)\n\n")
	fmt.Fprintf(&b, "Backend: 1 KiB JSON at once, `/slow` paths after %s; %s of requests go to `/slow`. "+
		"`pool`: upstream defaults; `pipelined`: `pipeline_conns: %d`, `pipeline_max_wait: %s` (documented bound: a request waits for another's answer at most %s), "+
		"in front of a fasthttp backend, which holds an answer back while the next pipelined request is buffered; `pipelined-flush`: the same in front of a backend that sends each answer at once (as net/http and nginx do). "+
		"Saturation: %d connections, closed loop, %d x %s per configuration; light load: %d connections pausing %s, %d x %s; "+
		"at most %d requests per configuration and load; configurations interleaved slice by slice. "+
		"Pinning: %s. Proxy env: %q. Load average at the end: %s.\n\n",
		rep.o.slowDelay, pct(rep.o.slowFrac), rep.o.pipelineConns, rep.maxWait, rep.bound,
		rep.sat.conns, rep.satN, rep.o.slice, rep.light.conns, rep.light.pause, rep.lightN, rep.o.slice,
		rep.o.maxRequests, rep.pin, rep.proxyEnv, rep.loadEnd)
	fmt.Fprintf(&b, "| configuration | load | requests | req/s | fast p50 ms | fast p99 ms | fast p99.9 ms | fast max ms | fast > %s | slow p50 ms | upstream req / client req | answered | bypassed | rescued | retried | rescue_denied |\n", rep.bound)
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.rows {
		l := r.m.load
		pipe := []string{"–", "–", "–", "–", "–"}
		if r.config != "pool" {
			for i, k := range pipeResults {
				pipe[i] = fmt.Sprintf("%.0f", r.m.delta.pipe[k])
			}
		}
		up := "–"
		if l.requests > 0 {
			up = fmt.Sprintf("%.3f", float64(r.m.delta.backend)/float64(l.requests))
		}
		nOver := over(l.fast, rep.bound)
		overs := fmt.Sprintf("%d", nOver)
		if len(l.fast) > 0 {
			overs += " (" + pct(float64(nOver)/float64(len(l.fast))) + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.config, r.shape, l.requests, l.rps(),
			ms(quantile(l.fast, 0.5)), ms(quantile(l.fast, 0.99)), ms(quantile(l.fast, 0.999)), ms(quantile(l.fast, 1)),
			overs, ms(quantile(l.slow, 0.5)), up, strings.Join(pipe, " | "))
	}
	if cmp := rep.compare(); cmp != "" {
		b.WriteString(cmp)
	}
	return b.String()
}

// compare is the fast requests' extra latency on pipelined connections
// over the pool, per load shape and quantile, against the bound; "" unless
// both configurations ran.
func (rep *report) compare() string {
	var b strings.Builder
	for _, sh := range []string{rep.sat.name, rep.light.name} {
		var pool *loadResult
		for i := range rep.rows {
			if r := &rep.rows[i]; r.shape == sh && r.config == "pool" {
				pool = &r.m.load
			}
		}
		if pool == nil || len(pool.fast) == 0 {
			continue
		}
		for i := range rep.rows {
			r := &rep.rows[i]
			if r.shape != sh || r.config == "pool" || len(r.m.load.fast) == 0 {
				continue
			}
			rep.compareOne(&b, sh, r.config, pool, &r.m.load)
		}
	}
	return b.String()
}

// compareOne adds the rows of one pipelined configuration under one load
// shape to b.
func (rep *report) compareOne(b *strings.Builder, sh, config string, pool, pipe *loadResult) {
	if b.Len() == 0 {
		fmt.Fprintf(b, "\nFast requests, pipelined minus pool (client-side latency; the difference is what queueing behind a slow answer added, plus noise), against the bound of %s:\n\n", rep.bound)
		b.WriteString("| load | configuration | quantile | pool ms | pipelined ms | difference ms | within bound |\n|---|---|---|---:|---:|---:|---|\n")
	}
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"p99.9", 0.999}, {"max", 1}} {
		a, c := quantile(pool.fast, q.q), quantile(pipe.fast, q.q)
		ok := "yes"
		if c-a > rep.bound {
			ok = "**no**"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %+.2f | %s |\n", sh, config, q.name, ms(a), ms(c), float64(c-a)/float64(time.Millisecond), ok)
	}
}

// pct formats a share as a percentage.
func pct(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", f*100), "0"), ".") + "%"
}
