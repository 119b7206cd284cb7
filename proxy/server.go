// Package proxy is the request path of shadowproxy: the fasthttp server,
// route matching, the split decision, forwarding over pooled keep-alive
// connections, and the hand-off of sampled requests to mirroring. Nothing on
// the primary path waits for a shadow, a comparison or the admin API.
//
// The forwarding contract follows RFC 9110 §7.6: hop-by-hop fields
// (Connection and every field it lists, Keep-Alive, Proxy-Connection,
// Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding,
// Upgrade) are removed in both directions; the client address is appended to
// X-Forwarded-For; X-Forwarded-Proto and X-Forwarded-Host are set; Via is
// added both ways. The request URI reaches the upstream byte for byte.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// Options are the collaborators of a Server.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Comparer receives mirrored exchanges; nil only counts shadow outcomes.
	Comparer Comparer
	// Observers returns the observer of a route's primary requests (the
	// rollout recorder), or nil. Called when a snapshot is built.
	Observers func(route string) RequestObserver
	// SplitOverride gives a route's canary share and halt state when a
	// snapshot is built (the rollout controller's, which outrank the
	// config's percent); ok=false keeps the config's.
	SplitOverride func(route string) (bp cfgtypes.BasisPoints, halted, ok bool)
	// Tracer traces requests; nil turns tracing off.
	Tracer Tracer
}

// Server is the proxy listener. Create it with New, start it with Serve.
type Server struct {
	log      *zap.Logger
	metrics  *metrics.Metrics
	deps     buildDeps
	snap     atomic.Pointer[Snapshot]
	srv      *fasthttp.Server
	draining atomic.Bool
	serving  atomic.Bool
	scratch  sync.Pool // *headerScratch
	reloadMu sync.Mutex
	ids      *requestIDs
	tunnels  tunnelSet
	// cert is the listener's certificate when TLS is configured; a reload
	// swaps it and new handshakes pick it up.
	cert   atomic.Pointer[tls.Certificate]
	tlsCfg *tls.Config
	// maxRequestBody is limits.max_request_body; bufferBody is
	// limits.buffer_body, the largest body held whole.
	maxRequestBody int64
	bufferBody     int
	tracer         Tracer
	// h2 serves HTTP/2 clients when http2 is enabled (else nil); http2
	// is its configuration, which a reload may not change.
	h2    *h2front
	http2 config.HTTP2
}

// New compiles cfg and prepares a server; it does not listen yet.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		return nil, errors.New("proxy: Options.Metrics is required")
	}
	s := &Server{log: opts.Logger, metrics: opts.Metrics, ids: newRequestIDs(), tracer: opts.Tracer}
	s.deps = buildDeps{metrics: opts.Metrics, log: opts.Logger, comparer: opts.Comparer, observers: opts.Observers, override: opts.SplitOverride}
	s.scratch.New = func() any { return &headerScratch{} }
	snap, err := buildSnapshot(cfg, nil, s.deps)
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	if cfg.TLS.Enabled() {
		if err := s.loadCert(cfg.TLS); err != nil {
			return nil, err
		}
		s.tlsCfg = &tls.Config{
			MinVersion: cfg.TLS.MinTLSVersion(),
			// fasthttp speaks HTTP/1.1 only; h2 is offered when the
			// standard library's HTTP/2 server is there to take it.
			NextProtos:     []string{"http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil },
		}
	}
	lim := cfg.Limits
	s.maxRequestBody, s.bufferBody = int64(lim.MaxRequestBody), int(lim.BufferBody)
	s.srv = &fasthttp.Server{
		Handler:                       s.handle,
		ErrorHandler:                  s.handleParseError,
		Name:                          "shadowproxy",
		ReadTimeout:                   lim.ReadTimeout.D(),
		WriteTimeout:                  lim.WriteTimeout.D(),
		IdleTimeout:                   lim.IdleTimeout.D(),
		MaxRequestBodySize:            int(lim.MaxRequestBody),
		ReadBufferSize:                int(lim.MaxHeaderSize),
		Concurrency:                   lim.MaxConnections,
		MaxRequestsPerConn:            lim.MaxRequestsPerConn,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		SecureErrorLogMessage:         true,
		Logger:                        zapPrintf{opts.Logger},
		ExpectHandler:                 s.expect,
		// Bodies are read by the handler (bufferOrStream): whole up to
		// buffer_body, streamed beyond it.
		StreamRequestBody: true,
		// The handler reads the clock itself; fasthttp's own per-request
		// time.Now (ctx.Time) is then read only if something asks for it.
		LazyRequestTime: true,
		// Off by default: fasthttp then reads each request's first byte into
		// a heap byte (one allocation per request, against the request
		// path's zero); on, 10,000 connections took 16 instead of 26 KiB of
		// resident memory each (make bench-compare, scale phase).
		ReduceMemoryUsage: lim.ReleaseIdleBuffers,
	}
	s.http2 = cfg.HTTP2
	if cfg.HTTP2.Enabled {
		s.h2 = newH2Front(s, cfg)
		if s.tlsCfg != nil {
			s.tlsCfg.NextProtos = []string{"h2", "http/1.1"}
		}
	}
	return s, nil
}

// Snapshot returns the configuration snapshot in force.
func (s *Server) Snapshot() *Snapshot { return s.snap.Load() }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.h2 != nil {
		s.serving.Store(true)
		err := s.h2.serve(ln, s.tlsCfg)
		s.serving.Store(false)
		return err
	}
	// Per-request deadline updates coarsened to 1/16 of each timeout (at
	// most 1 s); see deadlineConn.
	ln = deadlineListener{ln, maxDeadlineSlack}
	if s.tlsCfg != nil {
		ln = tls.NewListener(ln, s.tlsCfg)
	}
	s.serving.Store(true)
	err := s.srv.Serve(ln)
	s.serving.Store(false)
	return err
}

func (s *Server) loadCert(c *config.TLS) error {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s.cert.Store(&cert)
	return nil
}

// Ready reports whether the server accepts traffic (serving, not draining).
func (s *Server) Ready() bool { return s.serving.Load() && !s.draining.Load() }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then closes the remaining connections and the upstream pools.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	// Tunnels are long-lived by nature; waiting for them would only burn the
	// drain deadline, so they are closed first (clients reconnect).
	s.tunnels.closeAll()
	var h2err chan error
	if s.h2 != nil {
		h2err = make(chan error, 1)
		go func() { h2err <- s.h2.shutdown(ctx) }()
	}
	err := s.srv.ShutdownWithContext(ctx)
	if h2err != nil {
		err = errors.Join(err, <-h2err)
	}
	snap := s.snap.Load()
	snap.closeMirrors()
	snap.waitMirrors(ctx)
	snap.closeUnused(nil)
	return err
}

// Reload compiles cfg and swaps it in. Requests already running keep the
// snapshot they started with. On error the old snapshot stays.
func (s *Server) Reload(cfg *config.Config) error {
	p, err := s.PrepareReload(cfg)
	if err != nil {
		return err
	}
	p.Commit()
	return nil
}

// PreparedReload is a compiled configuration that is not in force yet.
// Until Commit or Abort, other reloads of the same Server wait, so the
// snapshot it was built from stays the one it replaces.
type PreparedReload struct {
	s          *Server
	prev, next *Snapshot
	cert       *tls.Certificate
	done       bool
}

// PrepareReload compiles cfg (new upstream pools, mirror workers, the TLS
// certificate) without changing what serves requests. The caller must end
// it with Commit or Abort.
func (s *Server) PrepareReload(cfg *config.Config) (*PreparedReload, error) {
	s.reloadMu.Lock()
	p := &PreparedReload{s: s, prev: s.snap.Load()}
	if cfg.TLS.Enabled() != (s.tlsCfg != nil) {
		s.reloadMu.Unlock()
		return nil, errors.New("tls cannot be turned on or off by a reload (restart the process)")
	}
	if cfg.HTTP2 != s.http2 {
		s.reloadMu.Unlock()
		return nil, errors.New("http2 settings cannot change on reload (restart the process)")
	}
	if cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			s.reloadMu.Unlock()
			return nil, fmt.Errorf("tls: %w", err)
		}
		p.cert = &cert
	}
	next, err := buildSnapshot(cfg, p.prev, s.deps)
	if err != nil {
		s.reloadMu.Unlock()
		return nil, err
	}
	p.next = next
	return p, nil
}

// Next is the snapshot Commit will put in force.
func (p *PreparedReload) Next() *Snapshot { return p.next }

// Commit puts the prepared configuration in force and releases what the
// previous one alone used.
func (p *PreparedReload) Commit() {
	if p.done {
		return
	}
	p.done = true
	defer p.s.reloadMu.Unlock()
	if p.cert != nil {
		p.s.cert.Store(p.cert)
	}
	p.s.snap.Store(p.next)
	p.prev.closeMirrors()
	p.prev.closeUnused(p.next)
}

// Abort discards the prepared configuration: its mirror workers stop and
// the upstream pools only it created are closed.
func (p *PreparedReload) Abort() {
	if p.done {
		return
	}
	p.done = true
	defer p.s.reloadMu.Unlock()
	p.next.closeMirrors()
	p.next.closeUnused(p.prev)
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	snap := s.snap.Load()
	sc := s.scratch.Get().(*headerScratch)
	defer s.scratch.Put(sc)
	if code, why := checkRequest(ctx, sc); code != 0 {
		s.metrics.RejectedRequests.WithLabelValues("malformed").Inc()
		s.log.Info("request rejected before routing", zap.String("reason", why), zap.Int("status", code),
			zap.String("remote", ctx.RemoteAddr().String()))
		writeError(ctx, code, why)
		ctx.SetConnectionClose()
		return
	}
	streamed, code, reason, why := s.bufferOrStream(ctx, sc)
	if code != 0 {
		s.metrics.RejectedRequests.WithLabelValues(reason).Inc()
		s.log.Info("request rejected before routing", zap.String("reason", reason), zap.Int("status", code),
			zap.String("remote", ctx.RemoteAddr().String()))
		writeError(ctx, code, why)
		ctx.SetConnectionClose()
		return
	}
	sc.stream, sc.clientFault = nil, false
	if streamed {
		sc.stream = ctx.Request.BodyStream().(*clientBody)
	}
	// After the body: a chunked body's trailer section is read with it.
	if len(ctx.Request.Header.PeekTrailerKeys()) > 0 {
		dropRequestTrailers(&ctx.Request.Header)
	}
	var reqID []byte
	if h := snap.edge.reqIDHeader; h != "" {
		reqID = s.ensureRequestID(ctx, h, sc)
	}
	if s.tracer != nil {
		sc.trace = s.tracer.Start(&ctx.Request, reqID, start)
	}
	r := snap.match(ctx)
	if r == nil {
		s.metrics.Unmatched.Inc()
		writeError(ctx, fasthttp.StatusNotFound, "no route matches this request")
		e := accessEntry{status: fasthttp.StatusNotFound, duration: time.Since(start)}
		endTrace(sc, &e)
		s.finish(ctx, snap, reqID, e)
		return
	}
	t, cohort := r.targets[0], splitter.ArmControl
	sc.synthetic = r.synthetic != nil && r.synthetic.Synthetic(&ctx.Request, ctx.RemoteIP())
	var decision splitter.Decision
	if r.split != nil {
		decision = r.split.Decide(&ctx.Request, ctx.RemoteIP())
		t = r.targets[decision.Target]
		if !sc.synthetic {
			r.splitCounters[decision.Target][decision.Reason].Inc()
		}
		switch {
		case decision.Reason == splitter.ReasonCohort || decision.Reason == splitter.ReasonForced:
			cohort = splitter.ArmExcluded
			if decision.Target != 0 {
				cohort = splitter.ArmExcludedCanary
			}
		case decision.Target != 0:
			cohort = splitter.ArmCanary
		}
	}
	var status int
	var upErr bool
	// sc.hops says whether Connection and Upgrade fields are there at all.
	if sc.hops&hopConnection != 0 && ctx.Request.Header.ConnectionUpgrade() && snap.edge.upgradeAllowed(ctx.Request.Header.PeekAll("Upgrade")) {
		status = s.upgrade(ctx, snap, r, t)
	} else {
		if sc.hops&hopUpgrade != 0 && len(ctx.Request.Header.Peek("Upgrade")) > 0 {
			// Forwarded as a plain request: the hop-by-hop removal drops
			// Upgrade and Connection, so the upstream cannot switch.
			s.metrics.Upgrades.WithLabelValues(r.Name, "not_allowed").Inc()
		}
		status, upErr = s.forward(ctx, r, t, start, sc, snap.edge.reqIDHeader)
	}
	elapsed := time.Since(start)
	if r.splitHeader != "" {
		ctx.Response.Header.Set(r.splitHeader, t.up.Name)
	}
	if sc.synthetic {
		r.syntheticCount.Inc()
	} else if r.observer != nil && !sc.clientFault {
		r.observer.ObserveRequest(cohort, status, upErr, elapsed)
	}
	// A streamed answer's length is its Content-Length (-1 when chunked):
	// Body() would read the whole stream into memory.
	size := ctx.Response.Header.ContentLength()
	if !ctx.Response.IsBodyStream() {
		size = len(ctx.Response.Body())
	}
	e := accessEntry{route: r.Name, upstream: t.up.Name, status: status, bytes: size, duration: elapsed}
	if r.split != nil {
		e.split = decision.Reason.String()
	}
	endTrace(sc, &e)
	s.finish(ctx, snap, reqID, e)
}

// endTrace ends the request's server span, if it has one, and clears it
// from the pooled scratch.
func endTrace(sc *headerScratch, e *accessEntry) {
	if sc.trace == nil {
		return
	}
	sc.trace.End(TraceEnd{Route: e.route, Upstream: e.upstream, Split: e.split, Status: e.status})
	sc.trace = nil
}

// finish returns the request id to the client and, when the access log is
// on and samples this request, writes its line.
func (s *Server) finish(ctx *fasthttp.RequestCtx, snap *Snapshot, reqID []byte, e accessEntry) {
	if reqID != nil {
		// The name is normalized already (newEdgeSettings).
		h := &ctx.Response.Header
		wasOff := h.DisableNormalizing()
		h.SetBytesV(snap.edge.reqIDHeader, reqID)
		if !wasOff {
			h.EnableNormalizing()
		}
	}
	if al := snap.edge.access; al != nil && al.sampled(e.status) {
		e.requestID = reqID
		al.write(ctx, e)
	}
}

// forward sends the request to t's upstream and writes its response, or a
// short error, to the client.
func (s *Server) forward(ctx *fasthttp.RequestCtx, r *Route, t *target, start time.Time, sc *headerScratch, reqIDHeader string) (status int, upstreamErr bool) {
	req, resp := &ctx.Request, &ctx.Response
	clientClose := sc.removeRequestHopByHop(&req.Header, reqIDHeader)
	if sc.marked {
		sc.stripClientMarkers(&req.Header)
	}
	sc.appendForwarded(ctx)
	up := t.up
	var job *mirrorJob
	if r.mirror != nil && (!sc.synthetic || r.mirrorSynthetic) {
		// Copied before any upstream-specific change (Host rewrite), so each
		// shadow target applies its own.
		job = r.mirror.offer(ctx, up, start, sc.trace)
	}
	// The proxy speaks its own version upstream (RFC 9110 §6.2); the
	// client's is restored afterwards because the server reads it to decide
	// how to answer and whether to keep the connection.
	http10 := !req.Header.IsHTTP11()
	if http10 {
		req.Header.SetProtocol("HTTP/1.1")
	}

	if sc.trace != nil {
		sc.trace.StartUpstream(up.Name, req)
	}
	ep, err := up.do(req, resp, false, "", up.timeout)
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// Nothing was asked to switch. fasthttp has already pooled the
		// connection; what follows the 101 on it must not become the next
		// client's response. The switch guard closed it for plain upstreams;
		// closing the idle pool covers TLS ones.
		ep.primary.CloseIdleConnections()
		err = errUnaskedSwitch
	}
	elapsed := time.Since(start)
	if sc.trace != nil {
		sc.trace.EndUpstream(resp.StatusCode(), err)
	}
	if http10 {
		req.Header.SetProtocol("HTTP/1.0")
	}
	if job != nil {
		job.deliverPrimary(resp, err, elapsed)
	}
	if clientClose {
		req.Header.SetConnectionClose()
	}
	if err != nil && sc.stream != nil && sc.stream.err != nil {
		// The client's streamed body failed (cut, too slow, over the
		// limit), not the upstream: answered and counted as the client's.
		code, reason, why := clientFault(sc.stream.err)
		s.metrics.RejectedRequests.WithLabelValues(reason).Inc()
		s.log.Info("streamed request body failed", zap.String("route", r.Name), zap.String("upstream", up.Name),
			zap.String("reason", reason), zap.Int("status", code), zap.Error(sc.stream.err))
		resp.Reset()
		writeError(ctx, code, why)
		ctx.SetConnectionClose()
		sc.clientFault = true
		return code, false
	}
	if err != nil {
		reason, code := classify(err)
		t.errors[reason].Inc()
		if !sc.synthetic {
			t.requests.Inc(code)
		}
		s.log.Warn("upstream request failed",
			zap.String("route", r.Name), zap.String("upstream", up.Name),
			zap.String("reason", reason.String()), zap.Int("status", code),
			zap.ByteString("method", req.Header.Method()), zap.Duration("elapsed_ms", elapsed),
			zap.Error(err))
		dropLargeBody(resp)
		resp.Reset()
		writeError(ctx, code, errorText(code))
		return code, true
	}
	if !sc.synthetic {
		t.duration.Observe(elapsed.Seconds())
	}
	sc.removeResponseHopByHop(&resp.Header)
	sc.addResponseVia(&resp.Header)
	code := resp.StatusCode()
	if !sc.synthetic {
		t.requests.Inc(code)
	}
	if s.draining.Load() {
		resp.SetConnectionClose()
	}
	return code, false
}

// keepBodyBuffer is the largest body buffer kept for reuse. fasthttp pools
// response buffers (and a mirror worker keeps its response for its
// lifetime), so one answer that grew a buffer to max_response_body would
// otherwise hold that memory long after it was sent or refused.
const keepBodyBuffer = 256 << 10

// dropLargeBody lets the collector have a body buffer that grew past
// keepBodyBuffer instead of returning it to a pool.
func dropLargeBody(resp *fasthttp.Response) {
	if cap(resp.Body()) > keepBodyBuffer {
		resp.SwapBody(nil)
	}
}

// errUnaskedSwitch is a 101 answer to a request that did not ask to switch.
var errUnaskedSwitch = errors.New("upstream switched protocols on a request that asked for no upgrade")

func errorText(code int) string {
	switch code {
	case fasthttp.StatusGatewayTimeout:
		return "upstream timed out"
	case fasthttp.StatusServiceUnavailable:
		return "upstream connection limit reached"
	default:
		return "upstream unavailable"
	}
}

// writeError answers with a short plain-text body. The details (which
// upstream, why) go to the log, never to the client.
func writeError(ctx *fasthttp.RequestCtx, code int, msg string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("Via", string(viaValue))
	ctx.SetBodyString(fmt.Sprintf("%d %s: %s\n", code, fasthttp.StatusMessage(code), msg))
}

// expect answers "Expect: 100-continue": a declared length over
// max_request_body gets 413 at once, before the client sends the body it
// was holding back (and fasthttp closes the connection after it).
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	if n := ctx.Request.Header.ContentLength(); s.maxRequestBody > 0 && int64(n) > s.maxRequestBody {
		s.metrics.RejectedRequests.WithLabelValues("body_too_large").Inc()
		s.log.Info("request rejected before routing", zap.String("reason", "body_too_large"), zap.Int("status", fasthttp.StatusRequestEntityTooLarge),
			zap.Int("content_length", n), zap.String("remote", ctx.RemoteAddr().String()))
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}

// handleParseError answers requests fasthttp could not read. fasthttp's
// default answers 400 for everything; a client deserves to know that its
// body was too large (413) or its headers too long (431).
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	code, reason := fasthttp.StatusBadRequest, "malformed"
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		code, reason = fasthttp.StatusRequestEntityTooLarge, "body_too_large"
	case errors.As(err, &small):
		code, reason = fasthttp.StatusRequestHeaderFieldsTooLarge, "header_too_large"
	case errors.As(err, &ne) && ne.Timeout():
		code, reason = fasthttp.StatusRequestTimeout, "timeout"
	}
	s.metrics.RejectedRequests.WithLabelValues(reason).Inc()
	fields := []zap.Field{zap.String("reason", reason), zap.Int("status", code), zap.String("remote", ctx.RemoteAddr().String())}
	if setting := limitSetting(reason); setting != "" {
		// fasthttp's own text names its internals ("increase
		// ReadBufferSize"); the operator needs the setting to change.
		fields = append(fields, zap.String("setting", setting),
			zap.String("fix", "if legitimate clients send this, raise "+setting))
	} else {
		fields = append(fields, zap.Error(err))
	}
	s.log.Info("request rejected before routing", fields...)
	writeError(ctx, code, reasonText(reason))
	ctx.SetConnectionClose()
}

// limitSetting names the configuration setting behind a rejection reason.
func limitSetting(reason string) string {
	switch reason {
	case "body_too_large":
		return "limits.max_request_body"
	case "header_too_large":
		return "limits.max_header_size"
	case "timeout":
		return "limits.read_timeout"
	}
	return ""
}

func reasonText(reason string) string {
	switch reason {
	case "body_too_large":
		return "request body exceeds the configured limit"
	case "header_too_large":
		return "request headers exceed the configured limit"
	case "timeout":
		return "request not received in time"
	case "connect":
		return "CONNECT tunnels are not supported"
	}
	return "malformed request"
}

// zapPrintf adapts zap to fasthttp's Printf logger.
type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) {
	z.l.Debug("fasthttp", zap.String("msg", fmt.Sprintf(format, args...)))
}
