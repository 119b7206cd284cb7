package main

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// What the load generator asks for: the backend answers paths under
// backend.SlowPrefix after -slow-delay, every other path at once.
const (
	fastPath = "/api/items?id=42"
	slowPath = "/slow/items?id=42"
)

// shape is a load shape: conns goroutines, each with one keep-alive
// connection, sending a request, waiting for its answer and pausing (0:
// closed loop at full speed); each request goes to slowPath with
// probability slowFrac.
type shape struct {
	name     string
	conns    int
	pause    time.Duration
	slowFrac float64
}

// loadResult is the load of one configuration and shape, over one or more
// slices.
type loadResult struct {
	requests int64
	failures int64 // transport errors and non-200 answers
	elapsed  time.Duration
	fast     []time.Duration // sorted by finish
	slow     []time.Duration
}

// add accumulates another slice (latencies stay unsorted until finish).
func (r *loadResult) add(o loadResult) {
	r.requests += o.requests
	r.failures += o.failures
	r.elapsed += o.elapsed
	r.fast = append(r.fast, o.fast...)
	r.slow = append(r.slow, o.slow...)
}

// finish sorts the latencies for quantile.
func (r *loadResult) finish() {
	slices.Sort(r.fast)
	slices.Sort(r.slow)
}

// rps is requests per second.
func (r *loadResult) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

// runLoad drives addr with sh for d or until limit requests have been
// sent, whichever comes first. seed makes the choice of slow requests
// reproducible (each goroutine draws from its own stream).
func runLoad(c *fasthttp.HostClient, addr string, sh shape, d time.Duration, limit int64, seed uint64) loadResult {
	type part struct {
		n, fail    int64
		fast, slow []time.Duration
	}
	parts := make([]part, sh.conns)
	var sent atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.fast = make([]time.Duration, 0, 4096)
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			fastReq, slowReq := fasthttp.AcquireRequest(), fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(fastReq)
			defer fasthttp.ReleaseRequest(slowReq)
			defer fasthttp.ReleaseResponse(resp)
			fastReq.SetRequestURI("http://" + addr + fastPath)
			slowReq.SetRequestURI("http://" + addr + slowPath)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) || sent.Add(1) > limit {
					return
				}
				slow := rng.Float64() < sh.slowFrac
				req := fastReq
				if slow {
					req = slowReq
				}
				err := c.Do(req, resp)
				el := time.Since(t0)
				p.n++
				if err != nil || resp.StatusCode() != fasthttp.StatusOK {
					p.fail++
					if err != nil {
						time.Sleep(10 * time.Millisecond) // no hot loop on a dead server
					}
				} else if slow {
					p.slow = append(p.slow, el)
				} else {
					p.fast = append(p.fast, el)
				}
				if sh.pause > 0 {
					time.Sleep(sh.pause)
				}
			}
		}()
	}
	wg.Wait()
	r := loadResult{elapsed: time.Since(start)}
	for _, p := range parts {
		r.requests += p.n
		r.failures += p.fail
		r.fast = append(r.fast, p.fast...)
		r.slow = append(r.slow, p.slow...)
	}
	return r
}
