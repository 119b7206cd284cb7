package main

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// requestPath is what the load generator asks for.
const requestPath = "/api/items?id=42"

// loadResult is one load run.
type loadResult struct {
	requests int64
	failures int64 // transport errors and non-200 answers
	elapsed  time.Duration
	lat      []time.Duration // sorted by runLoad and sortedCopy
}

// add accumulates another run (latencies stay unsorted until sortedCopy).
func (r *loadResult) add(o loadResult) {
	r.requests += o.requests
	r.failures += o.failures
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
}

// sortedCopy returns lat sorted, for pct.
func sortedCopy(lat []time.Duration) []time.Duration {
	c := slices.Clone(lat)
	slices.Sort(c)
	return c
}

// rps is requests per second.
func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// pct is the q-quantile (0..1) of latency, or NaN without samples.
func (r loadResult) pct(q float64) float64 {
	if len(r.lat) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(r.lat)))) - 1
	return float64(r.lat[max(i, 0)])
}

// runLoad drives addr with conns goroutines, each sending a request, waiting
// for the answer and then pausing (0: closed loop at full speed), for d.
func runLoad(c *fasthttp.HostClient, addr string, conns int, pause, d time.Duration) loadResult {
	type part struct {
		n, fail int64
		lat     []time.Duration
	}
	parts := make([]part, conns)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.lat = make([]time.Duration, 0, 4096)
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + requestPath)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				err := c.Do(req, resp)
				el := time.Since(t0)
				p.n++
				if err != nil || resp.StatusCode() != fasthttp.StatusOK {
					p.fail++
					if err != nil {
						time.Sleep(10 * time.Millisecond) // no hot loop on a dead server
					}
				}
				p.lat = append(p.lat, el)
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	wg.Wait()
	r := loadResult{elapsed: time.Since(start)}
	for _, p := range parts {
		r.requests += p.n
		r.failures += p.fail
		r.lat = append(r.lat, p.lat...)
	}
	slices.Sort(r.lat)
	return r
}
