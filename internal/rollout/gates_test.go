package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// fakeGates answers smoke checks and webhooks from settable outcomes.
type fakeGates struct {
	mu           sync.Mutex
	canaryOK     bool
	stableOK     bool
	hookErr      map[string]error // by webhook type
	smokeRuns    int
	hookCalls    map[string]int
	bpAtFirstRun []cfgtypes.BasisPoints
	h            *fakeHandle
}

func newFakeGates(h *fakeHandle) *fakeGates {
	return &fakeGates{canaryOK: true, stableOK: true, hookErr: map[string]error{}, hookCalls: map[string]int{}, h: h}
}

func (g *fakeGates) Smoke(_ context.Context, _ string, s *Smoke) []SmokeResult {
	bp, halted, _ := g.h.get()
	if halted {
		bp = 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.smokeRuns++
	g.bpAtFirstRun = append(g.bpAtFirstRun, bp)
	var out []SmokeResult
	for _, c := range s.Checks {
		for _, side := range []struct {
			target string
			ok     bool
		}{{"canary", g.canaryOK}, {"stable", g.stableOK}} {
			r := SmokeResult{Check: c.Name, Target: side.target, Passed: side.ok, Attempts: 1, Status: 200}
			if !side.ok {
				r.Status = 503
				r.Assertions = []SmokeAssertion{{What: "status", Want: "200", Got: "503"}}
			}
			out = append(out, r)
		}
	}
	return out
}

func (g *fakeGates) Webhook(_ context.Context, _ string, w GateWebhook, _ GatePayload) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hookCalls[w.Type]++
	return g.hookErr[w.Type]
}

func (g *fakeGates) set(f func(g *fakeGates)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

// memEvidence keeps evidence records in memory.
type memEvidence struct {
	mu   sync.Mutex
	recs map[string][]byte
}

func (m *memEvidence) Save(route, id string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs == nil {
		m.recs = map[string][]byte{}
	}
	m.recs[route+"/"+id] = data
	return nil
}

const gatedSpec = `
interval: 10s
steps: [{percent: 5, hold: 1m}, {percent: 50, hold: 1m}, {percent: 100, hold: 1m}]
promote_when: []
rollback_when: []
smoke:
  checks:
    - name: health
      request: {path: /api/health, headers: {X-User-ID: smoke-test-prod}}
      expect: {status: 200, json: {/status: healthy, /version: {exists: true}}, max_latency: 500ms}
`

func gatedSim(t *testing.T, spec string) (*sim, *fakeGates) {
	s := newSim(t, parseSpec(t, spec), 1)
	g := newFakeGates(s.handle)
	s.opts.Gates = g
	return s, g
}

// A canary whose smoke check fails is rolled back before its first step
// gets any real traffic.
func TestSmokeFailureRollsBackBeforeFirstStep(t *testing.T) {
	s, g := gatedSim(t, gatedSpec)
	g.set(func(g *fakeGates) { g.canaryOK = false })
	ev := &memEvidence{}
	s.opts.Evidence = ev
	s.start()
	if bp, _, _ := s.handle.get(); bp != 0 {
		t.Fatalf("the first step's share was applied (%s) before its smoke checks ran", bp)
	}
	if st := s.status(); !st.GatePending || st.Percent != 0 {
		t.Fatalf("status before the gate: %+v", st)
	}
	s.step()
	st := s.status()
	if st.State != StateRolledBack || !strings.Contains(st.Reason, "smoke checks failed on the canary") {
		t.Fatalf("state %s reason %q; want rolled back by the smoke check", st.State, st.Reason)
	}
	if bp, halted, _ := s.handle.get(); bp != 0 || !halted {
		t.Fatalf("after the failed smoke check the route is at %s (halted %v)", bp, halted)
	}
	if g.bpAtFirstRun[0] != 0 {
		t.Fatalf("the smoke check ran while the canary had %s of real traffic", g.bpAtFirstRun[0])
	}
	if st.LastSmoke == nil || st.LastSmoke.Verdict != SmokeFail || len(st.LastSmoke.Results) != 2 {
		t.Fatalf("last smoke %+v", st.LastSmoke)
	}
	evs := s.events.all()
	if len(evs) != 1 || evs[0].Action != ActionRollback || evs[0].Smoke == nil || evs[0].Evidence == "" {
		t.Fatalf("events %+v", evs)
	}
	if len(ev.recs) != 1 {
		t.Fatalf("%d evidence records; want 1", len(ev.recs))
	}
}

// A stable that fails the same check is an environment problem: the step
// holds (no rollback) and proceeds once the checks pass.
func TestSmokeFailingOnStableTooHolds(t *testing.T) {
	s, g := gatedSim(t, gatedSpec)
	g.set(func(g *fakeGates) { g.canaryOK, g.stableOK = false, false })
	s.start()
	for i := 0; i < 5; i++ {
		s.step()
	}
	st := s.status()
	if st.State != StateProgressing || !st.GatePending || !strings.Contains(st.Gate, "environment problem") {
		t.Fatalf("status %+v", st)
	}
	if bp, _, _ := s.handle.get(); bp != 0 {
		t.Fatalf("share %s while the gate holds", bp)
	}
	if acts := s.events.actions(); strings.Join(acts, ",") != ActionGateHeld {
		t.Fatalf("events %v; want one gate_held", acts)
	}
	g.set(func(g *fakeGates) { g.canaryOK, g.stableOK = true, true })
	s.step()
	if bp, _, _ := s.handle.get(); bp != 500 || s.status().GatePending {
		t.Fatalf("after the checks pass the share is %s; want 5%%", bp)
	}
}

// Each promotion gates the next step again, and after_promote re-runs the
// checks once the share is in force.
func TestSmokeGatesEveryStep(t *testing.T) {
	s, g := gatedSim(t, gatedSpec)
	s.start()
	s.runFor(10*time.Minute, s.stateIs(StateCompleted))
	if st := s.status(); st.State != StateCompleted {
		t.Fatalf("state %s", st.State)
	}
	// steps[0] before; steps[1] before+after; steps[2] before+after.
	if g.smokeRuns != 5 {
		t.Fatalf("%d smoke runs; want 5", g.smokeRuns)
	}
	want := []cfgtypes.BasisPoints{0, 0, 5000, 0, 10000}
	for i := range want {
		if g.bpAtFirstRun[i] != want[i] {
			t.Fatalf("shares seen by the smoke runs: %v; want %v (before_step runs see 0, after_promote ones the new share)", g.bpAtFirstRun, want)
		}
	}
}

// A pre_step webhook answering 500 holds the step (failure: hold).
func TestPreStepWebhookFailureHolds(t *testing.T) {
	s, g := gatedSim(t, `
interval: 10s
steps: [{percent: 5, hold: 1m}, {percent: 100, hold: 1m}]
promote_when: []
rollback_when: []
webhooks: [{type: pre_step, url: "http://127.0.0.1:1/gate?token=secret"}]
`)
	g.set(func(g *fakeGates) { g.hookErr[WebhookPreStep] = errors.New("answered 500") })
	s.start()
	for i := 0; i < 4; i++ {
		s.step()
	}
	st := s.status()
	if st.State != StateProgressing || !st.GatePending || !strings.Contains(st.Gate, "answered 500") {
		t.Fatalf("status %+v", st)
	}
	if strings.Contains(st.Gate, "secret") {
		t.Fatalf("the webhook's token leaked into the status: %q", st.Gate)
	}
	if bp, _, _ := s.handle.get(); bp != 0 {
		t.Fatalf("share %s while pre_step fails", bp)
	}
	g.set(func(g *fakeGates) { g.hookErr[WebhookPreStep] = nil })
	s.step()
	if bp, _, _ := s.handle.get(); bp != 500 {
		t.Fatalf("share %s after pre_step passes; want 5%%", bp)
	}
}

// A confirm_promotion webhook answering 500 holds the step past its hold;
// once it answers 2xx the rollout promotes.
func TestConfirmPromotionWebhookHoldsStep(t *testing.T) {
	s, g := gatedSim(t, `
interval: 10s
steps: [{percent: 5, hold: 30s}, {percent: 100, hold: 30s}]
promote_when: []
rollback_when: []
webhooks: [{type: confirm_promotion, url: "http://127.0.0.1:1/confirm"}]
`)
	g.set(func(g *fakeGates) { g.hookErr[WebhookConfirmPromotion] = errors.New("answered 500") })
	s.start()
	s.runFor(5*time.Minute, nil)
	st := s.status()
	if st.Step != 0 || st.State != StateProgressing {
		t.Fatalf("step %d state %s; want held at steps[0]", st.Step, st.State)
	}
	if e := st.LastEvaluation; e == nil || e.Decision != DecisionHold || !strings.Contains(e.Reason, "waiting for confirm_promotion") {
		t.Fatalf("evaluation %+v", e)
	}
	if g.hookCalls[WebhookConfirmPromotion] == 0 {
		t.Fatal("the confirm_promotion webhook was never called")
	}
	g.set(func(g *fakeGates) { g.hookErr[WebhookConfirmPromotion] = nil })
	s.step()
	if st := s.status(); st.Step != 1 {
		t.Fatalf("step %d after the webhook confirmed; want 1", st.Step)
	}
}

// A guardrail rollback writes evidence with the numbers that fired.
func TestRollbackWritesEvidence(t *testing.T) {
	s := newSim(t, briefPolicyWithState(t, ""), 7)
	s.canary = cohortModel{errRate: 0.3, median: 40 * time.Millisecond, sigma: 0.5}
	s.perTick = 4000
	ev := &memEvidence{}
	s.opts.Evidence = ev
	s.opts.EvidenceExtra = func(e *Evidence) { e.ConfigHash = "sha256:test" }
	s.start()
	s.runFor(time.Hour, s.stateIs(StateRolledBack))
	if s.status().State != StateRolledBack {
		t.Fatalf("the bad canary was not rolled back: %+v", s.status())
	}
	var rb Event
	for _, e := range s.events.all() {
		if e.Action == ActionRollback {
			rb = e
		}
	}
	if rb.Evidence == "" || !strings.Contains(rb.Text(), "/api/v1/rollouts/api/evidence/"+rb.Evidence) {
		t.Fatalf("the rollback notification does not link its evidence: %q", rb.Text())
	}
	data := ev.recs["api/"+rb.Evidence]
	var rec Evidence
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("evidence %s: %v", data, err)
	}
	if rec.Kind != EvidenceRollback || rec.ConfigHash != "sha256:test" || rec.Evaluation == nil || len(rec.Series) != evidenceSeriesPoints {
		t.Fatalf("evidence %+v", rec)
	}
	var fired *ConditionResult
	for i := range rec.Evaluation.Rollback {
		if rec.Evaluation.Rollback[i].Fired {
			fired = &rec.Evaluation.Rollback[i]
		}
	}
	if fired == nil || fired.Canary == nil || fired.Control == nil || fired.CanarySamples == 0 || fired.ControlSamples == 0 {
		t.Fatalf("evidence lacks the numbers that fired: %+v", rec.Evaluation.Rollback)
	}
	if *fired.Canary < 0.2 {
		t.Fatalf("the fired condition's canary value %v is not the bad canary's error rate", *fired.Canary)
	}
	var seriesCanary uint64
	for _, p := range rec.Series {
		seriesCanary += p.CanaryRequests
	}
	if seriesCanary == 0 {
		t.Fatal("the series shows no canary traffic")
	}
	if len(rec.Timeline) == 0 || rec.Timeline[len(rec.Timeline)-1].Action != ActionRollback {
		t.Fatalf("timeline %+v", rec.Timeline)
	}
}

func TestGateSpecValidation(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"write without allow", `smoke: {checks: [{name: c, request: {method: POST, path: /x}}]}`, "smoke.checks[0].request.method: POST changes data"},
		{"writes need cleanup", `smoke: {allow_writes: true, checks: [{name: c, request: {method: POST, path: /x}}]}`, "smoke.cleanup: required"},
		{"bad phase", `smoke: {on: [after_step], checks: [{name: c, request: {path: /x}}]}`, "smoke.on[0]: unknown phase"},
		{"bad failure", `smoke: {failure: ignore, checks: [{name: c, request: {path: /x}}]}`, "smoke.failure: unknown value"},
		{"bad pointer", `smoke: {checks: [{name: c, request: {path: /x}, expect: {json: {status: ok}}}]}`, "must start with '/'"},
		{"bad exists", `smoke: {checks: [{name: c, request: {path: /x}, expect: {json: {/a: {exists: 1}}}}]}`, "{exists: true}"},
		{"no checks", `smoke: {checks: []}`, "smoke.checks: required"},
		{"path", `smoke: {checks: [{name: c, request: {path: x}}]}`, "smoke.checks[0].request.path"},
		{"hook type", `webhooks: [{type: post_step, url: "http://a/"}]`, "webhooks[0].type: unknown type"},
		{"hook url", `webhooks: [{type: pre_step, url: "ftp://a/"}]`, "webhooks[0].url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp := parseSpec(t, c.yaml)
			var msgs []string
			for _, err := range sp.Validate() {
				msgs = append(msgs, err.Error())
			}
			if !strings.Contains(strings.Join(msgs, "\n"), c.want) {
				t.Fatalf("errors %q; want one containing %q", msgs, c.want)
			}
		})
	}
}

// An after_promote check that fails once the new share is in force rolls
// back; failure: hold instead keeps a failing step waiting, and a restart
// keeps its share withheld.
func TestSmokeAfterPromoteAndHoldPolicies(t *testing.T) {
	t.Run("after_promote failure rolls back", func(t *testing.T) {
		s, g := gatedSim(t, gatedSpec)
		s.start()
		s.runFor(5*time.Minute, func() bool { return s.status().Step == 1 && !s.status().GatePending })
		g.set(func(g *fakeGates) { g.canaryOK = false })
		s.step()
		st := s.status()
		if st.State != StateRolledBack || !strings.HasPrefix(st.Reason, "after_promote smoke checks failed") {
			t.Fatalf("state %s reason %q", st.State, st.Reason)
		}
		if g.bpAtFirstRun[len(g.bpAtFirstRun)-1] != 5000 {
			t.Fatalf("the failing after_promote run saw %s; want the promoted 50%%", g.bpAtFirstRun[len(g.bpAtFirstRun)-1])
		}
	})
	t.Run("failure hold survives a restart", func(t *testing.T) {
		spec := strings.Replace(gatedSpec, "smoke:\n", "state_file: "+tempStateFile(t)+"\nsmoke:\n  failure: hold\n", 1)
		s, g := gatedSim(t, spec)
		g.set(func(g *fakeGates) { g.canaryOK = false })
		s.start()
		for i := 0; i < 3; i++ {
			s.step()
		}
		if st := s.status(); st.State != StateProgressing || !st.GatePending || !strings.Contains(st.Gate, "failure: hold") {
			t.Fatalf("status %+v", st)
		}
		// A new process on the same state: the share stays withheld.
		h := &fakeHandle{bp: 12345}
		c2 := NewController(s.opts)
		if err := c2.AddRoute("api", s.spec, s.rec, h); err != nil {
			t.Fatal(err)
		}
		if bp, _, _ := h.get(); bp != 0 {
			t.Fatalf("after a restart the gated step got %s", bp)
		}
		if st, _ := c2.RouteStatus("api"); !st.GatePending {
			t.Fatalf("restart forgot the pending gate: %+v", st)
		}
	})
}
