package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// Windows gives a decider the fleet's merged window of its route; each,
// when set, also receives every member's slot windows.
type Windows func(from, to time.Time, each func(*rollout.WindowStats)) FleetWindow

// Decider is the rollout controller as the fleet needs it: from the
// routes' fleet state (and the fleet's numbers) to their next state.
// internal/app adapts the rollout controller to it.
type Decider interface {
	// Policies maps each rollout route to the hash of its policy.
	Policies() map[string]string
	// Initial is the state of a route the fleet holds no state for yet.
	Initial(route string, now time.Time) RouteState
	// Decide evaluates the routes in states (each at its fleet state) once,
	// reading their numbers through windows(route), and returns the routes
	// whose state changes: a transition, or only the controller's own record
	// (RouteState.Controller, such as a breach streak that began). Routes
	// absent from states are not to be decided.
	Decide(ctx context.Context, now time.Time, states map[string]RouteState, windows func(route string) Windows) map[string]RouteState
	// Command applies an operator's action (pause, resume, promote,
	// rollback) to st, or says why it is not possible.
	Command(route, action string, st RouteState, now time.Time) (RouteState, error)
}

// Committer, when a Decider implements it, learns whether each route's
// decision (or command) reached etcd: ok is false when a decided change was
// not written (held, lost a revision check, etcd failed), true when it was
// written or nothing needed writing. The app uses it to send a rollout's
// notifications only for transitions that happened.
type Committer interface {
	Committed(route string, ok bool)
}

// Coordinator runs the fleet's evaluations on the leader: every Interval,
// for every route, it reads the state from etcd, checks that the members
// agree on the policy, lets the Decider evaluate on the merged windows and
// writes the result fenced by leadership. Followers' coordinators do
// nothing; when etcd is unreachable nobody transitions.
type Coordinator struct {
	Node     *Node
	Merger   *Merger
	Decider  Decider
	Interval time.Duration
	Now      func() time.Time

	mu    sync.Mutex
	holds map[string]string
	last  map[string]FleetWindow
}

// LastWindow is the merged window of route's latest evaluation: who
// answered, who did not.
func (c *Coordinator) LastWindow(route string) (FleetWindow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.last[route]
	return w, ok
}

// Run ticks until ctx ends.
func (c *Coordinator) Run(ctx context.Context) {
	iv := c.Interval
	if iv <= 0 {
		iv = time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Tick(ctx)
		}
	}
}

func (c *Coordinator) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Holds returns, per route, why the leader is holding it now.
func (c *Coordinator) Holds() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.holds))
	for k, v := range c.holds {
		out[k] = v
	}
	return out
}

func (c *Coordinator) setHold(route, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holds == nil {
		c.holds = map[string]string{}
	}
	if reason == "" {
		delete(c.holds, route)
		return
	}
	if c.holds[route] != reason {
		c.Node.log.Info("fleet holds route", zap.String("route", route), zap.String("reason", reason))
	}
	c.holds[route] = reason
}

// Tick evaluates every route once if this member leads and reaches etcd.
func (c *Coordinator) Tick(ctx context.Context) {
	if !c.Node.IsLeader() || !c.Node.EtcdUp() {
		return
	}
	now := c.now()
	log := c.Node.log
	store := c.Node.Store()
	policies := c.Decider.Policies()
	all, _, err := store.LoadAll(ctx)
	if err != nil {
		log.Warn("fleet evaluation skipped", zap.Error(err))
		return
	}
	members := c.Node.Members()
	states := map[string]RouteState{}
	revs := map[string]int64{}
	for route, hash := range policies {
		cur, ok := all[route]
		if !ok {
			st := c.Decider.Initial(route, now)
			st.Route, st.PolicyHash, st.UpdatedBy, st.UpdatedAt = route, hash, c.Node.Name(), now
			_, err := store.CompareAndSave(ctx, st, 0)
			c.countWrite(err)
			if err != nil {
				log.Warn("initial fleet state not written", zap.String("route", route), zap.Error(err))
			}
			continue
		}
		if why := disagreement(route, hash, members); why != "" {
			c.setHold(route, why)
			if m := c.Node.opts.Metrics; m != nil {
				m.Holds.WithLabelValues("policy_mismatch").Inc()
			}
			continue
		}
		states[route], revs[route] = cur.RouteState, cur.Rev
	}
	// Decide runs even with no route to decide: the decider may have work
	// of its own on the leader (the app's adapter ticks dry-run rollouts).
	held := map[string]string{}
	windows := func(route string) Windows {
		return func(from, to time.Time, each func(*rollout.WindowStats)) FleetWindow {
			fw := c.Merger.Merge(ctx, route, from, to, members, each)
			if fw.Hold && held[route] == "" {
				held[route] = fw.Reason
			}
			c.mu.Lock()
			if c.last == nil {
				c.last = map[string]FleetWindow{}
			}
			c.last[route] = fw
			c.mu.Unlock()
			return fw
		}
	}
	changes := c.Decider.Decide(ctx, now, states, windows)
	for route := range states {
		if h := held[route]; h != "" {
			c.setHold(route, h)
			if m := c.Node.opts.Metrics; m != nil {
				m.Holds.WithLabelValues("missing_members").Inc()
			}
		} else {
			c.setHold(route, "")
		}
	}
	committer, _ := c.Decider.(Committer)
	for route := range states {
		if _, changed := changes[route]; !changed && committer != nil {
			committer.Committed(route, true)
		}
	}
	for route, next := range changes {
		if _, ok := states[route]; !ok {
			continue
		}
		// Without the fleet's numbers nothing may be promoted; a breach
		// seen in the members that did answer is still real, so a
		// rollback goes through, and so does the controller's bookkeeping
		// at the same step (a breach streak must survive a leader change
		// even while members are missing).
		cur := states[route]
		if held[route] != "" && next.State != "rolled_back" && (next.State != cur.State || next.Step != cur.Step) {
			if committer != nil {
				committer.Committed(route, false)
			}
			continue
		}
		next.Route, next.PolicyHash, next.UpdatedBy, next.UpdatedAt = route, policies[route], c.Node.Name(), now
		_, err := store.CompareAndSave(ctx, next, revs[route])
		c.countWrite(err)
		if committer != nil {
			committer.Committed(route, err == nil)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("fleet transition not written", zap.String("route", route), zap.Error(err))
			}
			continue
		}
		if next.State == cur.State && next.Step == cur.Step && next.LastAction == cur.LastAction {
			continue // the controller's bookkeeping (a streak began or ended), not a transition
		}
		log.Info("fleet rollout transition", zap.String("route", route), zap.String("action", next.LastAction),
			zap.Int("step", next.Step), zap.Uint32("percent_bp", next.PercentBP), zap.String("reason", next.Reason))
	}
}

func (c *Coordinator) countWrite(err error) {
	m := c.Node.opts.Metrics
	if m == nil {
		return
	}
	switch {
	case err == nil:
		m.StateWrites.WithLabelValues("ok").Inc()
	case errors.Is(err, ErrConflict):
		m.StateWrites.WithLabelValues("conflict").Inc()
	default:
		m.StateWrites.WithLabelValues("error").Inc()
	}
}

// disagreement explains why members' policies for route differ from hash
// ("" when they all agree).
func disagreement(route, hash string, members []MemberInfo) string {
	var odd []string
	for _, m := range members {
		if h := m.Policies[route]; h != hash {
			if h == "" {
				h = "none"
			}
			odd = append(odd, fmt.Sprintf("%s has %s", m.Name, h))
		}
	}
	if len(odd) == 0 {
		return ""
	}
	return fmt.Sprintf("holding: members disagree on the rollout policy of route %q (leader has %s; %s); finish the config rollout to continue",
		route, hash, strings.Join(odd, ", "))
}

// Command applies an operator action to the fleet state from any member:
// the Decider computes the new state and it is written with a revision
// check (retried on conflict), then every member applies it from the watch.
func (c *Coordinator) Command(ctx context.Context, route, action string) (RouteState, error) {
	if _, ok := c.Decider.Policies()[route]; !ok {
		return RouteState{}, fmt.Errorf("route %q has no rollout: %w", route, ErrUnknownRoute)
	}
	v, err := c.Node.CommandStore().Update(ctx, route, func(st *RouteState) error {
		if st.StepStartedAt.IsZero() {
			return fmt.Errorf("route %q has no fleet state yet (the leader writes it on its first evaluation)", route)
		}
		now := c.now()
		next, err := c.Decider.Command(route, action, *st, now)
		if err != nil {
			return err
		}
		next.UpdatedBy, next.UpdatedAt = c.Node.Name(), now
		*st = next
		return nil
	})
	if committer, ok := c.Decider.(Committer); ok {
		committer.Committed(route, err == nil)
	}
	return v.RouteState, err
}

// ErrUnknownRoute means a command named a route without a rollout.
var ErrUnknownRoute = errors.New("unknown rollout route")
