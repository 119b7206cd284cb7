package rollout

import (
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// A restart in the middle of a breach keeps the streak and the evidence
// (persisted), so the rollback comes when it would have without the
// restart, not a whole "for" after it.
func TestRestartMidBreachKeepsStreak(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 31)
	s.perTick = 5000
	s.canary.errRate = 0.05
	s.start()
	firstBreach := s.runUntilBreach(15 * time.Minute)
	s.runFor(3*time.Minute, nil)
	restart := s.clock.Now()
	s.ctrl.Close()
	s.start() // a new process: new controller, empty recorder, same state file
	var kept bool
	s.runFor(15*time.Minute, func() bool {
		if e := s.status().LastEvaluation; e != nil && strings.Contains(e.Rollback[0].Detail, "kept, not advanced") {
			kept = true
		}
		return s.status().State == StateRolledBack
	})
	ev, ok := firstEvent(s.events.all(), ActionRollback)
	if !ok {
		t.Fatalf("no rollback after the restart: %+v", s.status().LastEvaluation.Rollback[0])
	}
	if !kept {
		t.Error("while the new recorder filled, no explanation said the streak was kept")
	}
	// Forgetting the streak would put the rollback at least for (5m) after
	// the first verdict of the new process, which needs 200s of samples.
	if d := ev.At.Sub(restart); d >= 5*time.Minute+200*time.Second {
		t.Fatalf("rolled back %s after the restart: the streak was forgotten", d)
	}
	if ev.At.Sub(firstBreach) < 5*time.Minute {
		t.Fatalf("rolled back %s after the first breach, before for", ev.At.Sub(firstBreach))
	}
}

// on_no_data: {fail_after: N} turns N silent evaluations in a row into a
// rollback; the default (hold) never does.
func TestOnNoDataFailAfter(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   State
	}{
		{"rollback_when: [{metric: error_rate_5xx, above_baseline: 2x, on_no_data: {fail_after: 3}}]\n", StateRolledBack},
		{"rollback_when: [{metric: error_rate_5xx, above_baseline: 2x, on_no_data: hold}]\n", StateProgressing},
	} {
		s := newSim(t, parseSpec(t, "steps: [{percent: 1, hold: 1h}, {percent: 100}]\n"+tc.policy), 32)
		s.perTick = 100 // 1 canary request per 10s: never min_samples
		s.start()
		s.runFor(10*time.Minute, s.stateIs(StateRolledBack))
		if st := s.status(); st.State != tc.want {
			t.Fatalf("%s: %s", tc.policy, st.State)
		}
		if tc.want == StateRolledBack {
			ev, _ := firstEvent(s.events.all(), ActionRollback)
			if ev.At != t0.Add(30*time.Second) || !strings.Contains(ev.Reason, "without a verdict (fail_after 3)") {
				t.Fatalf("rollback %v: %s", ev.At.Sub(t0), ev.Reason)
			}
		}
	}
}

// A step with pause: true waits for a promote command in auto mode, after
// its hold and promote_when pass, and says so once.
func TestStepPauseWaitsForManualPromote(t *testing.T) {
	s := newSim(t, parseSpec(t, "rollback_when: []\nsteps: [{percent: 10, hold: 1m, pause: true}, {percent: 100}]\n"), 33)
	s.start()
	s.runFor(30*time.Minute, nil)
	st := s.status()
	if st.Step != 0 || !st.Ready || !strings.Contains(st.LastEvaluation.Reason, "pause: true") {
		t.Fatalf("status %+v reason %q", st, st.LastEvaluation.Reason)
	}
	if a := s.events.actions(); len(a) != 1 || a[0] != ActionReady {
		t.Fatalf("events %v, want one ready", a)
	}
	if err := s.ctrl.Command("api", ActionPromote); err != nil {
		t.Fatal(err)
	}
	if st := s.status(); st.Step != 1 || st.Percent != 100 {
		t.Fatalf("after promote %+v", st)
	}
}

// A step past its deadline pauses (default) or rolls back, and notifies
// with the conditions still waiting; before it, the step said it was
// waiting for samples.
func TestStepDeadline(t *testing.T) {
	for _, onDeadline := range []string{"", "rollback"} {
		extra := ""
		if onDeadline != "" {
			extra = ", on_deadline: " + onDeadline
		}
		s := newSim(t, parseSpec(t, `
rollback_when: []
promote_when: [{metric: error_rate_5xx, below: 0.5%}]
steps: [{percent: 1, hold: 10m, deadline: 30m`+extra+`}, {percent: 100}]
`), 34)
		s.perTick = 100 // never min_samples at 1%
		s.start()
		s.runFor(time.Hour, nil)
		want, wantState := ActionPause, StatePaused
		if onDeadline == "rollback" {
			want, wantState = ActionRollback, StateRolledBack
		}
		actions := s.events.actions()
		if len(actions) != 2 || actions[0] != ActionWaiting || actions[1] != want {
			t.Fatalf("on_deadline %q: events %v", onDeadline, actions)
		}
		ev := s.events.all()[1]
		if ev.At != t0.Add(30*time.Minute) || ev.By != "deadline" || !strings.Contains(ev.Reason, "deadline of 30m at 1% passed without promotion: error_rate_5xx below 0.5%: insufficient samples") {
			t.Fatalf("event at %v by %s: %s", ev.At.Sub(t0), ev.By, ev.Reason)
		}
		if s.status().State != wantState {
			t.Fatalf("state %s", s.status().State)
		}
	}
}

// An incident that hits both cohorts right after a change of share does
// not look like a canary regression: windows and blocks start at the step,
// and the test compares the cohorts slot by slot.
func TestShareChangeDoesNotManufactureADifference(t *testing.T) {
	s := newSim(t, parseSpec(t, `
min_samples: 100
window: 10m
steps: [{percent: 1, hold: 10m}, {percent: 10, hold: 1h}, {percent: 100}]
rollback_when: [{metric: error_rate_5xx, above_baseline: 1x, min_baseline: 0}]
`), 35)
	s.perTick = 2000
	s.start()
	s.runFor(time.Hour, func() bool { return s.status().Step == 1 })
	s.canary.errRate, s.control.errRate = 0.1, 0.1 // the incident, both cohorts
	s.runFor(3*time.Minute, nil)
	s.canary.errRate, s.control.errRate = healthy.errRate, healthy.errRate
	s.runFor(20*time.Minute, nil)
	if st := s.status(); st.State != StateProgressing {
		t.Fatalf("an incident on both cohorts rolled back: %s", st.Reason)
	}
}

func TestAnalysisInclude(t *testing.T) {
	ok := parseSpec(t, "analysis: {include: [percent, cohort]}\n")
	if errs := ok.Validate(); len(errs) != 0 || !ok.IncludesCohort() {
		t.Fatalf("valid analysis: %v", errs)
	}
	if w := strings.Join(ok.Warnings(), "\n"); !strings.Contains(w, "not a random sample") {
		t.Errorf("no bias warning: %s", w)
	}
	bad := parseSpec(t, "analysis: {include: [cohrt]}\n")
	got := ""
	for _, e := range bad.Validate() {
		got += e.Error() + "\n"
	}
	for _, want := range []string{
		`analysis.include[0]: unknown traffic "cohrt" (did you mean "cohort"?); want percent or cohort`,
		"analysis.include: must include percent",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if (&Spec{}).IncludesCohort() {
		t.Error("cohort traffic included by default")
	}
}

func TestValidateRolloutFeatureMessages(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"steps: [{percent: 1, hold: 1h, deadline: 30m}, {percent: 100}]\n", "steps[0].deadline: must be at least the step's hold (1h), got 30m"},
		{"steps: [{percent: 1, hold: 1h, deadline: 2h, on_deadline: rolback}, {percent: 100}]\n", `steps[0].on_deadline: unknown action "rolback" (did you mean "rollback"?); want pause or rollback`},
		{"steps: [{percent: 1, on_deadline: pause}, {percent: 100}]\n", "steps[0].on_deadline: needs a deadline"},
		{"rollback_when: [{metric: error_rate_5xx, above_baseline: 0.5x}]\n", "rollback_when[0].above_baseline: must be at least 1x, got 0.5x"},
		{"promote_when: [{metric: error_rate_5xx, below: 1%, on_no_data: {fail_after: 2}}]\n", "promote_when[0].on_no_data: only rollback_when conditions take on_no_data/on_error"},
	} {
		s := parseSpec(t, tc.yaml)
		var got []string
		for _, e := range s.Validate() {
			got = append(got, e.Error())
		}
		if !strings.Contains(strings.Join(got, "\n"), tc.want) {
			t.Errorf("%s: got %q, want %q", tc.yaml, got, tc.want)
		}
	}
	for _, bad := range []string{
		"rollback_when: [{metric: error_rate_5xx, above_baseline: 2x, on_no_data: wait}]\n",
		"rollback_when: [{metric: error_rate_5xx, above_baseline: 2x, on_no_data: {fail_after: 0}}]\n",
		"rollback_when: [{metric: error_rate_5xx, above_baseline: 2x, on_error: {fail_afterr: 3}}]\n",
	} {
		if _, err := ParseSpec([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// The seed policy at 50 req/s: its 1% step can never reach min_samples, and
// the running controller says so (an event, a transitions count, a log
// line) once the hold is over, instead of waiting in silence.
func TestSeedPolicyAt50RPSSaysItIsWaiting(t *testing.T) {
	data, err := os.ReadFile("testdata/seed-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ParseSpec(data)
	if err != nil {
		t.Fatal(err)
	}
	spec.StateFile = tempStateFile(t)
	s := newSim(t, spec, 36)
	s.perTick = 500 // 50 req/s
	s.canary.errRate = 0.5
	s.opts.External = &stubSource{fn: func(string, splitter.Arm) (float64, error) { return 0, nil }}
	var counted []string
	s.opts.OnTransition = func(route, action string, step int, bp cfgtypes.BasisPoints) {
		counted = append(counted, action)
	}
	s.start()
	s.runFor(45*time.Minute, nil)
	ev, ok := firstEvent(s.events.all(), ActionWaiting)
	if !ok || ev.At != t0.Add(30*time.Minute) {
		st := s.status()
		t.Fatalf("events %v; status %+v; last %+v", s.events.actions(), st, st.LastEvaluation)
	}
	for _, want := range []string{"waiting for samples at 1% longer than the 30m hold",
		"error_rate_5xx above_baseline 2x for 5m: insufficient samples", "error_rate_5xx below 0.5%: insufficient samples"} {
		if !strings.Contains(ev.Reason, want) {
			t.Errorf("reason lacks %q: %s", want, ev.Reason)
		}
	}
	if !slices.Contains(counted, ActionWaiting) {
		t.Errorf("OnTransition (the transitions metric) saw %v", counted)
	}
	if s.logs.FilterMessage("rollout step is waiting for samples").Len() != 1 {
		t.Error("no warning logged")
	}
	if st := s.status(); st.Step != 0 || st.State != StateProgressing {
		t.Fatalf("status %+v", st)
	}
}

// memStore is a StateStore in memory, standing in for a shared one.
type memStore struct {
	mu   sync.Mutex
	data []byte
}

func (m *memStore) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), m.data...), nil
}

func (m *memStore) Save(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append([]byte(nil), b...)
	return nil
}

// Persistence goes through Options.StateStore: a store other than the
// state file (a fleet's) carries the step and the streaks across restarts.
func TestStateStoreReplacesTheFile(t *testing.T) {
	store := &memStore{}
	s := newSim(t, parseSpec(t, "rollback_when: []\nsteps: [{percent: 1, hold: 10m}, {percent: 10, hold: 1h}, {percent: 100}]\n"), 37)
	s.opts.StateStore = func(route string, spec *Spec) StateStore { return store }
	s.start()
	s.runFor(15*time.Minute, nil)
	if st := s.status(); st.Step != 1 {
		t.Fatalf("status %+v", st)
	}
	s.ctrl.Close()
	s.start()
	if st := s.status(); st.Step != 1 || st.Since != t0.Add(10*time.Minute) {
		t.Fatalf("after restart from the store: %+v", st)
	}
	if !strings.Contains(string(store.data), `"step": 1`) {
		t.Fatalf("store holds %s", store.data)
	}
}
