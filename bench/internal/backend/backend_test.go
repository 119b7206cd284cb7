package backend

import (
	"io"
	"net/http"
	"testing"
	"time"
)

func TestBodySize(t *testing.T) {
	for _, size := range []int{256, 1024, 4096} {
		b := Body(size)
		if len(b) > size || len(b) < size-100 {
			t.Errorf("Body(%d) is %d bytes", size, len(b))
		}
	}
}

// TestCounts checks requests and connections are counted, and the stats
// request itself is not.
func TestCounts(t *testing.T) {
	s, err := Listen("127.0.0.1:0", time.Millisecond, 1024)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown()

	keepAlive := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 5; i++ {
		resp, err := keepAlive.Get("http://" + s.Addr() + "/api/items")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) < 900 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(b))
		}
	}
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := fresh.Get("http://" + s.Addr() + StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := s.Stats(); got.Requests != 5 || got.Conns != 1 {
		t.Errorf("stats = %+v, want 5 requests over 1 connection", got)
	}
}
