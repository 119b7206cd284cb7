package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// briefPolicyWithState is the brief's policy with a temporary state file.
func briefPolicyWithState(t *testing.T, extra string) Spec {
	t.Helper()
	y := strings.Replace(briefPolicy, "state_file: /var/lib/shadowproxy/rollout-api.json", "state_file: "+tempStateFile(t), 1)
	return parseSpec(t, y+extra)
}

func firstEvent(events []Event, action string) (Event, bool) {
	for _, e := range events {
		if e.Action == action {
			return e, true
		}
	}
	return Event{}, false
}

func firedConditions(e *Explanation) []string {
	var out []string
	if e == nil {
		return nil
	}
	for _, r := range e.Rollback {
		if r.Fired {
			out = append(out, r.Metric)
		}
	}
	return out
}

// A healthy canary walks 1% → 10% → 50% → 100% on the brief's policy, each
// promotion at the first evaluation after its hold, and completes.
func TestHealthyCanaryWalksToCompletion(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 1)
	s.compares, s.matchRate = 50, 0.999
	s.start()
	if bp, halted, _ := s.handle.get(); bp != 100 || halted {
		t.Fatalf("AddRoute applied %s%% halted=%v, want steps[0] = 1%%", bp, halted)
	}
	s.runFor(8*time.Hour, s.stateIs(StateCompleted))

	events := s.events.all()
	var got []string
	for _, e := range events {
		got = append(got, e.Action+"@"+e.At.Sub(t0).String()+"→"+cfgtypes.BasisPoints(e.Percent*100).String())
	}
	// At 120 req/s the 1% step's guardrails never see min_samples in their
	// 5m window, which the controller says once the hold is over; each
	// promotion waits for its sequential test to show the canary is below
	// the thresholds (error_rate_5xx below 0.5% needs ~2,600 canary
	// requests at 0.1% errors), not just for the hold.
	want := []string{"waiting_for_samples@30m0s→1", "promote@40m0s→10", "promote@2h40m0s→50", "promote@6h40m0s→100", "complete@6h43m20s→100"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	if bp, halted, _ := s.handle.get(); bp != 10000 || halted {
		t.Fatalf("final share %s halted=%v", bp, halted)
	}
	// Every promotion carries its explanation: each promote_when passed.
	for _, e := range events {
		if e.Action == ActionWaiting {
			continue
		}
		if e.Explanation == nil || len(e.Explanation.Promote) != 3 {
			t.Fatalf("%s without a full explanation: %+v", e.Action, e.Explanation)
		}
		for _, r := range e.Explanation.Promote {
			if r.Verdict != VerdictPass || r.Canary == nil || r.Detail == "" {
				t.Fatalf("%s: %+v", e.Action, r)
			}
		}
		if e.By != "controller" || e.DryRun || len(e.Targets) != 1 {
			t.Fatalf("event %+v", e)
		}
	}
	st := s.status()
	if st.State != StateCompleted || st.Step != 3 || st.Percent != 100 || st.LastAction != ActionComplete {
		t.Fatalf("status %+v", st)
	}
	saved, err := readState(s.spec.StateFile)
	if err != nil || saved.State != StateCompleted || saved.Step != 3 {
		t.Fatalf("state file: %+v %v", saved, err)
	}
}

// A canary that starts failing 5% of requests (control 0.1%) is rolled back
// within the condition's "for" (5m) of the breach becoming visible.
func TestErrorRegressionRollsBackWithinFor(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 2)
	s.perTick = 5000 // 50 canary requests per 10s at 1%
	s.start()
	s.runFor(10*time.Minute, nil)
	if st := s.status(); st.State != StateProgressing {
		t.Fatalf("healthy phase: %+v", st)
	}
	onset := s.clock.Now()
	s.canary.errRate = 0.05
	s.runFor(15*time.Minute, s.stateIs(StateRolledBack))

	ev, ok := firstEvent(s.events.all(), ActionRollback)
	if !ok {
		t.Fatalf("no rollback; last evaluation %+v", s.status().LastEvaluation)
	}
	if limit := onset.Add(5*time.Minute + time.Minute); ev.At.After(limit) {
		t.Fatalf("rolled back %s after onset, want within for (5m) plus detection", ev.At.Sub(onset))
	}
	if ev.At.Sub(onset) < 5*time.Minute {
		t.Fatalf("rolled back %s after onset, before the condition held for 5m", ev.At.Sub(onset))
	}
	if f := firedConditions(ev.Explanation); len(f) != 1 || f[0] != "error_rate_5xx" {
		t.Fatalf("fired %v", f)
	}
	for _, r := range ev.Explanation.Rollback {
		if r.Metric != "error_rate_5xx" {
			continue
		}
		if *r.Canary < 0.002 || *r.Control > 0.002 || r.BreachingFor < 300 || len(r.Tests) != 1 || r.Tests[0].Name != "msprt" {
			t.Fatalf("explanation %+v", r)
		}
	}
	if bp, halted, _ := s.handle.get(); bp != 0 || !halted {
		t.Fatalf("after rollback: %s%% halted=%v", bp, halted)
	}
	if ev.FromPercent != 1 || ev.Percent != 0 || ev.State != StateRolledBack || !strings.Contains(ev.Text(), "rolled back") ||
		!strings.Contains(ev.Text(), fmt.Sprintf("(steps[%d] of steps[0]–steps[%d], rolled_back", ev.Step, ev.Steps-1)) {
		t.Fatalf("event %+v\n%s", ev, ev.Text())
	}
	// Rolled back stays rolled back: nothing changes until a person resumes.
	n := len(s.events.all())
	s.runFor(30*time.Minute, nil)
	if len(s.events.all()) != n || s.status().State != StateRolledBack {
		t.Fatal("the controller acted after the rollback")
	}
	if saved, _ := readState(s.spec.StateFile); saved.State != StateRolledBack {
		t.Fatalf("state file: %+v", saved)
	}
}

func TestLatencyRegressionRollsBack(t *testing.T) {
	cases := map[string]cohortModel{
		// Every request 6x slower: the p99 ratio is 6 > 3x. (At 3.5x the
		// canary is barely past the null boundary of 3x, and a test of
		// H0: canary <= 3 × control needs far more data to tell.)
		"whole distribution": {errRate: 0.001, median: 240 * time.Millisecond, sigma: 0.5},
		// Only 4% of requests 12x slower: the median does not move, the
		// p99 does. Mann-Whitney alone would often miss it.
		"tail only": {errRate: 0.001, median: 40 * time.Millisecond, sigma: 0.5, slowFrac: 0.04, slowFactor: 12},
	}
	for name, canary := range cases {
		t.Run(name, func(t *testing.T) {
			s := newSim(t, briefPolicyWithState(t, ""), 3)
			s.perTick = 5000
			s.canary = canary
			s.start()
			s.runFor(20*time.Minute, s.stateIs(StateRolledBack))
			ev, ok := firstEvent(s.events.all(), ActionRollback)
			if !ok {
				t.Fatalf("no rollback: %+v", s.status().LastEvaluation.Rollback)
			}
			if f := firedConditions(ev.Explanation); len(f) != 1 || f[0] != "latency_p99" {
				t.Fatalf("fired %v", f)
			}
			for _, r := range ev.Explanation.Rollback {
				if r.Metric == "latency_p99" && (*r.Ratio <= 3 || len(r.Tests) != 1 || r.Tests[0].Name != "msprt") {
					t.Fatalf("%+v", r)
				}
			}
		})
	}
}

// Too few samples: even an awful canary gets no verdict, neither rollback
// nor promotion; the explanation says why.
func TestTooFewSamplesHoldsWithoutVerdict(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 4)
	s.perTick = 300 // 3 canary requests per 10s at 1%
	s.compares = 50
	s.canary = cohortModel{errRate: 0.5, median: 400 * time.Millisecond, sigma: 0.5}
	s.start()
	s.runFor(time.Hour, nil)
	st := s.status()
	if st.State != StateProgressing || st.Step != 0 || strings.Join(s.events.actions(), ",") != ActionWaiting {
		t.Fatalf("status %+v events %v", st, s.events.actions())
	}
	e := st.LastEvaluation
	if e.Decision != DecisionHold || !strings.Contains(e.Reason, "insufficient samples") {
		t.Fatalf("decision %s: %s", e.Decision, e.Reason)
	}
	for _, r := range append(append([]ConditionResult(nil), e.Rollback...), e.Promote...) {
		switch r.Metric {
		case "upstream_errors": // a count needs no sample size to fire, and there are none
			if r.Verdict != VerdictOK {
				t.Fatalf("%+v", r)
			}
		case "match_rate", "health_check_failures":
		default:
			if r.Verdict != VerdictNoData || !strings.Contains(r.Detail, "insufficient samples") {
				t.Fatalf("%s: %s %s", r.Metric, r.Verdict, r.Detail)
			}
		}
	}
}

// Equal cohorts: the controller's false-positive rate per evaluation is at
// most alpha for each guardrail, even with the most sensitive settings
// (factor 1x, for 0), and zero with the brief's policy.
func TestEqualCohortsDoNotRollBack(t *testing.T) {
	const seeds, alpha = 150, 0.05
	bound := binomialUpper(seeds, alpha, 1e-6)
	sensitive := map[string]string{
		"error_rate_5xx": "{metric: error_rate_5xx, above_baseline: 1x, min_baseline: 0}",
		"latency_p99":    "{metric: latency_p99, above_baseline: 1x, min_baseline: 0s}",
	}
	for metric, cond := range sensitive {
		rollbacks := 0
		for seed := uint64(0); seed < seeds; seed++ {
			spec := parseSpec(t, `
interval: 10s
window: 1m
steps: [{percent: 50, hold: 1h}, {percent: 100}]
rollback_when: [`+cond+`]
`)
			s := newSim(t, spec, 1000+seed)
			s.perTick = 400
			s.canary = cohortModel{errRate: 0.01, median: 40 * time.Millisecond, sigma: 0.6}
			s.control = s.canary
			s.start()
			// Six intervals fill the 1m window with 1200 per cohort: the
			// sixth tick is the first (and only) evaluation with a verdict.
			s.runFor(time.Minute, nil)
			e := s.status().LastEvaluation
			if e.Rollback[0].Verdict == VerdictNoData {
				t.Fatalf("seed %d: no verdict: %s", seed, e.Rollback[0].Detail)
			}
			if s.status().State == StateRolledBack {
				rollbacks++
			}
		}
		t.Logf("%s: %d of %d runs rolled back under the null (bound %d)", metric, rollbacks, seeds, bound)
		if rollbacks >= bound {
			t.Errorf("%s: %d false rollbacks of %d at alpha %g", metric, rollbacks, seeds, alpha)
		}
	}

	// The brief's policy (2x, 3x, for 5m) on equal cohorts for an hour.
	for seed := uint64(0); seed < 3; seed++ {
		s := newSim(t, briefPolicyWithState(t, ""), 2000+seed)
		s.perTick = 1200
		s.start()
		if err := s.ctrl.Command("api", "promote"); err != nil {
			t.Fatal(err)
		}
		_ = s.ctrl.Command("api", "promote") // 50%: equal cohorts
		s.runFor(time.Hour, nil)
		if _, ok := firstEvent(s.events.all(), ActionRollback); ok {
			t.Fatalf("seed %d: rolled back an equal canary: %+v", seed, s.status().LastEvaluation)
		}
	}
}

// dry_run decides exactly what auto decides on the same samples, changes
// no share, writes no state file, and says "would" in logs and events.
func TestDryRunDecidesTheSameAndChangesNothing(t *testing.T) {
	type decision struct {
		action string
		step   int
		at     time.Duration
	}
	run := func(mode Mode) (*sim, []decision) {
		spec := briefPolicyWithState(t, "")
		spec.Mode = mode
		s := newSim(t, spec, 5)
		s.perTick, s.fixedCanary, s.compares, s.matchRate = 1200, 50, 50, 0.999
		s.start()
		s.runFor(45*time.Minute, nil)
		s.canary.errRate = 0.08
		s.runFor(20*time.Minute, nil)
		var out []decision
		for _, e := range s.events.all() {
			out = append(out, decision{e.Action, e.Step, e.At.Sub(t0)})
		}
		return s, out
	}
	auto, autoDecisions := run(ModeAuto)
	dry, dryDecisions := run(ModeDryRun)
	if len(autoDecisions) != 2 || autoDecisions[0].action != ActionPromote || autoDecisions[1].action != ActionRollback {
		t.Fatalf("auto decisions %v", autoDecisions)
	}
	if len(dryDecisions) != len(autoDecisions) {
		t.Fatalf("dry_run %v, auto %v", dryDecisions, autoDecisions)
	}
	for i := range dryDecisions {
		if dryDecisions[i] != autoDecisions[i] {
			t.Fatalf("dry_run %v, auto %v", dryDecisions, autoDecisions)
		}
	}
	if bp, halted, calls := dry.handle.get(); calls != 0 || bp != 12345 || halted {
		t.Fatalf("dry_run touched the route: %s%% halted=%v calls=%d", bp, halted, calls)
	}
	if _, err := os.Stat(dry.spec.StateFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dry_run wrote its state file: %v", err)
	}
	for _, e := range dry.events.all() {
		if !e.DryRun || !strings.HasPrefix(e.Text(), "[dry run]") {
			t.Fatalf("event %+v: %s", e, e.Text())
		}
	}
	if dry.logs.FilterMessage("dry_run: would promote (nothing changed)").Len() != 1 ||
		dry.logs.FilterMessage("dry_run: would rollback (nothing changed)").Len() != 1 {
		t.Fatalf("dry_run logs: %v", dry.logs.All())
	}
	if st := dry.status(); st.State != StateRolledBack || st.Mode != ModeDryRun {
		t.Fatalf("dry_run virtual status %+v", st)
	}
	if _, halted, _ := auto.handle.get(); !halted {
		t.Fatal("auto did not halt")
	}
}

// A restart mid-step resumes the same step with the same hold clock, from
// the state file, and promotes when the original hold ends.
func TestRestartResumesSameStepAndHoldClock(t *testing.T) {
	spec := briefPolicyWithState(t, "")
	s := newSim(t, spec, 6)
	s.compares, s.matchRate = 50, 0.999
	s.start()
	s.runFor(50*time.Minute, nil)
	before := s.status()
	if before.Step != 1 || before.Since != t0.Add(30*time.Minute) {
		t.Fatalf("before restart %+v", before)
	}
	s.ctrl.Close()

	// The process is down for 5 minutes; a new one starts with empty
	// measurements and a route whose split is whatever the config says.
	s.clock.Advance(5 * time.Minute)
	s.handle = &fakeHandle{bp: 5000}
	s.events = &eventLog{}
	s.opts.Notifier = s.events
	var transitions []string
	s.opts.OnTransition = func(route, action string, step int, bp cfgtypes.BasisPoints) {
		transitions = append(transitions, action+":"+bp.String())
	}
	s.start()
	after := s.status()
	if after.Step != 1 || after.State != StateProgressing || !after.Since.Equal(before.Since) ||
		after.TimeInStepSeconds != (25*time.Minute).Seconds() {
		t.Fatalf("after restart %+v", after)
	}
	if bp, halted, _ := s.handle.get(); bp != 1000 || halted {
		t.Fatalf("restart applied %s%% halted=%v, want 10%%", bp, halted)
	}
	if len(transitions) != 1 || transitions[0] != "start:10" {
		t.Fatalf("OnTransition %v", transitions)
	}
	if s.logs.FilterMessage("restored rollout state").Len() != 1 {
		t.Fatal("no restore log line")
	}
	s.runFor(3*time.Hour, func() bool { return s.status().Step == 2 })
	ev, ok := firstEvent(s.events.all(), ActionPromote)
	if !ok || ev.At != before.Since.Add(2*time.Hour) {
		t.Fatalf("promotion after restart at %v (want since+2h = %v)", ev.At, before.Since.Add(2*time.Hour))
	}
}

// A pause survives a restart, and paused time does not count as hold.
func TestPauseSurvivesRestartAndFreezesHold(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 7)
	s.start()
	s.runFor(10*time.Minute, nil)
	if err := s.ctrl.Command("api", ActionPause); err != nil {
		t.Fatal(err)
	}
	s.runFor(time.Hour, nil)
	s.ctrl.Close()
	s.start()
	st := s.status()
	if st.State != StatePaused || st.Step != 0 || st.TimeInStepSeconds != 600 || st.HoldRemainingSeconds != 1200 {
		t.Fatalf("paused after restart %+v", st)
	}
	s.clock.Advance(time.Hour)
	if err := s.ctrl.Command("api", ActionResume); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.State != StateProgressing || st.TimeInStepSeconds != 600 {
		t.Fatalf("resumed %+v", st)
	}
}

func TestMissingAndCorruptStateFile(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		s := newSim(t, briefPolicyWithState(t, ""), 8)
		s.start()
		if s.status().Step != 0 || s.logs.FilterMessage("no saved rollout state; starting at steps[0]").Len() != 1 {
			t.Fatal("fresh start not logged")
		}
		if saved, err := readState(s.spec.StateFile); err != nil || saved.Step != 0 || !saved.StepStartedAt.Equal(t0) {
			t.Fatalf("first state not persisted: %+v %v", saved, err)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		spec := briefPolicyWithState(t, "")
		if err := writeFileAtomic(spec.StateFile, []byte("{not json")); err != nil {
			t.Fatal(err)
		}
		s := newSim(t, spec, 9)
		s.start()
		st := s.status()
		if st.State != StateRolledBack || !strings.Contains(st.Reason, "unreadable") {
			t.Fatalf("status %+v", st)
		}
		if bp, halted, _ := s.handle.get(); bp != 0 || !halted {
			t.Fatalf("corrupt state must hold the canary at 0: %s%% halted=%v", bp, halted)
		}
		logs := s.logs.FilterMessageSnippet("rollout state file is unreadable").All()
		if len(logs) != 1 {
			t.Fatalf("logs %v", s.logs.All())
		}
		if b, err := os.ReadFile(spec.StateFile + ".corrupt"); err != nil || string(b) != "{not json" {
			t.Fatalf("corrupt file not kept: %q %v", b, err)
		}
		if saved, err := readState(spec.StateFile); err != nil || saved.State != StateRolledBack {
			t.Fatalf("new state %+v %v", saved, err)
		}
		if err := s.ctrl.Command("api", ActionResume); err != nil {
			t.Fatal(err)
		}
		if bp, halted, _ := s.handle.get(); bp != 100 || halted || s.status().Step != 0 {
			t.Fatalf("resume: %s%% halted=%v", bp, halted)
		}
	})
	t.Run("another route's file", func(t *testing.T) {
		spec := briefPolicyWithState(t, "")
		s := newSim(t, spec, 10)
		s.start()
		c2 := NewController(s.opts)
		if err := c2.AddRoute("other", spec, s.rec, &fakeHandle{}); err == nil || !strings.Contains(err.Error(), `belongs to route "api"`) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("steps changed", func(t *testing.T) {
		spec := briefPolicyWithState(t, "")
		s := newSim(t, spec, 11)
		s.start()
		_ = s.ctrl.Command("api", ActionPromote)
		_ = s.ctrl.Command("api", ActionPromote) // 50%
		s.ctrl.Close()
		s.spec.Steps = []Step{{Percent: 500, Hold: cfgtypes.Duration(time.Hour)}, {Percent: 2500, Hold: cfgtypes.Duration(time.Hour)}, {Percent: 10000}}
		s.start()
		if st := s.status(); st.Step != 1 || st.Percent != 25 || st.State != StateProgressing {
			t.Fatalf("remapped %+v", st)
		}
	})
}

// Manual mode evaluates and explains, waits for a promote command, and
// still rolls back on its own.
func TestManualMode(t *testing.T) {
	spec := briefPolicyWithState(t, "")
	spec.Mode = ModeManual
	s := newSim(t, spec, 12)
	s.perTick, s.compares, s.matchRate = 5000, 50, 0.999
	s.start()
	s.runFor(time.Hour, nil)
	st := s.status()
	if st.Step != 0 || !st.Ready || st.LastEvaluation.Decision != DecisionReady {
		t.Fatalf("manual after the hold: %+v", st)
	}
	if got := s.events.actions(); len(got) != 1 || got[0] != ActionReady {
		t.Fatalf("events %v (want one ready)", got)
	}
	if bp, _, _ := s.handle.get(); bp != 100 {
		t.Fatalf("manual mode moved the share to %s", bp)
	}
	if err := s.ctrl.Command("api", ActionPromote); err != nil {
		t.Fatal(err)
	}
	if bp, _, _ := s.handle.get(); bp != 1000 || s.status().Ready {
		t.Fatalf("after promote %s", bp)
	}
	s.canary.errRate = 0.1
	s.runFor(15*time.Minute, s.stateIs(StateRolledBack))
	if ev, ok := firstEvent(s.events.all(), ActionRollback); !ok || ev.By != "controller" {
		t.Fatalf("manual mode did not roll back on its own: %v", s.events.actions())
	}
}

func TestCommands(t *testing.T) {
	spec := briefPolicyWithState(t, "")
	s := newSim(t, spec, 13)
	s.start()
	c := s.ctrl
	step := func(action string, wantErr error, wantState State, wantStep int) {
		t.Helper()
		err := c.Command("api", action)
		if !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
			t.Fatalf("%s: err %v, want %v", action, err, wantErr)
		}
		if st := s.status(); st.State != wantState || st.Step != wantStep {
			t.Fatalf("%s: %s step %d, want %s step %d", action, st.State, st.Step, wantState, wantStep)
		}
	}
	step(ActionResume, ErrInvalidTransition, StateProgressing, 0)
	step(ActionPause, nil, StatePaused, 0)
	step(ActionPause, ErrInvalidTransition, StatePaused, 0)
	step(ActionPromote, nil, StatePaused, 1) // promoting keeps a pause
	step(ActionResume, nil, StateProgressing, 1)
	step(ActionRollback, nil, StateRolledBack, 1)
	step(ActionPromote, ErrInvalidTransition, StateRolledBack, 1)
	step(ActionRollback, ErrInvalidTransition, StateRolledBack, 1)
	step(ActionResume, nil, StateProgressing, 0) // after a rollback: steps[0]
	step(ActionPromote, nil, StateProgressing, 1)
	step(ActionPromote, nil, StateProgressing, 2)
	step(ActionPromote, nil, StateProgressing, 3)
	step(ActionPromote, nil, StateCompleted, 3)
	step(ActionPromote, ErrInvalidTransition, StateCompleted, 3)
	step(ActionPause, ErrInvalidTransition, StateCompleted, 3)
	step("explode", ErrUnknownAction, StateCompleted, 3)
	step(ActionRollback, nil, StateRolledBack, 3) // a completed rollout can still be rolled back
	if err := c.Command("nope", ActionPause); !errors.Is(err, ErrUnknownRoute) {
		t.Fatalf("unknown route: %v", err)
	}
	want := "pause promote resume rollback resume promote promote promote complete rollback"
	if got := strings.Join(s.events.actions(), " "); got != want {
		t.Fatalf("events %s", got)
	}
	for _, e := range s.events.all() {
		if e.By != "command" {
			t.Fatalf("%+v", e)
		}
	}
}

// After a rollback and a resume, the failed attempt's samples are not held
// against the fixed canary.
func TestResumeAfterRollbackUsesFreshData(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 14)
	s.perTick = 5000
	s.canary.errRate = 0.2
	s.start()
	s.runFor(20*time.Minute, s.stateIs(StateRolledBack))
	if s.status().State != StateRolledBack {
		t.Fatal("no rollback")
	}
	s.canary = healthy
	if err := s.ctrl.Command("api", ActionResume); err != nil {
		t.Fatal(err)
	}
	s.runFor(10*time.Minute, nil)
	if st := s.status(); st.State != StateProgressing {
		t.Fatalf("rolled back again on stale data: %+v", st.LastEvaluation)
	}
}

// Cohort-routed traffic (internal users, synthetic checks) is counted but
// never enters the comparison or the sample gate.
func TestCohortRoutedTrafficIsExcluded(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 15)
	s.perTick, s.excluded = 5000, 2000
	s.excl = cohortModel{errRate: 0.5, median: 2 * time.Second, sigma: 0.5}
	s.start()
	s.runFor(20*time.Minute, nil)
	st := s.status()
	if st.State != StateProgressing {
		t.Fatalf("excluded traffic caused %s: %+v", st.State, st.LastEvaluation)
	}
	smp := st.LastEvaluation.Samples
	if smp.Excluded != 60000 || smp.Canary != 1500 || smp.Control != 148500 {
		t.Fatalf("samples %+v", smp)
	}

	// Only cohort-routed traffic: no verdict at all.
	s2 := newSim(t, briefPolicyWithState(t, ""), 16)
	s2.perTick, s2.excluded = 0, 5000
	s2.start()
	s2.runFor(10*time.Minute, nil)
	for _, r := range s2.status().LastEvaluation.Rollback {
		if r.Metric == "error_rate_5xx" && r.Verdict != VerdictNoData {
			t.Fatalf("%+v", r)
		}
	}
}

// health_check_failures rolls back on the tick that sees N consecutive
// failures, without waiting for the evaluation interval.
func TestHealthCheckFailuresRollBackImmediately(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 17)
	s.start()
	s.runFor(time.Minute, nil)
	s.prober.set(2)
	s.ctrl.Tick(s.clock.Advance(time.Second))
	if s.status().State != StateProgressing {
		t.Fatal("rolled back at 2 of 3 failures")
	}
	s.prober.set(3)
	now := s.clock.Advance(time.Second)
	s.ctrl.Tick(now)
	ev, ok := firstEvent(s.events.all(), ActionRollback)
	if !ok || !ev.At.Equal(now) {
		t.Fatalf("no immediate rollback: %v", s.events.actions())
	}
	if f := firedConditions(ev.Explanation); len(f) != 1 || f[0] != "health_check_failures" {
		t.Fatalf("fired %v", f)
	}
	s.ctrl.RemoveRoute("api")
	if !s.prober.closed {
		t.Fatal("RemoveRoute did not close the prober")
	}
}

// The seed's policy (testdata/seed-policy.yaml) walks its three stages and
// the 24h monitoring at 100%, with external metrics from a stub source.
func TestSeedPolicyWalk(t *testing.T) {
	load := func(t *testing.T) Spec {
		data, err := os.ReadFile("testdata/seed-policy.yaml")
		if err != nil {
			t.Fatal(err)
		}
		spec, err := ParseSpec(data)
		if err != nil {
			t.Fatal(err)
		}
		spec.StateFile = tempStateFile(t)
		return spec
	}
	t.Run("healthy walk", func(t *testing.T) {
		crash := map[splitter.Arm]float64{splitter.ArmCanary: 0, splitter.ArmControl: 0}
		src := &stubSource{fn: func(metric string, c splitter.Arm) (float64, error) {
			switch metric {
			case "crash_rate":
				return crash[c], nil
			case "conversion_rate":
				return map[splitter.Arm]float64{splitter.ArmCanary: 0.031, splitter.ArmControl: 0.030}[c], nil
			case "customer_reported_issues":
				return 0, nil
			}
			return 0, errors.New("unknown metric")
		}}
		s := newSim(t, load(t), 18)
		s.opts.External = src
		s.start()
		s.runFor(7*time.Hour, func() bool { return s.status().Step == 3 })
		if st := s.status(); st.Step != 3 || st.Percent != 100 {
			t.Fatalf("after 7h: %+v", st.LastEvaluation)
		}
		s.perTick = 150 // 100%: every request is canary; keep the day cheap
		s.runFor(25*time.Hour, s.stateIs(StateCompleted))
		var got []string
		for _, e := range s.events.all() {
			got = append(got, e.Action+"@"+e.At.Sub(t0).String())
		}
		// Each gate passes at the first evaluation where its sequential
		// test shows the canary on the right side of every threshold.
		// At this traffic the 1% step's guardrails (min_samples 1000 in
		// 5m) get no verdict, which the controller says once the hold is over.
		want := "waiting_for_samples@30m0s promote@30m30s promote@2h30m30s promote@6h30m30s complete@30h30m30s"
		if strings.Join(got, " ") != want {
			t.Fatalf("events %v, want %s", got, want)
		}
		// The 50% → 100% explanation: every guardrail, baseline ones included.
		ev := s.events.all()[3]
		if len(ev.Explanation.Promote) != 7 {
			t.Fatalf("%+v", ev.Explanation.Promote)
		}
		for _, r := range ev.Explanation.Promote {
			if r.Verdict != VerdictPass {
				t.Fatalf("%s: %s %s", r.Condition, r.Verdict, r.Detail)
			}
		}
		// At 100% the baseline rollbacks no longer apply (no control).
		last := s.events.all()[4].Explanation
		for _, r := range last.Rollback {
			if (r.Metric == "error_rate_5xx" || r.Metric == "latency_p99") && r.Verdict != VerdictNotApplicable {
				t.Fatalf("%+v", r)
			}
		}
		src.mu.Lock()
		q := src.qs[0]
		src.mu.Unlock()
		if q.Route != "api" || q.Metric == "" || q.Query == "" && q.Metric != "customer_reported_issues" {
			t.Fatalf("external query %+v", q)
		}
	})
	t.Run("crash rate rolls back", func(t *testing.T) {
		crash := 0.0
		src := &stubSource{fn: func(metric string, c splitter.Arm) (float64, error) {
			if metric == "crash_rate" && c == splitter.ArmCanary {
				return crash, nil
			}
			return 0.03, nil
		}}
		s := newSim(t, load(t), 19)
		s.opts.External = src
		s.start()
		s.runFor(10*time.Minute, nil)
		crash = 0.005
		onset := s.clock.Now()
		s.runFor(10*time.Minute, s.stateIs(StateRolledBack))
		ev, ok := firstEvent(s.events.all(), ActionRollback)
		if !ok || ev.At.Sub(onset) > 2*time.Minute+10*time.Second {
			t.Fatalf("crash rate rollback at %v after onset: %v", ev.At.Sub(onset), s.events.actions())
		}
		if f := firedConditions(ev.Explanation); len(f) != 1 || f[0] != "crash_rate" {
			t.Fatalf("fired %v", f)
		}
		if len(ev.Targets) != 2 {
			t.Fatalf("targets %v", ev.Targets)
		}
	})
}

func TestExternalSourceFailuresBlockPromotion(t *testing.T) {
	y := strings.Replace(briefPolicy, "state_file: /var/lib/shadowproxy/rollout-api.json", "state_file: "+tempStateFile(t), 1)
	y = strings.Replace(y, "  - {metric: match_rate, above: 99%, window: 15m}\n", "  - {metric: crash_rate, at_most: 0.1%, window: 15m}\n", 1)
	t.Run("no source", func(t *testing.T) {
		s := newSim(t, parseSpec(t, y), 20)
		s.start()
		s.runFor(40*time.Minute, nil)
		st := s.status()
		if st.Step != 0 || st.LastEvaluation.Promote[2].Verdict != VerdictError ||
			st.LastEvaluation.Promote[2].Detail != "no external metric source is configured" {
			t.Fatalf("%+v", st.LastEvaluation.Promote)
		}
	})
	t.Run("source error", func(t *testing.T) {
		s := newSim(t, parseSpec(t, y), 21)
		s.opts.External = &stubSource{fn: func(string, splitter.Arm) (float64, error) { return 0, errors.New("prometheus: 503") }}
		s.start()
		s.runFor(40*time.Minute, nil)
		r := s.status().LastEvaluation.Promote[2]
		if s.status().Step != 0 || r.Verdict != VerdictError || !strings.Contains(r.Detail, "prometheus: 503") {
			t.Fatalf("%+v", r)
		}
	})
}

func TestAddRouteErrors(t *testing.T) {
	clk := newClock()
	rec := NewRecorder(clk.Now)
	c := NewController(Options{Now: clk.Now})
	bad := parseSpec(t, "steps: [{percent: 10}, {percent: 5}]\n")
	if err := c.AddRoute("a", bad, rec, &fakeHandle{}); err == nil || !strings.Contains(err.Error(), "steps[1].percent") {
		t.Fatalf("invalid spec: %v", err)
	}
	long := parseSpec(t, "window: 2h\n")
	if err := c.AddRoute("a", long, rec, &fakeHandle{}); err == nil || !strings.Contains(err.Error(), "recorder keeps 1h") {
		t.Fatalf("short recorder: %v", err)
	}
	hc := parseSpec(t, "health_check: {path: /healthz}\n")
	if err := c.AddRoute("a", hc, rec, &fakeHandle{}); err == nil || !strings.Contains(err.Error(), "no HealthProbe") {
		t.Fatalf("health without prober: %v", err)
	}
	if err := c.AddRoute("a", Spec{}, nil, &fakeHandle{}); err == nil {
		t.Fatal("nil recorder accepted")
	}
	file := tempStateFile(t)
	shared := Spec{StateFile: file}
	if err := c.AddRoute("a", shared, rec, &fakeHandle{}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddRoute("b", shared, NewRecorder(clk.Now), &fakeHandle{}); err == nil || !strings.Contains(err.Error(), `already used by route "a"`) {
		t.Fatalf("shared state file: %v", err)
	}
}

// Adding a route again (a config reload) keeps its progress.
func TestReloadKeepsProgress(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 22)
	s.start()
	s.clock.Advance(10 * time.Minute)
	_ = s.ctrl.Command("api", ActionPromote)
	since := s.status().Since
	s.clock.Advance(10 * time.Minute)
	spec := s.spec
	spec.Interval = cfgtypes.Duration(30 * time.Second)
	h2 := &fakeHandle{}
	if err := s.ctrl.AddRoute("api", spec, s.rec, h2); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.Step != 1 || !st.Since.Equal(since) {
		t.Fatalf("reload lost progress: %+v", st)
	}
	if bp, _, _ := h2.get(); bp != 1000 {
		t.Fatalf("reload applied %s to the new handle", bp)
	}
	// Switching to dry_run starts the virtual walk from the persisted state.
	spec.Mode = ModeDryRun
	h3 := &fakeHandle{}
	if err := s.ctrl.AddRoute("api", spec, s.rec, h3); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.Step != 1 || st.Mode != ModeDryRun {
		t.Fatalf("dry_run reload: %+v", st)
	}
	if _, _, calls := h3.get(); calls != 0 {
		t.Fatal("dry_run touched the handle")
	}
}

func TestStatusAndEventsEncode(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 23)
	s.perTick, s.compares = 5000, 50
	s.start()
	s.runFor(31*time.Minute, nil)
	b, err := json.Marshal(s.ctrl.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"route":"api"`, `"state":"progressing"`, `"percent":10`, `"last_evaluation":{`, `"p_value":`, `"verdict":"ok"`, `"canary_samples":`} {
		if !strings.Contains(string(b), key) {
			t.Fatalf("status JSON lacks %s:\n%s", key, b)
		}
	}
	ev := s.events.all()[0]
	b, err = json.Marshal(ev)
	if err != nil || strings.Contains(string(b), "127.0.0.1:9999") {
		t.Fatalf("event JSON leaks targets or fails: %v\n%s", err, b)
	}
	var sent []string
	Webhooks(senderFunc(func(urls []string, text string, payload any) bool {
		sent = append(sent, urls...)
		sent = append(sent, text)
		return true
	})).Notify(ev)
	if len(sent) != 2 || sent[0] != "http://127.0.0.1:9999/hook" || !strings.Contains(sent[1], "route `api` promoted: canary 1% → 10%") {
		t.Fatalf("webhook %v", sent)
	}
}

type senderFunc func(urls []string, text string, payload any) bool

func (f senderFunc) Send(urls []string, text string, payload any) bool { return f(urls, text, payload) }

// A reload that does not change the guardrails keeps their breach streaks,
// so frequent reloads cannot postpone a rollback.
func TestReloadKeepsBreachStreak(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 24)
	s.perTick = 5000
	s.canary.errRate = 0.05
	s.start()
	firstBreach := s.runUntilBreach(10 * time.Minute)
	s.runFor(3*time.Minute, nil)
	if err := s.ctrl.AddRoute("api", s.spec, s.rec, s.handle); err != nil {
		t.Fatal(err)
	}
	s.runFor(10*time.Minute, s.stateIs(StateRolledBack))
	ev, ok := firstEvent(s.events.all(), ActionRollback)
	if !ok || ev.At.Sub(firstBreach) != 5*time.Minute {
		t.Fatalf("rollback %v after the first breach (want exactly for = 5m): %v", ev.At.Sub(firstBreach), s.events.actions())
	}
}
