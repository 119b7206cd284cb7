package rollout

import (
	"fmt"
	"time"
)

// HistogramBuckets is the number of latency buckets every CohortStats
// carries; two processes of the same version always agree on it.
const HistogramBuckets = numBuckets

// Histogram returns a copy of the cohort's latency bucket counts (length
// HistogramBuckets), for shipping a window to another process.
func (c *ArmStats) Histogram() []uint64 {
	out := make([]uint64, numBuckets)
	copy(out, c.hist[:])
	return out
}

// AddBucket adds n samples to latency bucket i. It refuses an index outside
// the layout, which means the sender uses another histogram layout and its
// counts cannot be merged exactly.
func (c *ArmStats) AddBucket(i int, n uint64) error {
	if i < 0 || i >= numBuckets {
		return fmt.Errorf("latency bucket %d outside 0..%d", i, numBuckets-1)
	}
	c.hist[i] += n
	return nil
}

// Merge adds o's totals into w: counts and histograms add, so the merge of
// several processes' windows is exactly the window one process would have
// recorded for all their traffic. From and To widen to cover both.
func (w *WindowStats) Merge(o *WindowStats) {
	w.Control.add(&o.Control)
	w.Canary.add(&o.Canary)
	w.Excluded.add(&o.Excluded)
	w.Comparisons += o.Comparisons
	w.Matches += o.Matches
	if w.From.IsZero() || (!o.From.IsZero() && o.From.Before(w.From)) {
		w.From = o.From
	}
	if o.To.After(w.To) {
		w.To = o.To
	}
}

// AddWindow adds w's totals to the slot holding at, claiming the slot if
// it holds an older epoch. It is for a Recorder that is filled from other
// processes' windows (a fleet leader's merged view) rather than by
// ObserveRequest; it returns false when the slot has been reused by a
// newer epoch already.
func (r *Recorder) AddWindow(at time.Time, w *WindowStats) bool {
	e := at.UnixNano() / r.slotNanos
	s := &r.slots[int(uint64(e)%uint64(len(r.slots)))]
	for {
		cur := s.epoch.Load()
		if cur == e {
			break
		}
		if cur > e || cur == resettingEpoch {
			return false
		}
		if s.epoch.CompareAndSwap(cur, resettingEpoch) {
			s.reset()
			s.epoch.Store(e)
			break
		}
	}
	for c, st := range []*ArmStats{&w.Control, &w.Canary} {
		cc := &s.cohorts[c]
		cc.requests.Add(st.Requests)
		cc.err5xx.Add(st.Errors5xx)
		cc.upstream.Add(st.UpstreamErrors)
		for i, v := range st.hist {
			if v != 0 {
				cc.hist[i].Add(v)
			}
		}
	}
	s.exclRequests.Add(w.Excluded.Requests)
	s.excl5xx.Add(w.Excluded.Errors5xx)
	s.exclUpstream.Add(w.Excluded.UpstreamErrors)
	s.comparisons.Add(w.Comparisons)
	s.matches.Add(w.Matches)
	return true
}

// Clear forgets every slot. Only for a Recorder filled by AddWindow, with
// no concurrent writer. A WindowCache over r rebuilds at its next use: a
// refill may change slots it had already summed (a member that did not
// answer before does now).
func (r *Recorder) Clear() {
	for i := range r.slots {
		r.slots[i].epoch.Store(-1)
	}
	r.clears.Add(1)
}

// SlotWindows returns the window of every slot that starts within
// [from, to] and saw anything, oldest first: a Recorder's history in the
// form AddWindow takes.
func (r *Recorder) SlotWindows(from, to time.Time) []WindowStats {
	last := to.UnixNano() / r.slotNanos
	first := (from.UnixNano() + r.slotNanos - 1) / r.slotNanos
	if oldest := last - int64(len(r.slots)) + 2; first < oldest {
		first = oldest
	}
	var out []WindowStats
	for e := first; e <= last; e++ {
		at := time.Unix(0, e*r.slotNanos)
		w := r.Between(at, at)
		if w.Control.Requests+w.Canary.Requests+w.Excluded.Requests+w.Comparisons == 0 {
			continue
		}
		w.From, w.To = at, at.Add(time.Duration(r.slotNanos))
		out = append(out, w)
	}
	return out
}
