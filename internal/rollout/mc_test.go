package rollout

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// The whole-rollout Monte Carlo: many complete rollouts through the
// public Controller API, on an injected clock, with Poisson traffic drawn a
// tick at a time (every histogram bucket and the error count of a tick
// drawn at once, which is exactly Poisson traffic and keeps a 6.5 h
// rollout to milliseconds). SHADOWPROXY_MC_RUNS scales the number of runs
// (the README's table uses 1000); the default keeps `go test -race` of the
// package within seconds.

// mcModel is one cohort's behaviour: an error probability and a lognormal
// latency, with a share of requests slowFactor times slower.
type mcModel struct {
	errRate    float64
	median     time.Duration
	sigma      float64
	slowFrac   float64
	slowFactor float64
	probs      []bucketProb // latency bucket probabilities, filled by prepare
}

type bucketProb struct {
	bucket int
	p      float64
}

var mcHealthy = mcModel{errRate: 0.005, median: 40 * time.Millisecond, sigma: 0.5}

// prepare computes the probability of every latency bucket.
func (m mcModel) prepare() mcModel {
	cdf := func(us float64, median time.Duration) float64 {
		if us <= 0 {
			return 0
		}
		z := (math.Log(us) - math.Log(float64(median/time.Microsecond))) / m.sigma
		return 0.5 * math.Erfc(-z/math.Sqrt2)
	}
	m.probs = nil
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketBounds(i)
		if i == numBuckets-1 {
			hi = math.Inf(1)
		}
		p := (1 - m.slowFrac) * (cdf(hi, m.median) - cdf(lo, m.median))
		if m.slowFrac > 0 {
			slow := time.Duration(float64(m.median) * m.slowFactor)
			p += m.slowFrac * (cdf(hi, slow) - cdf(lo, slow))
		}
		if p > 1e-12 {
			m.probs = append(m.probs, bucketProb{i, p})
		}
	}
	return m
}

// poisson draws a Poisson variate (inversion for small means, a rounded
// normal for large ones, where it is indistinguishable for this purpose).
func poisson(rng *rand.Rand, mean float64) uint64 {
	if mean <= 0 {
		return 0
	}
	if mean > 60 {
		v := math.Round(mean + math.Sqrt(mean)*rng.NormFloat64())
		return uint64(max(v, 0))
	}
	u := rng.Float64()
	p := math.Exp(-mean)
	cdf, k := p, uint64(0)
	for u > cdf && k < 1000 {
		k++
		p *= mean / float64(k)
		cdf += p
	}
	return k
}

// binomial draws Binomial(n, p) exactly for small n·p by skipping with
// geometric gaps, and by a rounded normal otherwise.
func binomial(rng *rand.Rand, n uint64, p float64) uint64 {
	if n == 0 || p <= 0 {
		return 0
	}
	if float64(n)*p > 60 {
		v := math.Round(float64(n)*p + math.Sqrt(float64(n)*p*(1-p))*rng.NormFloat64())
		return uint64(min(max(v, 0), float64(n)))
	}
	var k uint64
	lq := math.Log1p(-p)
	for i := float64(0); ; k++ {
		i += math.Floor(math.Log(1-rng.Float64())/lq) + 1
		if i > float64(n) {
			return k
		}
	}
}

// observeBulk adds a tick of one cohort's traffic to the current slot, as
// if each request had been observed.
func observeBulk(r *Recorder, c splitter.Arm, hist []uint64, idx []int, errs uint64) {
	s := r.current()
	if s == nil {
		return
	}
	cc := &s.cohorts[c]
	var n uint64
	for j, v := range hist {
		if v > 0 {
			cc.hist[idx[j]].Add(v)
			n += v
		}
	}
	cc.requests.Add(n)
	cc.err5xx.Add(errs)
}

// mcScenario is one row of the table.
type mcScenario struct {
	name    string
	policy  string // YAML of the rollout section
	rps     float64
	canary  mcModel
	onset   time.Duration // canary turns bad this long after the start (0: never)
	limit   time.Duration // simulated time after which a run stops
	within  time.Duration // detection: rolled back within this long of onset
	control mcModel
}

type mcResult struct {
	runs, rolledBack, completed, within int
	delays                              []time.Duration // onset (or start) to rollback
}

// runRollout simulates one rollout and returns whether, and when, it was
// rolled back.
func runRollout(t testing.TB, sc *mcScenario, spec Spec, seed uint64) (rolledBack, completed bool, at time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	clock := newClock()
	sp := spec
	sp.ApplyDefaults()
	rec := NewRecorder(clock.Now, sp.RecorderOptions()...)
	h := &fakeHandle{}
	ctrl := NewController(Options{Now: clock.Now})
	if err := ctrl.AddRoute("api", spec, rec, h); err != nil {
		t.Fatalf("AddRoute: %v", err)
	}
	dt := sp.Interval.D()
	hist := make([]uint64, numBuckets)
	idx := make([]int, numBuckets)
	start := clock.Now()
	for clock.Now().Sub(start) < sc.limit {
		bp, halted, _ := h.get()
		share := float64(bp) / 10000
		if halted {
			share = 0
		}
		for _, c := range []splitter.Arm{splitter.ArmCanary, splitter.ArmControl} {
			m, frac := sc.control, 1-share
			if c == splitter.ArmCanary {
				frac = share
				if sc.onset > 0 && clock.Now().Sub(start) >= sc.onset {
					m = sc.canary
				}
			}
			mean := sc.rps * dt.Seconds() * frac
			if mean <= 0 {
				continue
			}
			var n uint64
			for j, bp := range m.probs {
				hist[j] = poisson(rng, mean*bp.p)
				idx[j] = bp.bucket
				n += hist[j]
			}
			observeBulk(rec, c, hist[:len(m.probs)], idx[:len(m.probs)], binomial(rng, n, m.errRate))
		}
		now := clock.Advance(dt)
		ctrl.Tick(now)
		st, _ := ctrl.RouteStatus("api")
		switch st.State {
		case StateRolledBack:
			return true, false, now.Sub(start)
		case StateCompleted:
			return false, true, now.Sub(start)
		}
	}
	return false, false, sc.limit
}

// mcRuns is the number of rollouts per scenario: SHADOWPROXY_MC_RUNS, or
// def, or under the race detector a handful (the race run checks that the
// simulation is race-free; the statistics are checked by the normal run).
func mcRuns(def int) int {
	if v, err := strconv.Atoi(os.Getenv("SHADOWPROXY_MC_RUNS")); err == nil && v > 0 {
		return v
	}
	if raceEnabled {
		return 2
	}
	return def
}

// runScenario runs n seeded rollouts on two goroutines.
func runScenario(t testing.TB, sc *mcScenario, n int, seed0 uint64) mcResult {
	spec, err := ParseSpec([]byte(sc.policy))
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	sc.canary, sc.control = sc.canary.prepare(), sc.control.prepare()
	var mu sync.Mutex
	res := mcResult{runs: n}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rb, done, at := runRollout(t, sc, spec, seed0+uint64(i))
				mu.Lock()
				if rb {
					res.rolledBack++
					d := at - sc.onset
					res.delays = append(res.delays, d)
					if sc.within > 0 && d <= sc.within {
						res.within++
					}
				}
				if done {
					res.completed++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	slices.Sort(res.delays)
	return res
}

func quantileDur(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "-"
	}
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return fmtDur(ds[max(i, 0)].Round(10 * time.Second))
}

const (
	// mcDefaultPolicy is the default policy: the seed's steps and holds and
	// the default guardrails (error_rate_5xx 2x, latency_p99 3x, for 5m).
	mcDefaultPolicy = "interval: 10s\n"
	// mcSensitivePolicy is the most sensitive policy validate accepts on
	// these metrics: factor 1x, no floor, no "for", one-minute windows,
	// one sample. The interval does not matter to an always-valid test.
	mcSensitivePolicy = `
interval: 10s
min_samples: 1
rollback_when:
  - {metric: error_rate_5xx, above_baseline: 1x, min_baseline: 0, window: 1m}
  - {metric: latency_p99, above_baseline: 1x, min_baseline: 0ms, window: 1m}
`
	// mcLatencyPolicy adds a latency guardrail a team would choose to catch
	// a 3x p99: with the default 3x, a canary exactly 3x slower is on the
	// null's boundary, which a valid test rolls back at most alpha of the time.
	mcLatencyPolicy = `
interval: 10s
rollback_when:
  - {metric: error_rate_5xx, above_baseline: 2x, for: 5m}
  - {metric: latency_p99, above_baseline: 1.5x, for: 5m}
`
)

var (
	mc5xErrors = mcModel{errRate: 0.025, median: 40 * time.Millisecond, sigma: 0.5}
	mc3xP99    = mcModel{errRate: 0.005, median: 120 * time.Millisecond, sigma: 0.5}
)

func mcFalseRollbackScenarios() []mcScenario {
	full := 7 * time.Hour // the default steps take 6.5 h
	return []mcScenario{
		{name: "equal, default policy, 50 req/s", policy: mcDefaultPolicy, rps: 50, limit: full},
		{name: "equal, default policy, 500 req/s", policy: mcDefaultPolicy, rps: 500, limit: full},
		{name: "equal, most sensitive policy, 50 req/s", policy: mcSensitivePolicy, rps: 50, limit: full},
		{name: "equal, most sensitive policy, 500 req/s", policy: mcSensitivePolicy, rps: 500, limit: full},
	}
}

func mcDetectionScenarios() []mcScenario {
	return []mcScenario{
		{name: "5x errors, default policy, 500 req/s", policy: mcDefaultPolicy, rps: 500, canary: mc5xErrors,
			onset: 10 * time.Minute, limit: 40 * time.Minute, within: 15 * time.Minute},
		{name: "3x p99, p99 1.5x guardrail, 500 req/s", policy: mcLatencyPolicy, rps: 500, canary: mc3xP99,
			onset: 10 * time.Minute, limit: 50 * time.Minute, within: 30 * time.Minute},
	}
}

// TestWholeRolloutFalseRollbackRate: with equal canary and control, the
// share of whole rollouts ever rolled back stays at most alpha (0.05), for
// the default policy and the most sensitive one, at 50 and 500 req/s. The
// bound: with n runs at a true rate of alpha, more than binomialUpper
// rollbacks happen with probability below 1e-3.
func TestWholeRolloutFalseRollbackRate(t *testing.T) {
	const alpha = 0.05
	n := mcRuns(25)
	bound := binomialUpper(n, alpha, 1e-3)
	var rows []string
	total := 0
	scenarios := mcFalseRollbackScenarios()
	defer func() {
		// Pooled over the scenarios the bound is tighter.
		if limit := binomialUpper(n*len(scenarios), alpha, 1e-3); total >= limit {
			t.Errorf("%d of %d rollouts rolled back over all scenarios, want fewer than %d", total, n*len(scenarios), limit)
		}
	}()
	for i, sc := range scenarios {
		sc.canary, sc.control = mcHealthy, mcHealthy
		sc.onset = 1 // the canary's model is the control's from the start
		res := runScenario(t, &sc, n, uint64(1000*(i+1)))
		total += res.rolledBack
		rows = append(rows, fmt.Sprintf("| %s | %d | %d/%d = %.3f | %d/%d |", sc.name, n, res.rolledBack, n,
			float64(res.rolledBack)/float64(n), res.completed, n))
		if res.rolledBack >= bound {
			t.Errorf("%s: %d of %d rollouts rolled back, want fewer than %d (alpha %g)", sc.name, res.rolledBack, n, bound, alpha)
		}
	}
	t.Logf("\n| scenario | runs | rolled back | completed |\n|---|---|---|---|\n%s", strings.Join(rows, "\n"))
}

// TestWholeRolloutDetection: a canary that turns bad 10 minutes into the
// rollout is rolled back within the required time in at least 95% of
// runs (the bound allows for sampling: a true rate of 95% falls below the
// threshold with probability below 1e-3).
func TestWholeRolloutDetection(t *testing.T) {
	n := mcRuns(60)
	var rows []string
	for i, sc := range mcDetectionScenarios() {
		sc.control = mcHealthy
		res := runScenario(t, &sc, n, uint64(5000*(i+1)))
		misses := n - res.within
		rows = append(rows, fmt.Sprintf("| %s | %d | %d/%d within %s | %s | %s |", sc.name, n, res.within, n,
			fmtDur(sc.within), quantileDur(res.delays, 0.5), quantileDur(res.delays, 0.9)))
		if limit := binomialUpper(n, 0.05, 1e-3); misses >= limit {
			t.Errorf("%s: rolled back within %s in %d of %d runs, want at least 95%%", sc.name, sc.within, res.within, n)
		}
	}
	t.Logf("\n| scenario | runs | rolled back in time | median time to rollback | p90 |\n|---|---|---|---|---|\n%s", strings.Join(rows, "\n"))
}
