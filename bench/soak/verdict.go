package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/scrape"
)

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
		o.finalMetrics, _ = scrape.Series(h.adminAddr)
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
