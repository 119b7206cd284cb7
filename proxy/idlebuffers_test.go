//go:build !race

package proxy

import (
	"testing"
)

// TestReleaseIdleBuffersAllocs: limits.release_idle_buffers reaches the
// server, keep-alive requests are still served, and its documented cost
// holds: one small allocation per request, where the default makes none.
func TestReleaseIdleBuffersAllocs(t *testing.T) {
	up := startFastUpstream(t)
	client, srv := benchProxy(t, simpleConfig(up, "")+"limits: {release_idle_buffers: true}\n")
	if !srv.srv.ReduceMemoryUsage {
		t.Fatal("limits.release_idle_buffers did not reach the server")
	}
	if n := requestAllocs(t, client, 200); n < 0.5 || n > 1.5 {
		t.Errorf("with release_idle_buffers a request allocates %.2f times; the README says 1", n)
	}
	_, def := benchProxy(t, simpleConfig(up, ""))
	if def.srv.ReduceMemoryUsage {
		t.Error("buffers are released by default")
	}
}
