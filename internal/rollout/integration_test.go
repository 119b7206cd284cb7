package rollout

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shadowproxy/shadowproxy/internal/healthcheck"
	"github.com/shadowproxy/shadowproxy/internal/notify"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The real packages fit the small interfaces.
var (
	_ HealthProber  = (*healthcheck.Checker)(nil)
	_ WebhookSender = (*notify.Dispatcher)(nil)
)

// End to end over 127.0.0.1: a real canary health endpoint starts failing,
// a real healthcheck.Checker counts the failures, the controller rolls back,
// and a real notify.Dispatcher delivers the webhook to a receiver that
// fails its first attempt.
func TestRollbackWithRealHealthCheckAndWebhook(t *testing.T) {
	var canaryStatus atomic.Int32
	canaryStatus.Store(http.StatusOK)
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(canaryStatus.Load()))
	}))
	defer canary.Close()

	var hookAttempts atomic.Int32
	received := make(chan []byte, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if hookAttempts.Add(1) == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		received <- b
	}))
	defer hook.Close()

	d := notify.New(notify.Options{Backoff: time.Millisecond})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	}()

	spec := briefPolicyWithState(t, "")
	spec.Notify = []string{hook.URL + "/hook"}
	s := newSim(t, spec, 30)
	var checker *healthcheck.Checker
	s.opts.Notifier = Webhooks(d)
	s.opts.HealthProbe = func(route string, hc HealthCheck) (HealthProber, error) {
		c, err := healthcheck.New(healthcheck.Config{URL: canary.URL + hc.Path, Interval: hc.Interval.D(),
			Timeout: hc.Timeout.D(), ExpectStatus: hc.ExpectStatus})
		checker = c
		return c, err // not started: the test probes by hand, deterministically
	}
	s.start()
	defer s.ctrl.Close()
	s.runFor(time.Minute, nil)

	canaryStatus.Store(http.StatusServiceUnavailable)
	for i := 0; i < 3; i++ {
		if err := checker.Probe(context.Background()); err == nil {
			t.Fatal("probe of a 503 succeeded")
		}
	}
	s.ctrl.Tick(s.clock.Advance(time.Second))
	if st := s.status(); st.State != StateRolledBack {
		t.Fatalf("no rollback after 3 failed probes: %+v", st.LastEvaluation)
	}

	var body []byte
	select {
	case body = <-received:
	case <-time.After(10 * time.Second):
		t.Fatal("webhook not delivered")
	}
	var got struct {
		Text        string       `json:"text"`
		Route       string       `json:"route"`
		Action      string       `json:"action"`
		Explanation *Explanation `json:"explanation"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if got.Route != "api" || got.Action != ActionRollback || !strings.Contains(got.Text, "rolled back") ||
		got.Explanation == nil || len(got.Explanation.Rollback) != 1 || !got.Explanation.Rollback[0].Fired {
		t.Fatalf("webhook body %s", body)
	}
	if !strings.Contains(got.Text, "health_check_failures consecutive 3: 3 consecutive failed probes") {
		t.Fatalf("text %q", got.Text)
	}
	if st := d.Stats(); st.Retries != 1 {
		t.Fatalf("notify stats %+v", st)
	}
}

// Run ticks on a real timer until its context ends.
func TestRunTicksUntilCanceled(t *testing.T) {
	c := NewController(Options{TickEvery: 5 * time.Millisecond})
	rec := NewRecorder(nil)
	if err := c.AddRoute("api", Spec{}, rec, &fakeHandle{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	testkit.Eventually(t, "Run to evaluate the route", func() bool {
		st, _ := c.RouteStatus("api")
		return st.LastEvaluation != nil
	})
	cancel()
	<-done
}

// A state file that cannot be written is reported, and never blocks a
// transition: a rollback must happen on a full or read-only disk too.
func TestPersistFailureDoesNotBlockTransitions(t *testing.T) {
	spec := briefPolicyWithState(t, "")
	// Reading finds nothing (a first start); creating the directory fails,
	// even for root, because procfs does not allow it.
	spec.StateFile = "/proc/shadowproxy-test-no-such-dir/state.json"
	s := newSim(t, spec, 31)
	s.start()
	if st := s.status(); st.PersistError == "" {
		t.Fatal("no persist error reported")
	}
	if err := s.ctrl.Command("api", ActionRollback); err != nil {
		t.Fatal(err)
	}
	if bp, halted, _ := s.handle.get(); bp != 0 || !halted {
		t.Fatal("rollback blocked by the state file")
	}
	if s.logs.FilterMessageSnippet("cannot persist rollout state").Len() == 0 {
		t.Fatal("no log line")
	}
}
