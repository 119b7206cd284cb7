package rollout

import "math"

// Always-valid sequential tests.
//
// A rollout looks at its data hundreds of times. A fixed-sample test run at
// alpha on every look rejects a true null far more often than alpha over
// the whole rollout, so every statistical decision here is taken with a
// mixture sequential probability ratio test (mSPRT): the evidence is an
// e-process E_t, a mixture over a grid of alternatives of likelihood ratios
// against the least favourable null. Under the null each ratio is a
// nonnegative supermartingale with E_0 = 1, and so is their average, and
// Ville's inequality gives P(sup_t E_t >= 1/a) <= a: the test may be looked
// at after every request, at any interval, for ever, and still rejects a
// true null with probability at most a. 1/E_t is the always-valid p-value
// shown in explanations.
//
// Two building blocks cover every condition:
//
//   - ratioEvidence, the two-sample test of H0: canary rate <= K × control
//     rate (or >= for promotion). It conditions on the events: given that a
//     request in slot s failed, it came from the canary with probability
//     θ = K·n1/(K·n1 + n0) at the null boundary, where n1 and n0 are the
//     slot's canary and control requests. Conditioning per slot (a
//     stratified test) makes the test immune to changes of share and to
//     incidents that hit both cohorts: only the split of the failures
//     within each slot is evidence. This is the exact conditional test for
//     Poisson counts and conservative for binomial ones (measured in
//     seq_test.go).
//   - rateEvidence, the one-sample test of H0: canary rate <= p0 (or >=),
//     for absolute thresholds and for the min_baseline floor.

// upGrid are the alternatives, as multiples of the null, of tests that look
// for "worse than the null"; downGrid those that look for "better". A grid
// spread over a wide range keeps power for small and large effects alike at
// the cost of log(len) nats.
var (
	upGrid   = [...]float64{1.15, 1.3, 1.5, 2, 3, 5, 10, 30}
	downGrid = [...]float64{0.9, 0.75, 0.6, 0.45, 0.3, 0.15, 0.05, 0.01}
)

// seqStat accumulates the log likelihood ratio of every alternative of one
// test. The zero value is ready to use (no evidence: E = 1).
type seqStat struct {
	logLR [len(upGrid)]float64
}

// evidence is the mixture e-value: the average of the alternatives' ratios.
func (s *seqStat) evidence() float64 {
	// log-sum-exp keeps large values finite until they are +Inf anyway.
	m := math.Inf(-1)
	for _, l := range s.logLR {
		m = math.Max(m, l)
	}
	if math.IsInf(m, -1) {
		return 0
	}
	var sum float64
	for _, l := range s.logLR {
		sum += math.Exp(l - m)
	}
	// Capped so that explanations stay encodable as JSON (no +Inf); any
	// value this large is far past every threshold.
	return math.Min(math.Exp(m)*sum/float64(len(s.logLR)), 1e300)
}

// grid returns the alternatives for the direction of the test.
func grid(up bool) []float64 {
	if up {
		return upGrid[:]
	}
	return downGrid[:]
}

// addRatio folds one stratum of the two-sample test: x1 events among n1
// canary requests and x0 among n0 control requests, against the null ratio
// k (canary rate = k × control rate). up tests "canary worse than k×".
func (s *seqStat) addRatio(x1, n1, x0, n0 uint64, k float64, up bool) {
	if n1 == 0 || n0 == 0 || x1+x0 == 0 {
		return // a stratum without both cohorts or without events is no evidence
	}
	a, b := k*float64(n1), float64(n0)
	th0 := a / (a + b)
	for i, r := range grid(up) {
		th1 := r * a / (r*a + b)
		s.logLR[i] += float64(x1)*math.Log(th1/th0) + float64(x0)*math.Log1p(-th1) - float64(x0)*math.Log1p(-th0)
	}
}

// addRate folds x events among n trials into the one-sample test against
// the null rate p0 (0 < p0 < 1). up tests "rate above p0".
func (s *seqStat) addRate(x, n uint64, p0 float64, up bool) {
	if n == 0 {
		return
	}
	for i, r := range grid(up) {
		p1 := r * p0
		if p1 >= 1 {
			p1 = (1 + p0) / 2 // the most extreme alternative still below 1
		}
		s.logLR[i] += float64(x)*math.Log(p1/p0) + float64(n-x)*(math.Log1p(-p1)-math.Log1p(-p0))
	}
}

// spendBlock is the share of a condition's alpha spent on its j-th block
// (j >= 1) when the rollout plans n blocks: half of it evenly over the
// planned blocks, the other half on blocks beyond the plan (a step waiting
// for samples, a pause) as 1/(i(i+1)), which sums to 1/2 however long the
// rollout runs. The shares sum to at most 1, so by the union bound the
// condition fires falsely with probability at most its alpha over the whole
// rollout.
func spendBlock(j, n int) float64 {
	if n < 1 {
		n = 1
	}
	if j <= n {
		return 0.5 / float64(n)
	}
	i := float64(j - n)
	return 0.5 / (i * (i + 1))
}
