package rollout

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestBucketsAreMonotonicAndTight(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<28; us = us*9/8 + 1 {
		d := time.Duration(us) * time.Microsecond
		b := bucketOf(d)
		if b < prev {
			t.Fatalf("bucketOf(%s) = %d after %d", d, b, prev)
		}
		prev = b
		lo, hi := bucketBounds(b)
		if b < numBuckets-1 && (float64(us) < lo || float64(us) >= hi) {
			t.Fatalf("%dµs in bucket %d [%g, %g)", us, b, lo, hi)
		}
		if b >= 8 && b < numBuckets-1 && (hi-lo)/lo > 0.125+1e-9 {
			t.Fatalf("bucket %d is %.1f%% wide", b, 100*(hi-lo)/lo)
		}
	}
	if bucketOf(-time.Second) != 0 || bucketOf(time.Hour) != numBuckets-1 {
		t.Fatal("out-of-range latencies must clamp")
	}
	for i := 1; i < numBuckets; i++ {
		_, hiPrev := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != hiPrev {
			t.Fatalf("gap between buckets %d and %d", i-1, i)
		}
	}
}

func TestQuantileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var c CohortStats
	raw := make([]float64, 20000)
	for i := range raw {
		d := time.Duration(50e6 * math.Exp(0.8*rng.NormFloat64()))
		raw[i] = float64(d)
		c.hist[bucketOf(d)]++
	}
	sort.Float64s(raw)
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		exact := raw[int(q*float64(len(raw)))]
		got := float64(c.Quantile(q))
		if math.Abs(got-exact)/exact > 0.07 {
			t.Errorf("p%g: histogram %s, exact %s", q*100, time.Duration(got), time.Duration(exact))
		}
	}
	var empty CohortStats
	if empty.Quantile(0.99) != 0 {
		t.Error("empty quantile")
	}
}

func TestRecorderWindows(t *testing.T) {
	clk := newClock()
	r := NewRecorder(clk.Now, WithSlot(10*time.Second), WithRetention(time.Minute))
	// One request per 10s slot for 2 minutes, canary 5xx in the second minute.
	for i := 0; i < 12; i++ {
		status := 200
		if i >= 6 {
			status = 503
		}
		r.ObserveRequest(Canary, status, false, 10*time.Millisecond)
		r.ObserveRequest(Control, 200, i%2 == 0, 20*time.Millisecond)
		r.ObserveRequest(Excluded, 500, false, time.Second)
		r.ObserveComparison(i%3 != 0)
		clk.Advance(10 * time.Second)
	}
	clk.Advance(-time.Nanosecond) // still in the last slot written
	w := r.Window(time.Minute)
	if w.Canary.Requests != 6 || w.Canary.Errors5xx != 6 || w.Control.Requests != 6 || w.Control.UpstreamErrors != 3 {
		t.Fatalf("last minute: canary %+v control %+v", w.Canary, w.Control)
	}
	if w.Excluded.Requests != 6 || w.Excluded.Errors5xx != 6 || w.Comparisons != 6 || w.Matches != 4 {
		t.Fatalf("excluded %+v comparisons %d/%d", w.Excluded, w.Matches, w.Comparisons)
	}
	if w.Canary.ErrorRate5xx() != 1 || w.MatchRate() != 4.0/6 {
		t.Fatalf("rates %g %g", w.Canary.ErrorRate5xx(), w.MatchRate())
	}
	if q := w.Control.Quantile(0.5); q < 19*time.Millisecond || q > 21*time.Millisecond {
		t.Fatalf("control p50 %s", q)
	}
	// Clipping the start drops older slots.
	w = r.Between(clk.Now().Add(-25*time.Second), clk.Now())
	if w.Canary.Requests != 2 {
		t.Fatalf("25s window: %d requests", w.Canary.Requests)
	}
	// History past the retention is gone, not double counted.
	w = r.Window(10 * time.Minute)
	if w.Canary.Requests != 7 {
		t.Fatalf("window beyond retention: %d requests (ring of %d slots)", w.Canary.Requests, len(r.slots))
	}
	// Slots are recycled: after a quiet hour everything is empty.
	clk.Advance(time.Hour)
	r.ObserveRequest(Canary, 200, false, time.Millisecond)
	if w := r.Window(time.Minute); w.Canary.Requests != 1 || w.Control.Requests != 0 || w.Canary.Errors5xx != 0 {
		t.Fatalf("after an hour: %+v", w.Canary)
	}
	r.ObserveRequest(Cohort(9), 200, false, 0) // ignored, not a panic
}

func TestRecorderConcurrentWritersAcrossSlotBoundaries(t *testing.T) {
	clk := newClock()
	r := NewRecorder(clk.Now, WithSlot(time.Second), WithRetention(10*time.Second))
	const writers, per = 4, 5000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // the clock crosses slot boundaries while writers run
		for {
			select {
			case <-stop:
				return
			default:
				clk.Advance(100 * time.Millisecond)
				_ = r.Window(5 * time.Second)
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				r.ObserveRequest(Canary, 200, false, time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(stop)
	// Whatever is still inside the retention is consistent: never more
	// than was written, and the histogram agrees with the counter.
	w := r.Window(r.Retention())
	if w.Canary.Requests > writers*per || w.Canary.histTotal() != w.Canary.Requests {
		t.Fatalf("requests %d, histogram %d", w.Canary.Requests, w.Canary.histTotal())
	}
}

func TestObserveRequestDoesNotAllocate(t *testing.T) {
	r := NewRecorder(nil)
	allocs := testing.AllocsPerRun(1000, func() {
		r.ObserveRequest(Canary, 503, true, 42*time.Millisecond)
		r.ObserveComparison(true)
	})
	if allocs != 0 {
		t.Fatalf("%g allocations per request", allocs)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	r := NewRecorder(nil)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.ObserveRequest(Cohort(i&1), 200, false, time.Duration(i&0xffff)*time.Microsecond)
	}
}

func BenchmarkObserveRequestParallel(b *testing.B) {
	r := NewRecorder(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.ObserveRequest(Cohort(i&1), 200, false, time.Duration(i&0xffff)*time.Microsecond)
			i++
		}
	})
}

func BenchmarkWindow5m(b *testing.B) {
	r := NewRecorder(nil, WithSlot(2*time.Second), WithRetention(5*time.Minute))
	for i := 0; i < 10000; i++ {
		r.ObserveRequest(Cohort(i&1), 200, false, time.Duration(i)*time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Window(5 * time.Minute)
	}
}
