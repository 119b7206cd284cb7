package rollout

import (
	"fmt"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Actions name transitions in events, logs, OnTransition and the
// shadowproxy_rollout_transitions_total{action} metric.
const (
	// ActionStart: AddRoute applied the restored (or first) step. It is
	// reported to OnTransition only, never notified.
	ActionStart = "start"
	// ActionPromote: the canary moved to the next step.
	ActionPromote = "promote"
	// ActionRollback: the canary was taken to 0% and the route halted.
	ActionRollback = "rollback"
	// ActionPause: promotion stopped by command.
	ActionPause = "pause"
	// ActionResume: promotion resumed, or restarted at steps[0] after a rollback.
	ActionResume = "resume"
	// ActionComplete: the last step's hold passed with every promote_when.
	ActionComplete = "complete"
	// ActionReady is only notified: in manual mode every promote_when
	// passes and the step waits for a promote command.
	ActionReady = "ready"
)

// Event is one notified transition.
type Event struct {
	Route  string `json:"route"`
	Action string `json:"action"`
	Mode   Mode   `json:"mode"`
	// DryRun events describe what would have happened; nothing changed.
	DryRun bool  `json:"dry_run"`
	State  State `json:"state"`
	// FromStep/FromPercent is where the route was, Step/Percent where it is.
	FromStep    int     `json:"from_step"`
	FromPercent float64 `json:"from_percent"`
	Step        int     `json:"step"`
	Steps       int     `json:"steps"`
	Percent     float64 `json:"percent"`
	Reason      string  `json:"reason"`
	// By is "controller" for automatic decisions, "command" for the admin API.
	By          string       `json:"by"`
	At          time.Time    `json:"at"`
	Explanation *Explanation `json:"explanation,omitempty"`
	// Targets are the route's notify URLs. They are not serialized: webhook
	// URLs often carry a secret token.
	Targets []string `json:"-"`

	bp    cfgtypes.BasisPoints // the share in force, for OnTransition
	quiet bool                 // OnTransition only, not notified (start)
}

// Text renders the event for chat (Slack-compatible mrkdwn).
func (e Event) Text() string {
	var b strings.Builder
	if e.DryRun {
		b.WriteString("[dry run] ")
	}
	icon := map[string]string{
		ActionPromote: ":arrow_up:", ActionRollback: ":rotating_light:", ActionPause: ":double_vertical_bar:",
		ActionResume: ":arrow_forward:", ActionComplete: ":white_check_mark:", ActionReady: ":raised_hand:",
	}[e.Action]
	if icon != "" {
		b.WriteString(icon + " ")
	}
	verb := map[string]string{
		ActionPromote: "promoted", ActionRollback: "rolled back", ActionPause: "paused",
		ActionResume: "resumed", ActionComplete: "completed", ActionReady: "is ready for promotion",
		ActionStart: "started",
	}[e.Action]
	if e.DryRun {
		verb = "would be " + verb
	}
	fmt.Fprintf(&b, "shadowproxy rollout of route `%s` %s", e.Route, verb)
	if e.FromPercent != e.Percent {
		fmt.Fprintf(&b, ": canary %s%% → %s%%", fmtPct(e.FromPercent), fmtPct(e.Percent))
	} else {
		fmt.Fprintf(&b, ": canary at %s%%", fmtPct(e.Percent))
	}
	// Steps are named as the configuration, the API and the dashboard name
	// them: steps[i], 0-based.
	fmt.Fprintf(&b, " (steps[%d] of steps[0]–steps[%d], %s, by %s)", e.Step, max(e.Steps-1, 0), e.State, e.By)
	if e.Reason != "" {
		b.WriteString("\n" + e.Reason)
	}
	return b.String()
}

func fmtPct(p float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", p), "0"), ".")
}

// Notifier receives every transition. Notify must not block for long: it is
// called from the controller's tick (the notify package only enqueues).
type Notifier interface {
	Notify(Event)
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(Event)

// Notify implements Notifier.
func (f NotifierFunc) Notify(e Event) { f(e) }

// WebhookSender is the part of *notify.Dispatcher the rollout needs.
type WebhookSender interface {
	Send(urls []string, text string, payload any) bool
}

// Webhooks returns a Notifier that posts each event to its route's notify
// URLs, with the chat text and the event as structured payload.
func Webhooks(s WebhookSender) Notifier {
	return NotifierFunc(func(e Event) {
		if len(e.Targets) > 0 {
			s.Send(e.Targets, e.Text(), e)
		}
	})
}
