package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func closeNow(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

type event struct {
	Route  string `json:"route"`
	Action string `json:"action"`
}

func TestRetriesAfterFailedFirstAttempt(t *testing.T) {
	var attempts atomic.Int32
	bodies := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		if attempts.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		bodies <- b
	}))
	defer srv.Close()

	d := New(Options{Backoff: time.Millisecond, Timeout: 5 * time.Second})
	if !d.Send([]string{srv.URL + "/hook"}, "canary rolled back", event{Route: "api", Action: "rollback"}) {
		t.Fatal("Send dropped")
	}
	var body []byte
	select {
	case body = <-bodies:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	closeNow(t, d)

	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if got["text"] != "canary rolled back" || got["route"] != "api" || got["action"] != "rollback" {
		t.Fatalf("body = %s", body)
	}
	st := d.Stats()
	if st.Delivered != 1 || st.Retries != 1 || st.Failed != 0 || st.Enqueued != 1 || attempts.Load() != 2 {
		t.Fatalf("stats = %+v, attempts %d", st, attempts.Load())
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	core, logs := observer.New(zap.WarnLevel)
	d := New(Options{Backoff: time.Millisecond, Logger: zap.New(core)})
	d.Send([]string{srv.URL + "/services/T0/B0/secret-token"}, "x", nil)
	testkit.Eventually(t, "failure", func() bool { return d.Stats().Failed == 1 })
	closeNow(t, d)
	if attempts.Load() != 1 || d.Stats().Retries != 0 {
		t.Fatalf("attempts %d, stats %+v", attempts.Load(), d.Stats())
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if f.String != "" && contains(f.String, "secret-token") {
				t.Fatalf("log leaks the webhook path: %v", e.Context)
			}
		}
	}
	if logs.FilterMessage("notification failed").Len() != 1 {
		t.Fatalf("want one failure log, got %v", logs.All())
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	d := New(Options{Backoff: time.Millisecond, MaxAttempts: 3})
	d.Send([]string{srv.URL}, "x", nil)
	testkit.Eventually(t, "failure", func() bool { return d.Stats().Failed == 1 })
	closeNow(t, d)
	if attempts.Load() != 3 || d.Stats().Retries != 2 {
		t.Fatalf("attempts %d, stats %+v", attempts.Load(), d.Stats())
	}
}

func TestAttemptIsBoundedByTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	d := New(Options{Timeout: 20 * time.Millisecond, Backoff: time.Millisecond, MaxAttempts: 2})
	d.Send([]string{srv.URL}, "x", nil)
	testkit.Eventually(t, "timeout failure", func() bool { return d.Stats().Failed == 1 })
	closeNow(t, d)
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	block := make(chan struct{})
	var started sync.Once
	inFlight := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Do(func() { close(inFlight) })
		<-block
	}))
	defer srv.Close()
	d := New(Options{QueueSize: 2, Workers: 1, Timeout: 10 * time.Second})
	d.Send([]string{srv.URL}, "first", nil)
	<-inFlight // the worker is busy; the queue is empty
	ok1 := d.Send([]string{srv.URL}, "2", nil)
	ok2 := d.Send([]string{srv.URL}, "3", nil)
	ok3 := d.Send([]string{srv.URL, srv.URL}, "4 and 5", nil)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("send results %v %v %v", ok1, ok2, ok3)
	}
	st := d.Stats()
	if st.Dropped != 2 || st.Enqueued != 3 || st.QueueLength != 2 {
		t.Fatalf("stats = %+v", st)
	}
	close(block)
	closeNow(t, d)
	if st := d.Stats(); st.Delivered != 3 {
		t.Fatalf("after drain: %+v", st)
	}
	if d.Send([]string{srv.URL}, "late", nil) {
		t.Fatal("Send after Close accepted")
	}
}

func TestCloseGivesUpAtDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a closed client only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer srv.Close()
	d := New(Options{Workers: 1, Timeout: time.Minute})
	d.Send([]string{srv.URL}, "x", nil)
	d.Send([]string{srv.URL}, "y", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); err == nil {
		t.Fatal("Close returned nil while a delivery hung")
	}
}

func TestEncode(t *testing.T) {
	b, err := Encode("hello", map[string]int{"n": 1})
	if err != nil || string(b) != `{"n":1,"text":"hello"}` {
		t.Fatalf("%s %v", b, err)
	}
	b, _ = Encode("hello", []int{1})
	if string(b) != `{"data":[1],"text":"hello"}` {
		t.Fatalf("%s", b)
	}
	b, _ = Encode("hello", nil)
	if string(b) != `{"text":"hello"}` {
		t.Fatalf("%s", b)
	}
	if _, err := Encode("x", func() {}); err == nil {
		t.Fatal("want an error for an unencodable payload")
	}
}
