package rollout

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// runGates runs the gates of phase for the step the route was at (gen),
// without the route's lock, then applies the outcome: a passing
// before_step gate applies the step's share; a failing one rolls back or
// holds as smoke.failure says; a stable that fails too only holds.
func (c *Controller) runGates(r *route, now time.Time, gen uint64, spec *Spec, step int, bp cfgtypes.BasisPoints, phase string) []Event {
	ctx := context.Background()
	var rep *SmokeReport
	if spec.Smoke.SmokeRuns(phase) {
		rep = &SmokeReport{Phase: phase, At: now, Step: step, Results: c.opts.Gates.Smoke(ctx, r.name, spec.Smoke)}
		rep.judge()
		if c.opts.OnSmoke != nil {
			c.opts.OnSmoke(r.name, *rep)
		}
	}
	hookErr := ""
	if phase == SmokeBeforeStep && (rep == nil || rep.Verdict == SmokePass) {
		for _, w := range spec.Webhooks {
			if w.Type != WebhookPreStep {
				continue
			}
			if err := c.opts.Gates.Webhook(ctx, r.name, w, GatePayload{Route: r.name, Type: w.Type, Step: step, Percent: bp.Percent(), At: now}); err != nil {
				hookErr = fmt.Sprintf("pre_step webhook %s: %v", redactURL(w.URL), err)
				break
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed || r.gen != gen || r.state != StateProgressing {
		return nil // a command or reload changed the route meanwhile
	}
	if rep != nil {
		r.lastSmoke = rep
	}
	failed, why := false, ""
	switch {
	case rep != nil && rep.Verdict == SmokeFail:
		failed, why = true, phase+" "+rep.Summary
	case hookErr != "":
		failed, why = true, hookErr
	case rep != nil && rep.Verdict == SmokeEnvironment:
		why = phase + " " + rep.Summary + "; the step waits and the checks run again every interval"
		return c.gateHeldLocked(r, now, why, rep)
	}
	if !failed {
		r.gateNotified, r.gateReason = false, ""
		if rep != nil {
			r.gateReason = phase + ": " + rep.Summary
		}
		if phase == SmokeAfterPromote {
			r.afterPending = false
			return nil
		}
		ev := c.transitionLocked(r, now, ActionGatePassed, "gate", fmt.Sprintf("before_step gates passed; steps[%d] gets %s%% now", step, bp), nil, func() {
			r.gatePending = false
			r.stepStartedAt, r.pausedFor = now, 0
			r.afterPending = step > 0 && spec.Smoke.SmokeRuns(SmokeAfterPromote)
		})
		ev.Smoke = rep
		return []Event{ev}
	}
	policy := GateFailHold
	if spec.Smoke != nil {
		policy = spec.Smoke.Failure
	}
	if policy == GateFailRollback {
		r.gateReason = why
		ev := c.transitionLocked(r, now, ActionRollback, "gate", why, nil, func() {
			r.state, r.gatePending, r.afterPending = StateRolledBack, false, false
		})
		ev.Smoke = rep
		return []Event{ev}
	}
	return c.gateHeldLocked(r, now, why+"; failure: hold, so the step waits and the gates run again every interval", rep)
}

// gateHeldLocked keeps the step waiting and notifies once per failing
// streak.
func (c *Controller) gateHeldLocked(r *route, now time.Time, why string, rep *SmokeReport) []Event {
	r.gateReason = why
	r.log.Warn("rollout step held by a gate", zap.Int("step", r.step), zap.String("reason", why))
	if r.gateNotified {
		return nil
	}
	r.gateNotified = true
	ev := c.eventLocked(r, now, ActionGateHeld, "gate", why, nil, r.step, r.percent())
	ev.Smoke = rep
	return []Event{ev}
}

// confirmPromotion calls the confirm_promotion webhooks, in order, and
// returns the first failure ("" when all answered 2xx or there are none).
func (c *Controller) confirmPromotion(route string, spec *Spec, step int, now time.Time) string {
	for _, w := range spec.Webhooks {
		if w.Type != WebhookConfirmPromotion || c.opts.Gates == nil {
			continue
		}
		bp := spec.Steps[step].Percent.BP()
		if err := c.opts.Gates.Webhook(context.Background(), route, w, GatePayload{Route: route, Type: w.Type, Step: step, Percent: bp.Percent(), At: now}); err != nil {
			return fmt.Sprintf("webhook %s: %v", redactURL(w.URL), err)
		}
	}
	return ""
}

func allPass(rs []ConditionResult) bool {
	for _, res := range rs {
		if res.Verdict != VerdictPass && res.Verdict != VerdictNotApplicable {
			return false
		}
	}
	return true
}

func anyFired(rs []ConditionResult) bool {
	for _, res := range rs {
		if res.Verdict == VerdictBreach {
			return true
		}
	}
	return false
}

// redactURL keeps a webhook URL's scheme, host and path: its query and
// user info often carry a token.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
