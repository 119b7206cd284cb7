package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/fleet"
	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

const fleetToken = "fleet-token"

func fleetTestLogger(t *testing.T, name string) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).With(zap.String("m", name))
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fleetMember is one proxy of a test fleet, with its own canary server so
// that a test can break the canary behind one member only.
type fleetMember struct {
	name   string
	app    *App
	canary *versionServer
	admin  string
}

func startFleetMember(t *testing.T, e *fleettest.Etcd, prefix, name, stableURL, policy string) *fleetMember {
	t.Helper()
	return startFleetMemberIn(t, e, prefix, name, stableURL, policy, filepath.Join(t.TempDir(), name))
}

// startFleetMemberIn starts a member whose fleet.state_dir is stateDir.
func startFleetMemberIn(t *testing.T, e *fleettest.Etcd, prefix, name, stableURL, policy, stateDir string) *fleetMember {
	t.Helper()
	m := &fleetMember{name: name, canary: startVersion(t, "canary"), admin: freePort(t)}
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: %s
admin: {token: %s}
upstreams:
  - {name: stable, url: %s}
  - {name: canary, url: %s}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    rollout:
      interval: 100ms
      window: 3s
      min_samples: 30
%s
fleet:
  name: %s
  advertise: http://%s
  lease_ttl: 2s
  state_dir: %s
  etcd:
    endpoints: [%s]
    prefix: %s
    dial_timeout: 2s
`, m.admin, fleetToken, stableURL, m.canary.url, policy, name, m.admin, stateDir, e.Endpoint(), prefix)
	m.app = startApp(t, cfg, Options{Logger: fleetTestLogger(t, name)})
	return m
}

// pacedLoad sends requests with random users through proxyURL, one every
// 2ms at most, until stop is closed or max requests were sent: enough for
// the rollout's samples without starving the machine.
func pacedLoad(t *testing.T, proxyURL string, stop <-chan struct{}, max int) (wait func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 5 * time.Second}
		for i := 0; i < max; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			req, _ := http.NewRequest("GET", proxyURL+"/buy", nil)
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", rand.IntN(100000)))
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return func() { <-done }
}

// kill drops the member like a crashed process: its etcd connection goes
// first, so its lease lapses after the TTL instead of being revoked.
func (m *fleetMember) kill() {
	m.app.rollouts.fleet.cli.Close()
	m.app.Shutdown(context.Background())
}

func (m *fleetMember) share() uint32 {
	return uint32(m.app.Proxy().Snapshot().Route("shop").CanaryPercent())
}

func (m *fleetMember) fleetView(t *testing.T) FleetView {
	var v FleetView
	testkit.GetJSON(t, nil, "http://"+m.admin+"/api/v1/fleet", &v)
	return v
}

func (m *fleetMember) post(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+m.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func leaderMember(t *testing.T, ms []*fleetMember) *fleetMember {
	t.Helper()
	var l *fleetMember
	testkit.Eventually(t, "one leader", func() bool {
		n := 0
		for _, m := range ms {
			if m.app.rollouts.fleet.node.IsLeader() {
				l, n = m, n+1
			}
		}
		return n == 1
	})
	return l
}

// sameEverywhere waits for cond on one member, then gives every member 1s
// to show the same share and state.
func sameEverywhere(t *testing.T, ms []*fleetMember, what string, cond func(*fleetMember) bool) {
	t.Helper()
	testkit.Eventually(t, what, func() bool {
		for _, m := range ms {
			if cond(m) {
				return true
			}
		}
		return false
	})
	deadline := time.Now().Add(time.Second)
	for {
		ok := true
		for _, m := range ms {
			ok = ok && cond(m)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, m := range ms {
				t.Logf("%s: share %d bp, fleet state %+v", m.name, m.share(), m.app.rollouts.fleet.status().(FleetView).Routes["shop"])
			}
			t.Fatalf("%s: not applied on every member within 1s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fleetState(m *fleetMember) (state string, step int) {
	st := m.app.rollouts.fleet.status().(FleetView).Routes["shop"]
	return st.State, st.Step
}

// TestFleetEndToEnd runs three proxies as one fleet on a real etcd:
// identical shares within 1s of each transition, a pause sent to one
// member applied by all, the leader killed mid-step with the step and hold
// clock carried on, and a canary failing behind one member only rolled
// back fleet-wide by the new leader.
func TestFleetEndToEnd(t *testing.T) {
	e := fleettest.StartEtcd(t)
	stable := startVersion(t, "stable")
	// Every member's controller may notify: the fleet must send each
	// transition once, from the member that made it happen.
	var hookMu sync.Mutex
	hooks := map[string]int{}
	hookURL := testkit.ServeLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Action string `json:"action"`
		}
		json.NewDecoder(r.Body).Decode(&ev)
		hookMu.Lock()
		hooks[ev.Action]++
		hookMu.Unlock()
	}))
	hookCount := func(action string) int {
		hookMu.Lock()
		defer hookMu.Unlock()
		return hooks[action]
	}
	policy := `
      steps: [{percent: 10, hold: 1s}, {percent: 50, hold: 1h}, {percent: 100}]
      notify: [` + hookURL + `]
      promote_when:
        - {metric: error_rate_5xx, below: 5%}
      rollback_when:
        - {metric: error_rate_5xx, above: 20%, for: 200ms}
`
	var ms []*fleetMember
	for _, n := range []string{"a", "b", "c"} {
		ms = append(ms, startFleetMember(t, e, "/sp/e2e", n, stable.url, policy))
	}
	leader := leaderMember(t, ms)
	sameEverywhere(t, ms, "10% everywhere", func(m *fleetMember) bool { return m.share() == 1000 })
	testkit.Eventually(t, "members see each other", func() bool {
		for _, m := range ms {
			if v := m.fleetView(t); len(v.Members) != 3 || v.Leader != leader.name || v.Etcd != "up" {
				return false
			}
		}
		return true
	})

	stop := make(chan struct{})
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
	}()
	var waits []func()
	for _, m := range ms {
		waits = append(waits, pacedLoad(t, "http://"+m.app.ProxyAddr(), stop, 30000))
	}
	sameEverywhere(t, ms, "promotion to 50%", func(m *fleetMember) bool { return m.share() == 5000 })

	// A member joining late adopts the fleet's share before it serves.
	late := startFleetMember(t, e, "/sp/e2e", "d", stable.url, policy)
	if late.share() != 5000 {
		t.Errorf("late member serves %d bp at start, want the fleet's 5000", late.share())
	}
	testkit.Eventually(t, "the late member sees the leader", func() bool { return late.fleetView(t).Leader == leader.name })
	late.app.Shutdown(context.Background())

	// Pause on a follower: every member shows it.
	var follower *fleetMember
	for _, m := range ms {
		if m != leader {
			follower = m
		}
	}
	if code, body := follower.post(t, "/api/v1/rollouts/shop/pause"); code != 200 {
		t.Fatalf("pause on %s: %d %s", follower.name, code, body)
	}
	sameEverywhere(t, ms, "pause", func(m *fleetMember) bool { s, _ := fleetState(m); return s == "paused" })
	for _, m := range ms {
		if st := rollouts(t, "http://"+m.admin); st[0].State != "paused" || st[0].Step != 1 {
			t.Errorf("%s /api/v1/rollouts = %+v", m.name, st)
		}
	}
	if code, _ := follower.post(t, "/api/v1/rollouts/shop/pause"); code != http.StatusConflict {
		t.Errorf("second pause: %d, want 409", code)
	}
	if code, body := leader.post(t, "/api/v1/rollouts/shop/resume"); code != 200 {
		t.Fatalf("resume: %d %s", code, body)
	}
	sameEverywhere(t, ms, "resume", func(m *fleetMember) bool { s, _ := fleetState(m); return s == "progressing" })
	testkit.Eventually(t, "webhooks for promote, pause and resume", func() bool {
		return hookCount("promote") >= 1 && hookCount("pause") >= 1 && hookCount("resume") >= 1
	})
	time.Sleep(300 * time.Millisecond) // room for duplicates to arrive, if any were sent
	for _, a := range []string{"promote", "pause", "resume"} {
		if n := hookCount(a); n != 1 {
			t.Errorf("%d %q webhooks for one fleet transition, want 1", n, a)
		}
		// Each member counts each fleet transition once, adoption or not.
		for _, m := range ms {
			if v := testutil.ToFloat64(m.app.Metrics().RolloutTransitions.WithLabelValues("shop", a)); v != 1 {
				t.Errorf("%s: rollout_transitions_total{action=%q} = %v, want 1", m.name, a, v)
			}
		}
	}
	before := follower.app.rollouts.fleet.status().(FleetView).Routes["shop"]

	// Kill the leader mid-step: another member leads, same step, same clock.
	leader.kill()
	var rest []*fleetMember
	for _, m := range ms {
		if m != leader {
			rest = append(rest, m)
		}
	}
	next := leaderMember(t, rest)
	testkit.Eventually(t, "the new leader's controller holds the fleet's step", func() bool {
		st, ok := next.app.rollouts.controller.RouteStatus("shop")
		return ok && st.Step == 1 && st.Since.Equal(before.StepStartedAt)
	})
	after := next.app.rollouts.fleet.status().(FleetView).Routes["shop"]
	if after.Step != 1 || !after.StepStartedAt.Equal(before.StepStartedAt) || after.PausedNanos != before.PausedNanos || after.PausedNanos == 0 {
		t.Fatalf("hold clock not carried over: before %+v, after %+v", before, after)
	}

	// Break the canary behind one surviving member only.
	failing := rest[0]
	failing.canary.failing.Store(true)
	sameEverywhere(t, rest, "fleet-wide rollback", func(m *fleetMember) bool {
		s, _ := fleetState(m)
		return s == "rolled_back" && m.share() == 0
	})
	nv := next.fleetView(t)
	if n := nv.Numbers["shop"]; len(n.Answered) < 2 || !strings.Contains(n.Explanation, "fleet numbers from") {
		t.Errorf("the leader does not say whose numbers it used: %+v", n)
	}
	final := next.app.rollouts.fleet.status().(FleetView).Routes["shop"]
	if !strings.Contains(final.Reason, "fleet numbers from") {
		t.Errorf("rollback reason does not say whose numbers it rests on: %q", final.Reason)
	}
	if final.UpdatedBy != next.name {
		t.Errorf("rollback written by %q, want the new leader %q", final.UpdatedBy, next.name)
	}
	for _, m := range rest {
		if m != failing && m.canary.failing.Load() {
			t.Fatal("test bug: more than one canary failing")
		}
	}
	// The fleet scope adds the members' request counts.
	close(stop)
	stopped = true
	for _, w := range waits {
		w()
	}
	var fr FleetRoutesView
	testkit.GetJSON(t, nil, "http://"+next.admin+"/api/v1/routes?scope=fleet", &fr)
	var sum float64
	for _, name := range fr.Answered {
		for _, m := range ms {
			if m.name == name {
				for _, rv := range m.app.routeViews() {
					if rv.Route == "shop" {
						sum += rv.Requests
					}
				}
			}
		}
	}
	if len(fr.Routes) != 1 || len(fr.Answered) < 2 || fr.Routes[0].Requests != sum || sum == 0 {
		t.Errorf("fleet routes = %+v, want shop requests %v over the answering members", fr, sum)
	}
	if v := testutil.ToFloat64(next.app.rollouts.fleet.met.IsLeader); v != 1 {
		t.Errorf("fleet_is_leader on the leader = %v", v)
	}
}

// TestFleetSurvivesEtcdOutage stops etcd mid-rollout: proxies keep serving
// with their shares, stay ready, report etcd down, refuse commands and make
// no transition; when etcd returns the rollout continues.
func TestFleetSurvivesEtcdOutage(t *testing.T) {
	e := fleettest.StartEtcd(t)
	stable := startVersion(t, "stable")
	policy := `
      steps: [{percent: 10, hold: 1500ms}, {percent: 50, hold: 1500ms}, {percent: 100}]
      promote_when:
        - {metric: error_rate_5xx, below: 5%}
`
	ms := []*fleetMember{
		startFleetMember(t, e, "/sp/outage", "a", stable.url, policy),
		startFleetMember(t, e, "/sp/outage", "b", stable.url, policy),
	}
	leaderMember(t, ms)
	stop := make(chan struct{})
	defer close(stop)
	for _, m := range ms {
		pacedLoad(t, "http://"+m.app.ProxyAddr(), stop, 30000)
	}
	sameEverywhere(t, ms, "the fleet's 10% everywhere", func(m *fleetMember) bool {
		_, ok := m.fleetView(t).Routes["shop"]
		return ok && m.share() == 1000
	})

	e.Stop()
	testkit.Eventually(t, "etcd reported down", func() bool {
		for _, m := range ms {
			if m.fleetView(t).Etcd != "down" || testutil.ToFloat64(m.app.rollouts.fleet.met.EtcdUp) != 0 {
				return false
			}
		}
		return true
	})
	shares := []uint32{ms[0].share(), ms[1].share()}
	if shares[0] != shares[1] {
		t.Fatalf("shares differ at the outage: %v", shares)
	}
	time.Sleep(2 * time.Second) // longer than a hold: a promotion would be due
	for i, m := range ms {
		if m.share() != shares[i] {
			t.Errorf("%s changed its share while etcd was down: %d -> %d", m.name, shares[i], m.share())
		}
		resp, err := http.Get("http://" + m.admin + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s not ready while etcd is down: %v %v", m.name, resp, err)
		} else {
			resp.Body.Close()
		}
		req, _ := http.NewRequest("GET", "http://"+m.app.ProxyAddr()+"/buy", nil)
		req.Header.Set("X-User-ID", "outage-user")
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s stopped serving while etcd is down: %v %v", m.name, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	if code, body := ms[1].post(t, "/api/v1/rollouts/shop/pause"); code != http.StatusConflict || !strings.Contains(body, "etcd is unreachable") {
		t.Errorf("command during outage: %d %s", code, body)
	}

	e.Start()
	sameEverywhere(t, ms, "rollout continues after etcd returns", func(m *fleetMember) bool { return m.share() > shares[0] })
	for _, m := range ms {
		if v := m.fleetView(t); v.Etcd != "up" {
			t.Errorf("%s still reports etcd %s", m.name, v.Etcd)
		}
	}
}

// TestFleetHoldsDuringRollingConfigChange: a reload that changes one
// member's rollout policy is republished; the leader holds the route and
// says which member has which policy until the members agree again.
func TestFleetHoldsDuringRollingConfigChange(t *testing.T) {
	e := fleettest.StartEtcd(t)
	stable := startVersion(t, "stable")
	policy := `
      steps: [{percent: 10, hold: 1h}, {percent: 100}]
      promote_when: [{metric: error_rate_5xx, below: 5%}]
`
	ms := []*fleetMember{
		startFleetMember(t, e, "/sp/rolling", "a", stable.url, policy),
		startFleetMember(t, e, "/sp/rolling", "b", stable.url, policy),
	}
	leader := leaderMember(t, ms)
	other := ms[0]
	if other == leader {
		other = ms[1]
	}
	testkit.Eventually(t, "fleet state written", func() bool {
		_, ok := leader.fleetView(t).Routes["shop"]
		return ok
	})
	// Reload the other member with a changed hold: its policy hash changes.
	cfg := *other.app.Config()
	routes := append([]config.Route(nil), cfg.Routes...)
	spec := *routes[0].Rollout
	spec.Steps = append(spec.Steps[:0:0], spec.Steps...)
	spec.Steps[0].Hold = cfgtypes.Duration(2 * time.Hour)
	routes[0].Rollout = &spec
	cfg.Routes = routes
	if err := other.app.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the leader holds the route", func() bool {
		return strings.Contains(leader.fleetView(t).Holds["shop"], "disagree")
	})
	if h := leader.fleetView(t).Holds["shop"]; !strings.Contains(h, other.name+" has ") {
		t.Errorf("hold does not name the odd member: %q", h)
	}
	// Back to the same policy: the hold clears.
	orig := *other.app.Config()
	origRoutes := append([]config.Route(nil), orig.Routes...)
	back := *origRoutes[0].Rollout
	back.Steps = append(back.Steps[:0:0], back.Steps...)
	back.Steps[0].Hold = cfgtypes.Duration(time.Hour)
	origRoutes[0].Rollout = &back
	orig.Routes = origRoutes
	if err := other.app.apply(&orig); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the hold clears", func() bool {
		_, held := leader.fleetView(t).Holds["shop"]
		return !held
	})
}

// breachSince is when the fleet state's record of route shop says the
// rollback condition began breaching (zero: no streak).
func breachSince(t *testing.T, m *fleetMember) (time.Time, fleet.RouteState) {
	t.Helper()
	f := m.app.rollouts.fleet
	f.mu.Lock()
	st := f.applied["shop"]
	f.mu.Unlock()
	var rec struct {
		Conditions []struct {
			Key         string    `json:"key"`
			BreachSince time.Time `json:"breach_since"`
		} `json:"conditions"`
	}
	if len(st.Controller) > 0 {
		if err := json.Unmarshal(st.Controller, &rec); err != nil {
			t.Fatalf("controller record in the fleet state: %v", err)
		}
	}
	for _, c := range rec.Conditions {
		if strings.HasPrefix(c.Key, "rollback:") && !c.BreachSince.IsZero() {
			return c.BreachSince, st
		}
	}
	return time.Time{}, st
}

// TestFleetLeaderKilledMidBreach kills the leader while a rollback
// condition's breach streak runs: the new leader continues the same step,
// hold clock and streak (read from etcd, where the controller keeps them),
// so the rollback comes when the streak began + for, not a full for after
// the takeover.
func TestFleetLeaderKilledMidBreach(t *testing.T) {
	e := fleettest.StartEtcd(t)
	stable := startVersion(t, "stable")
	policy := `
      steps: [{percent: 50, hold: 1h}, {percent: 100}]
      rollback_when:
        - {metric: error_rate_5xx, above: 20%, for: 8s}
`
	var ms []*fleetMember
	for _, n := range []string{"a", "b", "c"} {
		m := startFleetMember(t, e, "/sp/breach", n, stable.url, policy)
		m.canary.failing.Store(true)
		ms = append(ms, m)
	}
	leader := leaderMember(t, ms)
	stop := make(chan struct{})
	defer close(stop)
	for _, m := range ms {
		pacedLoad(t, "http://"+m.app.ProxyAddr(), stop, 30000)
	}
	var since time.Time
	var before fleet.RouteState
	testkit.Eventually(t, "a breach streak in the fleet state", func() bool {
		since, before = breachSince(t, leader)
		return !since.IsZero()
	})
	if before.State != "progressing" || before.Step != 0 {
		t.Fatalf("test bug: the streak must be running, not finished: %+v", before)
	}
	leader.kill()
	var rest []*fleetMember
	for _, m := range ms {
		if m != leader {
			rest = append(rest, m)
		}
	}
	next := leaderMember(t, rest)
	sameEverywhere(t, rest, "fleet-wide rollback", func(m *fleetMember) bool {
		s, _ := fleetState(m)
		return s == "rolled_back" && m.share() == 0
	})
	after, final := breachSince(t, next)
	if final.UpdatedBy != next.name {
		t.Fatalf("rollback written by %q, want the new leader %q", final.UpdatedBy, next.name)
	}
	// A streak begun afresh by the new leader would start after the kill.
	if !after.Equal(since) {
		t.Errorf("breach streak not carried over: began %s under %s, %s under %s", since, leader.name, after, next.name)
	}
	if final.Step != before.Step || !final.StepStartedAt.Equal(before.StepStartedAt) || final.PausedNanos != before.PausedNanos {
		t.Errorf("step or hold clock not carried over: before %+v, after %+v", before, final)
	}
	if final.UpdatedAt.Sub(since) < 8*time.Second {
		t.Errorf("rolled back %s after the streak began, before its for: 8s", final.UpdatedAt.Sub(since))
	}
}

// TestFleetRestartWhileEtcdDown: a member restarted while etcd is down
// serves the last fleet state it applied (its state_dir copy), step and
// share, and adopts the fleet's again once etcd returns.
func TestFleetRestartWhileEtcdDown(t *testing.T) {
	e := fleettest.StartEtcd(t)
	stable := startVersion(t, "stable")
	policy := `
      steps: [{percent: 10, hold: 1h}, {percent: 50, hold: 1h}, {percent: 100}]
`
	dir := filepath.Join(t.TempDir(), "a")
	m := startFleetMemberIn(t, e, "/sp/restart", "a", stable.url, policy, dir)
	leaderMember(t, []*fleetMember{m})
	testkit.Eventually(t, "the fleet's 10%", func() bool {
		_, ok := m.fleetView(t).Routes["shop"]
		return ok && m.share() == 1000
	})
	if code, body := m.post(t, "/api/v1/rollouts/shop/promote"); code != 200 {
		t.Fatalf("promote: %d %s", code, body)
	}
	testkit.Eventually(t, "the fleet's 50%", func() bool { return m.share() == 5000 })
	m.app.Shutdown(context.Background())

	e.Stop()
	r := startFleetMemberIn(t, e, "/sp/restart", "a", stable.url, policy, dir)
	if got := r.share(); got != 5000 {
		t.Fatalf("restarted with etcd down: serves %d bp, want the last fleet share 5000", got)
	}
	if st, ok := r.app.rollouts.controller.RouteStatus("shop"); !ok || st.Step != 1 || st.State != "progressing" {
		t.Fatalf("restarted controller: %+v", st)
	}
	if v := r.fleetView(t); v.Etcd != "down" {
		t.Errorf("etcd reported %q while down", v.Etcd)
	}
	e.Start()
	testkit.Eventually(t, "the fleet state adopted after etcd returns", func() bool {
		st, step := fleetState(r)
		return st == "progressing" && step == 1 && r.fleetView(t).Etcd == "up"
	})
	if got := r.share(); got != 5000 {
		t.Errorf("after etcd returned: %d bp", got)
	}
}
