package rollout

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/testkit"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// t0 is the simulations' epoch; any fixed instant works.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newClock() *testkit.Clock { return testkit.NewClock(t0) }

// fakeHandle records what the controller did to the route.
type fakeHandle struct {
	mu     sync.Mutex
	bp     cfgtypes.BasisPoints
	halted bool
	calls  int
}

func (h *fakeHandle) SetCanaryPercent(bp cfgtypes.BasisPoints) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bp = bp
	h.calls++
}

func (h *fakeHandle) SetHalted(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.halted = v
	h.calls++
}

func (h *fakeHandle) get() (cfgtypes.BasisPoints, bool, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bp, h.halted, h.calls
}

// fakeProber is a HealthProber with a settable failure count.
type fakeProber struct {
	mu       sync.Mutex
	failures int
	closed   bool
}

func (p *fakeProber) ConsecutiveFailures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures
}

func (p *fakeProber) set(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures = n
}

func (p *fakeProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// stubSource serves external metrics from a function.
type stubSource struct {
	fn func(metric string, c splitter.Arm) (float64, error)
	mu sync.Mutex
	qs []ExternalQuery
}

func (s *stubSource) Value(ctx context.Context, metric string, c splitter.Arm, window time.Duration) (float64, error) {
	q, _ := ExternalQueryFrom(ctx)
	s.mu.Lock()
	s.qs = append(s.qs, q)
	s.mu.Unlock()
	return s.fn(metric, c)
}

// eventLog collects notified events.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) Notify(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

func (l *eventLog) actions() []string {
	var out []string
	for _, e := range l.all() {
		out = append(out, e.Action)
	}
	return out
}

// cohortModel is the synthetic behaviour of one cohort.
type cohortModel struct {
	errRate      float64       // probability of a 5xx
	upstreamRate float64       // probability of an upstream error (also a 502)
	median       time.Duration // lognormal latency median
	sigma        float64       // lognormal shape
	slowFrac     float64       // share of requests that are slowFactor times slower
	slowFactor   float64
}

var healthy = cohortModel{errRate: 0.001, median: 40 * time.Millisecond, sigma: 0.5}

func (m cohortModel) sample(rng *rand.Rand) (status int, upstream bool, lat time.Duration) {
	status = 200
	if rng.Float64() < m.upstreamRate {
		return 502, true, time.Duration(float64(m.median) * 0.1)
	}
	if rng.Float64() < m.errRate {
		status = 500
	}
	f := math.Exp(m.sigma * rng.NormFloat64())
	if m.slowFrac > 0 && rng.Float64() < m.slowFrac {
		f *= m.slowFactor
	}
	return status, false, time.Duration(float64(m.median) * f)
}

// sim drives one route through time: each step generates an interval's
// traffic split by the share the controller set, then ticks.
type sim struct {
	t        *testing.T
	clock    *testkit.Clock
	rec      *Recorder
	ctrl     *Controller
	handle   *fakeHandle
	prober   *fakeProber
	events   *eventLog
	logs     *observer.ObservedLogs
	rng      *rand.Rand
	route    string
	spec     Spec
	perTick  int // requests per interval at any share
	excluded int // cohort-routed requests per interval
	canary   cohortModel
	control  cohortModel
	excl     cohortModel
	// fixedCanary, when > 0, sends this many requests per tick to the
	// canary whatever the share (for dry_run comparisons).
	fixedCanary int
	matchRate   float64
	compares    int
	opts        Options
}

func parseSpec(t *testing.T, y string) Spec {
	t.Helper()
	s, err := ParseSpec([]byte(y))
	if err != nil {
		t.Fatalf("ParseSpec: %v", err)
	}
	return s
}

func newSim(t *testing.T, spec Spec, seed uint64) *sim {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s := &sim{t: t, clock: newClock(), handle: &fakeHandle{bp: 12345}, prober: &fakeProber{}, events: &eventLog{},
		logs: logs, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), route: "api", spec: spec,
		perTick: 1200, canary: healthy, control: healthy, excl: healthy, matchRate: 1}
	s.opts = Options{Now: s.clock.Now, Logger: zap.New(core), Notifier: s.events,
		HealthProbe: func(string, HealthCheck) (HealthProber, error) { return s.prober, nil }}
	return s
}

// start builds the recorder and controller and adds the route.
func (s *sim) start() {
	s.t.Helper()
	sp := s.spec
	sp.ApplyDefaults()
	s.rec = NewRecorder(s.clock.Now, sp.RecorderOptions()...)
	s.ctrl = NewController(s.opts)
	if err := s.ctrl.AddRoute(s.route, s.spec, s.rec, s.handle); err != nil {
		s.t.Fatalf("AddRoute: %v", err)
	}
}

func (s *sim) interval() time.Duration {
	sp := s.spec
	sp.ApplyDefaults()
	return sp.Interval.D()
}

// traffic generates one interval of requests at the current share.
func (s *sim) traffic() {
	bp, halted, _ := s.handle.get()
	if halted {
		bp = 0
	}
	nCanary := int(math.Round(float64(s.perTick) * float64(bp) / 10000))
	if s.fixedCanary > 0 {
		nCanary = s.fixedCanary
	}
	nControl := s.perTick - nCanary
	if s.fixedCanary > 0 {
		nControl = s.perTick
	}
	for i := 0; i < nCanary; i++ {
		st, up, lat := s.canary.sample(s.rng)
		s.rec.ObserveRequest(splitter.ArmCanary, st, up, lat)
	}
	for i := 0; i < nControl; i++ {
		st, up, lat := s.control.sample(s.rng)
		s.rec.ObserveRequest(splitter.ArmControl, st, up, lat)
	}
	for i := 0; i < s.excluded; i++ {
		st, up, lat := s.excl.sample(s.rng)
		s.rec.ObserveRequest(splitter.ArmExcluded, st, up, lat)
	}
	for i := 0; i < s.compares; i++ {
		s.rec.ObserveComparison(s.rng.Float64() < s.matchRate)
	}
}

// step advances one interval: traffic during it, then a tick at its end.
func (s *sim) step() time.Time {
	s.traffic()
	now := s.clock.Advance(s.interval())
	s.ctrl.Tick(now)
	return now
}

// runFor steps for d, stopping early when stop returns true.
// runUntilBreach runs until the first rollback condition's verdict is a
// breach and returns that evaluation's time; the test fails when none
// comes within d.
func (s *sim) runUntilBreach(d time.Duration) time.Time {
	s.t.Helper()
	var first time.Time
	s.runFor(d, func() bool {
		e := s.status().LastEvaluation
		if e != nil && e.Rollback[0].Verdict == VerdictBreach {
			first = e.At
			return true
		}
		return false
	})
	if first.IsZero() {
		s.t.Fatal("no breach")
	}
	return first
}

func (s *sim) runFor(d time.Duration, stop func() bool) time.Time {
	end := s.clock.Now().Add(d)
	var now time.Time
	for s.clock.Now().Before(end) {
		now = s.step()
		if stop != nil && stop() {
			break
		}
	}
	return now
}

func (s *sim) status() RouteStatus {
	st, ok := s.ctrl.RouteStatus(s.route)
	if !ok {
		s.t.Fatalf("route %q not found", s.route)
	}
	return st
}

func (s *sim) stateIs(want State) func() bool {
	return func() bool { return s.status().State == want }
}

func tempStateFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "state", "rollout-api.json")
}

// binomialUpper returns the smallest k with P(X >= k) <= tail for
// X ~ Binomial(n, p): more than k-1 false positives out of n trials at
// rate p happens with probability at most tail.
func binomialUpper(n int, p, tail float64) int {
	// P(X >= k) = 1 - CDF(k-1), computed by summing the pmf.
	pmf := math.Pow(1-p, float64(n))
	cdf := 0.0
	for k := 0; k <= n; k++ {
		cdf += pmf
		if 1-cdf <= tail {
			return k + 1
		}
		pmf *= float64(n-k) / float64(k+1) * p / (1 - p)
	}
	return n
}
