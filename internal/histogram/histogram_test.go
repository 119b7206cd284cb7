package histogram

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverBounds(t *testing.T) {
	prevHi := 0.0
	for i := 0; i < Buckets; i++ {
		lo, hi := Bounds(i)
		if lo != prevHi || hi <= lo {
			t.Fatalf("bucket %d = [%v,%v), previous ended at %v", i, lo, hi, prevHi)
		}
		if i >= subBuckets && (hi-lo)/lo > 0.125+1e-12 {
			t.Fatalf("bucket %d is %.1f%% wide", i, 100*(hi-lo)/lo)
		}
		for _, us := range []float64{lo, hi - 1} {
			if got := Bucket(time.Duration(us) * time.Microsecond); got != i && i != Buckets-1 {
				t.Fatalf("Bucket(%vµs) = %d, want %d", us, got, i)
			}
		}
		prevHi = hi
	}
	if Bucket(time.Hour) != Buckets-1 || Bucket(-1) != 0 {
		t.Error("out-of-range latencies are not clamped")
	}
}

// TestQuantileError: on log-uniform latencies from 50µs to 10s, estimates
// are within one bucket width (12.5%) of the exact nearest-rank value.
func TestQuantileError(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	var all []float64
	for i := 0; i < 20000; i++ {
		d := time.Duration(50e3 * math.Pow(2e5, rng.Float64()))
		h.Add(d)
		all = append(all, d.Seconds())
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		exact := all[int(math.Ceil(q*float64(len(all))))-1]
		if got := h.Quantile(q); math.Abs(got-exact)/exact > 0.125 {
			t.Errorf("p%v = %v, exact %v", q*100, got, exact)
		}
	}
	var one Histogram
	one.Add(3 * time.Millisecond)
	if one.Quantile(0.5) != 0.003 || one.Quantile(0.99) != 0.003 {
		t.Errorf("a single latency must be reported exactly (clamped): %v", one.Quantile(0.5))
	}
	if (&Histogram{}).Quantile(0.5) != 0 {
		t.Error("empty histogram")
	}
}
