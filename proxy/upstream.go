package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/config"
)

// Upstream is a backend with its pooled keep-alive clients. Primary and
// shadow traffic use separate pools so a flood of mirrored requests can
// never take the connections the primary path needs.
type Upstream struct {
	Name        string
	Addr        string
	cfg         config.Upstream
	primary     *fasthttp.HostClient
	shadow      *fasthttp.HostClient
	timeout     time.Duration
	rewriteHost bool
	hostHeader  string
}

// newUpstream builds the pools for u. shadowConns bounds the shadow pool.
func newUpstream(u config.Upstream, shadowConns int) (*Upstream, error) {
	addr, isTLS, err := config.ParseUpstreamURL(u.URL)
	if err != nil {
		return nil, err
	}
	host := addr
	if h, port, err := net.SplitHostPort(addr); err == nil && (port == "80" && !isTLS || port == "443" && isTLS) {
		host = h
	}
	up := &Upstream{
		Name:        u.Name,
		Addr:        addr,
		cfg:         u,
		timeout:     u.Timeout.D(),
		rewriteHost: u.RewriteHost,
		hostHeader:  host,
	}
	up.primary = up.newClient(u.MaxConns, isTLS)
	up.shadow = up.newClient(max(shadowConns, 1), isTLS)
	return up, nil
}

func (up *Upstream) newClient(maxConns int, isTLS bool) *fasthttp.HostClient {
	u := up.cfg
	connectTimeout := u.ConnectTimeout.D()
	dial := (&fasthttp.TCPDialer{}).DialTimeout
	if host, _, err := net.SplitHostPort(up.Addr); err == nil && net.ParseIP(host) != nil {
		// An address needs no DNS cache (whose cleaner goroutine outlives
		// the pool by a minute); a plain dialer is enough.
		dial = func(addr string, timeout time.Duration) (net.Conn, error) {
			return (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
		}
	}
	c := &fasthttp.HostClient{
		Addr:     up.Addr,
		Name:     "shadowproxy",
		IsTLS:    isTLS,
		MaxConns: maxConns,
		// Waiting for a free connection is bounded by the request timeout;
		// past it the client gets 503 rather than an unbounded queue.
		MaxConnWaitTimeout:            u.Timeout.D(),
		MaxIdleConnDuration:           u.MaxIdleConnDuration.D(),
		MaxResponseBodySize:           int(u.MaxResponseBody),
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		NoDefaultUserAgentHeader:      true,
		MaxIdemponentCallAttempts:     2,
		RetryIfErr:                    retryOnStaleConnection,
		Dial: func(addr string) (net.Conn, error) {
			return dial(addr, connectTimeout)
		},
	}
	if isTLS {
		c.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: up.hostHeader}
	}
	return c
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
	return false, errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF)
}

func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsPut() || h.IsDelete() || h.IsTrace()
}

// sameConfig reports whether a reload may keep this upstream's pools.
func (up *Upstream) sameConfig(u config.Upstream) bool { return up.cfg == u }

// close releases idle pooled connections.
func (up *Upstream) close() {
	up.primary.CloseIdleConnections()
	up.shadow.CloseIdleConnections()
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
