package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/shadowproxy/shadowproxy/config"
)

// HTTP/2 towards clients. fasthttp speaks HTTP/1.x only, so HTTP/2
// connections are served by the standard library's HTTP/2 server (net/http,
// configured through http.Server.Protocols and HTTP2), whose handler turns
// each request into a fasthttp.RequestCtx and runs the very handler HTTP/1.1
// requests run: routing, split, mirror, compare, rollout recording, metrics
// and the access log are shared. The standard library's server was chosen
// over other implementations because it is maintained with Go, carries the
// rapid-reset (CVE-2023-44487) and CONTINUATION-flood mitigations, enforces
// the header list size and stream limits, and speaks h2c only with prior
// knowledge (never by Upgrade) when asked for unencrypted HTTP/2.
//
// One listener serves both protocols: a dispatcher accepts connections,
// completes the TLS handshake (or peeks for the h2c preface) off the accept
// loop, and hands each connection to fasthttp or to the HTTP/2 server.

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

type h2front struct {
	s       *Server
	srv     *http.Server
	h2c     bool
	maxBody int64
	maxConn int64
	timeout time.Duration
	conns   atomic.Int64
	pending atomic.Int64 // connections being classified
	ctxs    sync.Pool    // *fasthttp.RequestCtx
	bufs    sync.Pool    // *[16 << 10]byte, for reading request bodies
}

func newH2Front(s *Server, cfg *config.Config) *h2front {
	lim := cfg.Limits
	f := &h2front{s: s, h2c: cfg.HTTP2.H2C, maxBody: int64(lim.MaxRequestBody), maxConn: int64(lim.MaxConnections),
		timeout: lim.ReadTimeout.D()}
	f.ctxs.New = func() any { return new(fasthttp.RequestCtx) }
	f.bufs.New = func() any { return new([16 << 10]byte) }
	var protos http.Protocols
	protos.SetHTTP2(!f.h2c)
	protos.SetUnencryptedHTTP2(f.h2c)
	f.srv = &http.Server{
		Handler:           http.HandlerFunc(f.serveHTTP),
		Protocols:         &protos,
		ReadHeaderTimeout: lim.ReadTimeout.D(),
		WriteTimeout:      lim.WriteTimeout.D(),
		IdleTimeout:       lim.IdleTimeout.D(),
		// The header list limit (SETTINGS_MAX_HEADER_LIST_SIZE); a larger
		// list gets 431, as an over-long HTTP/1.1 head does.
		MaxHeaderBytes: int(lim.MaxHeaderSize),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: cfg.HTTP2.MaxConcurrentStreams,
			// Flow-control windows bound what a client can make the proxy
			// buffer per stream and per connection.
			MaxReceiveBufferPerStream:     1 << 20,
			MaxReceiveBufferPerConnection: 4 << 20,
		},
		// Handshake failures and broken clients are routine at an edge.
		ErrorLog: mustStdLogAt(s.log, zap.DebugLevel),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				f.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				f.conns.Add(-1)
			}
		},
	}
	return f
}

// serve dispatches ln's connections to fasthttp and the HTTP/2 server and
// returns when both have stopped.
func (f *h2front) serve(ln net.Listener, tlsCfg *tls.Config) error {
	h1 := newConnQueue(ln)
	h2 := newConnQueue(ln)
	go func() {
		backoff := 5 * time.Millisecond
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					h1.Close()
					h2.Close()
					return
				}
				// Out of file descriptors and the like: wait (bounded
				// backoff) instead of spinning or giving up the listener.
				f.s.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			backoff = 5 * time.Millisecond
			// Connections still being classified (TLS handshake, preface)
			// are bounded like served ones.
			if f.pending.Add(1) > f.maxConn {
				f.pending.Add(-1)
				f.s.metrics.RejectedRequests.WithLabelValues("too_many_connections").Inc()
				c.Close()
				continue
			}
			go func() {
				defer f.pending.Add(-1)
				f.classify(c, tlsCfg, h1, h2)
			}()
		}
	}()
	h2done := make(chan struct{})
	go func() {
		f.srv.Serve(h2)
		close(h2done)
	}()
	err := f.s.srv.Serve(h1)
	ln.Close()
	<-h2done
	return err
}

// classify completes the TLS handshake or reads the start of a plaintext
// connection, within read_timeout, and queues the connection for its
// protocol's server.
func (f *h2front) classify(c net.Conn, tlsCfg *tls.Config, h1, h2 *connQueue) {
	c.SetDeadline(time.Now().Add(f.timeout))
	isH2 := false
	if tlsCfg != nil {
		tc := tls.Server(c, tlsCfg)
		if err := tc.Handshake(); err != nil {
			f.s.log.Debug("tls handshake failed", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
			c.Close()
			return
		}
		isH2 = tc.ConnectionState().NegotiatedProtocol == "h2"
		c = tc
	} else if f.h2c {
		var buf [24]byte
		n := 0
		for n < len(h2Preface) && bytes.Equal(buf[:n], h2Preface[:n]) {
			m, err := c.Read(buf[n:])
			n += m
			if err != nil {
				if n == 0 || !errors.Is(err, io.EOF) {
					c.Close()
					return
				}
				break
			}
		}
		isH2 = n == len(h2Preface) && bytes.Equal(buf[:n], h2Preface)
		c = &prefixConn{Conn: c, prefix: append([]byte(nil), buf[:n]...)}
	}
	c.SetDeadline(time.Time{})
	if !isH2 {
		h1.push(c)
		return
	}
	if f.conns.Load() >= f.maxConn {
		f.s.metrics.RejectedRequests.WithLabelValues("too_many_connections").Inc()
		c.Close()
		return
	}
	h2.push(c)
}

func mustStdLogAt(l *zap.Logger, lvl zapcore.Level) *log.Logger {
	std, err := zap.NewStdLogAt(l, lvl)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return std
}

func (f *h2front) shutdown(ctx context.Context) error { return f.srv.Shutdown(ctx) }

// serveHTTP runs one HTTP/2 request through the proxy's handler.
func (f *h2front) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		// An HTTP/2 CONNECT opens a tunnel (RFC 9113 §8.5); the proxy
		// tunnels nothing it does not understand.
		f.reject(w, r, fasthttp.StatusMethodNotAllowed, "connect")
		return
	}
	if r.ContentLength > f.maxBody {
		f.reject(w, r, fasthttp.StatusRequestEntityTooLarge, "body_too_large")
		return
	}
	ctx := f.ctxs.Get().(*fasthttp.RequestCtx)
	defer f.ctxs.Put(ctx)
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Init2(newH2Conn(r), zapPrintf{f.s.log}, false)
	req := &ctx.Request
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.RequestURI)
	// Upstreams speak HTTP/1.1; the handler treats the request as such.
	req.Header.SetProtocol("HTTP/1.1")
	req.Header.SetHost(r.Host)
	for name, values := range r.Header {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		buf := f.bufs.Get().(*[16 << 10]byte)
		n, err := io.CopyBuffer(req.BodyWriter(), io.LimitReader(r.Body, f.maxBody+1), buf[:])
		f.bufs.Put(buf)
		if n > f.maxBody {
			f.reject(w, r, fasthttp.StatusRequestEntityTooLarge, "body_too_large")
			return
		}
		if err != nil {
			// The client reset the stream or the connection went away:
			// there is nobody to answer.
			f.s.log.Debug("http2 request body not received", zap.String("remote", r.RemoteAddr), zap.Error(err))
			return
		}
	}
	f.s.handle(ctx)

	resp := &ctx.Response
	h := w.Header()
	resp.Header.VisitAll(func(k, v []byte) {
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")), bytes.EqualFold(k, []byte("Connection")),
			bytes.EqualFold(k, []byte("Keep-Alive")), bytes.EqualFold(k, []byte("Transfer-Encoding")),
			bytes.EqualFold(k, []byte("Upgrade")), bytes.EqualFold(k, []byte("Proxy-Connection")):
			// Connection-specific fields are forbidden in HTTP/2 (RFC 9113
			// §8.2.2); the length is the body's.
			return
		}
		h.Add(string(k), string(v))
	})
	if resp.IsBodyStream() {
		// Longer than limits.buffer_body: copied through as it arrives, as
		// on HTTP/1.1 (Body() would read all of it into memory first).
		if cl := resp.Header.ContentLength(); cl >= 0 {
			h.Set("Content-Length", strconv.Itoa(cl))
		}
		w.WriteHeader(resp.StatusCode())
		buf := f.bufs.Get().(*[16 << 10]byte)
		_, err := io.CopyBuffer(w, resp.BodyStream(), buf[:])
		f.bufs.Put(buf)
		resp.CloseBodyStream()
		if err != nil {
			f.s.log.Debug("http2 streamed response cut", zap.String("remote", r.RemoteAddr), zap.Error(err))
			// An error after the head was sent: resetting the stream is
			// the only way to tell the client the body is incomplete.
			panic(http.ErrAbortHandler)
		}
		return
	}
	body := resp.Body()
	if r.Method == http.MethodHead {
		if cl := resp.Header.ContentLength(); cl >= 0 {
			h.Set("Content-Length", strconv.Itoa(cl))
		}
		body = nil
	} else if !bodyless(resp.StatusCode()) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(resp.StatusCode())
	if len(body) > 0 && !bodyless(resp.StatusCode()) {
		w.Write(body)
	}
}

func bodyless(code int) bool { return code < 200 || code == 204 || code == 304 }

func (f *h2front) reject(w http.ResponseWriter, r *http.Request, code int, reason string) {
	f.s.metrics.RejectedRequests.WithLabelValues(reason).Inc()
	f.s.log.Info("request rejected before routing", zap.String("reason", reason), zap.Int("status", code),
		zap.String("remote", r.RemoteAddr), zap.String("proto", r.Proto))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Via", string(viaValue))
	w.WriteHeader(code)
	io.WriteString(w, strconv.Itoa(code)+" "+fasthttp.StatusMessage(code)+": "+reasonText(reason)+"\n")
}

// h2Conn stands in for the connection of an HTTP/2 request inside a
// fasthttp.RequestCtx: the addresses, and the TLS state when there is one
// (so that ctx.IsTLS and X-Forwarded-Proto are right). It carries no bytes.
type h2Conn struct {
	remote net.Addr
}

func newH2Conn(r *http.Request) net.Conn {
	c := h2Conn{remote: &net.TCPAddr{}}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.remote = net.TCPAddrFromAddrPort(ap)
	}
	if r.TLS != nil {
		return &h2TLSConn{h2Conn: c, state: r.TLS}
	}
	return &c
}

var errNoIO = errors.New("http2 request: no connection I/O")

func (c *h2Conn) Read([]byte) (int, error)         { return 0, errNoIO }
func (c *h2Conn) Write([]byte) (int, error)        { return 0, errNoIO }
func (c *h2Conn) Close() error                     { return nil }
func (c *h2Conn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *h2Conn) RemoteAddr() net.Addr             { return c.remote }
func (c *h2Conn) SetDeadline(time.Time) error      { return nil }
func (c *h2Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *h2Conn) SetWriteDeadline(time.Time) error { return nil }

type h2TLSConn struct {
	h2Conn
	state *tls.ConnectionState
}

// Handshake and ConnectionState make fasthttp see a TLS connection.
func (c *h2TLSConn) Handshake() error                     { return nil }
func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return *c.state }

// prefixConn replays the bytes read while classifying a connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// connQueue is a net.Listener fed with already accepted connections.
type connQueue struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	base   net.Listener
}

func newConnQueue(base net.Listener) *connQueue {
	return &connQueue{addr: base.Addr(), ch: make(chan net.Conn), closed: make(chan struct{}), base: base}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.closed:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

// Close stops both this queue and the shared listener, so that closing
// either server's listener stops accepting altogether.
func (q *connQueue) Close() error {
	q.once.Do(func() {
		close(q.closed)
		q.base.Close()
	})
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
