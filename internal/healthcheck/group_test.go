package healthcheck

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

func TestGroupReportsTheWorstEndpoint(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer bad.Close()

	var mu sync.Mutex
	flipped := map[int]bool{}
	g, err := NewGroup([]string{ok.URL + "/h", bad.URL + "/h"}, Config{UnhealthyAfter: 2}, func(i int, healthy bool, s Status) {
		mu.Lock()
		defer mu.Unlock()
		flipped[i] = healthy
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for n := 1; n <= 3; n++ {
		for _, c := range g.checkers {
			c.Probe(context.Background())
		}
		if got := g.ConsecutiveFailures(); got != n {
			t.Fatalf("after %d rounds: %d consecutive failures, want the failing endpoint's %d", n, got, n)
		}
	}
	st := g.Status()
	if len(st) != 2 || st[0].URL != ok.URL+"/h" || st[1].URL != bad.URL+"/h" || st[0].ConsecutiveFailures != 0 || st[1].Healthy {
		t.Errorf("status %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if healthy, ok := flipped[1]; len(flipped) != 1 || !ok || healthy {
		t.Errorf("onChange calls by endpoint: %v, want only endpoint 1 turning unhealthy", flipped)
	}
}

func TestGroupRejectsNoEndpointsAndBadURLs(t *testing.T) {
	if _, err := NewGroup(nil, Config{}, nil); err == nil {
		t.Error("a group without endpoints was built")
	}
	if _, err := NewGroup([]string{"http://127.0.0.1:1/h", "ftp://x/h"}, Config{}, nil); err == nil || err.Error() != `endpoint ftp://x/h: healthcheck: invalid URL "ftp://x/h": want http:// or https:// with a host` {
		t.Errorf("err = %v", err)
	}
}
