// Package tracing reports proxied requests to OpenTelemetry: a server span
// per traced request, a client span for its primary upstream call, and a
// span of its own for each shadow request, linked to the primary's. W3C
// traceparent/tracestate are read from the client and written to the
// primary and the shadows. Spans leave through a bounded queue to the OTel
// SDK's batch processor and its OTLP/HTTP exporter, never on the request
// path.
//
// The sampling decision is made here, before anything is allocated:
// requests that are not traced (99% at the default ratio) cost one header
// lookup and one random number. It follows ParentBased(TraceIDRatioBased):
// a sampled parent is always followed, an unsampled one never, and a
// request without a parent starts a trace with probability sample_ratio.
package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// Attribute keys shadowproxy adds beside the OTel HTTP conventions.
const (
	AttrRoute       = "shadowproxy.route"
	AttrUpstream    = "shadowproxy.upstream"
	AttrSplitReason = "shadowproxy.split.reason"
	AttrRequestID   = "shadowproxy.request_id"
	AttrTarget      = "shadowproxy.shadow.target"
	AttrOutcome     = "shadowproxy.shadow.outcome"
)

// Options tune a Tracer beyond its configuration (tests shorten the batch
// delay and seed the sampler).
type Options struct {
	Version string
	Metrics *metrics.Metrics
	Logger  *zap.Logger
	// BatchTimeout is the longest a span waits before export (default 5s).
	BatchTimeout time.Duration
	// Rand draws the root sampling decisions (default math/rand/v2).
	Rand func() uint64
}

// Tracer implements proxy.Tracer with the OpenTelemetry SDK.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	queue  *queueProcessor
	// A root request is sampled when rand() < threshold; always when
	// ratio is 1.
	threshold uint64
	always    bool
	rand      func() uint64
}

// New builds a Tracer exporting to cfg.OTLPEndpoint. Nothing is sent
// until spans end; an unreachable collector costs failed exports (counted
// and logged), never requests.
func New(cfg *config.Tracing, o Options) (*Tracer, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		return nil, fmt.Errorf("tracing: Options.Metrics is required")
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = 5 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Uint64
	}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(cfg.TracesURL()),
		otlptracehttp.WithHeaders(cfg.Headers),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
		otlptracehttp.WithTimeout(10*time.Second),
		// Retries of one batch stop well before the next ones pile up.
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: time.Second, MaxInterval: 5 * time.Second, MaxElapsedTime: 20 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", cfg.TracesURL(), err)
	}
	counted := &countingExporter{next: exp, exported: o.Metrics.TracingSpans.WithLabelValues("exported"),
		failed: o.Metrics.TracingSpans.WithLabelValues("failed"), log: o.Logger, endpoint: cfg.TracesURL()}
	batch := sdktrace.NewBatchSpanProcessor(counted,
		sdktrace.WithMaxQueueSize(cfg.QueueSize),
		sdktrace.WithMaxExportBatchSize(min(512, cfg.QueueSize)),
		sdktrace.WithBatchTimeout(o.BatchTimeout),
		// The batcher may wait for room: it is fed by the queue's own
		// goroutine, which is where drops happen and are counted.
		sdktrace.WithBlocking())
	q := newQueueProcessor(batch, cfg.QueueSize, o.Metrics.TracingSpans.WithLabelValues("dropped"))
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", o.Version),
	)
	tp := sdktrace.NewTracerProvider(
		// The sampling decision is taken in Start; whatever reaches the
		// SDK is recorded.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(q),
		sdktrace.WithResource(res),
	)
	t := &Tracer{tp: tp, tracer: tp.Tracer("github.com/shadowproxy/shadowproxy/proxy"), queue: q, rand: o.Rand}
	switch r := cfg.Ratio(); {
	case r >= 1:
		t.always = true
	case r > 0:
		t.threshold = uint64(r * (1 << 64))
	}
	return t, nil
}

// Shutdown exports what is queued, within ctx, and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// ForceFlush exports what is queued now.
func (t *Tracer) ForceFlush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

func (t *Tracer) sampleRoot() bool {
	return t.always || t.threshold != 0 && t.rand() < t.threshold
}

// Start implements proxy.Tracer.
func (t *Tracer) Start(req *fasthttp.Request, requestID []byte, start time.Time) proxy.RequestTrace {
	var parent trace.SpanContext
	if tp := req.Header.Peek("traceparent"); len(tp) > 0 {
		if tid, sid, flags, ok := parseTraceparent(tp); ok {
			if flags&byte(trace.FlagsSampled) == 0 {
				// The caller decided against tracing; the header travels on
				// unchanged.
				return nil
			}
			ts, err := trace.ParseTraceState(string(req.Header.Peek("tracestate")))
			if err != nil {
				ts = trace.TraceState{} // an invalid tracestate is dropped (W3C §3.3.1)
			}
			parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
				TraceFlags: trace.TraceFlags(flags) & trace.FlagsSampled, TraceState: ts, Remote: true})
		}
	}
	if !parent.IsValid() && !t.sampleRoot() {
		return nil
	}
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	method := string(req.Header.Method())
	rt := &requestTrace{t: t, method: method, requestID: string(requestID)}
	rt.ctx, rt.span = t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", string(req.URI().Path())),
			attribute.String(AttrRequestID, rt.requestID),
		))
	rt.sc = rt.span.SpanContext()
	return rt
}

// requestTrace is one traced request. Fields are set in Start and only
// read afterwards, so StartShadow may run on any goroutine.
type requestTrace struct {
	t         *Tracer
	ctx       context.Context
	span      trace.Span
	sc        trace.SpanContext
	method    string
	requestID string
	upstream  trace.Span
}

func (rt *requestTrace) StartUpstream(upstream string, req *fasthttp.Request) {
	_, rt.upstream = rt.t.tracer.Start(rt.ctx, rt.method+" "+upstream, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("http.request.method", rt.method),
			attribute.String(AttrUpstream, upstream),
		))
	inject(req, rt.upstream.SpanContext())
}

func (rt *requestTrace) EndUpstream(status int, err error) {
	if rt.upstream == nil {
		return
	}
	endClient(rt.upstream, status, err)
	rt.upstream = nil
}

func endClient(s trace.Span, status int, err error) {
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	} else {
		s.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			s.SetStatus(codes.Error, "")
		}
	}
	s.End()
}

func (rt *requestTrace) End(e proxy.TraceEnd) {
	name := rt.method
	if e.Route != "" {
		name += " " + e.Route
	}
	rt.span.SetName(name)
	attrs := []attribute.KeyValue{
		attribute.String(AttrRoute, e.Route),
		attribute.String(AttrUpstream, e.Upstream),
		attribute.Int("http.response.status_code", e.Status),
	}
	if e.Split != "" {
		attrs = append(attrs, attribute.String(AttrSplitReason, e.Split))
	}
	rt.span.SetAttributes(attrs...)
	if e.Status >= 500 {
		rt.span.SetStatus(codes.Error, "")
	}
	rt.span.End()
}

func (rt *requestTrace) StartShadow(route, target string, req *fasthttp.Request) proxy.ShadowTrace {
	// Its own trace, so that shadow latency never shows in the client's;
	// the link leads from one to the other.
	_, span := rt.t.tracer.Start(context.Background(), "shadow "+target, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(trace.Link{SpanContext: rt.sc, Attributes: []attribute.KeyValue{attribute.String("shadowproxy.link", "primary")}}),
		trace.WithAttributes(
			attribute.String("http.request.method", rt.method),
			attribute.String(AttrRoute, route),
			attribute.String(AttrTarget, target),
			attribute.String(AttrRequestID, rt.requestID),
		))
	inject(req, span.SpanContext())
	return shadowSpan{span}
}

type shadowSpan struct{ span trace.Span }

func (s shadowSpan) End(status int, outcome string, err error) {
	s.span.SetAttributes(attribute.String(AttrOutcome, outcome))
	endClient(s.span, status, err)
}

// inject writes sc as traceparent (and tracestate) into req.
func inject(req *fasthttp.Request, sc trace.SpanContext) {
	var b [55]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	req.Header.SetBytesV("traceparent", b[:])
	if ts := sc.TraceState(); ts.Len() > 0 {
		req.Header.Set("tracestate", ts.String())
	} else {
		req.Header.Del("tracestate")
	}
}

// parseTraceparent reads a W3C traceparent (version 00, or a later version
// read as 00 as the spec asks) without allocating.
func parseTraceparent(b []byte) (tid trace.TraceID, sid trace.SpanID, flags byte, ok bool) {
	if len(b) < 55 || b[2] != '-' || b[35] != '-' || b[52] != '-' {
		return tid, sid, 0, false
	}
	var ver [1]byte
	if _, err := hex.Decode(ver[:], b[0:2]); err != nil || ver[0] == 0xff || ver[0] == 0 && len(b) != 55 || len(b) > 55 && b[55] != '-' {
		return tid, sid, 0, false
	}
	if !lowerHex(b[3:35]) || !lowerHex(b[36:52]) || !lowerHex(b[53:55]) {
		return tid, sid, 0, false
	}
	var f [1]byte
	hex.Decode(tid[:], b[3:35])
	hex.Decode(sid[:], b[36:52])
	hex.Decode(f[:], b[53:55])
	if !tid.IsValid() || !sid.IsValid() {
		return tid, sid, 0, false
	}
	return tid, sid, f[0], true
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
