package healthcheck

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is a real 127.0.0.1 server whose health status can be switched.
func upstream(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	return srv, &status
}

func TestProbeCountsConsecutiveFailures(t *testing.T) {
	srv, status := upstream(t)
	var changes []bool
	c, err := New(Config{URL: srv.URL + "/healthz", ExpectStatus: 200, UnhealthyAfter: 3, HealthyAfter: 2,
		OnChange: func(h bool, _ Status) { changes = append(changes, h) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Probe(ctx); err != nil || c.ConsecutiveFailures() != 0 || !c.Healthy() {
		t.Fatalf("healthy probe: err %v, failures %d", err, c.ConsecutiveFailures())
	}
	status.Store(http.StatusServiceUnavailable)
	for i := 1; i <= 3; i++ {
		if err := c.Probe(ctx); err == nil {
			t.Fatal("503 probe succeeded")
		}
		if got := c.ConsecutiveFailures(); got != i {
			t.Fatalf("after %d failures: %d", i, got)
		}
		if want := i < 3; c.Healthy() != want {
			t.Fatalf("after %d failures healthy = %v", i, c.Healthy())
		}
	}
	status.Store(http.StatusOK)
	_ = c.Probe(ctx)
	if c.ConsecutiveFailures() != 0 || c.Healthy() {
		t.Fatalf("one success: failures %d healthy %v (HealthyAfter is 2)", c.ConsecutiveFailures(), c.Healthy())
	}
	_ = c.Probe(ctx)
	if !c.Healthy() {
		t.Fatal("two successes: still unhealthy")
	}
	s := c.Status()
	if s.Checks != 6 || s.Failures != 3 || s.LastStatus != 200 || s.LastError != "" {
		t.Fatalf("status %+v", s)
	}
	if len(changes) != 2 || changes[0] || !changes[1] {
		t.Fatalf("changes %v", changes)
	}
}

func TestExpectStatusAndAny2xx(t *testing.T) {
	srv, status := upstream(t)
	status.Store(http.StatusNoContent)
	strict, _ := New(Config{URL: srv.URL + "/healthz", ExpectStatus: 200})
	loose, _ := New(Config{URL: srv.URL + "/healthz"})
	if err := strict.Probe(context.Background()); err == nil {
		t.Fatal("204 accepted with expect_status 200")
	}
	if err := loose.Probe(context.Background()); err != nil {
		t.Fatalf("204 rejected without expect_status: %v", err)
	}
}

func TestTimeoutAndRefusedAreFailures(t *testing.T) {
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hang)
	c, _ := New(Config{URL: slow.URL + "/healthz", Timeout: 20 * time.Millisecond})
	if err := c.Probe(context.Background()); err == nil || c.ConsecutiveFailures() != 1 {
		t.Fatalf("hanging upstream: err %v failures %d", err, c.ConsecutiveFailures())
	}

	// A port nobody listens on.
	c2, _ := New(Config{URL: "http://" + testkit.ClosedAddr(t) + "/healthz", Timeout: time.Second})
	if err := c2.Probe(context.Background()); err == nil || c2.ConsecutiveFailures() != 1 {
		t.Fatalf("refused: err %v failures %d", err, c2.ConsecutiveFailures())
	}
}

func TestStartProbesPeriodicallyUntilClose(t *testing.T) {
	srv, status := upstream(t)
	status.Store(http.StatusInternalServerError)
	c, _ := New(Config{URL: srv.URL + "/healthz", Interval: 5 * time.Millisecond, Timeout: time.Second})
	c.Start()
	c.Start() // idempotent
	deadline := time.Now().Add(10 * time.Second)
	for c.ConsecutiveFailures() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d failures", c.ConsecutiveFailures())
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checks := c.Status().Checks
	time.Sleep(20 * time.Millisecond)
	if c.Status().Checks != checks {
		t.Fatal("probing continued after Close")
	}
	_ = c.Close() // idempotent
}

func TestCloseBeforeStart(t *testing.T) {
	c, _ := New(Config{URL: "http://127.0.0.1:1/healthz"})
	_ = c.Close()
	c.Start() // must not start a goroutine (goleak checks)
}

func TestInvalidURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1/healthz", "ftp://x/healthz", "http:///healthz"} {
		if _, err := New(Config{URL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}
