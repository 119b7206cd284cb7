package rollout

import "fmt"

// HistogramBuckets is the number of latency buckets every CohortStats
// carries; two processes of the same version always agree on it.
const HistogramBuckets = numBuckets

// Histogram returns a copy of the cohort's latency bucket counts (length
// HistogramBuckets), for shipping a window to another process.
func (c *CohortStats) Histogram() []uint64 {
	out := make([]uint64, numBuckets)
	copy(out, c.hist[:])
	return out
}

// AddBucket adds n samples to latency bucket i. It refuses an index outside
// the layout, which means the sender uses another histogram layout and its
// counts cannot be merged exactly.
func (c *CohortStats) AddBucket(i int, n uint64) error {
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
