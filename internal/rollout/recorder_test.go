package rollout

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
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
	var c ArmStats
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
	var empty ArmStats
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
		r.ObserveRequest(splitter.ArmCanary, status, false, 10*time.Millisecond)
		r.ObserveRequest(splitter.ArmControl, 200, i%2 == 0, 20*time.Millisecond)
		r.ObserveRequest(splitter.ArmExcluded, 500, false, time.Second)
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
	// The ring keeps every slot but the one being reset.
	if want := uint64(len(r.slots) - 1); w.Canary.Requests != want {
		t.Fatalf("window beyond retention: %d requests (ring of %d slots)", w.Canary.Requests, len(r.slots))
	}
	// Slots are recycled: after a quiet hour everything is empty.
	clk.Advance(time.Hour)
	r.ObserveRequest(splitter.ArmCanary, 200, false, time.Millisecond)
	if w := r.Window(time.Minute); w.Canary.Requests != 1 || w.Control.Requests != 0 || w.Canary.Errors5xx != 0 {
		t.Fatalf("after an hour: %+v", w.Canary)
	}
	r.ObserveRequest(splitter.Arm(9), 200, false, 0) // ignored, not a panic
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
				r.ObserveRequest(splitter.ArmCanary, 200, false, time.Millisecond)
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
		r.ObserveRequest(splitter.ArmCanary, 503, true, 42*time.Millisecond)
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
		r.ObserveRequest(splitter.Arm(i&1), 200, false, time.Duration(i&0xffff)*time.Microsecond)
	}
}

func BenchmarkObserveRequestParallel(b *testing.B) {
	r := NewRecorder(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.ObserveRequest(splitter.Arm(i&1), 200, false, time.Duration(i&0xffff)*time.Microsecond)
			i++
		}
	})
}

func BenchmarkWindow5m(b *testing.B) {
	r := NewRecorder(nil, WithSlot(2*time.Second), WithRetention(5*time.Minute))
	for i := 0; i < 10000; i++ {
		r.ObserveRequest(splitter.Arm(i&1), 200, false, time.Duration(i)*time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Window(5 * time.Minute)
	}
}

// A wall clock stepping back files observations in the newest slot: none
// is dropped, and they all show up once the clock is past them again.
func TestRecorderClockStepBackDropsNothing(t *testing.T) {
	clock := newClock()
	r := NewRecorder(clock.Now, WithSlot(time.Second), WithRetention(time.Hour))
	for i := 0; i < 100; i++ {
		r.ObserveRequest(splitter.ArmCanary, 200, false, time.Millisecond)
	}
	newest := clock.Now()
	clock.Advance(-20 * time.Minute)
	for i := 0; i < 100; i++ {
		r.ObserveRequest(splitter.ArmCanary, 500, false, time.Millisecond)
	}
	if d := r.Dropped(); d != 0 {
		t.Fatalf("dropped %d observations after the clock stepped back", d)
	}
	w := r.Between(newest.Add(-time.Minute), newest)
	if w.Canary.Requests != 200 || w.Canary.Errors5xx != 100 {
		t.Fatalf("window after the step: %+v", w.Canary)
	}
}

// WindowCache answers exactly what Between answers as the window slides,
// jumps and is clipped, including a window as long as the retention read
// every ten slots (the slots leaving it are the oldest the ring keeps).
func TestWindowCacheMatchesBetween(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retention time.Duration
		maxStep   int // milliseconds between evaluations
	}{
		{"short window, irregular steps", 10 * time.Minute, 3000},
		{"window = retention, 10s steps", 5 * time.Minute, 10000},
		// Steps longer than the ring's headroom: the slots leaving the
		// window are gone before they can be subtracted; the cache must
		// notice and rebuild rather than keep their counts.
		{"window = retention, 40s steps", 5 * time.Minute, 40000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			r := NewRecorder(clock.Now, WithSlot(time.Second), WithRetention(tc.retention))
			c := NewWindowCache(r)
			rng := rand.New(rand.NewPCG(1, 2))
			var stepStart time.Time
			for i := 0; i < 400; i++ {
				// Traffic spread over the step, so that every slot is written.
				step := time.Duration(1+rng.IntN(tc.maxStep)) * time.Millisecond
				for left := step; left > 0; left -= 500 * time.Millisecond {
					for j := rng.IntN(4); j > 0; j-- {
						r.ObserveRequest(splitter.Arm(rng.IntN(2)), 200+300*rng.IntN(2), false, time.Duration(rng.IntN(1e6))*time.Microsecond)
					}
					r.ObserveComparison(rng.IntN(2) == 0)
					clock.Advance(min(left, 500*time.Millisecond))
				}
				now := clock.Now()
				from := now.Add(-5 * time.Minute)
				if i%100 == 0 {
					stepStart = now.Add(-time.Minute) // a step began: windows clip to it
				}
				if from.Before(stepStart) {
					from = stepStart
				}
				if i%150 == 149 {
					now = clock.Advance(7 * time.Minute) // a jump: the cache must rebuild
					from = now.Add(-5 * time.Minute)
				}
				got, want := c.Between(from, now), r.Between(from, now)
				if got.Canary != want.Canary || got.Control != want.Control || got.Comparisons != want.Comparisons || got.Matches != want.Matches {
					t.Fatalf("step %d: cache %+v\nwant %+v", i, got.Canary, want.Canary)
				}
			}
			if tc.maxStep <= 10000 && c.builds > 20 {
				t.Fatalf("the cache rebuilt %d times in 400 evaluations", c.builds)
			}
		})
	}
}
