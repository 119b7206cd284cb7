package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const token = "fleet-test-token"

// member is one fleet member as a test sees it: a Node, a recorder per
// route served over a loopback admin-like listener, the shares it applied.
type member struct {
	name  string
	cli   *clientv3.Client
	node  *Node
	coord *Coordinator
	rec   *rollout.Recorder
	srv   *http.Server
	fail  bool // window endpoint answers 500

	mu      sync.Mutex
	applied map[string]RouteState
	cancel  context.CancelFunc
	done    chan struct{}
}

func (m *member) state(route string) RouteState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied[route]
}

func (m *member) setFail(f bool) {
	m.mu.Lock()
	m.fail = f
	m.mu.Unlock()
}

// kill stops the member without resigning or revoking anything, like a
// SIGKILL: its lease lapses after the TTL.
func (m *member) kill() {
	m.cancel()
	<-m.done
	m.cli.Close()
	m.node.Close()
	m.srv.Close()
}

type fleetOpts struct {
	policy   func(name string) string
	decider  func() Decider
	maxShare float64
}

func startMember(t *testing.T, e *fleettest.Etcd, prefix, name string, o fleetOpts) *member {
	t.Helper()
	cli, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, cli: cli, applied: map[string]RouteState{}, done: make(chan struct{}),
		rec: rollout.NewRecorder(nil, rollout.WithSlot(time.Second), rollout.WithRetention(5*time.Minute))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serveWindow), ReadHeaderTimeout: time.Second}
	go m.srv.Serve(ln)
	dec := o.decider()
	hash := "h1"
	if o.policy != nil {
		hash = o.policy(name)
	}
	m.node, err = New(Options{Client: cli, Prefix: prefix, Name: name, Advertise: "http://" + ln.Addr().String(),
		LeaseTTL: 2 * time.Second, Poll: 100 * time.Millisecond,
		Policies: func() map[string]string { return map[string]string{"api": hash} },
		OnState: func(v Versioned) {
			m.mu.Lock()
			m.applied[v.Route] = v.RouteState
			m.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if o.maxShare == 0 {
		o.maxShare = 0.25
	}
	merger := &Merger{Self: name, Token: token, MaxMissingShare: o.maxShare,
		Local: func(route string, from, to time.Time) ([]rollout.WindowStats, bool) {
			return m.rec.SlotWindows(from, to), true
		}}
	m.coord = &Coordinator{Node: m.node, Merger: merger, Decider: dec, Interval: 50 * time.Millisecond}
	m.node.Start()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { defer close(m.done); m.coord.Run(ctx) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
			return // killed already
		default:
		}
		cancel()
		<-m.done
		m.node.Close()
		cli.Close()
		m.srv.Close()
	})
	return m
}

func (m *member) serveWindow(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	fail := m.fail
	m.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+token {
		http.Error(w, "token required", http.StatusUnauthorized)
		return
	}
	if fail || r.URL.Path != WindowsPath {
		http.Error(w, "failing on purpose", http.StatusInternalServerError)
		return
	}
	route, from, to, err := ParseWindowQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	json.NewEncoder(w).Encode(EncodeSlots(m.name, route, m.rec.SlotWindows(from, to)))
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stepDecider is a small, deterministic rollout policy for exercising the
// fleet machinery: steps 10% → 50% → 100%, each held for hold; roll back
// when the fleet's canary 5xx rate exceeds 20% over at least 20 requests.
type stepDecider struct {
	hold  time.Duration
	steps []uint32
	// bookkeep, when set, makes every second evaluation change only
	// RouteState.Controller (its count), as the rollout controller records
	// a breach streak.
	bookkeep bool

	mu    sync.Mutex
	evals int
	// commits counts Committed calls by outcome.
	commits map[bool]int
}

func (d *stepDecider) Committed(route string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.commits == nil {
		d.commits = map[bool]int{}
	}
	d.commits[ok]++
}

func (d *stepDecider) commitCount(ok bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.commits[ok]
}

func newStepDecider(hold time.Duration) *stepDecider {
	return &stepDecider{hold: hold, steps: []uint32{1000, 5000, 10000}}
}

func (d *stepDecider) Policies() map[string]string { return map[string]string{"api": "h1"} }

func (d *stepDecider) Initial(route string, now time.Time) RouteState {
	return RouteState{State: "progressing", PercentBP: d.steps[0], StepStartedAt: now, DataSince: now, LastAction: "start"}
}

func (d *stepDecider) Decide(ctx context.Context, now time.Time, states map[string]RouteState, windows func(string) Windows) map[string]RouteState {
	out := map[string]RouteState{}
	for route, st := range states {
		if next, ok := d.decide(ctx, st, windows(route), now); ok {
			out[route] = next
		}
	}
	return out
}

func (d *stepDecider) decide(_ context.Context, st RouteState, w Windows, now time.Time) (RouteState, bool) {
	d.mu.Lock()
	d.evals++
	d.mu.Unlock()
	if st.State == "rolled_back" || st.State == "completed" {
		return st, false
	}
	fw := w(now.Add(-time.Minute), now, nil)
	c := fw.Stats.Canary
	if c.Requests >= 20 && c.ErrorRate5xx() > 0.2 {
		st.State, st.PercentBP, st.Halted, st.LastAction = "rolled_back", 0, true, "rollback"
		st.Reason = fmt.Sprintf("canary 5xx %.0f%% over %d requests; %s", 100*c.ErrorRate5xx(), c.Requests, fw.Explain())
		return st, true
	}
	d.mu.Lock()
	n := d.evals
	d.mu.Unlock()
	if d.bookkeep && n%2 == 0 {
		st.Controller = json.RawMessage(fmt.Sprintf(`{"evals":%d}`, n))
		return st, true
	}
	if st.State != "progressing" || st.Held(now) < d.hold {
		return st, false
	}
	if st.Step == len(d.steps)-1 {
		st.State, st.LastAction = "completed", "complete"
		return st, true
	}
	st.Step++
	st.PercentBP = d.steps[st.Step]
	st.StepStartedAt, st.DataSince, st.PausedNanos, st.LastAction = now, now, 0, "promote"
	return st, true
}

func (d *stepDecider) Command(_, action string, st RouteState, now time.Time) (RouteState, error) {
	switch {
	case action == "pause" && st.State == "progressing":
		st.State, st.PausedAt = "paused", &now
	case action == "resume" && st.State == "paused":
		st.PausedNanos += int64(now.Sub(*st.PausedAt))
		st.State, st.PausedAt = "progressing", nil
	default:
		return st, errors.New("invalid transition")
	}
	st.LastAction = action
	return st, nil
}

func leaderOf(t *testing.T, ms ...*member) *member {
	t.Helper()
	var l *member
	waitFor(t, 10*time.Second, "exactly one leader", func() bool {
		l = nil
		n := 0
		for _, m := range ms {
			if m.node.IsLeader() {
				l = m
				n++
			}
		}
		return n == 1
	})
	return l
}
