package rollout

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The size of the sequential tests at the boundary of their null, looked
// at after every slot of a long stream: the share of streams in which the
// test ever rejects stays at most alpha, for balanced, unbalanced and tiny
// counts, factors 1 and above, and binomial (not Poisson) data.
func TestSequentialTestsKeepTheirSizeOverManyLooks(t *testing.T) {
	const alpha, runs = 0.05, 400
	bound := binomialUpper(runs, alpha, 1e-4)
	cases := []struct {
		name       string
		n1, n0     int     // requests per slot
		p0, k      float64 // control rate, factor: canary rate = k·p0 (the boundary)
		slots      int
		oneSample  bool // test canary <= k·p0 alone (absolute threshold, floor)
		lowerTail  bool // promotion: H0 canary >= k × control
		canaryRate float64
	}{
		{name: "unbalanced 1% share, rare errors, 1x", n1: 5, n0: 495, p0: 0.005, k: 1, slots: 360},
		{name: "unbalanced 1% share, rare errors, 2x", n1: 5, n0: 495, p0: 0.005, k: 2, slots: 360},
		{name: "tiny counts, 1x", n1: 1, n0: 3, p0: 0.02, k: 1, slots: 600},
		{name: "balanced, frequent errors, 1.5x", n1: 100, n0: 100, p0: 0.05, k: 1.5, slots: 200},
		{name: "high error rate, 1x", n1: 20, n0: 180, p0: 0.3, k: 1, slots: 200},
		{name: "promotion at the boundary, 2x", n1: 50, n0: 450, p0: 0.005, k: 2, slots: 360, lowerTail: true},
		{name: "absolute threshold 0.5%", n1: 10, p0: 0.005, k: 1, slots: 500, oneSample: true},
		{name: "promotion below 0.5% at 0.5%", n1: 10, p0: 0.005, k: 1, slots: 500, oneSample: true, lowerTail: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i)+7, 99))
			rejected := 0
			for run := 0; run < runs; run++ {
				var s seqStat
				for j := 0; j < tc.slots; j++ {
					x1 := binomial(rng, uint64(tc.n1), tc.k*tc.p0)
					if tc.oneSample {
						s.addRate(x1, uint64(tc.n1), tc.k*tc.p0, !tc.lowerTail)
					} else {
						x0 := binomial(rng, uint64(tc.n0), tc.p0)
						s.addRatio(x1, uint64(tc.n1), x0, uint64(tc.n0), tc.k, !tc.lowerTail)
					}
					if s.evidence() >= 1/alpha {
						rejected++
						break
					}
				}
			}
			t.Logf("rejected %d of %d (%.3f) after up to %d looks", rejected, runs, float64(rejected)/runs, tc.slots)
			if rejected >= bound {
				t.Errorf("rejected %d of %d, want fewer than %d (alpha %g)", rejected, runs, bound, alpha)
			}
		})
	}
}

// The latency test at its boundary: a canary exactly K times slower than
// the control (every request), compared through exceedances of K × the
// control's predictable p99 cut-off, rejects at most alpha of the time.
func TestLatencyExceedanceTestKeepsItsSize(t *testing.T) {
	const alpha, runs = 0.05, 200
	for _, k := range []float64{1, 3} {
		t.Run(fmt.Sprintf("%gx", k), func(t *testing.T) {
			ctl := mcModel{median: 40 * time.Millisecond, sigma: 0.5}.prepare()
			can := mcModel{median: time.Duration(k * float64(40*time.Millisecond)), sigma: 0.5}.prepare()
			test := seqTest{m: metricInfo{name: "latency_p99", kind: kindLatency, quantile: 0.99}, up: true, k: k, hasBase: true}
			rng := rand.New(rand.NewPCG(uint64(k*10), 5))
			rejected := 0
			for run := 0; run < runs; run++ {
				st := newCondSeq("x")
				st.resetBlock(time.Time{})
				for j := 0; j < 300; j++ {
					var w WindowStats
					for _, b := range can.probs {
						w.Canary.hist[b.bucket] = poisson(rng, 5*b.p)
					}
					for _, b := range ctl.probs {
						w.Control.hist[b.bucket] = poisson(rng, 495*b.p)
					}
					w.Canary.Requests, w.Control.Requests = w.Canary.histTotal(), w.Control.histTotal()
					test.fold(st, &w)
					if st.Procs[0].Stat.evidence() >= 1/alpha {
						rejected++
						break
					}
				}
			}
			t.Logf("rejected %d of %d", rejected, runs)
			if bound := binomialUpper(runs, alpha, 1e-4); rejected >= bound {
				t.Errorf("rejected %d of %d, want fewer than %d", rejected, runs, bound)
			}
		})
	}
}

// spendBlock's shares sum to at most 1 however many blocks there are.
func TestSpendBlockSumsToAtMostOne(t *testing.T) {
	for _, n := range []int{1, 7, 82, 1000} {
		sum := 0.0
		for j := 1; j <= 1_000_000; j++ {
			sum += spendBlock(j, n)
		}
		if sum > 1 || sum < 0.99 {
			t.Errorf("n=%d: shares sum to %g", n, sum)
		}
	}
	if math.Abs(spendBlock(1, 82)-0.5/82) > 1e-15 {
		t.Errorf("planned blocks get alpha/2n each")
	}
}

// Promotion is as careful as rollback: a canary slightly worse than a
// promote threshold passes the gate in at most alpha of whole rollouts,
// however long the step waits after its hold.
func TestPromotionOfAWorseCanaryAtMostAlpha(t *testing.T) {
	n := mcRuns(40)
	for i, sc := range []mcScenario{
		{name: "error_rate_5xx below 0.5% with the canary at 0.6%", rps: 500, limit: 3 * time.Hour,
			canary: mcModel{errRate: 0.006, median: 40 * time.Millisecond, sigma: 0.5},
			policy: "rollback_when: []\nsteps:\n  - {percent: 10, hold: 10m, promote_when: [{metric: error_rate_5xx, below: 0.5%}]}\n  - {percent: 100}\n"},
		{name: "error_rate_5xx below_baseline 1.5x with the canary at 1.6x", rps: 500, limit: 3 * time.Hour,
			canary: mcModel{errRate: 0.008, median: 40 * time.Millisecond, sigma: 0.5},
			policy: "rollback_when: []\nsteps:\n  - {percent: 10, hold: 10m, promote_when: [{metric: error_rate_5xx, below_baseline: 1.5x, min_baseline: 0}]}\n  - {percent: 100}\n"},
		{name: "latency_p99 below 150ms with the canary's p99 at 160ms", rps: 500, limit: 3 * time.Hour,
			canary: mcModel{errRate: 0.005, median: time.Duration(160.0 / 3.2 * float64(time.Millisecond)), sigma: 0.5},
			policy: "rollback_when: []\nsteps:\n  - {percent: 10, hold: 10m, promote_when: [{metric: latency_p99, below: 150ms}]}\n  - {percent: 100}\n"},
	} {
		sc.control, sc.onset = mcHealthy, 1
		res := runScenario(t, &sc, n, uint64(9000+100*i))
		t.Logf("%s: promoted in %d of %d rollouts", sc.name, res.completed, n)
		if bound := binomialUpper(n, 0.05, 1e-3); res.completed >= bound {
			t.Errorf("%s: promoted in %d of %d, want fewer than %d", sc.name, res.completed, n, bound)
		}
	}
}

// Overwhelming evidence stays a finite number, so explanations encode.
func TestEvidenceStaysFinite(t *testing.T) {
	var s seqStat
	s.addRatio(5000, 5000, 0, 100000, 1, true)
	if e := s.evidence(); math.IsInf(e, 0) || math.IsNaN(e) || e < 1e100 {
		t.Fatalf("evidence %g", e)
	}
}
