package rollout

import (
	"fmt"
	"time"
)

// op is a condition's comparison, compiled from whichever YAML key is set.
type op uint8

const (
	opBelow op = iota + 1
	opAbove
	opAtMost
	opAtLeast
	opAboveBaseline
	opBelowBaseline
	opConsecutive
)

var opNames = [...]string{opBelow: "below", opAbove: "above", opAtMost: "at_most", opAtLeast: "at_least",
	opAboveBaseline: "above_baseline", opBelowBaseline: "below_baseline", opConsecutive: "consecutive"}

func (o op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown"
}

// symbol is the comparison as an operator, for explanations.
func (o op) symbol() string {
	switch o {
	case opBelow:
		return "<"
	case opAbove:
		return ">"
	case opAtMost:
		return "<="
	case opAtLeast:
		return ">="
	}
	return "?"
}

// compiledCond is a Condition resolved once, when the route is added,
// instead of re-read as strings on every evaluation: the metric, the
// comparison, thresholds, window, sample gate, sequential test, and the
// texts explanations and persisted state use.
type compiledCond struct {
	c          *Condition
	index      int
	rollback   bool
	text       string // as the policy reads ("error_rate_5xx above_baseline 2x for 5m")
	key        string // names its persisted sequential state
	metric     metricInfo
	known      bool
	op         op
	thr        *Threshold // absolute comparisons
	factor     float64    // threshold shown: value, factor or probe count
	window     time.Duration
	minSamples uint64
	seq        seqTest
	isSeq      bool
}

// compiledStep is one step's conditions in force.
type compiledStep struct {
	promote, rollback []compiledCond
}

// compiledPolicy is a validated, defaulted Spec compiled for evaluation.
type compiledPolicy struct {
	steps []compiledStep
	// rollbackAlpha is alpha shared among the statistical guardrails.
	rollbackAlpha float64
	// planned is the number of blocks alpha is spent over, by window.
	planned map[time.Duration]int
}

// compile resolves every step's conditions. s must have defaults applied.
func compile(s *Spec) *compiledPolicy {
	p := &compiledPolicy{rollbackAlpha: float64(s.Alpha) / float64(s.statisticalRollbackConditions()), planned: map[time.Duration]int{}}
	for i := range s.Steps {
		var st compiledStep
		for j := range s.promoteWhen(i) {
			st.promote = append(st.promote, s.compileCond(&s.promoteWhen(i)[j], j, false, i))
		}
		for j := range s.rollbackWhen(i) {
			cc := s.compileCond(&s.rollbackWhen(i)[j], j, true, i)
			if _, ok := p.planned[cc.window]; !ok {
				p.planned[cc.window] = s.plannedBlocks(cc.window)
			}
			st.rollback = append(st.rollback, cc)
		}
		p.steps = append(p.steps, st)
	}
	return p
}

func (s *Spec) compileCond(c *Condition, index int, rollback bool, step int) compiledCond {
	cc := compiledCond{c: c, index: index, rollback: rollback, text: c.describe(), window: s.window(c)}
	if rollback {
		cc.key = "rollback:" + cc.text
	} else {
		cc.key = fmt.Sprintf("promote:%d:%s", step, cc.text)
	}
	cc.minSamples = DefaultMinSamples
	if s.MinSamples > 0 {
		cc.minSamples = uint64(s.MinSamples)
	}
	if c.MinSamples > 0 {
		cc.minSamples = uint64(c.MinSamples)
	}
	cc.metric, cc.known = s.lookupMetric(c.Metric)
	switch {
	case c.Below != nil:
		cc.op, cc.thr = opBelow, c.Below
	case c.Above != nil:
		cc.op, cc.thr = opAbove, c.Above
	case c.AtMost != nil:
		cc.op, cc.thr = opAtMost, c.AtMost
	case c.AtLeast != nil:
		cc.op, cc.thr = opAtLeast, c.AtLeast
	case c.AboveBaseline != nil:
		cc.op, cc.factor = opAboveBaseline, float64(*c.AboveBaseline)
	case c.BelowBaseline != nil:
		cc.op, cc.factor = opBelowBaseline, float64(*c.BelowBaseline)
	case c.Consecutive > 0:
		cc.op, cc.factor = opConsecutive, float64(c.Consecutive)
	}
	if cc.thr != nil {
		cc.factor = cc.thr.value
	}
	if cc.known {
		cc.seq, cc.isSeq = sequentialTest(c, cc.metric, rollback)
	}
	return cc
}

// baseline reports whether the condition compares against the control.
func (cc *compiledCond) baseline() bool { return cc.op == opAboveBaseline || cc.op == opBelowBaseline }

// longestWindow is the longest window of the step's conditions: a step is
// "waiting for samples" only once its hold and its windows have passed.
func (st *compiledStep) longestWindow() time.Duration {
	var d time.Duration
	for _, list := range [][]compiledCond{st.promote, st.rollback} {
		for i := range list {
			d = max(d, list[i].window)
		}
	}
	return d
}
