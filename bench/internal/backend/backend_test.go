package backend

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
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

// TestSlowDelay checks that only paths under SlowPrefix wait the slow
// delay, that the others keep the server's own delay, and that without
// SetSlowDelay /slow is like any other path. The sleeps are recorded, not
// timed.
func TestSlowDelay(t *testing.T) {
	const fast, slow = 2 * time.Millisecond, 50 * time.Millisecond
	cases := []struct {
		name      string
		slowDelay time.Duration
		path      string
		want      time.Duration // 0: no sleep
	}{
		{"slow path", slow, "/slow", slow},
		{"slow path with query", slow, "/slow/x?id=1", slow},
		{"fast path", slow, "/api/items", fast},
		{"prefix elsewhere", slow, "/api/slow", fast},
		{"unset: slow path keeps the default", 0, "/slow", fast},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Listen("127.0.0.1:0", fast, 256)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex // the handler runs on the server's goroutine
			var slept []time.Duration
			s.sleep = func(d time.Duration) { mu.Lock(); slept = append(slept, d); mu.Unlock() }
			s.SetSlowDelay(tc.slowDelay)
			go s.Serve()
			defer s.Shutdown()
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.Addr() + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(slept) != 1 || slept[0] != tc.want {
				t.Errorf("slept %v, want [%v]", slept, tc.want)
			}
		})
	}
}

// TestFlushEach sends a fast and a slow request pipelined in one write and
// checks that, with SetFlushEach, the fast answer arrives while the slow
// handler is still held (its sleep blocks until the test releases it). The
// read deadline only keeps a broken build from hanging the test.
func TestFlushEach(t *testing.T) {
	s, err := Listen("127.0.0.1:0", 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	s.sleep = func(time.Duration) { <-release }
	s.SetSlowDelay(time.Hour) // never slept for real: sleep is replaced
	s.SetFlushEach(true)
	go s.Serve()
	defer s.Shutdown()
	defer close(release)

	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: b\r\n\r\nGET /slow HTTP/1.1\r\nHost: b\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the fast answer did not arrive while the slow one was held: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
