package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/healthcheck"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// Upstream is a backend with one or more endpoints, each with pooled
// keep-alive clients. Primary and shadow traffic use separate pools so a
// flood of mirrored requests can never take the connections the primary
// path needs.
type Upstream struct {
	Name        string
	cfg         config.Upstream
	endpoints   []*endpoint
	leastConn   bool
	rr          atomic.Uint64
	timeout     time.Duration
	rewriteHost bool
	maxFailures int32
	ejection    time.Duration
	log         *zap.Logger
	probes      *healthcheck.Group // nil without health.path
	shadowPool  shadowPool
	// bufferBody is limits.buffer_body: primary responses longer than it
	// stream to the client.
	bufferBody int
}

// shadowPool sizes an upstream's shadow connections from the routes that
// mirror to it. It is part of the key that lets a reload keep the
// upstream: a reload adding a shadow route must get a pool sized for it.
type shadowPool struct {
	// conns bounds each endpoint's shadow connections: the sum of the
	// mirroring routes' workers.
	conns int
	// maxBody is the largest shadow.max_body of those routes; the shadow
	// pool stops reading a response there (0: no route mirrors here).
	maxBody int64
}

// endpoint is one address of an upstream.
type endpoint struct {
	url        string
	addr       string
	hostHeader string
	primary    *fasthttp.HostClient
	shadow     *fasthttp.HostClient
	// primaryPipe carries bodiless GET/HEAD/OPTIONS requests when
	// pipeline_conns is set (nil otherwise). Shadow traffic never uses it:
	// queued shadow requests are batched by the mirror (mirrorbatch.go).
	primaryPipe *pipeline
	// dial connects without the switch guard, for upgrade tunnels.
	dial fasthttp.DialFunc
	// failures counts consecutive connect errors and timeouts.
	failures atomic.Int32
	// ejectedUntil (unix nanoseconds) keeps traffic away after too many
	// failures; past it the endpoint is tried again.
	ejectedUntil atomic.Int64
	// probeDown is set by a failing active health check.
	probeDown atomic.Bool
	upGauge   prometheus.Gauge
	ejections prometheus.Counter
}

// newUpstream builds the pools for u; sp sizes the shadow pools.
func newUpstream(u config.Upstream, sp shadowPool, bufferBody int, m *metrics.Metrics, log *zap.Logger) (*Upstream, error) {
	up := &Upstream{
		shadowPool:  sp,
		bufferBody:  bufferBody,
		Name:        u.Name,
		cfg:         u,
		leastConn:   u.Balance == config.BalanceLeastConn,
		timeout:     u.Timeout.D(),
		rewriteHost: u.RewriteHost,
		maxFailures: int32(u.Health.MaxFailures),
		ejection:    u.Health.Ejection.D(),
		log:         log,
	}
	tlsCfg, err := UpstreamTLS(u)
	if err != nil {
		return nil, err
	}
	for _, raw := range u.Endpoints() {
		addr, isTLS, err := config.ParseUpstreamURL(raw)
		if err != nil {
			return nil, err
		}
		host := addr
		if h, port, err := net.SplitHostPort(addr); err == nil && (port == "80" && !isTLS || port == "443" && isTLS) {
			host = h
		}
		ep := &endpoint{url: raw, addr: addr, hostHeader: host,
			upGauge:   m.EndpointUp.WithLabelValues(u.Name, raw),
			ejections: m.EndpointEjections.WithLabelValues(u.Name, raw)}
		var epTLS *tls.Config
		if isTLS {
			epTLS = tlsCfg.Clone()
			if epTLS.ServerName == "" {
				epTLS.ServerName, _, _ = net.SplitHostPort(addr)
			}
		}
		ep.dial = rawDialer(u, addr)
		ep.primary = newHostClient(u, addr, u.MaxConns, epTLS)
		ep.primary.Transport = newStreamTransport(bufferBody, u)
		ep.shadow = newHostClient(u, addr, max(sp.conns, 1), epTLS)
		if up.shadowBodyCapped() {
			ep.shadow.MaxResponseBodySize = int(sp.maxBody)
		}
		if u.PipelineConns > 0 {
			ep.primaryPipe = newPipeline(addr, ep.dial, epTLS, u.PipelineConns, u.PipelineDepth,
				u.PipelineMaxWait.D(), u.MaxIdleConnDuration.D(), int(u.MaxResponseBody), pipelineCounters{
					answered:     m.UpstreamPipeline.WithLabelValues(u.Name, "answered"),
					bypassed:     m.UpstreamPipeline.WithLabelValues(u.Name, "bypassed"),
					rescued:      m.UpstreamPipeline.WithLabelValues(u.Name, "rescued"),
					retried:      m.UpstreamPipeline.WithLabelValues(u.Name, "retried"),
					rescueDenied: m.UpstreamPipeline.WithLabelValues(u.Name, "rescue_denied"),
				})
		}
		ep.upGauge.Set(1)
		up.endpoints = append(up.endpoints, ep)
	}
	if len(up.endpoints) == 0 {
		return nil, errors.New("no endpoints")
	}
	return up, nil
}

// UpstreamTLS is the client TLS configuration an upstream's tls section
// asks for (ca_file, server_name, insecure_skip_verify). Everything that
// reaches the upstream outside the proxy's pools (smoke checks) uses it too.
func UpstreamTLS(u config.Upstream) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.TLS.ServerName, InsecureSkipVerify: u.TLS.InsecureSkipVerify} //nolint:gosec // opt-in, warned about
	if u.TLS.CAFile != "" {
		pem, err := os.ReadFile(u.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificates found", u.TLS.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// rawDialer connects to addr within the upstream's connect timeout. The
// upgrade path and pipelined connections use it directly; pooled HostClient
// connections wrap it in a switchGuard.
func rawDialer(u config.Upstream, addr string) fasthttp.DialFunc {
	connectTimeout := u.ConnectTimeout.D()
	dial := (&fasthttp.TCPDialer{}).DialTimeout
	if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) != nil {
		// An address needs no DNS cache (whose cleaner goroutine outlives
		// the pool by a minute); a plain dialer is enough.
		dial = func(addr string, timeout time.Duration) (net.Conn, error) {
			return (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
		}
	}
	return func(addr string) (net.Conn, error) { return dial(addr, connectTimeout) }
}

func newHostClient(u config.Upstream, addr string, maxConns int, tlsCfg *tls.Config) *fasthttp.HostClient {
	raw := rawDialer(u, addr)
	dial := raw
	if tlsCfg == nil {
		// Over TLS the guard would see ciphertext; there the request path's
		// CloseIdleConnections after a rogue 101 is the only defence.
		dial = func(addr string) (net.Conn, error) {
			c, err := raw(addr)
			if err != nil {
				return nil, err
			}
			// Pooled connections keep Go's own I/O: with raw system calls
			// on both hops the default path lost 7% req/s (see fastConn).
			return &switchGuard{Conn: c}, nil
		}
	}
	return &fasthttp.HostClient{
		Addr: addr,
		// No Name: HostClient would send it as User-Agent when the client
		// sent none, and a proxy must not invent request fields.
		IsTLS:    tlsCfg != nil,
		MaxConns: maxConns,
		// Waiting for a free connection is bounded by the request timeout;
		// past it the client gets 503 rather than an unbounded queue.
		MaxConnWaitTimeout:        u.Timeout.D(),
		MaxIdleConnDuration:       u.MaxIdleConnDuration.D(),
		MaxResponseBodySize:       int(u.MaxResponseBody),
		ReadBufferSize:            16 << 10,
		WriteBufferSize:           16 << 10,
		DisablePathNormalizing:    true,
		NoDefaultUserAgentHeader:  true,
		MaxIdemponentCallAttempts: 2,
		RetryIfErr:                retryOnStaleConnection,
		TLSConfig:                 tlsCfg,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dial(addr)
			if err != nil {
				return nil, err
			}
			// Per-request deadline updates coarsened to 1/16 of each
			// timeout (at most 1 s); see deadlineConn.
			return newDeadlineConn(c, maxDeadlineSlack), nil
		},
	}
}

// switchGuard closes a pooled upstream connection as soon as a response on
// it starts with "101": the proxy never asks a pooled connection for an
// upgrade, so whatever follows a 101 there is another protocol's bytes (or
// injected responses) that the next request on the connection would read as
// its own answer. fasthttp returns a 1xx-answered connection to the pool, so
// it has to be caught here, below the pool. Closed, the connection fails on
// its next use, which is retried for idempotent requests like any stale one.
type switchGuard struct {
	net.Conn
	head     [12]byte // "HTTP/1.1 101"
	n        int
	awaiting bool // a request was written since the last response started
}

func (g *switchGuard) Write(p []byte) (int, error) {
	g.awaiting, g.n = true, 0
	return g.Conn.Write(p)
}

func (g *switchGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if g.awaiting && n > 0 {
		g.n += copy(g.head[g.n:], p[:n])
		if g.n == len(g.head) {
			g.awaiting = false
			if string(g.head[:7]) == "HTTP/1." && string(g.head[8:]) == " 101" {
				g.Conn.Close()
			}
		}
	}
	return n, err
}

// pipelinable reports whether a request may share a pipelined connection:
// idempotent, without a body, so a response mix-up or a replay after a
// broken connection can do no harm.
func pipelinable(req *fasthttp.Request) bool {
	h := &req.Header
	return (h.IsGet() || h.IsHead() || h.IsOptions()) && !req.IsBodyStream() && len(req.Body()) == 0
}

// startProbes runs active health checks when health.path is configured.
func (up *Upstream) startProbes() error {
	if up.cfg.Health.Path == "" {
		return nil
	}
	g, err := ProbeUpstream(up.cfg, up.cfg.Health.Probe, healthcheck.Config{UnhealthyAfter: 1, HealthyAfter: 1, Logger: up.log},
		func(i int, healthy bool, s healthcheck.Status) {
			ep := up.endpoints[i]
			ep.probeDown.Store(!healthy)
			ep.refreshGauge(time.Now().UnixNano())
			up.log.Warn("upstream endpoint health changed", zap.String("upstream", up.Name), zap.String("endpoint", ep.url),
				zap.Bool("healthy", healthy), zap.Int("status", s.LastStatus), zap.String("error", s.LastError))
		})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	up.probes = g
	g.Start()
	return nil
}

// ProbeUpstream builds (without starting) the active probes of every
// endpoint of u, in u.Endpoints() order: GET p.Path through u's TLS settings
// (tls.ca_file, tls.server_name, tls.insecure_skip_verify), so a probe
// reaches each endpoint exactly as forwarded requests do. base supplies the
// thresholds and logger; its URL, timing, status and client are set here.
// The upstream's own health section and a rollout's canary health_check are
// both wired through it.
func ProbeUpstream(u config.Upstream, p cfgtypes.Probe, base healthcheck.Config, onChange func(endpoint int, healthy bool, s healthcheck.Status)) (*healthcheck.Group, error) {
	tlsCfg, err := UpstreamTLS(u)
	if err != nil {
		return nil, err
	}
	// No keep-alive: a probe must open a connection the way a new client
	// would, and an idle connection per endpoint would outlive a reload.
	base.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
	base.Interval, base.Timeout, base.ExpectStatus = p.Interval.D(), p.Timeout.D(), p.ExpectStatus
	var urls []string
	for _, ep := range u.Endpoints() {
		urls = append(urls, strings.TrimSuffix(ep, "/")+p.Path)
	}
	return healthcheck.NewGroup(urls, base, onChange)
}

func (ep *endpoint) healthy(now int64) bool {
	return !ep.probeDown.Load() && now >= ep.ejectedUntil.Load()
}

func (ep *endpoint) refreshGauge(now int64) {
	if ep.healthy(now) {
		ep.upGauge.Set(1)
	} else {
		ep.upGauge.Set(0)
	}
}

// pick chooses an endpoint, skipping unhealthy ones and except. When every
// endpoint is unhealthy it still returns one (failing open beats refusing
// all traffic on a flapping check).
func (up *Upstream) pick(except *endpoint) *endpoint {
	eps := up.endpoints
	if len(eps) == 1 {
		return eps[0]
	}
	now := time.Now().UnixNano()
	start := int(up.rr.Add(1) % uint64(len(eps)))
	var best *endpoint
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		if ep == except || !ep.healthy(now) {
			continue
		}
		if !up.leastConn {
			return ep
		}
		if best == nil || ep.primary.PendingRequests() < best.primary.PendingRequests() {
			best = ep
		}
	}
	if best != nil {
		return best
	}
	for i := range eps {
		if ep := eps[(start+i)%len(eps)]; ep != except {
			return ep
		}
	}
	return eps[start]
}

// do sends req to an endpoint of the upstream. An idempotent request that
// failed to connect is retried once on another endpoint: it cannot have
// reached an upstream. Nothing else is retried here.
//
// host, when set, is sent as Host (a shadow target's host setting);
// otherwise rewrite_host sends the endpoint's own.
func (up *Upstream) do(req *fasthttp.Request, resp *fasthttp.Response, shadow bool, host string, timeout time.Duration) (*endpoint, error) {
	ep := up.pick(nil)
	err := ep.send(up, req, resp, shadow, host, timeout)
	if err == nil || len(up.endpoints) == 1 {
		return ep, err
	}
	if reason, _ := classify(err); reason == ReasonConnect && isIdempotent(&req.Header) {
		next := up.pick(ep)
		if next != ep {
			resp.Reset()
			return next, next.send(up, req, resp, shadow, host, timeout)
		}
	}
	return ep, err
}

func (ep *endpoint) send(up *Upstream, req *fasthttp.Request, resp *fasthttp.Response, shadow bool, host string, timeout time.Duration) error {
	client, pipe := ep.primary, ep.primaryPipe
	if shadow {
		client, pipe = ep.shadow, nil
	}
	ep.prepare(up, client, req, host)
	if pipe != nil && pipelinable(req) {
		err, fallback, left := pipe.do(req, resp, timeout)
		if !fallback {
			up.observe(ep, err)
			return err
		}
		// Not answered there (no connection could take it, it waited past
		// pipeline_max_wait, or its connection closed): it is idempotent
		// and bodiless, so the pool sends it, within what is left of its
		// timeout.
		resp.Reset()
		timeout = left
	}
	req.SetTimeout(timeout)
	err := client.Do(req, resp)
	up.observe(ep, err)
	return err
}

// prepare makes req ready to be written to ep through client.
func (ep *endpoint) prepare(up *Upstream, client *fasthttp.HostClient, req *fasthttp.Request, host string) {
	// fasthttp would add Content-Type: application/octet-stream to a body
	// sent without one; forward exactly what the client sent.
	req.Header.SetNoDefaultContentType(true)
	// HostClient refuses a URI whose scheme differs from its own (a request
	// that arrived over TLS going to a plain upstream, or the reverse).
	if client.IsTLS {
		req.URI().SetScheme("https")
	} else {
		req.URI().SetScheme("http")
	}
	// An HTTP/1.0 client may send no Host; fasthttp then refuses to send
	// the request, and that refusal would count as the upstream's failure
	// (in the canary's error rate too). The endpoint's own name stands in.
	if host == "" && (up.rewriteHost || len(req.Header.Host()) == 0 && len(req.URI().Host()) == 0) {
		host = ep.hostHeader
	}
	if host != "" {
		// fasthttp writes Host from the parsed URI, so both must change.
		req.Header.SetHost(host)
		req.URI().SetHost(host)
	}
}

// observe feeds passive health: consecutive connect errors and timeouts
// eject the endpoint for the ejection period.
func (up *Upstream) observe(ep *endpoint, err error) {
	if err == nil {
		if ep.failures.Load() != 0 {
			ep.failures.Store(0)
		}
		return
	}
	reason, _ := classify(err)
	if reason != ReasonConnect && reason != ReasonTimeout || up.maxFailures <= 0 {
		return
	}
	if ep.failures.Add(1) < up.maxFailures {
		return
	}
	ep.failures.Store(0)
	now := time.Now()
	ep.ejectedUntil.Store(now.Add(up.ejection).UnixNano())
	ep.upGauge.Set(0)
	ep.ejections.Inc()
	up.log.Warn("upstream endpoint ejected", zap.String("upstream", up.Name), zap.String("endpoint", ep.url),
		zap.Int32("consecutive_failures", up.maxFailures), zap.Duration("ejected_for_ms", up.ejection), zap.Error(err))
	time.AfterFunc(up.ejection, func() { ep.refreshGauge(time.Now().UnixNano()) })
}

// retryOnStaleConnection retries an idempotent request once when a pooled
// keep-alive connection turned out to be closed by the upstream before any
// response byte arrived: the upstream cannot have processed it. Timeouts are
// never retried (the upstream may still be working), nor is anything that is
// not idempotent.
func retryOnStaleConnection(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	if attempts > 1 || !isIdempotent(&req.Header) {
		return false, false
	}
	return false, errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsPut() || h.IsDelete() || h.IsTrace()
}

// sameConfig reports whether a reload may keep this upstream's pools.
func (up *Upstream) sameConfig(u config.Upstream, sp shadowPool, bufferBody int) bool {
	return up.shadowPool == sp && up.bufferBody == bufferBody && reflect.DeepEqual(up.cfg, u)
}

// shadowBodyCapped reports whether the shadow pool's body limit is a
// route's shadow.max_body rather than the upstream's max_response_body.
func (up *Upstream) shadowBodyCapped() bool {
	return up.shadowPool.maxBody > 0 && up.shadowPool.maxBody < int64(up.cfg.MaxResponseBody)
}

// close stops health probes and releases idle pooled connections.
func (up *Upstream) close() {
	if up.probes != nil {
		up.probes.Close()
	}
	for _, ep := range up.endpoints {
		ep.primary.CloseIdleConnections()
		ep.shadow.CloseIdleConnections()
		if ep.primaryPipe != nil {
			ep.primaryPipe.close()
		}
	}
}

// ErrorReason classifies an upstream error for the reason label:
// connect, timeout, reset or other.
type ErrorReason uint8

// The reasons, in label order.
const (
	ReasonConnect ErrorReason = iota
	ReasonTimeout
	ReasonReset
	ReasonOther
	numReasons
)

var reasonNames = [numReasons]string{"connect", "timeout", "reset", "other"}

// String returns the label value.
func (r ErrorReason) String() string { return reasonNames[r] }

// classify maps a client error to a reason and the status the client gets.
func classify(err error) (ErrorReason, int) {
	var opErr *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout, fasthttp.StatusGatewayTimeout
	case errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ReasonConnect, fasthttp.StatusBadGateway
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return ReasonConnect, fasthttp.StatusBadGateway
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return ReasonOther, fasthttp.StatusServiceUnavailable
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ReasonReset, fasthttp.StatusBadGateway
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout, fasthttp.StatusGatewayTimeout
	}
	return ReasonOther, fasthttp.StatusBadGateway
}
