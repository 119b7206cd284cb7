package tracing

import (
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
)

// BenchmarkTracing measures a whole proxied request (client -> proxy in
// memory -> fasthttp upstream on loopback) with tracing off, and on at 1%
// and 100% sampling, exporting to an OTLP receiver on loopback. Compare the
// ns/op and allocs/op of the sub-benchmarks as ratios.
func BenchmarkTracing(b *testing.B) {
	up := fasttest.StartUpstream(b)
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
			fasttest.RunParallel(b, c, nil)
		})
	}
}
