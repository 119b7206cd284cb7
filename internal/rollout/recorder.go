package rollout

import (
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/histogram"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// numRecordedArms: the recorder keeps control, canary and excluded; the
// observer in app maps an excluded request that reached the canary to one
// of them.
const numRecordedArms = splitter.ArmExcluded + 1

// Latency histograms use the layout of internal/histogram (shared with the
// diff statistics and the analysis history, so every p95 agrees). Fixed
// buckets keep the per-slot memory constant and let the sequential latency
// tests count requests above a cut-off bucket.
const (
	numBuckets     = histogram.Buckets
	resettingEpoch = math.MinInt64
)

// bucketOf maps a latency to its histogram bucket.
func bucketOf(d time.Duration) int { return histogram.Bucket(d) }

// bucketBounds returns a bucket's [lo, hi) in microseconds.
func bucketBounds(i int) (lo, hi float64) { return histogram.Bounds(i) }

// cohortCounters are one cohort's counts within one slot.
type cohortCounters struct {
	requests atomic.Uint64
	err5xx   atomic.Uint64
	upstream atomic.Uint64
	hist     [numBuckets]atomic.Uint64
}

// slot holds everything observed during one slot-length interval. epoch is
// the slot's index in time (unix nanos / slot length); resettingEpoch marks
// a slot being cleared for reuse.
type slot struct {
	epoch   atomic.Int64
	cohorts [2]cohortCounters // Control, Canary
	// Excluded traffic is only counted: no histogram, to save memory.
	exclRequests, excl5xx, exclUpstream atomic.Uint64
	comparisons, matches                atomic.Uint64
}

func (s *slot) reset() {
	for c := range s.cohorts {
		cc := &s.cohorts[c]
		cc.requests.Store(0)
		cc.err5xx.Store(0)
		cc.upstream.Store(0)
		for i := range cc.hist {
			cc.hist[i].Store(0)
		}
	}
	s.exclRequests.Store(0)
	s.excl5xx.Store(0)
	s.exclUpstream.Store(0)
	s.comparisons.Store(0)
	s.matches.Store(0)
}

// Recorder collects one route's per-cohort measurements in a ring of fixed
// time slots. Writers touch only the current slot with atomic adds, so the
// request path takes no lock and allocates nothing; memory is bounded by the
// number of slots, which is fixed at construction.
type Recorder struct {
	now       func() time.Time
	slotNanos int64
	retention time.Duration
	slots     []slot
	dropped   atomic.Uint64
	// latest is the newest slot any writer has used: a clock that steps
	// back files observations there instead of dropping them.
	latest atomic.Int64
	// clears counts Clear calls: a WindowCache built before one rebuilds.
	clears atomic.Uint64
}

// RecorderOption configures NewRecorder.
type RecorderOption func(*recorderConfig)

type recorderConfig struct {
	slot, retention time.Duration
}

// WithSlot sets the slot length (default 10s): the granularity of windows.
func WithSlot(d time.Duration) RecorderOption {
	return func(c *recorderConfig) {
		if d > 0 {
			c.slot = d
		}
	}
}

// WithRetention sets how much history is kept (default 1h); it must cover
// the longest condition window (see Spec.RecorderOptions).
func WithRetention(d time.Duration) RecorderOption {
	return func(c *recorderConfig) {
		if d > 0 {
			c.retention = min(d, MaxWindow)
		}
	}
}

// NewRecorder returns a Recorder reading time from now (time.Now when nil).
func NewRecorder(now func() time.Time, opts ...RecorderOption) *Recorder {
	cfg := recorderConfig{slot: 10 * time.Second, retention: time.Hour}
	for _, o := range opts {
		o(&cfg)
	}
	if now == nil {
		now = time.Now
	}
	// One extra slot for the partially filled current one, one more so that
	// the slot being reset is never one a window still reads, and a sixteenth
	// more so that a WindowCache can still subtract the slots that left its
	// window since the last evaluation (a 10s interval over 1s slots) before
	// they are reused.
	n := int(cfg.retention/cfg.slot) + 2
	if cfg.retention%cfg.slot != 0 {
		n++
	}
	n += max(2, n/16)
	r := &Recorder{now: now, slotNanos: int64(cfg.slot), retention: cfg.retention, slots: make([]slot, n)}
	for i := range r.slots {
		r.slots[i].epoch.Store(-1)
	}
	return r
}

// Retention is how much history the Recorder keeps.
func (r *Recorder) Retention() time.Duration { return r.retention }

// Slot is the Recorder's slot length.
func (r *Recorder) Slot() time.Duration { return time.Duration(r.slotNanos) }

// Dropped counts observations lost because their slot was being recycled
// (a writer stalled for longer than the whole retention) — normally 0.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// current returns the slot for the present moment, claiming and clearing it
// if it still holds an old epoch. A writer only writes after it has seen the
// slot carry its own epoch, so a reset can never wipe a newer count.
func (r *Recorder) current() *slot {
	e := r.now().UnixNano() / r.slotNanos
	if l := r.latest.Load(); e < l {
		// The wall clock stepped back (or this writer is a little late):
		// count it in the newest slot rather than lose it.
		e = l
	} else if e > l {
		r.latest.CompareAndSwap(l, e) // best effort: a racing writer sets a close value
	}
	s := &r.slots[int(uint64(e)%uint64(len(r.slots)))]
	for spin := 0; spin < 1000; spin++ {
		cur := s.epoch.Load()
		switch {
		case cur == e:
			return s
		case cur == resettingEpoch:
			runtime.Gosched()
		case cur > e:
			return nil // a writer so late that its slot has been reused
		default:
			if s.epoch.CompareAndSwap(cur, resettingEpoch) {
				s.reset()
				s.epoch.Store(e)
				return s
			}
		}
	}
	return nil
}

// ObserveRequest records one proxied request. status is the status the
// client saw (a proxy-generated 502/504 counts as a 5xx); upstreamErr marks
// a failed upstream exchange (connect error, timeout, reset). It takes no
// lock and does not allocate.
func (r *Recorder) ObserveRequest(c splitter.Arm, status int, upstreamErr bool, latency time.Duration) {
	if c >= numRecordedArms {
		return
	}
	s := r.current()
	if s == nil {
		r.dropped.Add(1)
		return
	}
	if c == splitter.ArmExcluded {
		s.exclRequests.Add(1)
		if status >= 500 {
			s.excl5xx.Add(1)
		}
		if upstreamErr {
			s.exclUpstream.Add(1)
		}
		return
	}
	cc := &s.cohorts[c]
	cc.requests.Add(1)
	if status >= 500 {
		cc.err5xx.Add(1)
	}
	if upstreamErr {
		cc.upstream.Add(1)
	}
	cc.hist[bucketOf(latency)].Add(1)
}

// ObserveComparison records one shadow comparison of the route (match rate
// is measured for the route as a whole, not per cohort).
func (r *Recorder) ObserveComparison(match bool) {
	s := r.current()
	if s == nil {
		r.dropped.Add(1)
		return
	}
	s.comparisons.Add(1)
	if match {
		s.matches.Add(1)
	}
}

// ArmStats are one cohort's totals over a window.
type ArmStats struct {
	Requests       uint64 `json:"requests"`
	Errors5xx      uint64 `json:"errors_5xx"`
	UpstreamErrors uint64 `json:"upstream_errors"`
	hist           [numBuckets]uint64
}

// ErrorRate5xx is the share of 5xx responses (0 without requests).
func (c *ArmStats) ErrorRate5xx() float64 { return frac(c.Errors5xx, c.Requests) }

// UpstreamErrorRate is the share of failed upstream exchanges.
func (c *ArmStats) UpstreamErrorRate() float64 { return frac(c.UpstreamErrors, c.Requests) }

// Quantile estimates the q-quantile of latency by linear interpolation
// within the histogram bucket holding it (error at most half a bucket,
// about 6%). It is 0 without samples.
func (c *ArmStats) Quantile(q float64) time.Duration {
	return time.Duration(c.quantileMicros(q) * float64(time.Microsecond))
}

func (c *ArmStats) histTotal() uint64 {
	var n uint64
	for _, v := range c.hist {
		n += v
	}
	return n
}

func (c *ArmStats) quantileMicros(q float64) float64 {
	return histogram.QuantileMicros(c.hist[:], q)
}

// bucketOfQuantile returns the bucket holding the q-quantile.
func (c *ArmStats) bucketOfQuantile(q float64) int {
	n := c.histTotal()
	rank := q * float64(n)
	var cum float64
	for i, v := range c.hist {
		cum += float64(v)
		if v > 0 && cum >= rank {
			return i
		}
	}
	return numBuckets - 1
}

// countAbove returns how many samples lie in buckets above b.
func (c *ArmStats) countAbove(b int) uint64 {
	var n uint64
	for _, v := range c.hist[b+1:] {
		n += v
	}
	return n
}

func (c *ArmStats) add(o *ArmStats) {
	c.Requests += o.Requests
	c.Errors5xx += o.Errors5xx
	c.UpstreamErrors += o.UpstreamErrors
	for i := range c.hist {
		c.hist[i] += o.hist[i]
	}
}

// WindowStats are the totals of every slot that started within a window.
type WindowStats struct {
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	Control     ArmStats  `json:"control"`
	Canary      ArmStats  `json:"canary"`
	Excluded    ArmStats  `json:"excluded"`
	Comparisons uint64    `json:"comparisons"`
	Matches     uint64    `json:"matches"`
}

// MatchRate is the share of matching shadow comparisons.
func (w *WindowStats) MatchRate() float64 { return frac(w.Matches, w.Comparisons) }

// Arm returns the stats of c.
func (w *WindowStats) Arm(c splitter.Arm) *ArmStats {
	switch c {
	case splitter.ArmControl:
		return &w.Control
	case splitter.ArmCanary:
		return &w.Canary
	default:
		return &w.Excluded
	}
}

// Window returns the totals of the last d (rounded to whole slots; the
// current, partly filled slot is included).
func (r *Recorder) Window(d time.Duration) WindowStats {
	now := r.now()
	return r.Between(now.Add(-d), now)
}

// Between returns the totals of the slots that start at or after from and
// no later than to. Slots outside the retention are not available.
func (r *Recorder) Between(from, to time.Time) WindowStats {
	w := WindowStats{From: from, To: to}
	first, last := r.slotRange(from, to)
	for e := first; e <= last; e++ {
		r.addSlot(&w, e, false)
	}
	return w
}

// slotRange returns the indexes of the first and last slot of [from, to]
// still kept.
func (r *Recorder) slotRange(from, to time.Time) (first, last int64) {
	last = to.UnixNano() / r.slotNanos
	first = (from.UnixNano() + r.slotNanos - 1) / r.slotNanos
	if oldest := last - int64(len(r.slots)) + 2; first < oldest {
		first = oldest
	}
	return first, last
}

// addSlot adds (or, with sub, subtracts, saturating at 0) slot e's totals
// to w, if the ring still holds it. It reports false when the slot has
// already been reused for a later one (its counts are gone).
func (r *Recorder) addSlot(w *WindowStats, e int64, sub bool) bool {
	s := &r.slots[int(uint64(e)%uint64(len(r.slots)))]
	if cur := s.epoch.Load(); cur != e {
		return cur < e && cur != resettingEpoch // never written: nothing to add
	}
	var tmp [3]ArmStats
	for c := range s.cohorts {
		cc := &s.cohorts[c]
		t := &tmp[c]
		t.Requests = cc.requests.Load()
		if t.Requests == 0 {
			continue // nothing was observed, so the histogram is empty too
		}
		t.Errors5xx = cc.err5xx.Load()
		t.UpstreamErrors = cc.upstream.Load()
		for i := range cc.hist {
			t.hist[i] = cc.hist[i].Load()
		}
	}
	tmp[2] = ArmStats{Requests: s.exclRequests.Load(), Errors5xx: s.excl5xx.Load(), UpstreamErrors: s.exclUpstream.Load()}
	cmp, match := s.comparisons.Load(), s.matches.Load()
	// A slot recycled while it was being read is discarded whole.
	if s.epoch.Load() != e {
		return false
	}
	if sub {
		w.Control.sub(&tmp[0])
		w.Canary.sub(&tmp[1])
		w.Excluded.sub(&tmp[2])
		w.Comparisons -= min(w.Comparisons, cmp)
		w.Matches -= min(w.Matches, match)
		return true
	}
	w.Control.add(&tmp[0])
	w.Canary.add(&tmp[1])
	w.Excluded.add(&tmp[2])
	w.Comparisons += cmp
	w.Matches += match
	return true
}

// sub subtracts o, saturating at 0 (a write that landed in a slot after it
// was added would otherwise wrap around).
func (c *ArmStats) sub(o *ArmStats) {
	c.Requests -= min(c.Requests, o.Requests)
	c.Errors5xx -= min(c.Errors5xx, o.Errors5xx)
	c.UpstreamErrors -= min(c.UpstreamErrors, o.UpstreamErrors)
	for i := range c.hist {
		c.hist[i] -= min(c.hist[i], o.hist[i])
	}
}

// WindowCache answers Between for a window that slides forward, reading
// only the slots that entered and left it since the last call rather than
// the whole window: an evaluation every 10s of a 5m window of 1s slots
// reads about 20 slots instead of 300. It rebuilds from scratch whenever
// the window jumps, and at least once per window length, so that a write
// that reached a slot after it was added cannot skew the totals for long.
// Not safe for concurrent use.
type WindowCache struct {
	rec           *Recorder
	first, end    int64 // complete slots [first, end) are in sum
	rebuiltAt     int64
	clears        uint64 // the recorder's Clear count the sum was built at
	sum           WindowStats
	valid         bool
	reads, builds uint64
}

// NewWindowCache returns a cache over r.
func NewWindowCache(r *Recorder) *WindowCache { return &WindowCache{rec: r} }

// Between returns the same totals as Recorder.Between.
func (c *WindowCache) Between(from, to time.Time) WindowStats {
	r := c.rec
	first, last := r.slotRange(from, to)
	span := last - first
	clears := r.clears.Load()
	rebuild := !c.valid || clears != c.clears || first < c.first || first > c.end || last < c.end || last-c.rebuiltAt > span
	if !rebuild {
		// Subtract what left the window first: if a slot is already gone
		// (reused), the sum cannot be corrected and is rebuilt instead.
		for e := c.first; e < first && !rebuild; e++ {
			rebuild = !r.addSlot(&c.sum, e, true)
			c.reads++
		}
	}
	if rebuild {
		c.sum = WindowStats{}
		for e := first; e < last; e++ {
			r.addSlot(&c.sum, e, false)
			c.reads++
		}
		c.first, c.end, c.rebuiltAt, c.clears, c.valid = first, last, last, clears, true
		c.builds++
	} else {
		for e := c.end; e < last; e++ {
			r.addSlot(&c.sum, e, false)
			c.reads++
		}
		c.first, c.end = first, last
	}
	w := c.sum
	w.From, w.To = from, to
	r.addSlot(&w, last, false) // the current slot, partly filled
	c.reads++
	return w
}

func frac(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// EachSlot calls fn with the totals of every complete slot that starts at or
// after from and ends no later than to, oldest first, and returns the end of
// the last slot it visited (from when none). fn must not keep w. It is how
// sequential tests fold new data in without re-reading whole windows.
func (r *Recorder) EachSlot(from, to time.Time, fn func(w *WindowStats)) time.Time {
	first := (from.UnixNano() + r.slotNanos - 1) / r.slotNanos
	end := to.UnixNano() / r.slotNanos // slots before this index are complete
	if oldest := end - int64(len(r.slots)) + 2; first < oldest {
		first = oldest
	}
	last := from
	var w WindowStats
	for e := first; e < end; e++ {
		last = time.Unix(0, (e+1)*r.slotNanos)
		w = WindowStats{}
		r.addSlot(&w, e, false)
		if w.Canary.Requests == 0 && w.Control.Requests == 0 {
			continue
		}
		fn(&w)
	}
	return last
}
