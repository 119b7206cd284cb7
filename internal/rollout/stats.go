package rollout

import "math"

// The statistics here are all one-sided: the question a guardrail asks is
// "is the canary worse than the control?", never "is it different?". Each
// function returns a p-value in [0, 1] and never NaN, so that explanations
// can always be encoded as JSON.

// TestResult is one statistical test in an explanation.
type TestResult struct {
	// Name is "z", "fisher", "mann_whitney" or "tail_z"/"tail_fisher".
	Name string `json:"name"`
	// Statistic is z for z-tests and U for Mann-Whitney (0 for Fisher).
	Statistic float64 `json:"statistic"`
	// PValue is the one-sided p-value for "canary worse than control".
	PValue float64 `json:"p_value"`
}

// normalSF is the standard normal survival function P(Z > z).
func normalSF(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }

// twoProportionZ is the pooled two-proportion z-test of H1: x1/n1 > x0/n0.
// Without any event in either group there is no evidence: z 0, p 1.
func twoProportionZ(x1, n1, x0, n0 uint64) (z, p float64) {
	if n1 == 0 || n0 == 0 {
		return 0, 1
	}
	p1, p0 := float64(x1)/float64(n1), float64(x0)/float64(n0)
	pool := float64(x1+x0) / float64(n1+n0)
	se := math.Sqrt(pool * (1 - pool) * (1/float64(n1) + 1/float64(n0)))
	if se == 0 || math.IsNaN(se) {
		return 0, 1
	}
	z = (p1 - p0) / se
	return z, normalSF(z)
}

// logChoose is log(n choose k).
func logChoose(n, k uint64) float64 {
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	c, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - c
}

// fisherGreater is the one-sided Fisher exact test of H1: x1/n1 > x0/n0,
// that is P(X >= x1) for X hypergeometric with population n1+n0, x1+x0
// successes and n1 draws (scipy's fisher_exact(alternative="greater")).
func fisherGreater(x1, n1, x0, n0 uint64) float64 {
	if n1 == 0 || n0 == 0 {
		return 1
	}
	N, K := n1+n0, x1+x0
	hi := min(K, n1)
	// The smallest possible count in the canary cell.
	lo := uint64(0)
	if n1+K > N {
		lo = n1 + K - N
	}
	if x1 <= lo {
		return 1
	}
	logDenom := logChoose(N, n1)
	pmfAt := func(k uint64) float64 {
		return math.Exp(logChoose(K, k) + logChoose(N-K, n1-k) - logDenom)
	}
	mean := float64(n1) * float64(K) / float64(N)
	if float64(x1) <= mean {
		// Below the mean the upper tail is large and its first term may
		// underflow; sum the small lower tail instead and complement.
		return math.Max(0, math.Min(1, 1-hyperSum(pmfAt(x1-1), x1-1, lo, K, n1, N, false)))
	}
	return math.Min(1, hyperSum(pmfAt(x1), x1, hi, K, n1, N, true))
}

// hyperSum adds hypergeometric probabilities from k0 (whose pmf is pmf0)
// towards end, upwards or downwards, using the ratio of consecutive terms
// rather than one Lgamma per term, and stops once terms no longer matter.
func hyperSum(pmf0 float64, k0, end, K, n1, N uint64, up bool) float64 {
	sum, pmf := 0.0, pmf0
	for k := k0; ; {
		sum += pmf
		// Away from the mode the terms only shrink, so once one is
		// negligible (or has underflowed) the rest are too.
		if k == end || pmf <= sum*1e-17 {
			return sum
		}
		rest := float64(N-K) - float64(n1) // may be negative: not uint64
		if up {
			pmf *= float64(K-k) * float64(n1-k) / (float64(k+1) * (rest + float64(k) + 1))
			k++
		} else {
			pmf *= float64(k) * (rest + float64(k)) / (float64(K-k+1) * float64(n1-k+1))
			k--
		}
	}
}

// proportionTest picks Fisher's exact test when any expected cell of the
// 2x2 table is below 5 (where the normal approximation is poor, typically
// when errors are rare) and the pooled z-test otherwise.
func proportionTest(x1, n1, x0, n0 uint64) TestResult {
	if n1 == 0 || n0 == 0 {
		return TestResult{Name: "z", PValue: 1}
	}
	N, K := float64(n1+n0), float64(x1+x0)
	minExpected := math.Min(math.Min(float64(n1)*K/N, float64(n0)*K/N),
		math.Min(float64(n1)*(N-K)/N, float64(n0)*(N-K)/N))
	if minExpected < 5 {
		return TestResult{Name: "fisher", PValue: fisherGreater(x1, n1, x0, n0)}
	}
	z, p := twoProportionZ(x1, n1, x0, n0)
	return TestResult{Name: "z", Statistic: z, PValue: p}
}

// mannWhitneyGreater is the Mann-Whitney U test of H1: samples of a are
// stochastically greater than samples of b, computed on binned data: a[i]
// and b[i] are the counts of each group in the i-th of the same ordered
// bins. Samples in one bin are ties: each pair counts 1/2, and the variance
// uses the tie correction, exactly as if the samples had been ranked with
// mid-ranks. The normal approximation with continuity correction matches
// scipy's mannwhitneyu(method="asymptotic", alternative="greater"). The
// returned U is U1, the statistic of a.
func mannWhitneyGreater(a, b []uint64) (u, z, p float64) {
	var n1, n2 float64
	for i := range a {
		n1 += float64(a[i])
		n2 += float64(b[i])
	}
	if n1 == 0 || n2 == 0 {
		return 0, 0, 1
	}
	var below, ties float64
	for i := range a {
		ai, bi := float64(a[i]), float64(b[i])
		u += ai * (below + bi/2)
		below += bi
		t := ai + bi
		ties += t*t*t - t
	}
	n := n1 + n2
	mu := n1 * n2 / 2
	v := n1 * n2 / 12 * ((n + 1) - ties/(n*(n-1)))
	if v <= 0 {
		return u, 0, 1
	}
	z = (u - mu - 0.5) / math.Sqrt(v)
	return u, z, normalSF(z)
}

// latencyTests decides whether the canary's latency is worse than the
// control's around quantile q. Mann-Whitney detects a shift of the whole
// distribution but is nearly blind to a regression of the slowest 1%; the
// tail test compares the share of each cohort above the pooled
// q-quantile bucket, which is what a p99 guardrail is about. Both run at
// alpha/2 (Bonferroni), so the combined false-positive rate stays at most
// alpha; the returned p-value is the Bonferroni-adjusted minimum.
func latencyTests(canary, control *ArmStats, q float64) (tests []TestResult, p float64) {
	u, _, pMW := mannWhitneyGreater(canary.hist[:], control.hist[:])
	// The cut-off comes from both cohorts pooled: taken from the control
	// alone, it would sit just above the control's own sample tail and
	// make the control look better than it is (selection bias), inflating
	// false positives. Pooled, the two cohorts are exchangeable under the
	// null and the test keeps its level.
	var pooled ArmStats
	pooled.add(canary)
	pooled.add(control)
	cut := pooled.bucketOfQuantile(q)
	tail := proportionTest(canary.countAbove(cut), canary.histTotal(), control.countAbove(cut), control.histTotal())
	tail.Name = "tail_" + tail.Name
	tests = []TestResult{{Name: "mann_whitney", Statistic: u, PValue: pMW}, tail}
	return tests, math.Min(1, 2*math.Min(pMW, tail.PValue))
}
