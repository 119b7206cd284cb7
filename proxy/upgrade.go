package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// upgrade tunnels a Connection: Upgrade request (WebSocket, h2c, ...) to the
// chosen upstream: the request head is forwarded with its Upgrade and
// Connection fields (the only hop-by-hop fields a proxy that supports the
// upgrade must pass on, RFC 9110 §7.8), the upstream's answer is relayed,
// and after a 101 both connections are spliced until either side closes or
// no byte moves for upgrades.idle_timeout. Upgrades are never mirrored: a
// second connection to a shadow would be a second, stateful session.
func (s *Server) upgrade(ctx *fasthttp.RequestCtx, snap *Snapshot, r *Route, t *target) int {
	cfg := snap.Config.Upgrades
	if cfg.Disabled {
		s.metrics.Upgrades.WithLabelValues(r.Name, "refused").Inc()
		s.log.Info("upgrade refused: upgrades are disabled", zap.String("route", r.Name),
			zap.ByteString("upgrade", ctx.Request.Header.Peek("Upgrade")))
		writeError(ctx, fasthttp.StatusNotImplemented, "protocol upgrades are disabled on this proxy")
		return fasthttp.StatusNotImplemented
	}
	if ctx.Request.IsBodyStream() {
		// The head and body are written by hand; a body past buffer_body
		// has no business on an upgrade request.
		s.metrics.Upgrades.WithLabelValues(r.Name, "refused").Inc()
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "an upgrade request body longer than limits.buffer_body is not accepted")
		ctx.SetConnectionClose()
		return fasthttp.StatusRequestEntityTooLarge
	}
	if !s.tunnels.acquire(cfg.MaxTunnels) {
		s.metrics.Upgrades.WithLabelValues(r.Name, "refused").Inc()
		s.log.Warn("upgrade refused: too many tunnels", zap.String("route", r.Name), zap.Int("max_tunnels", cfg.MaxTunnels))
		writeError(ctx, fasthttp.StatusServiceUnavailable, "too many upgraded connections")
		return fasthttp.StatusServiceUnavailable
	}
	status, ok := s.openTunnel(ctx, r, t, cfg.IdleTimeout.D(), snap.edge.reqIDHeader)
	if !ok {
		s.tunnels.release()
	}
	return status
}

func (s *Server) openTunnel(ctx *fasthttp.RequestCtx, r *Route, t *target, idle time.Duration, reqIDHeader string) (int, bool) {
	req := &ctx.Request
	sc := s.scratch.Get().(*headerScratch)
	// Every field the client's Connection lists is hop-by-hop, as on the
	// forwarding path; only "Connection: Upgrade" and Upgrade travel on
	// (RFC 9110 §7.8).
	sc.connectionTokens(req.Header.PeekAll("Connection"))
	for _, tok := range sc.tokens {
		if !isEndToEndSpecial(tok) && !bytes.EqualFold(tok, []byte("Upgrade")) && !(reqIDHeader != "" && bytes.EqualFold(tok, []byte(reqIDHeader))) {
			req.Header.DelBytes(tok)
		}
	}
	for _, name := range []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "TE", "Trailer"} {
		req.Header.Del(name)
	}
	req.Header.Set("Connection", "Upgrade")
	sc.stripClientMarkers(&req.Header)
	sc.appendForwarded(ctx)
	s.scratch.Put(sc)
	// absolute-form: the route was chosen by the target's authority, so the
	// upstream gets that as Host and an origin-form target (RFC 9112
	// §3.2.2), as on the forwarding path; never one host to route by and
	// another to serve.
	if rt := req.Header.RequestURI(); len(rt) > 0 && rt[0] != '/' {
		if host := ctx.Host(); len(host) > 0 {
			req.Header.SetHostBytes(host)
		}
		req.Header.SetRequestURIBytes(req.URI().RequestURI())
	}
	// The head is written by hand below; fasthttp would otherwise add a
	// Content-Type the client never sent.
	req.Header.SetNoDefaultContentType(true)
	asked := append([]byte(nil), req.Header.Peek("Upgrade")...)
	up := t.up
	ep := up.pick(nil)
	if up.rewriteHost {
		req.Header.SetHost(ep.hostHeader)
	}
	fail := func(err error, code int) (int, bool) {
		s.metrics.Upgrades.WithLabelValues(r.Name, "failed").Inc()
		reason, _ := classify(err)
		t.errors[reason].Inc()
		s.log.Warn("upgrade failed", zap.String("route", r.Name), zap.String("upstream", up.Name),
			zap.String("endpoint", ep.url), zap.Error(err))
		writeError(ctx, code, errorText(code))
		return code, false
	}
	conn, err := ep.dial(ep.addr)
	if err != nil {
		up.observe(ep, err)
		return fail(err, fasthttp.StatusBadGateway)
	}
	if ep.primary.IsTLS {
		tc := tls.Client(conn, ep.primary.TLSConfig)
		tc.SetDeadline(time.Now().Add(up.timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return fail(err, fasthttp.StatusBadGateway)
		}
		conn = tc
	}
	conn.SetDeadline(time.Now().Add(up.timeout))
	// The body was read (and de-chunked) by the server; it is re-framed with
	// Content-Length so its bytes cannot end a chunked body early and smuggle
	// a second request to the upstream.
	req.Header.Del("Transfer-Encoding")
	if len(req.Body()) > 0 {
		req.Header.SetContentLength(len(req.Body()))
	}
	req.Header.SetProtocol("HTTP/1.1")
	head := append([]byte(nil), req.Header.Header()...)
	head = append(head, req.Body()...)
	br := bufio.NewReader(conn)
	var rh fasthttp.ResponseHeader
	if _, err = conn.Write(head); err == nil {
		err = rh.Read(br)
	}
	if err != nil {
		conn.Close()
		_, code := classify(err)
		return fail(err, code)
	}
	if rh.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// The upstream declined (426, 400, 403, ...): relay its answer.
		defer conn.Close()
		resp := &ctx.Response
		resp.Reset()
		rh.CopyTo(&resp.Header)
		if err := resp.ReadBody(br, int(up.cfg.MaxResponseBody)); err != nil && !errors.Is(err, io.EOF) {
			return fail(err, fasthttp.StatusBadGateway)
		}
		resp.SetConnectionClose()
		s.metrics.Upgrades.WithLabelValues(r.Name, "declined").Inc()
		t.requests.Inc(rh.StatusCode())
		return rh.StatusCode(), false
	}
	if !switchedAsAsked(asked, rh.Peek("Upgrade")) {
		conn.Close()
		return fail(fmt.Errorf("upstream switched to %q, which the client did not ask for (%q)", rh.Peek("Upgrade"), asked), fasthttp.StatusBadGateway)
	}
	answer := append([]byte(nil), rh.Header()...)
	conn.SetDeadline(time.Time{})
	t.requests.Inc(fasthttp.StatusSwitchingProtocols)
	s.metrics.Upgrades.WithLabelValues(r.Name, "tunnelled").Inc()
	route, upstream := r.Name, up.Name
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		defer s.tunnels.release()
		s.metrics.ActiveTunnels.Inc()
		defer s.metrics.ActiveTunnels.Dec()
		if _, err := client.Write(answer); err != nil {
			conn.Close()
			return
		}
		// Bytes the upstream sent right after its 101 are already buffered.
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			if _, err := client.Write(b); err != nil {
				conn.Close()
				return
			}
		}
		start := time.Now()
		in, out := s.tunnels.splice(client, conn, idle)
		s.log.Debug("tunnel closed", zap.String("route", route), zap.String("upstream", upstream),
			zap.Int64("bytes_in", in), zap.Int64("bytes_out", out), zap.Duration("duration_ms", time.Since(start)))
	})
	return fasthttp.StatusSwitchingProtocols, true
}

// tunnelSet bounds and tracks open tunnels so shutdown can close them:
// hijacked connections are no longer the server's to drain.
type tunnelSet struct {
	active atomic.Int64
	mu     sync.Mutex
	open   map[*tunnelPair]struct{}
	closed bool
}

type tunnelPair struct{ a, b net.Conn }

func (ts *tunnelSet) acquire(limit int) bool {
	if ts.active.Add(1) > int64(limit) {
		ts.active.Add(-1)
		return false
	}
	return true
}

func (ts *tunnelSet) release() { ts.active.Add(-1) }

// splice copies both ways until either side closes or idle passes with no
// byte moving in either direction. It returns the bytes copied each way.
func (ts *tunnelSet) splice(client, upstream net.Conn, idle time.Duration) (in, out int64) {
	p := &tunnelPair{client, upstream}
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		upstream.Close()
		return 0, 0
	}
	if ts.open == nil {
		ts.open = map[*tunnelPair]struct{}{}
	}
	ts.open[p] = struct{}{}
	ts.mu.Unlock()
	defer func() {
		ts.mu.Lock()
		delete(ts.open, p)
		ts.mu.Unlock()
	}()

	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var wg sync.WaitGroup
	// A hijacked fasthttp connection ignores Close (the server closes it
	// when the hijack handler returns), so a blocked read is ended with a
	// deadline in the past instead.
	stop := func() {
		client.SetDeadline(time.Unix(1, 0))
		upstream.Close()
	}
	copyDir := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
				*n += int64(k)
			}
			if err != nil {
				break
			}
		}
		// Ending both ends unblocks the other direction.
		stop()
	}
	wg.Add(2)
	go copyDir(upstream, client, &in)
	go copyDir(client, upstream, &out)
	go func() {
		tick := time.NewTicker(min(idle/4+time.Millisecond, time.Second))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if time.Since(time.Unix(0, last.Load())) > idle {
					stop()
					return
				}
			}
		}
	}()
	wg.Wait()
	close(done)
	return in, out
}

// closeAll ends every tunnel (at shutdown, after normal requests drained).
func (ts *tunnelSet) closeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.closed = true
	for p := range ts.open {
		p.a.SetDeadline(time.Unix(1, 0))
		p.b.Close()
	}
}

// switchedAsAsked reports whether a 101's Upgrade names one protocol the
// client offered (RFC 9110 §7.8: the server switches to one of them).
func switchedAsAsked(asked, got []byte) bool {
	got = bytes.TrimSpace(got)
	if len(got) == 0 || bytes.IndexByte(got, ',') >= 0 {
		return false
	}
	for len(asked) > 0 {
		var tok []byte
		if i := bytes.IndexByte(asked, ','); i >= 0 {
			tok, asked = asked[:i], asked[i+1:]
		} else {
			tok, asked = asked, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(tok), got) {
			return true
		}
	}
	return false
}
