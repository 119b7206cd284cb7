//go:build !race

package proxy

import (
	"testing"

	"github.com/shadowproxy/shadowproxy/internal/testkit/fasttest"
)

// TestReleaseIdleBuffersAllocs: limits.release_idle_buffers reaches the
// server, keep-alive requests are still served, and the request path stays
// at zero allocations with it: fasthttp's one-byte heap read happened only
// without StreamRequestBody, which the server now always sets.
func TestReleaseIdleBuffersAllocs(t *testing.T) {
	up := fasttest.StartUpstream(t)
	client, srv := benchProxy(t, simpleConfig(up, "")+"limits: {release_idle_buffers: true}\n")
	if !srv.srv.ReduceMemoryUsage {
		t.Fatal("limits.release_idle_buffers did not reach the server")
	}
	if n := requestAllocs(t, client, 200); n > 0 {
		t.Errorf("with release_idle_buffers a request allocates %.2f times; the README says 0", n)
	}
	_, def := benchProxy(t, simpleConfig(up, ""))
	if def.srv.ReduceMemoryUsage {
		t.Error("buffers are released by default")
	}
}
