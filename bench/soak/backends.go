package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/demo"
)

// backends are what the proxy runs in front of: the demo's v1, v1-twin and
// v2, a slow shadow, a flaky upstream and a port nobody listens on.
type backends struct {
	demo  *demo.Backends
	slow  *http.Server
	flaky net.Listener
	wg    sync.WaitGroup

	slowURL, flakyURL, deadURL string
}

func startBackends() (*backends, error) {
	d, err := demo.StartBackends()
	if err != nil {
		return nil, err
	}
	b := &backends{demo: d}
	// slow answers in 20-400ms, and 3% of the time in 3s: a shadow with a
	// 200ms timeout behind it times out often and sometimes hangs.
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.close()
		return nil, err
	}
	b.slowURL = "http://" + sl.Addr().String()
	b.slow = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := time.Duration(20+rand.IntN(380)) * time.Millisecond
		if rand.IntN(100) < 3 {
			d = 3 * time.Second
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"slow":true,"ms":%d}`, d.Milliseconds())
	}), ReadHeaderTimeout: 5 * time.Second}
	go b.slow.Serve(sl)

	// flaky resets 8% of requests, answers 8% with a 500 and 4% with
	// garbage, and the rest with a keep-alive 200.
	if b.flaky, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.close()
		return nil, err
	}
	b.flakyURL = "http://" + b.flaky.Addr().String()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := b.flaky.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				serveFlaky(c)
			}()
		}
	}()

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.close()
		return nil, err
	}
	b.deadURL = "http://" + dead.Addr().String()
	dead.Close()
	return b, nil
}

func serveFlaky(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		switch n := rand.IntN(100); {
		case n < 8:
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return
		case n < 16:
			io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
		case n < 20:
			io.WriteString(c, "HTTP/1.1 ok\r\n\r\n")
			return
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
		}
	}
}

func (b *backends) close() {
	if b.demo != nil {
		b.demo.Close()
	}
	if b.slow != nil {
		b.slow.Close()
	}
	if b.flaky != nil {
		b.flaky.Close()
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
