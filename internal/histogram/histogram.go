// Package histogram is the one latency histogram of shadowproxy: the diff
// statistics, the analysis history and the rollout recorder all bucket and
// estimate quantiles with it, so a p95 read from /routes, /history or a
// rollout decision agrees.
//
// Layout: log-linear buckets over microseconds, 8 sub-buckets per power of
// two (each at most 12.5% wide), exact from 0 to 8µs, up to 2^27µs (about
// 134s); slower latencies land in the last bucket. Fixed buckets keep memory
// constant and let rank tests work on bucket counts.
package histogram

import (
	"math/bits"
	"time"
)

const (
	subBucketBits = 3
	subBuckets    = 1 << subBucketBits
	maxExponent   = 26
	// Buckets is the number of buckets.
	Buckets = subBuckets * (maxExponent - subBucketBits + 2)
)

// Bucket maps a latency to its bucket.
func Bucket(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	us := uint64(d / time.Microsecond)
	if us < subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1
	if e > maxExponent {
		return Buckets - 1
	}
	m := (us >> (e - subBucketBits)) & (subBuckets - 1)
	return subBuckets*(e-subBucketBits+1) + int(m)
}

// Bounds returns bucket i's [lo, hi) in microseconds.
func Bounds(i int) (lo, hi float64) {
	if i < subBuckets {
		return float64(i), float64(i + 1)
	}
	e := i/subBuckets + subBucketBits - 1
	m := i % subBuckets
	shift := uint(e - subBucketBits)
	return float64(uint64(subBuckets+m) << shift), float64(uint64(subBuckets+m+1) << shift)
}

// QuantileMicros estimates the q-quantile of bucket counts, in
// microseconds, by linear interpolation within the bucket holding rank
// q·n. It is 0 without samples.
func QuantileMicros(counts []uint64, q float64) float64 {
	var n uint64
	for _, v := range counts {
		n += v
	}
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var cum float64
	for i, v := range counts {
		if v == 0 {
			continue
		}
		next := cum + float64(v)
		if next >= rank {
			lo, hi := Bounds(i)
			if i == len(counts)-1 {
				return lo
			}
			return lo + (hi-lo)*(rank-cum)/float64(v)
		}
		cum = next
	}
	lo, _ := Bounds(len(counts) - 1)
	return lo
}

// Histogram counts latencies and remembers the smallest and largest, so an
// estimate never leaves the range actually seen. It is not safe for
// concurrent use; callers hold their own lock.
type Histogram struct {
	counts   [Buckets]uint64
	n        uint64
	min, max time.Duration
}

// Add counts one latency.
func (h *Histogram) Add(d time.Duration) {
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.counts[Bucket(d)]++
}

// Count is the number of latencies added.
func (h *Histogram) Count() uint64 { return h.n }

// Reset empties the histogram.
func (h *Histogram) Reset() { *h = Histogram{} }

// Quantile estimates the q-quantile in seconds (0 when empty), clamped to
// the smallest and largest latency seen.
func (h *Histogram) Quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	v := QuantileMicros(h.counts[:], q) * 1e-6
	return min(max(v, h.min.Seconds()), h.max.Seconds())
}
