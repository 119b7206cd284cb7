package app

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestTracingWiredAndFlushedAtShutdown: a tracing section makes the App
// trace, and Shutdown exports the spans still queued (the batch delay is
// 5s; the test shuts down at once).
func TestTracingWiredAndFlushedAtShutdown(t *testing.T) {
	var mu sync.Mutex
	names := map[string]bool{}
	collector := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		data, _ := io.ReadAll(body)
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &ex); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		for _, rs := range ex.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names[s.Name] = true
				}
			}
		}
		mu.Unlock()
	}))
	up := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	a := startApp(t, `
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstreams: [{name: stable, url: "`+up+`"}]
routes: [{name: api, upstream: stable}]
tracing: {otlp_endpoint: "`+collector+`", sample_ratio: 1}
`, Options{})
	testkit.GetJSON(t, nil, "http://"+a.ProxyAddr()+"/x", nil)
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !names["GET api"] || !names["GET stable"] {
		t.Errorf("spans exported by shutdown: %v, want the server span and the upstream span", names)
	}
}
