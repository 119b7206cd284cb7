package rollout

import (
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// TestSlotWindowsRebuildRecorder: two recorders' slot windows added into a
// third give exactly the windows one recorder would have seen for all the
// traffic, over every range the controller might ask for.
func TestSlotWindowsRebuildRecorder(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	all := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	a := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	b := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	for i := range 2000 {
		if i%40 == 0 {
			now = now.Add(700 * time.Millisecond)
		}
		c, status, lat := splitter.Arm(i%3), 200+300*(i%9/8), time.Duration(50+i*13%5000)*time.Microsecond
		all.ObserveRequest(c, status, i%17 == 0, lat)
		[]*Recorder{a, b}[i%2].ObserveRequest(c, status, i%17 == 0, lat)
		all.ObserveComparison(i%4 != 0)
		[]*Recorder{a, b}[(i/2)%2].ObserveComparison(i%4 != 0)
	}
	fleet := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	fleet.AddWindow(now, &WindowStats{Comparisons: 99}) // stale content, cleared below
	fleet.Clear()
	for _, r := range []*Recorder{a, b} {
		for _, w := range r.SlotWindows(now.Add(-time.Minute), now) {
			if !fleet.AddWindow(w.From, &w) {
				t.Fatalf("slot %v refused", w.From)
			}
		}
	}
	for _, d := range []time.Duration{time.Second, 5 * time.Second, 20 * time.Second, time.Minute} {
		got, want := fleet.Window(d), all.Window(d)
		for _, c := range []splitter.Arm{splitter.ArmControl, splitter.ArmCanary, splitter.ArmExcluded} {
			g, w := got.Arm(c), want.Arm(c)
			if g.Requests != w.Requests || g.Errors5xx != w.Errors5xx || g.UpstreamErrors != w.UpstreamErrors || g.hist != w.hist {
				t.Fatalf("window %v cohort %s differs: got %d/%d/%d, want %d/%d/%d", d, c, g.Requests, g.Errors5xx, g.UpstreamErrors, w.Requests, w.Errors5xx, w.UpstreamErrors)
			}
		}
		if got.Comparisons != want.Comparisons || got.Matches != want.Matches {
			t.Fatalf("window %v comparisons %d/%d, want %d/%d", d, got.Matches, got.Comparisons, want.Matches, want.Comparisons)
		}
	}
	if err := (&ArmStats{}).AddBucket(HistogramBuckets, 1); err == nil {
		t.Error("AddBucket accepted an index past the layout")
	}
}

// A WindowCache over a recorder that is cleared and refilled (a fleet
// leader's) answers for the new content, not the sums it had cached: a
// member missing from one refill and present in the next counts in full.
func TestWindowCacheFollowsRefill(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	a := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	b := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	for i := range 600 {
		if i%20 == 0 {
			now = now.Add(time.Second)
		}
		a.ObserveRequest(splitter.ArmCanary, 500, false, time.Millisecond)
		b.ObserveRequest(splitter.ArmCanary, 200, false, time.Millisecond)
	}
	fleet := NewRecorder(clock, WithSlot(time.Second), WithRetention(time.Minute))
	cache := NewWindowCache(fleet)
	refill := func(members ...*Recorder) {
		fleet.Clear()
		for _, r := range members {
			for _, w := range r.SlotWindows(now.Add(-time.Minute), now) {
				fleet.AddWindow(w.From, &w)
			}
		}
	}
	refill(a) // b did not answer
	from := now.Add(-20 * time.Second)
	if got := cache.Between(from, now).Canary.Requests; got != fleet.Between(from, now).Canary.Requests || got == 0 {
		t.Fatalf("first refill: cache %d", got)
	}
	now = now.Add(100 * time.Millisecond) // the next evaluation, within the same slot
	refill(a, b)
	got, want := cache.Between(from, now), fleet.Between(from, now)
	if got.Canary.Requests != want.Canary.Requests || got.Canary.Errors5xx != want.Canary.Errors5xx {
		t.Fatalf("after the refill the cache says %d requests (%d 5xx), the recorder %d (%d)",
			got.Canary.Requests, got.Canary.Errors5xx, want.Canary.Requests, want.Canary.Errors5xx)
	}
}
