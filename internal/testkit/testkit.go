// Package testkit holds the helpers that tests of several packages share:
// polling for an eventual state, a settable clock, loopback servers and a
// JSON GET. It is imported only by _test.go files.
//
// It is a leaf package (standard library only), so that the tests of any
// package, including internal ones such as app's, can import it without an
// import cycle. Helpers that need the whole program running live in its
// apptest subpackage; fasttest holds the fasthttp request-path helpers
// (allocation pins, benchmarks) and manifest the walkers over decoded
// Kubernetes objects.
package testkit

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// EventuallyTimeout bounds every Eventually: generous, because the machines
// that run the suite may be slow and busy, and it only ever costs time when
// a test is failing anyway.
const EventuallyTimeout = 15 * time.Second

// Eventually polls cond until it holds, and fails the test naming what it
// waited for if EventuallyTimeout passes first. It never asserts on how long
// the wait took, only on the state eventually reached.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(EventuallyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Epoch is a fixed instant for clocks in tests; any instant works, a fixed
// one makes failures reproducible.
var Epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Clock is a settable clock, safe for concurrent use: inject its Now where
// code takes a func() time.Time, and move it with Advance.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// ServeLoopback serves h on a fresh 127.0.0.1 port until the test ends and
// returns its base URL ("http://127.0.0.1:port").
func ServeLoopback(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// ClosedAddr returns a 127.0.0.1 address nobody listens on: a port the
// kernel just handed out and that was closed again, so connecting to it is
// refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// GetJSON GETs url with c (http.DefaultClient when nil), fails the test
// unless the answer is 200, and decodes the body into v unless v is nil.
func GetJSON(t testing.TB, c *http.Client, url string, v any) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
}
