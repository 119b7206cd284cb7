package proxy

import (
	"time"

	"github.com/valyala/fasthttp"
)

// Tracer is the hook through which the request path reports to a tracing
// system (internal/tracing implements it with OpenTelemetry). A nil Tracer
// in Options turns tracing off, and the request path then pays one nil
// check per request.
type Tracer interface {
	// Start decides, without blocking, whether a request is traced, and
	// returns its trace or nil when it is not. It may read req's headers
	// (traceparent, tracestate) but must not keep req or requestID.
	Start(req *fasthttp.Request, requestID []byte, start time.Time) RequestTrace
}

// RequestTrace is one traced client request: a server span with a client
// span for the primary upstream call. Its methods are called from the
// request goroutine, except StartShadow, which a shadow worker may call from
// another goroutine at any time, also after End.
type RequestTrace interface {
	// StartUpstream begins the client span of the primary call and writes
	// its traceparent (and tracestate) into req, the request about to be
	// sent.
	StartUpstream(upstream string, req *fasthttp.Request)
	// EndUpstream ends that span with the upstream's status (0 with err
	// when the call failed).
	EndUpstream(status int, err error)
	// End ends the server span with what the request became.
	End(e TraceEnd)
	// StartShadow begins the span of one shadow request, in its own trace
	// and linked to this one, writing its traceparent into req. The
	// returned span must be ended.
	StartShadow(route, target string, req *fasthttp.Request) ShadowTrace
}

// ShadowTrace is the span of one shadow request.
type ShadowTrace interface {
	// End ends the span with the shadow's status (0 with err on failure)
	// and outcome (ok, error, timeout).
	End(status int, outcome string, err error)
}

// TraceEnd describes a finished request for its server span.
type TraceEnd struct {
	Route, Upstream string
	// Split is the split decision's reason ("" without a split).
	Split  string
	Status int
}
