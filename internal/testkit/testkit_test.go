package testkit

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the failure and stops the
// helper (as the real one does, by unwinding) instead of failing this test.
type recorder struct {
	testing.TB
	failed string
}

type stopped struct{}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	panic(stopped{})
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(stopped{})
}

// run calls f with a recorder and returns what it failed with ("" if it
// did not).
func run(t *testing.T, f func(tb testing.TB)) string {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(stopped); !ok {
					panic(v)
				}
			}
		}()
		f(r)
	}()
	return r.failed
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	var mu sync.Mutex
	done := false
	go func() {
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		done = true
		mu.Unlock()
	}()
	polls := 0
	Eventually(t, "the flag", func() bool {
		polls++
		mu.Lock()
		defer mu.Unlock()
		return done
	})
	if polls < 2 {
		t.Errorf("the condition was polled %d times; it cannot have held at the first", polls)
	}
}

func TestClock(t *testing.T) {
	c := NewClock(Epoch)
	if !c.Now().Equal(Epoch) {
		t.Fatalf("Now = %v", c.Now())
	}
	if got := c.Advance(90 * time.Second); !got.Equal(Epoch.Add(90*time.Second)) || !c.Now().Equal(got) {
		t.Fatalf("Advance returned %v, Now %v", got, c.Now())
	}
	// Concurrent advances all land (run with -race).
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				c.Advance(time.Millisecond)
				c.Now()
			}
		}()
	}
	wg.Wait()
	if want := Epoch.Add(90*time.Second + 800*time.Millisecond); !c.Now().Equal(want) {
		t.Errorf("Now = %v, want %v", c.Now(), want)
	}
}

func TestServeLoopbackAndGetJSON(t *testing.T) {
	base := ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, `{"a":1}`)
		case "/garbage":
			io.WriteString(w, `{"a":`)
		default:
			http.Error(w, "no such thing", http.StatusNotFound)
		}
	}))
	if host, _, _ := net.SplitHostPort(base[len("http://"):]); host != "127.0.0.1" {
		t.Fatalf("served on %s, not loopback", base)
	}
	var v struct{ A int }
	if msg := run(t, func(tb testing.TB) { GetJSON(tb, nil, base+"/ok", &v) }); msg != "" || v.A != 1 {
		t.Errorf("GET /ok: failed %q, decoded %+v", msg, v)
	}
	if msg := run(t, func(tb testing.TB) { GetJSON(tb, nil, base+"/ok", nil) }); msg != "" {
		t.Errorf("GET /ok without a value: %q", msg)
	}
	for path, want := range map[string]string{
		"/missing": "GET " + base + "/missing: 404 Not Found no such thing\n",
		"/garbage": "GET " + base + "/garbage: unexpected end of JSON input: {\"a\":",
	} {
		if msg := run(t, func(tb testing.TB) { GetJSON(tb, &http.Client{Timeout: 5 * time.Second}, base+path, &v) }); msg != want {
			t.Errorf("GET %s failed with %q, want %q", path, msg, want)
		}
	}
}

func TestClosedAddrRefuses(t *testing.T) {
	addr := ClosedAddr(t)
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Fatalf("%s is not loopback", addr)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
}
