package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPipelinedUpstream: with pipeline_conns, concurrent GETs are answered
// correctly over a handful of connections, POSTs still work (on the pool),
// and a hanging answer is still a 504 at the timeout.
func TestPipelinedUpstream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
	})
	p := startProxy(t, simpleConfig(up.URL, "    pipeline_conns: 2\n    timeout: 300ms"))
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				uri := fmt.Sprintf("/g?w=%d&i=%d", w, i)
				resp, err := client.Get(p.URL + uri)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "GET "+uri+" " {
					t.Errorf("pipelined answer mixed up: asked %s, got %q", uri, b)
				}
			}
		}(w)
	}
	wg.Wait()
	if c := up.conns.Load(); c > 2 {
		t.Errorf("%d upstream connections for pipelined GETs, want at most 2", c)
	}
	resp, err := client.Post(p.URL+"/p", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "POST /p body" {
		t.Errorf("POST answer %q", b)
	}
	if resp := rawRequest(t, p.Addr, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 504 {
		t.Errorf("hanging pipelined request: %d, want 504", resp.StatusCode)
	}
}
