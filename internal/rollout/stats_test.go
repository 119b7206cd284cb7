package rollout

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func near(got, want, relTol float64) bool {
	if want == 0 {
		return math.Abs(got) < relTol
	}
	return math.Abs(got-want) <= relTol*math.Abs(want)
}

// Reference values from scipy 1.10.1: stats.fisher_exact(table,
// alternative="greater") with table [[canary errors, canary ok], [control
// errors, control ok]].
func TestFisherGreaterAgainstScipy(t *testing.T) {
	cases := []struct {
		x1, n1, x0, n0 uint64
		want           float64
	}{
		{3, 4, 1, 4, 0.24285714285714283}, // Fisher's lady tasting tea
		{5, 1000, 0, 1000, 0.0310937892581744},
		{1, 1000, 0, 1000, 0.5},
		{2, 100, 1, 200, 0.2585127157639559},
		{10, 100, 3, 300, 9.468786721784919e-05},
		{0, 1000, 5, 1000, 1},
	}
	for _, c := range cases {
		if got := fisherGreater(c.x1, c.n1, c.x0, c.n0); !near(got, c.want, 1e-9) {
			t.Errorf("fisher(%d/%d vs %d/%d) = %.17g, want %.17g", c.x1, c.n1, c.x0, c.n0, got, c.want)
		}
	}
	// Far below the mean the upper tail is ~1 even when the first term underflows.
	if p := fisherGreater(900, 1_000_000, 100, 100); p < 0.999 {
		t.Errorf("canary far below control: p = %g, want ~1", p)
	}
	if p := fisherGreater(5000, 10000, 0, 10000); p > 1e-300 && p != 0 {
		t.Errorf("overwhelming evidence: p = %g", p)
	}
}

// Reference values: the pooled two-proportion z statistic and
// scipy.stats.norm.sf(z).
func TestTwoProportionZ(t *testing.T) {
	cases := []struct {
		x1, n1, x0, n0 uint64
		z, p           float64
	}{
		{50, 1000, 10, 1000, 5.243225050930763, 7.889693914222477e-08},
		{30, 2000, 20, 2000, 1.4231361339296398, 0.07734834764520222},
		{120, 10000, 100, 10000, 1.355877673353277, 0.08756904617063416},
	}
	for _, c := range cases {
		z, p := twoProportionZ(c.x1, c.n1, c.x0, c.n0)
		if !near(z, c.z, 1e-12) || !near(p, c.p, 1e-9) {
			t.Errorf("z(%d/%d vs %d/%d) = %.17g, %.17g; want %.17g, %.17g", c.x1, c.n1, c.x0, c.n0, z, p, c.z, c.p)
		}
	}
	if z, p := twoProportionZ(0, 1000, 0, 1000); z != 0 || p != 1 {
		t.Errorf("no events: %g %g", z, p)
	}
	if got := proportionTest(50, 1000, 10, 1000); got.Name != "z" {
		t.Errorf("large counts use %s", got.Name)
	}
	if got := proportionTest(3, 1000, 0, 1000); got.Name != "fisher" {
		t.Errorf("rare events use %s", got.Name)
	}
}

// binsOf turns raw samples into per-value counts on the union of values,
// the binned form mannWhitneyGreater takes.
func binsOf(x, y []float64) (a, b []uint64) {
	vals := append(append([]float64(nil), x...), y...)
	sort.Float64s(vals)
	var uniq []float64
	for i, v := range vals {
		if i == 0 || v != vals[i-1] {
			uniq = append(uniq, v)
		}
	}
	idx := func(v float64) int { return sort.SearchFloat64s(uniq, v) }
	a, b = make([]uint64, len(uniq)), make([]uint64, len(uniq))
	for _, v := range x {
		a[idx(v)]++
	}
	for _, v := range y {
		b[idx(v)]++
	}
	return a, b
}

// Reference values: scipy.stats.mannwhitneyu(x, y, method="asymptotic",
// alternative="greater"), continuity correction on.
func TestMannWhitneyAgainstScipy(t *testing.T) {
	// scipy's documented example (males vs females), no ties.
	a, b := binsOf([]float64{19, 22, 16, 29, 24}, []float64{20, 11, 17, 12})
	u, _, p := mannWhitneyGreater(a, b)
	if u != 17 || !near(p, 0.055673443266570206, 1e-9) {
		t.Errorf("no ties: U=%g p=%.17g", u, p)
	}
	// Heavy ties: the tie correction matters.
	x := []float64{1, 2, 2, 3, 3, 3, 4, 5, 5, 6}
	y := []float64{1, 1, 2, 2, 2, 3, 3, 4, 4, 5}
	a, b = binsOf(x, y)
	u, _, p = mannWhitneyGreater(a, b)
	if u != 63 || !near(p, 0.1675372362030088, 1e-9) {
		t.Errorf("ties: U=%g p=%.17g", u, p)
	}
	// Swapped (alternative "less" of the same data).
	_, _, p = mannWhitneyGreater(b, a)
	if !near(p, 0.8510758025480474, 1e-9) {
		t.Errorf("swapped: p=%.17g", p)
	}
	if _, _, p := mannWhitneyGreater([]uint64{5}, []uint64{5}); p != 1 {
		t.Errorf("all tied: p=%g", p)
	}
}

// Under the null (both cohorts from one distribution) each test must reject
// at most about alpha of the time. With 400 trials the count of rejections
// is Binomial(400, alpha); a bound exceeded with probability 1e-6 would
// only fail on a genuinely anti-conservative test.
func TestFalsePositiveRateUnderNull(t *testing.T) {
	const trials, alpha = 400, 0.05
	bound := binomialUpper(trials, alpha, 1e-6)
	rng := rand.New(rand.NewPCG(7, 11))
	var rateFP, latFP, p50FP int
	for i := 0; i < trials; i++ {
		var x1, x0 uint64
		for j := 0; j < 2000; j++ {
			if rng.Float64() < 0.01 {
				x1++
			}
			if rng.Float64() < 0.01 {
				x0++
			}
		}
		if proportionTest(x1, 2000, x0, 2000).PValue < alpha {
			rateFP++
		}
		var can, ctl ArmStats
		for j := 0; j < 1500; j++ {
			can.hist[bucketOf(time.Duration(40e6*math.Exp(0.6*rng.NormFloat64())))]++
			ctl.hist[bucketOf(time.Duration(40e6*math.Exp(0.6*rng.NormFloat64())))]++
		}
		if _, p := latencyTests(&can, &ctl, 0.99); p < alpha {
			latFP++
		}
		if _, p := latencyTests(&can, &ctl, 0.5); p < alpha {
			p50FP++
		}
	}
	t.Logf("false positives of %d: rate %d, latency p99 %d, latency p50 %d (bound %d)", trials, rateFP, latFP, p50FP, bound)
	for name, n := range map[string]int{"rate": rateFP, "latency_p99": latFP, "latency_p50": p50FP} {
		if n >= bound {
			t.Errorf("%s: %d false positives of %d at alpha %g (bound %d)", name, n, trials, alpha, bound)
		}
	}
}

// The tail test catches what Mann-Whitney misses: 3% of requests 10x slower.
func TestLatencyTailRegressionIsDetected(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	var can, ctl ArmStats
	for j := 0; j < 2000; j++ {
		f := math.Exp(0.5 * rng.NormFloat64())
		if rng.Float64() < 0.03 {
			f *= 10
		}
		can.hist[bucketOf(time.Duration(40e6*f))]++
		ctl.hist[bucketOf(time.Duration(40e6*math.Exp(0.5*rng.NormFloat64())))]++
	}
	tests, p := latencyTests(&can, &ctl, 0.99)
	if tests[0].PValue < 0.025 {
		t.Logf("Mann-Whitney alone happened to detect it (p=%g)", tests[0].PValue)
	}
	if p >= 0.01 {
		t.Fatalf("tail regression not detected: %+v", tests)
	}
	if r := can.Quantile(0.99).Seconds() / ctl.Quantile(0.99).Seconds(); r < 3 {
		t.Fatalf("p99 ratio %g, the scenario wants >= 3", r)
	}
}

func TestBinomialUpper(t *testing.T) {
	// Binomial(400, 0.05): mean 20, sd 4.36; P(X >= 45) is about 1e-6.
	if k := binomialUpper(400, 0.05, 1e-6); k < 38 || k > 48 {
		t.Fatalf("binomialUpper = %d", k)
	}
}
