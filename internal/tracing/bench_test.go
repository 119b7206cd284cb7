package tracing

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkTracing measures a whole proxied request (client -> proxy in
// memory -> fasthttp upstream on loopback) with tracing off, and on at 1%
// and 100% sampling, exporting to an OTLP receiver on loopback. Compare the
// ns/op and allocs/op of the sub-benchmarks as ratios.
func BenchmarkTracing(b *testing.B) {
	up := startFastUpstream(b)
	for _, bc := range []struct {
		name  string
		ratio float64
		on    bool
	}{{"off", 0, false}, {"ratio=0.01", 0.01, true}, {"ratio=1", 1, true}} {
		b.Run(bc.name, func(b *testing.B) {
			var tr *Tracer
			if bc.on {
				rec := newBenchReceiver(b)
				tr = newTracer(b, rec, bc.ratio, 8192, nil)
			}
			c := startProxy(b, simpleConfig(up), tr)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for pb.Next() {
					req.Reset()
					req.SetRequestURI("http://proxy/api/items?page=2")
					if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
						b.Fatal(err, resp.StatusCode())
					}
				}
			})
		})
	}
}
