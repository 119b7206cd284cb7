package tracing

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

func shadowConfig(primary, canary, shadow string) string {
	return `
upstreams:
  - {name: primary, url: "` + primary + `"}
  - {name: canary, url: "` + canary + `"}
  - {name: shadow, url: "` + shadow + `"}
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: primary
    shadow:
      targets: [shadow]
      percent: 100
  - name: checkout
    match: {path_prefix: /checkout/}
    upstream: primary
    split: {key: header:X-User-ID, to: canary, percent: 100}
`
}

const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"

func hexID(b []byte) string { return hex.EncodeToString(b) }

// TestSpansLinksAndPropagation runs a real proxy with a tracer exporting to
// an OTLP receiver on loopback, and checks what the receiver decoded and
// what the upstreams received.
func TestSpansLinksAndPropagation(t *testing.T) {
	rec := newReceiver(t)
	primary, canary, shadow := newRecorder(t, 200), newRecorder(t, 503), newRecorder(t, 200)
	tr := newTracer(t, rec.srv.URL, 0, 64, nil) // ratio 0: only the client's sampled parent starts traces
	c := startProxy(t, shadowConfig(primary.URL, canary.URL, shadow.URL), tr)

	resp := get(t, c, "/api/items?token=secret", map[string]string{
		"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01",
		"tracestate":  "vendor=abc",
	})
	reqID := string(resp.Header.Peek("X-Request-Id"))
	if resp.StatusCode() != 200 || reqID == "" {
		t.Fatalf("status %d, request id %q", resp.StatusCode(), reqID)
	}
	shadow.waitRequests(t, 1)
	spans := rec.waitSpans(t, tr, 3)
	if len(spans) != 3 {
		t.Fatalf("%d spans exported, want server, client and shadow", len(spans))
	}
	byKind := map[tracepb.Span_SpanKind][]*tracepb.Span{}
	for _, s := range spans {
		byKind[s.Kind] = append(byKind[s.Kind], s)
	}
	if len(byKind[tracepb.Span_SPAN_KIND_SERVER]) != 1 || len(byKind[tracepb.Span_SPAN_KIND_CLIENT]) != 2 {
		t.Fatalf("span kinds %v", byKind)
	}
	server := byKind[tracepb.Span_SPAN_KIND_SERVER][0]
	var client, sh *tracepb.Span
	for _, s := range byKind[tracepb.Span_SPAN_KIND_CLIENT] {
		if attr(s, AttrTarget) != "" {
			sh = s
		} else {
			client = s
		}
	}
	if client == nil || sh == nil {
		t.Fatal("want one upstream client span and one shadow span")
	}

	// The server span continues the client's trace.
	if hexID(server.TraceId) != clientTrace || hexID(server.ParentSpanId) != "00f067aa0ba902b7" {
		t.Errorf("server span trace %x parent %x, want the client's", server.TraceId, server.ParentSpanId)
	}
	if server.TraceState != "vendor=abc" {
		t.Errorf("server span tracestate %q, want the client's", server.TraceState)
	}
	for k, want := range map[string]string{AttrRoute: "api", AttrUpstream: "primary", "http.response.status_code": "200",
		AttrRequestID: reqID, "http.request.method": "GET", "url.path": "/api/items"} {
		if got := attr(server, k); got != want {
			t.Errorf("server span %s = %q, want %q", k, got, want)
		}
	}
	if server.Name != "GET api" {
		t.Errorf("server span name %q", server.Name)
	}
	// The upstream call is its child, and the primary got its context.
	if hexID(client.TraceId) != clientTrace || hexID(client.ParentSpanId) != hexID(server.SpanId) || attr(client, AttrUpstream) != "primary" {
		t.Errorf("client span trace %x parent %x upstream %q", client.TraceId, client.ParentSpanId, attr(client, AttrUpstream))
	}
	tp, ts := primary.headers()
	if want := "00-" + clientTrace + "-" + hexID(client.SpanId) + "-01"; tp[0] != want || ts[0] != "vendor=abc" {
		t.Errorf("primary received traceparent %q tracestate %q, want %q and the client's tracestate", tp[0], ts[0], want)
	}
	// The shadow has its own trace, linked to the primary's server span,
	// and the shadow upstream got that trace's context.
	if hexID(sh.TraceId) == clientTrace || len(sh.ParentSpanId) != 0 {
		t.Errorf("shadow span is in the client's trace (%x, parent %x); want its own", sh.TraceId, sh.ParentSpanId)
	}
	if len(sh.Links) != 1 || hexID(sh.Links[0].TraceId) != clientTrace || hexID(sh.Links[0].SpanId) != hexID(server.SpanId) {
		t.Errorf("shadow span links %v, want one to the server span %x", sh.Links, server.SpanId)
	}
	for k, want := range map[string]string{AttrTarget: "shadow", AttrRoute: "api", AttrRequestID: reqID, AttrOutcome: "ok", "http.response.status_code": "200"} {
		if got := attr(sh, k); got != want {
			t.Errorf("shadow span %s = %q, want %q", k, got, want)
		}
	}
	stp, _ := shadow.headers()
	if want := "00-" + hexID(sh.TraceId) + "-" + hexID(sh.SpanId) + "-01"; stp[0] != want {
		t.Errorf("shadow received traceparent %q, want %q", stp[0], want)
	}
	for i, svc := range rec.service {
		if svc != "edge-proxy" {
			t.Errorf("span %d: service.name %q", i, svc)
		}
	}

	// A split: the reason is on the server span, a 5xx marks it an error.
	rec.mu.Lock()
	rec.spans, rec.service = nil, nil
	rec.mu.Unlock()
	get(t, c, "/checkout/pay", map[string]string{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01", "X-User-ID": "u1"})
	spans = rec.waitSpans(t, tr, 2)
	for _, s := range spans {
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			continue
		}
		if attr(s, AttrSplitReason) != "percent" || attr(s, AttrUpstream) != "canary" || attr(s, "http.response.status_code") != "503" ||
			s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("split server span: reason %q upstream %q status %q code %v", attr(s, AttrSplitReason), attr(s, AttrUpstream),
				attr(s, "http.response.status_code"), s.Status.GetCode())
		}
	}
}

// TestUnsampledRequestsAreUntouched: a parent that says "not sampled" (and,
// at ratio 0, a request without one) produces no span, and the headers
// reach the upstream as the client sent them.
func TestUnsampledRequestsAreUntouched(t *testing.T) {
	rec := newReceiver(t)
	primary, shadow := newRecorder(t, 200), newRecorder(t, 200)
	tr := newTracer(t, rec.srv.URL, 0, 64, nil)
	c := startProxy(t, shadowConfig(primary.URL, primary.URL, shadow.URL), tr)
	unsampled := "00-" + clientTrace + "-00f067aa0ba902b7-00"
	get(t, c, "/api/a", map[string]string{"traceparent": unsampled, "tracestate": "vendor=abc"})
	get(t, c, "/api/b", nil)
	shadow.waitRequests(t, 2)
	if spans := rec.waitSpans(t, tr, 0); len(spans) != 0 {
		t.Errorf("%d spans exported for unsampled requests", len(spans))
	}
	tp, ts := primary.headers()
	if tp[0] != unsampled || ts[0] != "vendor=abc" || tp[1] != "" {
		t.Errorf("primary received %q/%q and %q; want the client's headers unchanged", tp[0], ts[0], tp[1])
	}
}

// TestRootSampling checks the ratio decision for requests without a parent
// by seeded simulation: over n requests the traced count stays within 5
// standard deviations of n*ratio (a false failure is under 1e-6 likely).
func TestRootSampling(t *testing.T) {
	rec := newReceiver(t)
	for _, ratio := range []float64{0.01, 0.1, 0.5} {
		tr := newTracer(t, rec.srv.URL, ratio, 64, nil)
		rng := rand.New(rand.NewPCG(1, uint64(ratio*1000)))
		tr.rand = rng.Uint64
		req := &fasthttp.Request{}
		const n = 100000
		traced := 0
		for i := 0; i < n; i++ {
			if tr.Start(req, nil, time.Now()) != nil {
				traced++
			}
		}
		mean := n * ratio
		sd := sqrt(n * ratio * (1 - ratio))
		if f := float64(traced); f < mean-5*sd || f > mean+5*sd {
			t.Errorf("ratio %v: %d of %d traced, want %.0f ± %.0f", ratio, traced, n, mean, 5*sd)
		}
	}
	// The edges are exact, and a parent's decision beats the ratio.
	for _, tc := range []struct {
		ratio  float64
		parent string
		want   bool
	}{
		{0, "", false},
		{1, "", true},
		{1, "00-" + clientTrace + "-00f067aa0ba902b7-00", false},
		{0, "00-" + clientTrace + "-00f067aa0ba902b7-01", true},
		{0, "00-" + clientTrace + "-00f067aa0ba902b7-03", true}, // unknown flags kept apart
		{0, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{1, "garbage", true}, // an invalid parent restarts the trace
	} {
		tr := newTracer(t, rec.srv.URL, tc.ratio, 64, nil)
		req := &fasthttp.Request{}
		if tc.parent != "" {
			req.Header.Set("traceparent", tc.parent)
		}
		for i := 0; i < 100; i++ {
			if got := tr.Start(req, nil, time.Now()) != nil; got != tc.want {
				t.Fatalf("ratio %v parent %q: traced %v, want %v", tc.ratio, tc.parent, got, tc.want)
			}
		}
	}
}

func sqrt(x float64) float64 {
	z := x
	for i := 0; i < 50; i++ {
		z = (z + x/z) / 2
	}
	return z
}

func TestParseTraceparent(t *testing.T) {
	for _, tc := range []struct {
		in    string
		ok    bool
		flags byte
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, 1},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, 0},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true, 1}, // a later version, read as 00
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, 0}, // 00 has no extra fields
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},       // version ff is invalid
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, 0},       // upper case
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, 0},       // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, 0},       // zero span id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false, 0},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false, 0},
		{"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
		{"", false, 0},
	} {
		tid, sid, flags, ok := parseTraceparent([]byte(tc.in))
		if ok != tc.ok || ok && (flags != tc.flags || hexID(tid[:]) != tc.in[3:35] || hexID(sid[:]) != tc.in[36:52]) {
			t.Errorf("%q: ok %v flags %x (%x %x), want ok %v flags %x", tc.in, ok, flags, tid, sid, tc.ok, tc.flags)
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add([]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	f.Add([]byte("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"))
	f.Add([]byte("00-"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tid, sid, flags, ok := parseTraceparent(b)
		if !ok {
			return
		}
		// What parses re-encodes to the same ids, lower case.
		if hexID(tid[:]) != string(b[3:35]) || hexID(sid[:]) != string(b[36:52]) || hexID([]byte{flags}) != string(b[53:55]) {
			t.Errorf("%q parsed as %x %x %x", b, tid, sid, flags)
		}
		if !tid.IsValid() || !sid.IsValid() {
			t.Errorf("%q: invalid ids accepted", b)
		}
	})
}

// TestExportQueueIsBounded: with the collector stuck, spans beyond the
// queue are dropped and counted, and requests are not held up.
func TestExportQueueIsBounded(t *testing.T) {
	rec := newReceiver(t)
	rec.hold = make(chan struct{})
	m := metrics.New("test")
	tr := newTracer(t, rec.srv.URL, 1, 4, m)
	// Unstick the collector before the tracer's shutdown flushes (cleanups
	// run last-in first-out).
	t.Cleanup(func() {
		rec.mu.Lock()
		close(rec.hold)
		rec.hold = nil
		rec.mu.Unlock()
	})
	primary := newRecorder(t, 200)
	c := startProxy(t, shadowConfig(primary.URL, primary.URL, primary.URL), tr)
	const n = 60 // two spans each
	for i := 0; i < n; i++ {
		get(t, c, "/checkout/x", nil)
	}
	dropped := testutil.ToFloat64(m.TracingSpans.WithLabelValues("dropped"))
	// At most the queue (4), the span its goroutine is handing on (1), the
	// batcher's queue (4) and one batch in the stuck export (4) can be
	// waiting; the rest must have been dropped.
	if dropped < 2*n-13 || dropped > 2*n {
		t.Errorf("dropped %v spans of %d with a stuck collector and room for 13", dropped, 2*n)
	}
}

// TestFailedExportsAreCounted: a collector that refuses the export.
func TestFailedExportsAreCounted(t *testing.T) {
	rec := newReceiver(t)
	rec.status = 400 // not retryable
	m := metrics.New("test")
	tr := newTracer(t, rec.srv.URL, 1, 64, m)
	primary := newRecorder(t, 200)
	c := startProxy(t, shadowConfig(primary.URL, primary.URL, primary.URL), tr)
	get(t, c, "/checkout/x", nil)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(m.TracingSpans.WithLabelValues("failed")) < 2 && time.Now().Before(deadline) {
		tr.ForceFlush(t.Context())
		time.Sleep(20 * time.Millisecond)
	}
	if f, e := testutil.ToFloat64(m.TracingSpans.WithLabelValues("failed")), testutil.ToFloat64(m.TracingSpans.WithLabelValues("exported")); f != 2 || e != 0 {
		t.Errorf("failed %v exported %v, want 2 and 0", f, e)
	}
}

func TestNewRequiresMetrics(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil || !strings.Contains(err.Error(), "Metrics") {
		t.Errorf("New without metrics: %v", err)
	}
}
