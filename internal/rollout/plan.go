package rollout

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Plan is the whole rollout a spec describes, step by step, with the
// traffic each step needs for its conditions to reach min_samples.
type Plan struct {
	Mode     Mode
	Interval time.Duration
	Alpha    float64
	// Guardrails is how many rollback conditions share alpha.
	Guardrails  int
	Steps       []PlanStep
	Notify      []string
	ExpectedRPS float64
}

// PlanStep is one step of a Plan.
type PlanStep struct {
	Index      int
	Percent    cfgtypes.BasisPoints
	Hold       time.Duration
	Deadline   time.Duration
	OnDeadline string
	Pause      bool
	Promote    []PlanCondition
	Rollback   []PlanCondition
	// NeedRPS is the route traffic every condition of the step needs to
	// reach its min_samples within its window (0: none needs any).
	NeedRPS float64
}

// PlanCondition is one condition of a step, with its sample need.
type PlanCondition struct {
	Text       string
	Window     time.Duration
	MinSamples int
	// NeedRPS is the route's request rate at which the smaller cohort
	// collects MinSamples in Window at this step's share; 0 when the
	// condition needs no request samples (counts, probes, external
	// metrics, match rate which counts comparisons).
	NeedRPS float64
	// NotApplicable: a baseline comparison at 100%.
	NotApplicable bool
}

// Plan returns the plan of s (defaults applied to a copy).
func (s Spec) Plan() Plan {
	s = cloneSpec(s)
	s.ApplyDefaults()
	p := Plan{Mode: s.Mode, Interval: s.Interval.D(), Alpha: float64(s.Alpha), Guardrails: s.statisticalRollbackConditions(),
		Notify: s.Notify, ExpectedRPS: s.ExpectedRPS}
	for i, st := range s.Steps {
		ps := PlanStep{Index: i, Percent: st.Percent.BP(), Hold: st.Hold.D(), Deadline: st.Deadline.D(), OnDeadline: st.OnDeadline, Pause: st.Pause}
		if ps.Deadline > 0 && ps.OnDeadline == "" {
			ps.OnDeadline = "pause"
		}
		share := st.Percent.BP().Percent() / 100
		for _, list := range []struct {
			conds    []Condition
			out      *[]PlanCondition
			rollback bool
		}{{s.promoteWhen(i), &ps.Promote, false}, {s.rollbackWhen(i), &ps.Rollback, true}} {
			for j := range list.conds {
				pc := s.planCondition(&list.conds[j], share, list.rollback)
				ps.NeedRPS = math.Max(ps.NeedRPS, pc.NeedRPS)
				*list.out = append(*list.out, pc)
			}
		}
		p.Steps = append(p.Steps, ps)
	}
	return p
}

func (s *Spec) planCondition(c *Condition, share float64, rollback bool) PlanCondition {
	pc := PlanCondition{Text: c.describe(), Window: s.window(c), MinSamples: s.MinSamples}
	if c.MinSamples > 0 {
		pc.MinSamples = c.MinSamples
	}
	m, ok := s.lookupMetric(c.Metric)
	if !ok || m.kind == kindHealth || m.kind == kindExternal || m.name == "match_rate" {
		pc.MinSamples = 0
		return pc
	}
	thr, _ := c.absolute()
	if rollback && m.kind == kindCount && thr != nil {
		pc.MinSamples = 0 // a count past its threshold needs no sample size
		return pc
	}
	baseline := c.AboveBaseline != nil || c.BelowBaseline != nil
	cohort := share
	if baseline {
		if share >= 1 {
			pc.NotApplicable, pc.MinSamples = true, 0
			return pc
		}
		cohort = math.Min(share, 1-share)
	} else if share < 1 {
		// The control needs min_samples too, except at 100%.
		cohort = math.Min(share, 1-share)
	}
	if cohort > 0 && pc.Window > 0 {
		pc.NeedRPS = math.Ceil(float64(pc.MinSamples) / (pc.Window.Seconds() * cohort))
	}
	return pc
}

// Short reports the steps that expected_rps cannot carry, one line each
// ("steps[0] (1%): min_samples 1000 in 5m needs >= 334 req/s ..."); empty
// without expected_rps.
func (p Plan) Short() []string {
	if p.ExpectedRPS <= 0 {
		return nil
	}
	var out []string
	for _, st := range p.Steps {
		var blind []string
		var worst PlanCondition
		for _, c := range append(append([]PlanCondition(nil), st.Promote...), st.Rollback...) {
			if c.NeedRPS > p.ExpectedRPS {
				blind = append(blind, c.Text)
				if c.NeedRPS > worst.NeedRPS {
					worst = c
				}
			}
		}
		if len(blind) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("steps[%d] (%s%%): min_samples %d in %s needs >= %s req/s on this route, expected_rps is %s: %s get no verdict at this step",
			st.Index, st.Percent, worst.MinSamples, fmtDur(worst.Window), fmtRPS(worst.NeedRPS), fmtRPS(p.ExpectedRPS), strings.Join(blind, ", ")))
	}
	return out
}

func fmtRPS(v float64) string { return fmt.Sprintf("%g", v) }

// Text renders the plan for people: every step, its hold and deadline,
// its conditions with the traffic each needs, the guardrails and how they
// share alpha, and who is notified.
func (p Plan) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, evaluated every %s; rollback alpha %g over the whole rollout, shared by %d statistical guardrail(s)\n",
		p.Mode, fmtDur(p.Interval), p.Alpha, p.Guardrails)
	if p.ExpectedRPS > 0 {
		fmt.Fprintf(&b, "expected traffic: %s req/s\n", fmtRPS(p.ExpectedRPS))
	}
	for _, st := range p.Steps {
		fmt.Fprintf(&b, "\nsteps[%d]: %s%%", st.Index, st.Percent)
		if st.Hold > 0 {
			fmt.Fprintf(&b, ", hold %s", fmtDur(st.Hold))
		}
		if st.Deadline > 0 {
			fmt.Fprintf(&b, ", deadline %s then %s", fmtDur(st.Deadline), st.OnDeadline)
		}
		if st.Pause {
			b.WriteString(", then waits for a manual promote")
		}
		if st.NeedRPS > 0 {
			fmt.Fprintf(&b, "; needs >= %s req/s on this route", fmtRPS(st.NeedRPS))
			if p.ExpectedRPS > 0 && st.NeedRPS > p.ExpectedRPS {
				b.WriteString(" (NOT REACHED at expected_rps)")
			}
		}
		b.WriteString("\n")
		write := func(title string, cs []PlanCondition) {
			if len(cs) == 0 {
				fmt.Fprintf(&b, "  %s: none\n", title)
				return
			}
			fmt.Fprintf(&b, "  %s:\n", title)
			for _, c := range cs {
				fmt.Fprintf(&b, "    - %s", c.Text)
				switch {
				case c.NotApplicable:
					b.WriteString(" (not applicable at 100%: no control)")
				case c.NeedRPS > 0:
					fmt.Fprintf(&b, " (min_samples %d in %s: needs >= %s req/s)", c.MinSamples, fmtDur(c.Window), fmtRPS(c.NeedRPS))
					if p.ExpectedRPS > 0 && c.NeedRPS > p.ExpectedRPS {
						b.WriteString(" NO VERDICT at expected_rps")
					}
				}
				b.WriteString("\n")
			}
		}
		write("promote when all pass", st.Promote)
		write("roll back when any fires", st.Rollback)
	}
	if len(p.Notify) > 0 {
		fmt.Fprintf(&b, "\nnotify: %s\n", strings.Join(p.Notify, ", "))
	} else {
		b.WriteString("\nnotify: nobody (no notify webhooks)\n")
	}
	return b.String()
}
