// Package backend is the upstream both benchmark harnesses use: a small,
// fast fasthttp server that answers every request with a ~1 KiB JSON body,
// optionally after a fixed delay (a slow shadow), and counts the requests it
// served and the TCP connections it accepted. With SetSlowDelay, requests
// whose path starts with SlowPrefix wait a delay of their own, so one
// backend can play an upstream whose answers are mostly fast with a few
// slow ones (the head-of-line benchmark, bench/holcmp).
//
// GET /__stats answers {"requests":N,"conns":N}; it is not counted itself,
// neither the request nor the connection it arrived on (so send it on a
// connection of its own).
package backend

import (
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// StatsPath answers the counters instead of the JSON body.
const StatsPath = "/__stats"

// SlowPrefix is the path prefix of the requests that wait the slow delay
// (SetSlowDelay) instead of the server's delay.
const SlowPrefix = "/slow"

// Stats are the counters a Server reports.
type Stats struct {
	Requests int64 `json:"requests"`
	Conns    int64 `json:"conns"`
}

// Server is one backend listener.
type Server struct {
	srv        *fasthttp.Server
	ln         net.Listener
	payload    []byte
	delay      time.Duration
	slowDelay  time.Duration
	sleep      func(time.Duration) // time.Sleep; replaced by tests
	requests   atomic.Int64
	conns      atomic.Int64
	statsConns atomic.Int64
}

// Listen binds addr (use 127.0.0.1:0 for an ephemeral loopback port). The
// server answers after delay with a JSON body of about bodySize bytes.
func Listen(addr string, delay time.Duration, bodySize int) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, payload: Body(bodySize), delay: delay, sleep: time.Sleep}
	s.srv = &fasthttp.Server{
		Name:                  "bench-backend",
		NoDefaultServerHeader: true,
		ReadTimeout:           60 * time.Second,
		IdleTimeout:           120 * time.Second,
		Handler:               s.handle,
	}
	return s, nil
}

// SetSlowDelay makes requests whose path starts with SlowPrefix wait d
// (instead of the delay given to Listen) before their answer; 0, the
// default, treats them like any other. Call it before Serve.
func (s *Server) SetSlowDelay(d time.Duration) { s.slowDelay = d }

// SetFlushEach makes the server send each answer as soon as it is ready,
// as net/http and nginx do. By default (fasthttp's behaviour) an answer is
// held back while the next pipelined request on its connection is already
// buffered, so it leaves together with the next answer: a fast answer
// queued in front of a slow one waits for it. Call it before Serve.
func (s *Server) SetFlushEach(on bool) {
	// ReduceMemoryUsage is the only fasthttp setting that flushes every
	// answer; its other effect (releasing idle buffers) costs a little CPU.
	s.srv.ReduceMemoryUsage = on
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown.
func (s *Server) Serve() error { return s.srv.Serve(countingListener{s.ln, s}) }

// Shutdown closes the listener and open connections.
func (s *Server) Shutdown() error { return s.srv.Shutdown() }

// Stats returns the counters (excluding /__stats traffic).
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Conns: s.conns.Load() - s.statsConns.Load()}
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == StatsPath {
		s.statsConns.Add(1)
		b, _ := json.Marshal(s.Stats())
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
		ctx.SetConnectionClose()
		return
	}
	s.requests.Add(1)
	d := s.delay
	if s.slowDelay > 0 && strings.HasPrefix(string(ctx.Path()), SlowPrefix) {
		d = s.slowDelay
	}
	if d > 0 {
		s.sleep(d)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(s.payload)
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	s *Server
}

// Accept counts each accepted connection.
func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.conns.Add(1)
	}
	return c, err
}

// Body returns a JSON document of about size bytes, shaped like a typical API
// answer (a list of small objects).
func Body(size int) []byte {
	const item = `{"id":12345,"name":"widget","price":9.99,"tags":["a","b"]},`
	const tail = `{"id":0}]}`
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for b.Len()+len(item)+len(tail) <= size {
		b.WriteString(item)
	}
	b.WriteString(tail)
	return []byte(b.String())
}
