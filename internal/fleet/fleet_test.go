package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/splitter"
)

func TestStoreRevisionChecks(t *testing.T) {
	e := fleettest.StartEtcd(t)
	cli, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	s := NewStore(cli, "/sp/test")

	v, err := s.Load(ctx, "api")
	if err != nil || v.Rev != 0 {
		t.Fatalf("empty load = %+v, %v", v, err)
	}
	now := time.Now().UTC()
	rev1, err := s.CompareAndSave(ctx, RouteState{Route: "api", State: "progressing", PercentBP: 1000, StepStartedAt: now}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second creator loses: the key exists now.
	if _, err := s.CompareAndSave(ctx, RouteState{Route: "api", PercentBP: 5000}, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	rev2, err := s.CompareAndSave(ctx, RouteState{Route: "api", State: "progressing", PercentBP: 5000, Step: 1, StepStartedAt: now}, rev1)
	if err != nil || rev2 <= rev1 {
		t.Fatalf("save at current revision: %d, %v", rev2, err)
	}
	// A writer that read before rev2 cannot overwrite it.
	if _, err := s.CompareAndSave(ctx, RouteState{Route: "api", PercentBP: 0}, rev1); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale write: %v, want ErrConflict", err)
	}
	got, err := s.Load(ctx, "api")
	if err != nil || got.PercentBP != 5000 || got.Step != 1 || got.Rev != rev2 || !got.StepStartedAt.Equal(now) {
		t.Fatalf("load = %+v, %v", got, err)
	}
	// Update retries on conflict and applies the change to the newest state.
	up, err := s.Update(ctx, "api", func(st *RouteState) error { st.State = "paused"; return nil })
	if err != nil || up.State != "paused" || up.PercentBP != 5000 {
		t.Fatalf("update = %+v, %v", up, err)
	}
	// A fenced store (the leader's) refuses to write while not leading.
	fenced := NewStore(cli, "/sp/test")
	fenced.fence = func() (clientv3.Cmp, bool) { return clientv3.Cmp{}, false }
	if _, err := fenced.CompareAndSave(ctx, up.RouteState, up.Rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("fenced write while not leader: %v", err)
	}
}

func TestMergeIsExact(t *testing.T) {
	// Three members' recorders versus one recorder that saw all traffic:
	// the merged window must be identical, histogram bucket by bucket.
	base := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return base }
	all := rollout.NewRecorder(clock)
	parts := []*rollout.Recorder{rollout.NewRecorder(clock), rollout.NewRecorder(clock), rollout.NewRecorder(clock)}
	for i := range 3000 {
		c := splitter.Arm(i % 3)
		status := 200
		if i%7 == 0 {
			status = 503
		}
		lat := time.Duration(100+i*37%90000) * time.Microsecond
		all.ObserveRequest(c, status, i%11 == 0, lat)
		parts[i%len(parts)].ObserveRequest(c, status, i%11 == 0, lat)
		all.ObserveComparison(i%5 != 0)
		parts[(i+1)%len(parts)].ObserveComparison(i%5 != 0)
	}
	want := all.Window(time.Minute)
	var got rollout.WindowStats
	for i, p := range parts {
		w := p.Window(time.Minute)
		ww := EncodeWindow(string(rune('a'+i)), "api", &w)
		dec, err := ww.Decode()
		if err != nil {
			t.Fatal(err)
		}
		got.Merge(&dec)
	}
	for _, c := range []splitter.Arm{splitter.ArmControl, splitter.ArmCanary, splitter.ArmExcluded} {
		g, w := got.Arm(c), want.Arm(c)
		if g.Requests != w.Requests || g.Errors5xx != w.Errors5xx || g.UpstreamErrors != w.UpstreamErrors {
			t.Errorf("%s counts: got %+v, want %+v", c, *g, *w)
		}
		gh, wh := g.Histogram(), w.Histogram()
		for i := range wh {
			if gh[i] != wh[i] {
				t.Fatalf("%s bucket %d: got %d, want %d", c, i, gh[i], wh[i])
			}
		}
		if g.Quantile(0.99) != w.Quantile(0.99) {
			t.Errorf("%s p99: got %v, want %v", c, g.Quantile(0.99), w.Quantile(0.99))
		}
	}
	if got.Comparisons != want.Comparisons || got.Matches != want.Matches {
		t.Errorf("comparisons %d/%d, want %d/%d", got.Matches, got.Comparisons, want.Matches, want.Comparisons)
	}
	// A window from another histogram layout is refused, not mis-merged.
	bad := WireWindow{Member: "old", Buckets: rollout.HistogramBuckets + 8}
	if _, err := bad.Decode(); err == nil || !strings.Contains(err.Error(), "latency buckets") {
		t.Errorf("foreign layout: %v", err)
	}
	bad = WireWindow{Member: "evil", Buckets: rollout.HistogramBuckets, Canary: WireCohort{Hist: [][2]uint64{{1 << 40, 1}}}}
	if _, err := bad.Decode(); err == nil {
		t.Error("out-of-range bucket accepted")
	}
}

// TestFleetRollout drives three members through one rollout: identical
// shares after every transition, a pause sent to B applied on A and C, the
// leader killed mid-step with the step and hold clock continued by another.
func TestFleetRollout(t *testing.T) {
	e := fleettest.StartEtcd(t)
	hold := 1500 * time.Millisecond
	o := fleetOpts{decider: func() Decider { return newStepDecider(hold) }}
	a := startMember(t, e, "/sp/rollout", "a", o)
	b := startMember(t, e, "/sp/rollout", "b", o)
	c := startMember(t, e, "/sp/rollout", "c", o)
	ms := []*member{a, b, c}
	for _, m := range ms {
		if err := m.node.WaitSynced(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	leader := leaderOf(t, ms...)
	waitFor(t, 10*time.Second, "three members seen", func() bool { return len(leader.node.Members()) == 3 })
	if st := a.node.Status(); st.Leader != leader.name || st.Etcd != "up" || len(st.Members) != 3 {
		waitFor(t, 2*time.Second, "status agrees on the leader", func() bool {
			st := a.node.Status()
			return st.Leader == leader.name && st.Etcd == "up" && len(st.Members) == 3
		})
	}

	// Every transition is applied by every member within 1s of being written.
	sameShares := func(what string, want func(RouteState) bool) RouteState {
		t.Helper()
		var first RouteState
		waitFor(t, 10*time.Second, what+" written", func() bool {
			for _, m := range ms {
				if want(m.state("api")) {
					first = m.state("api")
					return true
				}
			}
			return false
		})
		waitFor(t, time.Second, what+" applied on every member", func() bool {
			for _, m := range ms {
				if s := m.state("api"); s.PercentBP != first.PercentBP || s.State != first.State || s.Step != first.Step {
					return false
				}
			}
			return true
		})
		return first
	}
	s0 := sameShares("initial state", func(s RouteState) bool { return s.PercentBP == 1000 })
	s1 := sameShares("promotion to 50%", func(s RouteState) bool { return s.Step == 1 })
	if s1.PercentBP != 5000 || s1.Held(s1.StepStartedAt) != 0 || !s1.StepStartedAt.After(s0.StepStartedAt) {
		t.Fatalf("step 1 = %+v", s1)
	}

	// Pause through B: A and C apply it, and the leader stops promoting.
	var cmdBy *member
	for _, m := range ms {
		if m != leader {
			cmdBy = m
			break
		}
	}
	if _, err := cmdBy.coord.Command(context.Background(), "api", "pause"); err != nil {
		t.Fatalf("pause on %s: %v", cmdBy.name, err)
	}
	paused := sameShares("pause", func(s RouteState) bool { return s.State == "paused" })
	if paused.Step != 1 || paused.UpdatedBy != cmdBy.name {
		t.Fatalf("paused = %+v", paused)
	}
	time.Sleep(hold + 200*time.Millisecond) // longer than a hold: no promotion may happen
	for _, m := range ms {
		if s := m.state("api"); s.State != "paused" || s.Step != 1 {
			t.Fatalf("%s promoted while paused: %+v", m.name, s)
		}
	}
	if _, err := cmdBy.coord.Command(context.Background(), "api", "pause"); err == nil {
		t.Fatal("a second pause was accepted")
	}
	if _, err := a.coord.Command(context.Background(), "nope", "pause"); !errors.Is(err, ErrUnknownRoute) {
		t.Fatalf("unknown route: %v", err)
	}
	resumed, err := a.coord.Command(context.Background(), "api", "resume")
	if err != nil || resumed.PausedNanos <= 0 {
		t.Fatalf("resume: %+v, %v", resumed, err)
	}
	sameShares("resume", func(s RouteState) bool { return s.State == "progressing" && s.Step == 1 })

	// Kill the leader mid-step: another takes over and continues the same
	// step with the same hold clock (start and paused time carried over).
	leader.kill()
	rest := make([]*member, 0, 2)
	for _, m := range ms {
		if m != leader {
			rest = append(rest, m)
		}
	}
	next := leaderOf(t, rest...)
	ms = rest
	s2 := sameShares("promotion to 100% by the new leader", func(s RouteState) bool { return s.Step == 2 })
	if s2.UpdatedBy != next.name {
		t.Errorf("step 2 written by %q, want new leader %q", s2.UpdatedBy, next.name)
	}
	// The new leader promoted on the old step's clock: no sooner than the
	// hold plus the paused time after the step started.
	if got, min := s2.StepStartedAt.Sub(s1.StepStartedAt), hold+time.Duration(resumed.PausedNanos); got < min {
		t.Errorf("step 1 held %v, want at least %v (hold clock restarted?)", got, min)
	}
}

// TestFleetSeesBreachBehindOneMember: only one follower's canary fails;
// the leader's own traffic is healthy, yet the merged numbers show the
// breach and the whole fleet rolls back.
func TestFleetSeesBreachBehindOneMember(t *testing.T) {
	e := fleettest.StartEtcd(t)
	o := fleetOpts{decider: func() Decider { return newStepDecider(time.Hour) }}
	a := startMember(t, e, "/sp/breach", "a", o)
	b := startMember(t, e, "/sp/breach", "b", o)
	c := startMember(t, e, "/sp/breach", "c", o)
	ms := []*member{a, b, c}
	leader := leaderOf(t, ms...)
	waitFor(t, 10*time.Second, "initial state everywhere", func() bool {
		for _, m := range ms {
			if m.state("api").PercentBP != 1000 {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "three members seen", func() bool { return len(leader.node.Members()) == 3 })
	var failing *member
	for _, m := range ms {
		if m != leader {
			failing = m
		}
	}
	// Healthy members: 30 canary requests each, no error. The failing
	// follower: 24 of 36 fail. Fleet: 24/96 = 25% > 20%; the leader alone: 0%.
	for _, m := range ms {
		if m == failing {
			continue
		}
		for range 30 {
			m.rec.ObserveRequest(splitter.ArmCanary, 200, false, time.Millisecond)
		}
	}
	for i := range 36 {
		status := 200
		if i < 24 {
			status = 500
		}
		failing.rec.ObserveRequest(splitter.ArmCanary, status, false, time.Millisecond)
	}
	waitFor(t, 10*time.Second, "fleet-wide rollback", func() bool {
		for _, m := range ms {
			if s := m.state("api"); s.State != "rolled_back" || s.PercentBP != 0 || !s.Halted {
				return false
			}
		}
		return true
	})
	if r := a.state("api").Reason; !strings.Contains(r, "25% over 96 requests") || !strings.Contains(r, "a, b, c") {
		t.Errorf("rollback reason = %q", r)
	}
}

// TestFleetHoldsWithoutMembers: a member that does not answer is named,
// and when it carries more than the allowed share, nothing is promoted.
func TestFleetHoldsWithoutMembers(t *testing.T) {
	e := fleettest.StartEtcd(t)
	o := fleetOpts{decider: func() Decider {
		d := newStepDecider(200 * time.Millisecond)
		d.bookkeep = true
		return d
	}, maxShare: 0.25}
	a := startMember(t, e, "/sp/hold", "a", o)
	b := startMember(t, e, "/sp/hold", "b", o)
	ms := []*member{a, b}
	leader := leaderOf(t, ms...)
	other := a
	if leader == a {
		other = b
	}
	waitFor(t, 10*time.Second, "both members registered", func() bool { return len(leader.node.Members()) == 2 })
	other.setFail(true)
	// The leader never saw the other answer: it counts as an average member,
	// half the traffic, above 25%.
	waitFor(t, 10*time.Second, "hold reported", func() bool {
		return strings.Contains(leader.coord.Holds()["api"], "did not answer")
	})
	h := leader.coord.Holds()["api"]
	if !strings.Contains(h, other.name+" (status 500)") || !strings.Contains(h, "50%") {
		t.Errorf("hold = %q", h)
	}
	time.Sleep(500 * time.Millisecond) // two holds' worth
	if s := leader.state("api"); s.Step != 0 {
		t.Fatalf("promoted without half the fleet: %+v", s)
	}
	// The decider's bookkeeping at the same step (a breach streak, for the
	// rollout controller) is still written: a new leader needs it.
	heldBook := string(leader.state("api").Controller)
	waitFor(t, 10*time.Second, "bookkeeping written during the hold", func() bool {
		c := string(leader.state("api").Controller)
		return c != "" && c != heldBook && strings.Contains(leader.coord.Holds()["api"], "did not answer")
	})
	// The decider learnt that its promotions were not written (so the app
	// drops their notifications).
	if n := leader.coord.Decider.(*stepDecider).commitCount(false); n == 0 {
		t.Error("held promotions were not reported as uncommitted")
	}
	other.setFail(false)
	waitFor(t, 10*time.Second, "promotion once the member answers", func() bool { return leader.state("api").Step >= 1 })
	if _, held := leader.coord.Holds()["api"]; held {
		t.Error("hold not cleared")
	}
}

// TestFleetHoldsOnPolicyMismatch: during a rolling config change members
// publish different policy hashes and the leader holds the route.
func TestFleetHoldsOnPolicyMismatch(t *testing.T) {
	e := fleettest.StartEtcd(t)
	o := fleetOpts{decider: func() Decider { return newStepDecider(100 * time.Millisecond) },
		policy: func(name string) string {
			if name == "b" {
				return "h2"
			}
			return "h1"
		}}
	a := startMember(t, e, "/sp/policy", "a", o)
	b := startMember(t, e, "/sp/policy", "b", o)
	leader := leaderOf(t, a, b)
	waitFor(t, 10*time.Second, "mismatch hold", func() bool {
		return strings.Contains(leader.coord.Holds()["api"], "disagree")
	})
	if h := leader.coord.Holds()["api"]; !strings.Contains(h, "b has h2") {
		t.Errorf("hold = %q", h)
	}
	time.Sleep(300 * time.Millisecond)
	if s := leader.state("api"); s.Step != 0 {
		t.Fatalf("promoted while members disagree: %+v", s)
	}
}

// TestFleetSurvivesEtcdOutage: etcd stopped mid-rollout → every member
// keeps its shares, reports etcd down, and nothing transitions; restarted
// → the same leader (its lease survives a short outage) carries on.
func TestFleetSurvivesEtcdOutage(t *testing.T) {
	e := fleettest.StartEtcd(t)
	dec := newStepDecider(700 * time.Millisecond)
	o := fleetOpts{decider: func() Decider { return dec }}
	a := startMember(t, e, "/sp/outage", "a", o)
	b := startMember(t, e, "/sp/outage", "b", o)
	c := startMember(t, e, "/sp/outage", "c", o)
	ms := []*member{a, b, c}
	leaderOf(t, ms...)
	waitFor(t, 10*time.Second, "step 1 everywhere", func() bool {
		for _, m := range ms {
			if m.state("api").Step != 1 {
				return false
			}
		}
		return true
	})
	e.Stop()
	waitFor(t, 10*time.Second, "etcd reported down everywhere", func() bool {
		for _, m := range ms {
			if m.node.EtcdUp() || m.node.Status().Etcd != "down" {
				return false
			}
		}
		return true
	})
	dec.mu.Lock()
	evals := dec.evals
	dec.mu.Unlock()
	time.Sleep(1500 * time.Millisecond) // two holds: a transition would be due
	dec.mu.Lock()
	if dec.evals != evals {
		t.Errorf("%d evaluations ran while etcd was down", dec.evals-evals)
	}
	dec.mu.Unlock()
	for _, m := range ms {
		if s := m.state("api"); s.Step != 1 || s.PercentBP != 5000 {
			t.Fatalf("%s changed its share during the outage: %+v", m.name, s)
		}
	}
	e.Start()
	waitFor(t, 20*time.Second, "rollout resumes after etcd returns", func() bool {
		for _, m := range ms {
			if !m.node.EtcdUp() || m.state("api").Step < 2 {
				return false
			}
		}
		return true
	})
}

// TestClientCredentials: with etcd authentication on, a member with the
// configured username and password works and one without is refused.
func TestClientCredentials(t *testing.T) {
	e := fleettest.StartEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "shadowproxy", "s3cret"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "fleet"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "fleet", "/sp/auth/", clientv3.GetPrefixRangeEnd("/sp/auth/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "shadowproxy", "fleet"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("setting up etcd auth: %v", err)
		}
	}
	good, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 10 * time.Second, Username: "shadowproxy", Password: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := NewStore(good, "/sp/auth").CompareAndSave(ctx, RouteState{Route: "api", PercentBP: 100, StepStartedAt: time.Now()}, 0); err != nil {
		t.Fatalf("write with credentials: %v", err)
	}
	anon, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := NewStore(anon, "/sp/auth").Load(ctx, "api"); err == nil {
		t.Fatal("read without credentials accepted")
	}
}
