package tracing

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// receiver is an OTLP/HTTP trace receiver on loopback: it decodes every
// export request's protobuf (gzip or not) and keeps the spans with their
// resource's service.name.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// spans in arrival order; service names each span's resource's
	// service.name.
	spans   []*tracepb.Span
	service []string
	// status, when set, is answered instead of 200.
	status int
	// hold, when set, blocks every export until it is closed.
	hold chan struct{}
	errs []string
}

// newBenchReceiver is an OTLP endpoint that accepts and discards exports.
func newBenchReceiver(tb testing.TB) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.handle))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.hold != nil {
			close(r.hold)
			r.hold = nil
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	hold, status := r.hold, r.status
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	fail := func(msg string) {
		r.mu.Lock()
		r.errs = append(r.errs, msg)
		r.mu.Unlock()
		http.Error(w, msg, http.StatusBadRequest)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		fail("unexpected " + req.Method + " " + req.URL.Path + " " + req.Header.Get("Content-Type"))
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			fail(err.Error())
			return
		}
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, 16<<20))
	if err != nil {
		fail(err.Error())
		return
	}
	var ex coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &ex); err != nil {
		fail("protobuf: " + err.Error())
		return
	}
	if status != 0 {
		http.Error(w, "refused", status)
		return
	}
	r.mu.Lock()
	for _, rs := range ex.ResourceSpans {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, s)
				r.service = append(r.service, svc)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// waitSpans flushes tr until the receiver holds at least n spans or 10s
// pass, and returns them.
func (r *receiver) waitSpans(t *testing.T, tr *Tracer, n int) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tr.ForceFlush(ctx)
		cancel()
		r.mu.Lock()
		got := append([]*tracepb.Span(nil), r.spans...)
		errs := append([]string(nil), r.errs...)
		r.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("receiver rejected exports: %v", errs)
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attr returns a span attribute's value as a string ("" when absent).
func attr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key != key {
			continue
		}
		switch v := a.GetValue().Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10)
		}
	}
	return ""
}

// recorder is an upstream on loopback that answers JSON and records the
// trace headers of every request.
type recorder struct {
	URL string
	mu  sync.Mutex
	tp  []string
	ts  []string
}

func newRecorder(t testing.TB, status int) *recorder {
	t.Helper()
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.tp = append(r.tp, req.Header.Get("traceparent"))
		r.ts = append(r.ts, req.Header.Get("tracestate"))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *recorder) headers() (tp, ts []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tp...), append([]string(nil), r.ts...)
}

// waitRequests waits (at most 10s) until the recorder has seen n requests.
func (r *recorder) waitRequests(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tp, _ := r.headers(); len(tp) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw fewer than %d requests in 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProxy runs a proxy for cfgText with tracer tr (nil: tracing off) on
// an in-memory listener and returns a client for it.
func startProxy(tb testing.TB, cfgText string, tr *Tracer) *fasthttp.HostClient {
	tb.Helper()
	cfg, err := config.Load("t.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatal(err)
	}
	opts := proxy.Options{Logger: zap.NewNop(), Metrics: metrics.New("test")}
	if tr != nil {
		opts.Tracer = tr
	}
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return fasttest.ServeInMemory(tb, srv)
}

// newTracer builds a Tracer exporting to rec with a short batch delay.
func newTracer(tb testing.TB, endpoint string, ratio float64, queue int, m *metrics.Metrics) *Tracer {
	tb.Helper()
	if m == nil {
		m = metrics.New("test")
	}
	cfg := &config.Tracing{OTLPEndpoint: endpoint, SampleRatio: &ratio, ServiceName: "edge-proxy", QueueSize: queue}
	tr, err := New(cfg, Options{Version: "test", Metrics: m, BatchTimeout: 50 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Shutdown(ctx)
	})
	return tr
}

func get(tb testing.TB, c *fasthttp.HostClient, uri string, hdr map[string]string) *fasthttp.Response {
	tb.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://proxy" + uri)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp := &fasthttp.Response{}
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		tb.Fatal(err)
	}
	return resp
}

func simpleConfig(up string) string {
	return "upstreams:\n  - {name: stable, url: \"" + up + "\"}\nroutes:\n  - {name: api, upstream: stable}\n"
}
