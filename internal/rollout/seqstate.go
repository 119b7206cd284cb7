package rollout

import (
	"fmt"
	"math"
	"time"
)

// condSeq is one condition's sequential test across evaluations: the
// evidence folded so far and where it stands. A rollback condition starts a
// test process at the beginning of every block of one window, counted from
// the step's start (a process never sees data from before the step, so a
// change of share never manufactures a difference); each process lives
// procLife blocks, so that a regression starting anywhere is watched from
// its onset for at least two whole windows by a process that began at most
// one window earlier, and a process that crossed keeps the condition met
// while the next ones gather their own evidence. A promote condition has one process over the whole step. It is
// persisted with the route's state so that a restart neither forgets a
// breach nor gets a fresh alpha.
type condSeq struct {
	// Key identifies the condition (its text), so that a reload that
	// keeps it keeps its evidence.
	Key string `json:"key"`
	// Block is the index, within the step, of the newest block; -1 before
	// the first.
	Block int `json:"block"`
	// Spent counts the processes begun over the whole rollout: the
	// alpha-spending index of the newest.
	Spent int `json:"spent"`
	// FoldedTo is the end of the last slot folded into the processes.
	FoldedTo time.Time `json:"folded_to"`
	// Procs are the live processes, oldest first; the last began with
	// the newest block.
	Procs []seqProc `json:"procs,omitempty"`
	// BreachSince is when the condition started being met (zero: not met).
	BreachSince time.Time `json:"breach_since,omitempty"`
	// Silent counts consecutive evaluations without a verdict (no_data or
	// error), for on_no_data/on_error fail_after.
	Silent int `json:"silent,omitempty"`

	// ctl is the control histogram that sets latency cut-offs: only data
	// from before a slot decides that slot's cut-off, so the cut-off is
	// predictable and the test keeps its level. Not persisted.
	ctl *ArmStats
}

// seqProc is one test process: a pair of e-processes (against the
// control, against the floor) and whether it has crossed.
type seqProc struct {
	// Begun is the block (within the step) the process began with.
	Begun int `json:"begun"`
	// Spent is the process's alpha-spending index.
	Spent int     `json:"spent,omitempty"`
	Stat  seqStat `json:"-"`
	Floor seqStat `json:"-"`
	// LogLR and FloorLogLR persist Stat and Floor.
	LogLR      []float64 `json:"log_lr,omitempty"`
	FloorLogLR []float64 `json:"floor_log_lr,omitempty"`
	// Rejected: the process has crossed its threshold. It stays crossed:
	// Ville's inequality bounds the chance of ever crossing.
	Rejected bool `json:"rejected,omitempty"`
}

func newCondSeq(key string) *condSeq { return &condSeq{Key: key, Block: -1} }

func (s *condSeq) clone() *condSeq {
	c := *s
	if s.ctl != nil {
		h := *s.ctl
		c.ctl = &h
	}
	c.Procs = append([]seqProc(nil), s.Procs...)
	for i := range c.Procs {
		c.Procs[i].LogLR, c.Procs[i].FloorLogLR = nil, nil
	}
	return &c
}

// pack copies the statistics into their persisted fields.
func (s *condSeq) pack() {
	for i := range s.Procs {
		p := &s.Procs[i]
		p.LogLR = append([]float64(nil), p.Stat.logLR[:]...)
		p.FloorLogLR = append([]float64(nil), p.Floor.logLR[:]...)
	}
}

// unpack restores the statistics after loading; false if malformed.
func (s *condSeq) unpack() bool {
	if len(s.Procs) > procLife {
		return false
	}
	for i := range s.Procs {
		p := &s.Procs[i]
		if len(p.LogLR) > len(upGrid) || len(p.FloorLogLR) > len(upGrid) {
			return false
		}
		copy(p.Stat.logLR[:], p.LogLR)
		copy(p.Floor.logLR[:], p.FloorLogLR)
	}
	return true
}

// resetBlock starts a single fresh process at from (promotion: a new step).
func (s *condSeq) resetBlock(from time.Time) {
	s.FoldedTo = from
	s.Procs = []seqProc{{Spent: 1}}
}

// procLife is how many blocks a rollback condition's test process lives.
const procLife = 3

// rejected reports whether any live process has crossed.
func (s *condSeq) rejected() bool {
	for i := range s.Procs {
		if s.Procs[i].Rejected {
			return true
		}
	}
	return false
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
	if (m.kind != kindRate && m.kind != kindLatency) || m.name == "match_rate" {
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

// fold adds one slot's data to every live process of s.
func (t *seqTest) fold(s *condSeq, w *WindowStats) {
	procs := make([]*seqProc, 0, procLife)
	for i := range s.Procs {
		procs = append(procs, &s.Procs[i])
	}
	addRatio := func(x1, n1, x0, n0 uint64, k float64) {
		for _, p := range procs {
			p.Stat.addRatio(x1, n1, x0, n0, k, t.up)
		}
	}
	addRate := func(floor bool, x, n uint64, p0 float64) {
		for _, p := range procs {
			if floor {
				p.Floor.addRate(x, n, p0, t.up)
			} else {
				p.Stat.addRate(x, n, p0, t.up)
			}
		}
	}
	can, ctl := &w.Canary, &w.Control
	switch t.m.kind {
	case kindRate:
		x1, x0 := can.Errors5xx, ctl.Errors5xx
		if t.m.name == "upstream_error_rate" {
			x1, x0 = can.UpstreamErrors, ctl.UpstreamErrors
		}
		if !t.hasBase {
			addRate(false, x1, can.Requests, t.thr)
			return
		}
		addRatio(x1, can.Requests, x0, ctl.Requests, t.k)
		if p0 := t.k * t.floor; p0 > 0 && p0 < 1 {
			addRate(true, x1, can.Requests, p0)
		}
	case kindLatency:
		tail := 1 - t.m.quantile
		n1 := can.histTotal()
		if !t.hasBase {
			addRate(false, exceedances(can, t.thr*1e6, t.up), n1, tail)
			return
		}
		if t.floor > 0 {
			addRate(true, exceedances(can, t.k*t.floor*1e6, t.up), n1, tail)
		}
		if s.ctl == nil {
			s.ctl = &ArmStats{}
		}
		// The cut-off needs enough control data to sit in the tail: ten
		// expected exceedances.
		if float64(s.ctl.histTotal())*tail >= 10 {
			b := s.ctl.bucketOfQuantile(t.m.quantile)
			_, cut := bucketBounds(b)
			x0 := ctl.countAbove(b)
			x1 := exceedances(can, t.k*cut, t.up)
			addRatio(x1, n1, x0, ctl.histTotal(), 1)
		}
		s.ctl.add(ctl)
	}
}

// exceedances counts the samples above us, rounding to the histogram's
// buckets in the direction that favours the null: when testing "higher"
// only buckets entirely above us count, when testing "lower" every bucket
// reaching above us does.
func exceedances(c *ArmStats, us float64, up bool) uint64 {
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
func (t *seqTest) decide(s *seqProc, a float64) (bool, float64, string) {
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
// condition's process begun with block j is tested at rollbackAlpha ×
// spendBlock(j) and, once crossed, keeps the condition met for the rest of
// its life of procLife blocks. A promote condition tests everything since the step
// began at alpha.
func (e *evaluator) runSeq(t *seqTest, st *condSeq, win time.Duration, rollback bool) (bool, float64, string) {
	fold := func(w *WindowStats) { t.fold(st, w) }
	if !rollback {
		if len(st.Procs) != 1 || st.FoldedTo.Before(e.stepStart) {
			st.resetBlock(e.stepStart)
		}
		st.FoldedTo = e.rec.EachSlot(st.FoldedTo, e.now, fold)
		ok, ev, text := t.decide(&st.Procs[0], e.alpha())
		return ok, ev, "since the step began, " + text
	}
	planned, ok := e.planned[win]
	if !ok {
		planned = e.spec.plannedBlocks(win)
	}
	alphaOf := func(p *seqProc) float64 { return e.rollbackAlpha * spendBlock(p.Spent, planned) }
	look := func() {
		for i := range st.Procs {
			if p := &st.Procs[i]; !p.Rejected {
				if ok, _, _ := t.decide(p, alphaOf(p)); ok {
					p.Rejected = true
				}
			}
		}
	}
	b := int(e.now.Sub(e.stepStart) / win)
	if b < 0 {
		b = 0
	}
	if b != st.Block {
		if st.Block >= 0 && len(st.Procs) > 0 {
			// One last look before the oldest process ends.
			st.FoldedTo = e.rec.EachSlot(st.FoldedTo, e.stepStart.Add(time.Duration(st.Block+1)*win), fold)
			look()
		}
		live := st.Procs[:0]
		for _, p := range st.Procs {
			if p.Begun > b-procLife {
				live = append(live, p)
			}
		}
		st.Spent++
		st.Procs = append(live, seqProc{Begun: b, Spent: st.Spent})
		st.Block = b
		if from := e.stepStart.Add(time.Duration(b) * win); st.FoldedTo.Before(from) || len(st.Procs) == 1 {
			st.FoldedTo = from
		}
	}
	st.FoldedTo = e.rec.EachSlot(st.FoldedTo, e.now, fold)
	look()
	// Explain with the process that crossed, else the one with the most evidence.
	best := &st.Procs[len(st.Procs)-1]
	for i := range st.Procs {
		p := &st.Procs[i]
		if p.Rejected != best.Rejected {
			if p.Rejected {
				best = p
			}
			continue
		}
		if p.Stat.evidence() > best.Stat.evidence() {
			best = p
		}
	}
	_, ev, text := t.decide(best, alphaOf(best))
	text = fmt.Sprintf("window block %d of the step; the process begun with block %d (#%d of the rollout, alpha %.2g): %s", st.Block+1, best.Begun+1, best.Spent, alphaOf(best), text)
	if best.Rejected {
		text += "; crossed"
	}
	return st.rejected(), ev, text
}
