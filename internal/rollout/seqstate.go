package rollout

import (
	"fmt"
	"math"
	"time"
)

// condSeq is one condition's sequential test across evaluations: the
// evidence folded so far and where it stands. Rollback conditions test
// consecutive, non-overlapping blocks of one window each, starting at the
// step's start (a block never straddles a change of share); promote
// conditions test everything since the step began. It is persisted with
// the route's state so that a restart neither forgets a breach nor gets a
// fresh alpha.
type condSeq struct {
	// Key identifies the condition (its text), so that a reload that
	// keeps it keeps its evidence.
	Key string `json:"key"`
	// Block is the index, within the step, of the block being tested; -1
	// before the first.
	Block int `json:"block"`
	// Spent counts the blocks begun over the whole rollout, this one
	// included: the alpha-spending index.
	Spent int `json:"spent"`
	// FoldedTo is the end of the last slot folded into Stat.
	FoldedTo time.Time `json:"folded_to"`
	Stat     seqStat   `json:"-"`
	Floor    seqStat   `json:"-"`
	// LogLR and FloorLogLR persist Stat and Floor.
	LogLR      []float64 `json:"log_lr,omitempty"`
	FloorLogLR []float64 `json:"floor_log_lr,omitempty"`
	// Rejected: this block's test has crossed its threshold (it stays
	// crossed: Ville's inequality bounds the chance of ever crossing).
	Rejected bool `json:"rejected,omitempty"`
	// PrevRejected: the block before this one crossed; the condition stays
	// met until this block ends without crossing.
	PrevRejected bool `json:"prev_rejected,omitempty"`
	// BreachSince is when the condition started being met (zero: not met).
	BreachSince time.Time `json:"breach_since,omitempty"`
	// Silent counts consecutive evaluations without a verdict (no_data or
	// error), for on_no_data/on_error fail_after.
	Silent int `json:"silent,omitempty"`

	// ctl is the control histogram that sets latency cut-offs: only data
	// from before a slot decides that slot's cut-off, so the cut-off is
	// predictable and the test keeps its level. Not persisted.
	ctl *CohortStats
}

func newCondSeq(key string) *condSeq { return &condSeq{Key: key, Block: -1} }

func (s *condSeq) clone() *condSeq {
	c := *s
	if s.ctl != nil {
		h := *s.ctl
		c.ctl = &h
	}
	return &c
}

// pack copies the statistics into their persisted fields.
func (s *condSeq) pack() {
	s.LogLR = append(s.LogLR[:0], s.Stat.logLR[:]...)
	s.FloorLogLR = append(s.FloorLogLR[:0], s.Floor.logLR[:]...)
}

// unpack restores the statistics after loading.
func (s *condSeq) unpack() {
	copy(s.Stat.logLR[:], s.LogLR)
	copy(s.Floor.logLR[:], s.FloorLogLR)
}

// resetBlock starts a new block (or, for promotion, a new step).
func (s *condSeq) resetBlock(from time.Time) {
	s.FoldedTo = from
	s.Stat, s.Floor = seqStat{}, seqStat{}
	s.Rejected = false
}

// seqTest describes how a condition's samples become evidence.
type seqTest struct {
	m       metricInfo
	up      bool    // evidence of "canary higher" (rollback of above*, promote of above*)
	k       float64 // baseline factor (0: an absolute threshold)
	thr     float64 // absolute threshold (fraction or seconds)
	floor   float64 // min_baseline floor (fraction or seconds)
	union   bool    // pass when either test rejects (promotion below_baseline); else both must
	hasBase bool
}

// sequentialTest returns the test of c, or ok false when c is not tested
// sequentially (counts, match rate, health, external metrics, degenerate
// thresholds of 0 or 100%, which are decided on the values alone).
func sequentialTest(c *Condition, m metricInfo, rollback bool) (seqTest, bool) {
	if m.kind != kindRate && m.kind != kindLatency {
		return seqTest{}, false
	}
	t := seqTest{m: m, floor: defaultFloor(m)}
	if c.MinBaseline != nil {
		t.floor = c.MinBaseline.value
	}
	switch {
	case c.AboveBaseline != nil:
		t.k, t.up, t.hasBase = float64(*c.AboveBaseline), true, true
	case c.BelowBaseline != nil:
		t.k, t.up, t.hasBase = float64(*c.BelowBaseline), false, true
	default:
		thr, cmp := c.absolute()
		if thr == nil {
			return seqTest{}, false
		}
		t.thr, t.up = thr.value, cmp == "above" || cmp == "at_least"
		if t.thr <= 0 || (m.kind == kindRate && t.thr >= 1) {
			return seqTest{}, false
		}
	}
	// A promotion that needs the canary below a baseline passes when it is
	// below K × control or below K × floor: either test may show it. A
	// rollback needs both (H0 is canary <= K × max(control, floor)).
	t.union = t.hasBase && !rollback && !t.up
	return t, true
}

// fold adds one slot's data to s.
func (t *seqTest) fold(s *condSeq, w *WindowStats) {
	can, ctl := &w.Canary, &w.Control
	switch t.m.kind {
	case kindRate:
		x1, x0 := can.Errors5xx, ctl.Errors5xx
		if t.m.name == "upstream_error_rate" {
			x1, x0 = can.UpstreamErrors, ctl.UpstreamErrors
		}
		if !t.hasBase {
			s.Stat.addRate(x1, can.Requests, t.thr, t.up)
			return
		}
		s.Stat.addRatio(x1, can.Requests, x0, ctl.Requests, t.k, t.up)
		if p0 := t.k * t.floor; p0 > 0 && p0 < 1 {
			s.Floor.addRate(x1, can.Requests, p0, t.up)
		}
	case kindLatency:
		tail := 1 - t.m.quantile
		n1 := can.histTotal()
		if !t.hasBase {
			s.Stat.addRate(exceedances(can, t.thr*1e6, t.up), n1, tail, t.up)
			return
		}
		if t.floor > 0 {
			s.Floor.addRate(exceedances(can, t.k*t.floor*1e6, t.up), n1, tail, t.up)
		}
		if s.ctl == nil {
			s.ctl = &CohortStats{}
		}
		// The cut-off needs enough control data to sit in the tail: ten
		// expected exceedances.
		if float64(s.ctl.histTotal())*tail >= 10 {
			b := s.ctl.bucketOfQuantile(t.m.quantile)
			_, cut := bucketBounds(b)
			x0 := ctl.countAbove(b)
			x1 := exceedances(can, t.k*cut, t.up)
			s.Stat.addRatio(x1, n1, x0, ctl.histTotal(), 1, t.up)
		}
		s.ctl.add(ctl)
	}
}

// exceedances counts the samples above us, rounding to the histogram's
// buckets in the direction that favours the null: when testing "higher"
// only buckets entirely above us count, when testing "lower" every bucket
// reaching above us does.
func exceedances(c *CohortStats, us float64, up bool) uint64 {
	if us <= 0 {
		return c.histTotal()
	}
	i := bucketOf(time.Duration(us * float64(time.Microsecond)))
	if lo, _ := bucketBounds(i); up && lo < us {
		i++
	}
	if i <= 0 {
		return c.histTotal()
	}
	if i >= numBuckets {
		return 0
	}
	return c.countAbove(i - 1)
}

// decide reports whether the evidence in s rejects the null at level a,
// and a line that says so. For a test with a floor, the two e-values
// combine as t.union says.
func (t *seqTest) decide(s *condSeq, a float64) (bool, float64, string) {
	e := s.Stat.evidence()
	if !t.hasBase || t.floor <= 0 || (t.m.kind == kindRate && t.k*t.floor >= 1) {
		return e >= 1/a, e, fmt.Sprintf("e=%s vs 1/%.3g", fmtE(e), a)
	}
	f := s.Floor.evidence()
	if t.union {
		// Each at a/2: either may pass the gate.
		ok := e >= 2/a || f >= 2/a
		return ok, math.Max(e, f), fmt.Sprintf("e=%s (vs control), %s (vs floor); passes at 2/%.3g", fmtE(e), fmtE(f), a)
	}
	return e >= 1/a && f >= 1/a, math.Min(e, f), fmt.Sprintf("e=%s (vs control), %s (vs floor); both must reach 1/%.3g", fmtE(e), fmtE(f), a)
}

func fmtE(e float64) string {
	switch {
	case math.IsInf(e, 1) || e > 1e12:
		return ">1e12"
	case e < 1e-3:
		return "<0.001"
	}
	return fmt.Sprintf("%.3g", e)
}

// seqFor returns the sequential state of condition index, or nil.
func (e *evaluator) seqFor(index int, rollback bool) *condSeq {
	list := e.pseqs
	if rollback {
		list = e.seqs
	}
	if index < 0 || index >= len(list) {
		return nil
	}
	return list[index]
}

// runSeq folds the slots not yet seen into st and decides. A rollback
// condition tests consecutive blocks of one window from the step's start,
// the j-th at rollbackAlpha × spendBlock(j): a block whose test crosses
// keeps the condition met until the next block ends without crossing. A
// promote condition tests everything since the step began at alpha.
func (e *evaluator) runSeq(t *seqTest, st *condSeq, win time.Duration, rollback bool) (bool, float64, string) {
	fold := func(w *WindowStats) { t.fold(st, w) }
	if !rollback {
		if st.FoldedTo.Before(e.stepStart) {
			st.resetBlock(e.stepStart)
		}
		st.FoldedTo = e.rec.EachSlot(st.FoldedTo, e.now, fold)
		ok, ev, text := t.decide(st, e.alpha())
		return ok, ev, "since the step began, " + text
	}
	b := int(e.now.Sub(e.stepStart) / win)
	if b < 0 {
		b = 0
	}
	planned := e.spec.plannedBlocks(win)
	if b != st.Block {
		if st.Block >= 0 && !st.Rejected {
			// One last look at the block that just ended.
			end := e.stepStart.Add(time.Duration(st.Block+1) * win)
			st.FoldedTo = e.rec.EachSlot(st.FoldedTo, end, fold)
			if ok, _, _ := t.decide(st, e.rollbackAlpha*spendBlock(st.Spent, planned)); ok {
				st.Rejected = true
			}
		}
		st.PrevRejected = st.Block >= 0 && b == st.Block+1 && st.Rejected
		st.Block = b
		st.Spent++
		st.resetBlock(e.stepStart.Add(time.Duration(b) * win))
	}
	st.FoldedTo = e.rec.EachSlot(st.FoldedTo, e.now, fold)
	a := e.rollbackAlpha * spendBlock(st.Spent, planned)
	ok, ev, text := t.decide(st, a)
	if ok {
		st.Rejected = true
	}
	text = fmt.Sprintf("block %d of the step (#%d of the rollout, alpha %.2g): %s", st.Block+1, st.Spent, a, text)
	switch {
	case st.Rejected && !ok:
		text += "; crossed earlier in this block"
	case !st.Rejected && st.PrevRejected:
		text += "; the previous block crossed, still met until this block ends"
	}
	return st.Rejected || st.PrevRejected, ev, text
}
