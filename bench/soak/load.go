package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

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
