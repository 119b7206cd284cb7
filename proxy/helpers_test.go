package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
)

// upstreamServer is a net/http server on 127.0.0.1 that counts the TCP
// connections it accepts.
type upstreamServer struct {
	URL   string
	Addr  string
	conns atomic.Int64
	srv   *http.Server
}

func startUpstream(t testing.TB, h http.HandlerFunc) *upstreamServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamServer{Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}}
	go u.srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		u.srv.Shutdown(ctx)
		u.srv.Close()
	})
	return u
}

type testProxy struct {
	Addr string
	URL  string
	Srv  *Server
	Met  *metrics.Metrics
	Logs *observer.ObservedLogs
	stop func()
}

// startProxy loads yamlText (with %s placeholders already filled) and serves
// it on a fresh 127.0.0.1 port.
func startProxy(t testing.TB, yamlText string) *testProxy {
	t.Helper()
	return startProxyWith(t, yamlText, nil)
}

// startProxyWith is startProxy with a Comparer for mirrored exchanges.
// The returned proxy's stop shuts it down (also done at cleanup).
func startProxyWith(t testing.TB, yamlText string, comparer Comparer) *testProxy {
	t.Helper()
	cfg := mustLoad(t, yamlText)
	core, logs := observer.New(zap.DebugLevel)
	m := metrics.New("test")
	srv, err := New(cfg, Options{Logger: zap.New(core), Metrics: m, Comparer: comparer})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serveLoopback(t, srv)
	return &testProxy{Addr: addr, URL: "http://" + addr, Srv: srv, Met: m, Logs: logs, stop: stop}
}

// serveLoopback serves srv on a fresh 127.0.0.1 port and returns its
// address and a stop that shuts srv down and waits for Serve to return.
// stop runs at cleanup too; calling it earlier is allowed.
func serveLoopback(t testing.TB, srv *Server) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// serveConns is a bare TCP server on a fresh 127.0.0.1 port for upstreams
// that speak raw bytes: handle gets each accepted connection, which is
// closed when handle returns. At cleanup the listener and every open
// connection are closed and the test waits for every handle to return.
// Unlike startWireUpstream it records nothing, so it neither allocates per
// request (allocation pins) nor holds what it reads (memory tests).
func serveConns(t testing.TB, handle func(c net.Conn)) (url string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// loadLoop sends n GETs to url from workers goroutines and fails the test
// on a transport error.
func loadLoop(t testing.TB, client *http.Client, url string, workers, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				resp, err := client.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

func mustLoad(t testing.TB, yamlText string) *config.Config {
	t.Helper()
	cfg, err := config.Load("test.yaml", []byte(yamlText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// simpleConfig routes everything to one upstream.
func simpleConfig(upstreamURL string, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:1
upstreams:
  - name: stable
    url: %s
%s
routes:
  - name: default
    upstream: stable
`, upstreamURL, extra)
}

// rawRequest writes req on a new TCP connection and returns the response.
func rawRequest(t testing.TB, addr, req string) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func readBody(t testing.TB, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
