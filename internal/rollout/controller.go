package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Errors returned by Command; the admin API maps them to 404, 400 and 409.
var (
	ErrUnknownRoute      = errors.New("unknown rollout route")
	ErrUnknownAction     = errors.New("unknown rollout action")
	ErrInvalidTransition = errors.New("invalid rollout transition")
)

// RouteHandle is the proxy's side of a route: the controller changes the
// canary share through it. Both calls must be cheap and atomic (the proxy
// backs them with its splitter); they are made with the route's lock held
// so that a rollback and a command can never interleave.
type RouteHandle interface {
	// SetCanaryPercent sets the share of key buckets sent to the canary.
	SetCanaryPercent(bp cfgtypes.BasisPoints)
	// SetHalted(true) sends all traffic to stable, cohort rules included.
	SetHalted(halted bool)
}

// Options configures a Controller. Every field is optional.
type Options struct {
	// Now is the clock for commands and Run (default time.Now). Tick takes
	// its time as an argument so that tests drive it deterministically.
	Now func() time.Time
	// Logger receives every decision (default: none).
	Logger *zap.Logger
	// Notifier receives every promote, rollback, pause, resume, complete
	// and (manual mode) ready. See Webhooks for the notify package.
	Notifier Notifier
	// External serves the metrics declared in external_metrics.
	External ExternalSource
	// ExternalTimeout bounds one external lookup (default 5s).
	ExternalTimeout time.Duration
	// OnTransition is called after every applied transition (start,
	// promote, rollback, pause, resume, complete) with the step index and
	// the canary share now in force, for metrics. Not called in dry_run.
	OnTransition func(route, action string, step int, bp cfgtypes.BasisPoints)
	// HealthProbe builds and starts the active health prober of a route
	// whose spec has a health_check (the proxy knows the canary's URL). If
	// the prober implements io.Closer it is closed when the route goes.
	HealthProbe func(route string, hc HealthCheck) (HealthProber, error)
	// StateStore returns where a route's state is persisted, or nil for
	// nowhere (default: a FileStore on the spec's state_file, when set). A
	// fleet replaces it with a shared store.
	StateStore func(route string, spec *Spec) StateStore
	// Gates runs smoke checks and gating webhooks; required when a spec
	// has smoke or webhooks.
	Gates Gates
	// OnSmoke is called after every judged smoke run, for metrics.
	OnSmoke func(route string, rep SmokeReport)
	// Evidence stores the record written on every rollback (nil: none).
	Evidence EvidenceStore
	// EvidenceExtra completes a record before it is stored (top differing
	// fields, redacted diff samples, the config hash), outside every lock.
	EvidenceExtra func(e *Evidence)
	// OnEvidence is called after each record is stored (err nil) or not.
	OnEvidence func(route string, err error)
	// TickEvery is Run's timer period (default 1s). Each route is still
	// evaluated only every spec.interval; health failures on every tick.
	TickEvery time.Duration
}

// Controller drives the rollouts of many routes.
type Controller struct {
	opts   Options
	now    func() time.Time
	log    *zap.Logger
	mu     sync.Mutex
	routes map[string]*route
	// evidenceSeq numbers evidence records across routes.
	evidenceSeq atomic.Uint64
}

// route is one route's runtime state, guarded by mu. spec, rec, h and
// prober are replaced only under mu and never mutated, so an evaluation may
// read them unlocked; gen tells it whether its result is still wanted.
type route struct {
	busy    atomic.Bool // an evaluation is running; guarded by itself, not mu
	name    string
	log     *zap.Logger
	mu      sync.Mutex
	spec    *Spec
	policy  *compiledPolicy // compiled from spec, replaced with it
	store   StateStore      // nil: not persisted
	rec     *Recorder
	h       RouteHandle
	prober  HealthProber
	removed bool
	gen     uint64

	state         State
	step          int
	stepStartedAt time.Time
	pausedAt      time.Time // zero unless paused
	pausedFor     time.Duration
	dataSince     time.Time // samples before this belong to a rolled-back attempt
	reason        string
	lastAction    string
	lastActionAt  time.Time
	lastActionBy  string

	lastEval time.Time
	// seqs are the conditions' sequential tests and breach streaks, by
	// seqKey; persisted with the state.
	seqs          map[string]*condSeq
	waitNotified  bool // the "waiting for samples" event of this step was sent
	caches        map[time.Duration]*WindowCache
	cachesRec     *Recorder
	ready         bool
	readyNotified bool
	last          *Explanation
	persistErr    string

	// gatePending: the current step's before_step gates have not passed
	// yet, so its share is withheld (0%); afterPending: its after_promote
	// smoke checks have not run yet.
	gatePending  bool
	afterPending bool
	gateNotified bool
	gateReason   string
	lastSmoke    *SmokeReport
	// confirmErr is the latest confirm_promotion failure ("" when none).
	confirmErr string
	// timeline is the route's latest transitions, for evidence.
	timeline []TimelineEntry
	// completedAt is when the rollout completed (zero if it has not).
	completedAt time.Time
}

// NewController returns a Controller; call AddRoute for each route, then
// Run (or Tick from tests).
func NewController(opts Options) *Controller {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ExternalTimeout <= 0 {
		opts.ExternalTimeout = 5 * time.Second
	}
	if opts.TickEvery <= 0 {
		opts.TickEvery = time.Second
	}
	if opts.StateStore == nil {
		opts.StateStore = func(_ string, spec *Spec) StateStore {
			if spec.StateFile == "" {
				return nil
			}
			return FileStore{Path: spec.StateFile}
		}
	}
	return &Controller{opts: opts, now: opts.Now, log: opts.Logger.Named("rollout"), routes: map[string]*route{}}
}

func (r *route) dryRun() bool { return r.spec.Mode == ModeDryRun }

// stepPercent is the configured share of the current step.
func (r *route) stepPercent() cfgtypes.BasisPoints { return r.spec.Steps[r.step].Percent.BP() }

// percent is the share in force: 0 once rolled back or while the step's
// gates have not passed.
func (r *route) percent() cfgtypes.BasisPoints {
	if r.state == StateRolledBack || r.gatePending {
		return 0
	}
	return r.stepPercent()
}

// held is the time spent at the current step, pauses excluded.
func (r *route) held(now time.Time) time.Duration {
	d := now.Sub(r.stepStartedAt) - r.pausedFor
	if !r.pausedAt.IsZero() {
		d -= now.Sub(r.pausedAt)
	}
	return max(d, 0)
}

// applyLocked pushes the state to the proxy. Rolling back halts first so
// that no request sees the canary between the two calls; resuming sets the
// share before un-halting for the same reason.
func (r *route) applyLocked() {
	if r.dryRun() {
		return
	}
	if r.state == StateRolledBack {
		r.h.SetHalted(true)
		r.h.SetCanaryPercent(0)
		return
	}
	r.h.SetCanaryPercent(r.percent())
	r.h.SetHalted(false)
}

// hasBeforeGates reports whether a step waits for gates before its share
// is applied. A dry run never withholds traffic (it changes nothing).
func (r *route) hasBeforeGates() bool {
	if r.dryRun() {
		return false
	}
	if r.spec.Smoke.SmokeRuns(SmokeBeforeStep) {
		return true
	}
	for _, w := range r.spec.Webhooks {
		if w.Type == WebhookPreStep {
			return true
		}
	}
	return false
}

// persistLocked writes the state file. A failure is logged and shown in
// Status but never blocks a transition: a rollback must happen even on a
// full disk.
func (r *route) persistLocked(now time.Time) {
	if r.dryRun() || r.store == nil {
		return
	}
	s := savedState{
		Version: stateVersion, Route: r.name, State: r.state, Step: r.step, PercentBP: r.stepPercent(),
		StepStartedAt: r.stepStartedAt, PausedNanos: int64(r.pausedFor), DataSince: r.dataSince,
		Reason: r.reason, LastAction: r.lastAction, UpdatedAt: now, GatePending: r.gatePending, CompletedAt: r.completedAt,
	}
	keys := make([]string, 0, len(r.seqs))
	for k := range r.seqs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		st := r.seqs[k].clone()
		st.pack()
		s.Conditions = append(s.Conditions, st)
	}
	if !r.pausedAt.IsZero() {
		p := r.pausedAt
		s.PausedAt = &p
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		err = r.store.Save(append(data, '\n'))
	}
	if err != nil {
		r.persistErr = err.Error()
		r.log.Error("cannot persist rollout state; a restart (or, in a fleet, a new leader) would not resume this step", zap.String("state_file", r.spec.StateFile), zap.Error(err))
		return
	}
	r.persistErr = ""
}

// mapStep finds the step to resume at for a saved share: the same share if
// the steps still have it, else the largest share below it, so that a
// change of steps never raises the canary's exposure on its own.
func mapStep(steps []Step, bp cfgtypes.BasisPoints) (idx int, exact, below bool) {
	idx = -1
	for i, s := range steps {
		if s.Percent.BP() == bp {
			return i, true, true
		}
		if s.Percent.BP() < bp {
			idx = i
		}
	}
	if idx < 0 {
		return 0, false, false
	}
	return idx, false, true
}

// AddRoute starts managing a route: it validates spec (after defaults),
// restores the persisted state (or starts at steps[0]), and applies the
// current step's share to h. Adding a name again replaces its spec,
// recorder and handle and keeps its progress (a config reload); if the
// steps changed, it resumes at the step with the same share, or the largest
// smaller one.
func (c *Controller) AddRoute(name string, spec Spec, rec *Recorder, h RouteHandle) error {
	if name == "" {
		return errors.New("rollout: route name is empty")
	}
	if rec == nil || h == nil {
		return fmt.Errorf("rollout %q: recorder and route handle are required", name)
	}
	spec = cloneSpec(spec)
	spec.ApplyDefaults()
	if errs := spec.Validate(); len(errs) > 0 {
		return fmt.Errorf("rollout %q: invalid spec: %w", name, errors.Join(errs...))
	}
	if need := spec.LongestWindow(); rec.Retention() < need {
		return fmt.Errorf("rollout %q: the recorder keeps %s of history but a condition window is %s; build it with NewRecorder(now, spec.RecorderOptions()...)", name, fmtDur(rec.Retention()), fmtDur(need))
	}
	now := c.now()

	c.mu.Lock()
	if spec.StateFile != "" {
		for other, r := range c.routes {
			if other != name && r.spec.StateFile == spec.StateFile {
				c.mu.Unlock()
				return fmt.Errorf("rollout %q: state_file %s is already used by route %q", name, spec.StateFile, other)
			}
		}
	}
	existing := c.routes[name]
	// A switch into or out of dry_run starts afresh from the persisted
	// (real) state: a dry run's virtual progress must never become real.
	var replaced *route
	if existing != nil && (existing.spec.Mode == ModeDryRun) != (spec.Mode == ModeDryRun) {
		replaced, existing = existing, nil
	}
	var reuse HealthProber
	if existing != nil && spec.HealthCheck != nil && existing.spec.HealthCheck != nil && *existing.spec.HealthCheck == *spec.HealthCheck {
		reuse = existing.prober
	}
	prober := reuse
	if spec.HealthCheck != nil && prober == nil {
		if c.opts.HealthProbe == nil {
			c.mu.Unlock()
			return fmt.Errorf("rollout %q: health_check is configured but the controller has no HealthProbe", name)
		}
		p, err := c.opts.HealthProbe(name, *spec.HealthCheck)
		if err != nil {
			c.mu.Unlock()
			return fmt.Errorf("rollout %q: start health probe: %w", name, err)
		}
		prober = p
	}

	if (spec.Smoke != nil || len(spec.Webhooks) > 0) && c.opts.Gates == nil {
		c.mu.Unlock()
		closeProber(prober)
		return fmt.Errorf("rollout %q: smoke or webhooks are configured but the controller has no Gates", name)
	}

	var oldProber HealthProber
	var ev Event
	if existing != nil {
		r := existing
		r.mu.Lock()
		if r.prober != reuse {
			oldProber = r.prober
		}
		oldStepBP, oldSpec, oldStep := r.stepPercent(), r.spec, r.step
		r.spec, r.policy, r.rec, r.h, r.prober = &spec, compile(&spec), rec, h, prober
		r.store = c.opts.StateStore(name, r.spec)
		r.caches = nil
		r.log = c.log.With(zap.String("route", name), zap.String("mode", string(spec.Mode)))
		if r.step >= len(spec.Steps) || spec.Steps[r.step].Percent.BP() != oldStepBP {
			idx, _, below := mapStep(spec.Steps, oldStepBP)
			r.log.Warn("steps changed: resuming at the step with the same or the next lower share",
				zap.Float64("was_percent", oldStepBP.Percent()), zap.Int("step", idx), zap.Float64("percent", spec.Steps[idx].Percent.BP().Percent()))
			r.step, r.stepStartedAt, r.pausedFor = idx, now, 0
			if !r.pausedAt.IsZero() {
				r.pausedAt = now
			}
			if !below && r.state == StateProgressing {
				r.state, r.pausedAt = StatePaused, now
				r.reason = "steps changed and every step is above the previous share; paused until resumed"
			}
		}
		r.gen++
		// A reload that leaves the step's guardrails as they were keeps
		// their breach streaks: frequent reloads must not postpone a rollback.
		if !reflect.DeepEqual(oldSpec.rollbackWhen(oldStep), spec.rollbackWhen(r.step)) || oldStep != r.step {
			r.newStepLocked()
		}
		r.lastEval, r.ready, r.readyNotified = time.Time{}, false, false
		if r.gatePending && !r.hasBeforeGates() {
			r.gatePending = false // the gates were removed: nothing to wait for
		}
		r.applyLocked()
		r.persistLocked(now)
		ev = c.eventLocked(r, now, ActionStart, "config", "", nil, r.step, r.percent())
		r.mu.Unlock()
		c.mu.Unlock()
	} else {
		r := &route{name: name, spec: &spec, policy: compile(&spec), store: c.opts.StateStore(name, &spec), rec: rec, h: h, prober: prober,
			log: c.log.With(zap.String("route", name), zap.String("mode", string(spec.Mode)))}
		if err := c.restore(r, now); err != nil {
			c.mu.Unlock()
			closeProber(prober)
			return err
		}
		if replaced != nil {
			replaced.mu.Lock()
			replaced.removed = true
			oldProber = replaced.prober
			replaced.mu.Unlock()
		}
		r.mu.Lock()
		r.applyLocked()
		ev = c.eventLocked(r, now, ActionStart, "config", "", nil, r.step, r.percent())
		r.mu.Unlock()
		c.routes[name] = r
		c.mu.Unlock()
	}
	closeProber(oldProber)
	ev.quiet = true
	c.emit([]Event{ev})
	return nil
}

// restore loads r's state from its state file; see the package comment and
// the README for every case.
func (c *Controller) restore(r *route, now time.Time) error {
	r.state, r.step, r.stepStartedAt, r.dataSince = StateProgressing, 0, now, now
	path := r.spec.StateFile
	first := r.spec.Steps[0].Percent.BP().Percent()
	if r.store == nil {
		r.log.Warn("rollout state is not persisted (no state_file): a restart begins again at steps[0]", zap.Float64("percent", first))
		r.gatePending = r.hasBeforeGates()
		return nil
	}
	s, err := loadState(r.store)
	switch {
	case errors.Is(err, errNoState):
		r.log.Info("no saved rollout state; starting at steps[0]", zap.String("state_file", path), zap.Float64("percent", first))
		r.gatePending = r.hasBeforeGates()
		r.persistLocked(now)
		return nil
	case err != nil:
		// The real position is unknown. Going to steps[0] could re-expose
		// a canary that had been rolled back, and keeping the configured
		// split could mean 100%: hold the canary at 0% until a person
		// looks, and keep the unreadable file for them.
		moved := ""
		if fs, ok := r.store.(FileStore); ok && !r.dryRun() {
			moved = fs.Path + ".corrupt"
			if rerr := os.Rename(fs.Path, moved); rerr != nil {
				moved = ""
			}
		}
		r.state = StateRolledBack
		r.reason = fmt.Sprintf("state file %s is unreadable (%v); canary held at 0%% until resumed", path, err)
		r.lastAction, r.lastActionAt, r.lastActionBy = ActionRollback, now, "controller"
		r.log.Error("rollout state file is unreadable: canary held at 0% until a person resumes (POST .../resume restarts at steps[0])",
			zap.String("state_file", path), zap.String("moved_to", moved), zap.Error(err))
		r.persistLocked(now)
		return nil
	case s.Route != "" && s.Route != r.name:
		return fmt.Errorf("rollout %q: state_file %s belongs to route %q; give each route its own state_file", r.name, path, s.Route)
	}

	r.state, r.reason, r.lastAction = s.State, s.Reason, s.LastAction
	r.dataSince = s.DataSince
	r.gatePending = s.GatePending && r.hasBeforeGates()
	r.completedAt = s.CompletedAt
	if r.state == StateCompleted && r.completedAt.IsZero() {
		r.completedAt = s.UpdatedAt // saved before completed_at existed
	}
	r.seqs = map[string]*condSeq{}
	for _, c := range s.Conditions {
		r.seqs[c.Key] = c
	}
	idx, exact, below := mapStep(r.spec.Steps, s.PercentBP)
	if exact {
		// Same share: same hold clock, even if steps were inserted before it.
		// Re-anchored on now, the instants keep their wall time but gain
		// now's monotonic reading, so that from here on a wall-clock step
		// can neither shorten nor stretch the hold.
		anchor := func(t time.Time) time.Time { return now.Add(-now.Sub(t)) }
		r.step, r.stepStartedAt, r.pausedFor = idx, anchor(s.StepStartedAt), time.Duration(s.PausedNanos)
		if s.PausedAt != nil {
			r.pausedAt = anchor(*s.PausedAt)
		} else if r.state == StatePaused {
			r.pausedAt = now
		}
		r.log.Info("restored rollout state", zap.String("state_file", path), zap.String("state", string(r.state)),
			zap.Int("step", r.step), zap.Float64("percent", r.percent().Percent()), zap.Duration("held_ms", r.held(now)))
		if idx != s.Step {
			r.persistLocked(now)
		}
		return nil
	}
	// The saved share is no longer a step: resume at the largest smaller
	// one with a fresh hold clock, never above what was in force.
	r.step, r.stepStartedAt, r.pausedFor = idx, now, 0
	if s.PausedAt != nil || r.state == StatePaused {
		r.pausedAt = now
	}
	if !below && r.state == StateProgressing {
		r.state, r.pausedAt = StatePaused, now
		r.reason = "steps changed and every step is above the saved share; paused until resumed"
	}
	r.log.Warn("steps changed since the state was saved: resuming at the next lower share",
		zap.String("state_file", path), zap.Float64("saved_percent", s.PercentBP.Percent()), zap.Int("saved_step", s.Step),
		zap.Int("step", r.step), zap.Float64("percent", r.stepPercent().Percent()), zap.String("state", string(r.state)))
	r.persistLocked(now)
	return nil
}

// Reload replaces a route's persisted state in memory with what its
// StateStore holds now: a shared store (a fleet's etcd) may have been
// written by another process. An evaluation in flight is discarded; the
// share is applied to the route handle again. Like a restart, a saved
// share that is no longer a step resumes at the next lower one (and that
// is saved). ErrUnknownRoute for a route not managed.
func (c *Controller) Reload(name string) error {
	c.mu.Lock()
	r := c.routes[name]
	c.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w %q", ErrUnknownRoute, name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed || r.dryRun() || r.store == nil {
		return nil
	}
	state, step := r.state, r.step
	// restore expects a fresh route: clear what it only sets when saved.
	r.pausedAt, r.pausedFor, r.seqs, r.reason, r.lastAction = time.Time{}, 0, nil, "", ""
	// A fleet follower reloads on every state change: its restores are
	// routine, not an info line each.
	log := r.log
	r.log = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	err := c.restore(r, c.now())
	r.log = log
	if err != nil {
		return err
	}
	r.gen++
	if r.state != state || r.step != step {
		r.waitNotified, r.ready, r.readyNotified = false, false, false
	}
	r.applyLocked()
	return nil
}

// RemoveRoute stops managing a route. The route's share is left as it is
// (the route is going away) and its state file is kept, so adding it back
// resumes where it was.
func (c *Controller) RemoveRoute(name string) {
	c.mu.Lock()
	r := c.routes[name]
	delete(c.routes, name)
	c.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	r.removed = true
	p := r.prober
	r.mu.Unlock()
	closeProber(p)
}

// Close stops every route's health prober.
func (c *Controller) Close() error {
	c.mu.Lock()
	names := make([]string, 0, len(c.routes))
	for n := range c.routes {
		names = append(names, n)
	}
	c.mu.Unlock()
	for _, n := range names {
		c.RemoveRoute(n)
	}
	return nil
}

func closeProber(p HealthProber) {
	if cl, ok := p.(interface{ Close() error }); ok && p != nil {
		_ = cl.Close()
	}
}

func (c *Controller) snapshot() []*route {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*route, 0, len(c.routes))
	for _, r := range c.routes {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Run ticks every Options.TickEvery until ctx is done. Routes are
// evaluated concurrently and a route still busy (an external source being
// slow) is skipped rather than waited for, so no route ever delays another
// route's evaluation or its next health check. Run returns once every
// evaluation it started has finished.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.TickEvery)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	c.tick(c.now(), &wg)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.tick(c.now(), &wg)
		}
	}
}

// Tick evaluates every route whose interval has elapsed at now, and checks
// health-probe failures of every route, concurrently, and returns when all
// are done. Tests drive it with a fake clock.
func (c *Controller) Tick(now time.Time) {
	var wg sync.WaitGroup
	c.tick(now, &wg)
	wg.Wait()
}

// tick starts an evaluation of every route not already being evaluated.
func (c *Controller) tick(now time.Time, wg *sync.WaitGroup) {
	for _, r := range c.snapshot() {
		if !r.busy.CompareAndSwap(false, true) {
			continue // its previous evaluation is still running
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.busy.Store(false)
			c.emit(c.tickRoute(r, now))
		}()
	}
}

func (c *Controller) tickRoute(r *route, now time.Time) []Event {
	r.mu.Lock()
	if r.removed || r.state == StateRolledBack || r.state == StateCompleted {
		r.mu.Unlock()
		return nil
	}
	spec := r.spec
	due := r.lastEval.IsZero() || now.Sub(r.lastEval) >= spec.Interval.D()
	if r.state == StateProgressing && (r.gatePending || r.afterPending) {
		if !due {
			r.mu.Unlock()
			return nil
		}
		r.lastEval = now
		phase := SmokeAfterPromote
		if r.gatePending {
			phase = SmokeBeforeStep
		}
		gen, step, bp := r.gen, r.step, r.stepPercent()
		r.mu.Unlock()
		return c.runGates(r, now, gen, spec, step, bp, phase)
	}
	pol := r.policy
	rollbackConds := pol.steps[r.step].rollback
	var healthIdx []int
	if r.prober != nil {
		for i := range rollbackConds {
			if rollbackConds[i].metric.kind == kindHealth {
				healthIdx = append(healthIdx, i)
			}
		}
	}
	if !due && len(healthIdx) == 0 {
		r.mu.Unlock()
		return nil
	}
	gen, step, state := r.gen, r.step, r.state
	held, hold := r.held(now), spec.Steps[r.step].Hold.D()
	pct := r.percent()
	evalPromote := due && state == StateProgressing && held >= hold
	promoteConds := pol.steps[step].promote
	ev := &evaluator{planned: pol.planned, ctx: context.Background(), route: r.name, spec: spec, rec: r.rec, now: now, dataSince: r.dataSince,
		atFull: pct == cfgtypes.MaxBasisPoints, health: r.prober, external: c.opts.External, timeout: min(c.opts.ExternalTimeout, spec.Interval.D()),
		stepStart: r.stepStartedAt, rollbackAlpha: pol.rollbackAlpha,
		seqs: r.seqClones(rollbackConds), pseqs: r.seqClones(promoteConds), caches: r.windowCaches()}
	r.mu.Unlock()

	// Evaluate without the lock: external lookups may take seconds and
	// Status/Command must not wait for them.
	expl := &Explanation{Route: r.name, At: now, Mode: spec.Mode, State: state, Step: step, Percent: pct.Percent(),
		HeldSeconds: held.Seconds(), HoldSeconds: hold.Seconds(), Promote: []ConditionResult{}, Rollback: []ConditionResult{}}
	if due {
		if evalPromote {
			ev.prefetchExternal(rollbackConds, promoteConds)
		} else {
			ev.prefetchExternal(rollbackConds)
		}
		for i := range rollbackConds {
			expl.Rollback = append(expl.Rollback, ev.evaluate(&rollbackConds[i]))
		}
		if evalPromote {
			for i := range promoteConds {
				expl.Promote = append(expl.Promote, ev.evaluate(&promoteConds[i]))
			}
		} else {
			// During the hold, promote conditions still fold their data in
			// (the recorder keeps only a window of it), without a verdict.
			for i := range promoteConds {
				if promoteConds[i].isSeq {
					ev.evaluate(&promoteConds[i])
				}
			}
		}
	} else {
		// Between evaluations only the probe streak is checked, so that N
		// failed probes roll back on the next tick, not the next interval.
		for _, i := range healthIdx {
			expl.Rollback = append(expl.Rollback, ev.evaluate(&rollbackConds[i]))
		}
	}
	confirmErr := ""
	if evalPromote && state == StateProgressing && spec.Mode == ModeAuto && !spec.Steps[step].Pause && allPass(expl.Promote) && !anyFired(expl.Rollback) {
		confirmErr = c.confirmPromotion(r.name, spec, step, now)
	}
	win := spec.window(&Condition{})
	w := ev.stats(win)
	expl.Samples = SampleCounts{Window: fmtDur(win), Canary: w.Canary.Requests, Control: w.Control.Requests,
		Excluded: w.Excluded.Requests, Comparisons: w.Comparisons}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed || r.gen != gen {
		return nil // a command or reload changed the route meanwhile
	}
	before := r.streakSignature()
	r.storeSeqs(rollbackConds, ev.seqs, step)
	r.storeSeqs(promoteConds, ev.pseqs, step)
	r.confirmErr = confirmErr
	events := c.decideLocked(r, now, expl, due, evalPromote, rollbackConds)
	if len(events) == 0 && r.streakSignature() != before {
		r.persistLocked(now) // a streak began or ended, or a block crossed
	}
	return events
}

// streakSignature summarizes what of the conditions' states must survive a
// restart promptly: streaks, crossings and blocks.
func (r *route) streakSignature() string {
	keys := make([]string, 0, len(r.seqs))
	for k := range r.seqs {
		if strings.HasPrefix(k, "rollback:") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		st := r.seqs[k]
		fmt.Fprintf(&b, "%s|%d|%d|%t|%d;", k, st.Block, st.Spent, st.rejected(), st.BreachSince.UnixNano())
	}
	return b.String()
}

// windowCaches returns the route's window caches, one per window length in
// the spec, rebuilt when the recorder changes.
func (r *route) windowCaches() map[time.Duration]*WindowCache {
	if r.caches != nil && r.cachesRec == r.rec {
		return r.caches
	}
	r.caches, r.cachesRec = map[time.Duration]*WindowCache{}, r.rec
	add := func(cs []Condition) {
		for i := range cs {
			if w := r.spec.window(&cs[i]); r.caches[w] == nil {
				r.caches[w] = NewWindowCache(r.rec)
			}
		}
	}
	add([]Condition{{}})
	add(r.spec.PromoteWhen)
	add(r.spec.RollbackWhen)
	for i := range r.spec.Steps {
		add(r.spec.Steps[i].PromoteWhen)
		add(r.spec.Steps[i].RollbackWhen)
	}
	return r.caches
}

// seqClones returns copies of the states of conds, creating missing ones,
// for an evaluation that runs unlocked.
//
// Keys (compiledCond.key) are the condition's text: rollback conditions
// keep their state across steps (the alpha-spending index runs over the
// rollout); promote conditions have one per step.
func (r *route) seqClones(conds []compiledCond) []*condSeq {
	if r.seqs == nil {
		r.seqs = map[string]*condSeq{}
	}
	out := make([]*condSeq, len(conds))
	for i := range conds {
		k := conds[i].key
		st := r.seqs[k]
		if st == nil {
			st = newCondSeq(k)
			r.seqs[k] = st
		}
		out[i] = st.clone()
	}
	return out
}

// storeSeqs keeps the states an evaluation advanced, unless the step
// changed meanwhile (then they belong to a step that is over).
func (r *route) storeSeqs(conds []compiledCond, sts []*condSeq, step int) {
	if r.step != step {
		return
	}
	for i := range conds {
		if i < len(sts) {
			st := sts[i]
			k := conds[i].key
			if old := r.seqs[k]; old != nil {
				// Streak fields are the controller's: keep them.
				st.BreachSince, st.Silent = old.BreachSince, old.Silent
			}
			r.seqs[k] = st
		}
	}
}

// newStepLocked forgets what belongs to the step just left: blocks and
// streaks of rollback conditions (but not how much alpha they spent) and
// every promote test.
func (r *route) newStepLocked() {
	for k, st := range r.seqs {
		if strings.HasPrefix(k, "promote:") {
			delete(r.seqs, k)
			continue
		}
		st.Block, st.Procs, st.BreachSince, st.Silent = -1, nil, time.Time{}, 0
	}
	r.waitNotified = false
}

// decideLocked turns an evaluation into at most one transition.
func (c *Controller) decideLocked(r *route, now time.Time, expl *Explanation, due, evalPromote bool, rollbackConds []compiledCond) []Event {
	if due {
		r.lastEval = now
	}
	var fired []string
	for k := range expl.Rollback {
		res := &expl.Rollback[k]
		i := res.index
		cond := rollbackConds[i].c
		st := r.seqs[rollbackConds[i].key]
		if st == nil {
			st = newCondSeq(rollbackConds[i].key)
			r.seqs[st.Key] = st
		}
		switch res.Verdict {
		case VerdictBreach:
			st.Silent = 0
			if st.BreachSince.IsZero() {
				st.BreachSince = now
			}
		case VerdictOK:
			if !st.BreachSince.IsZero() {
				res.Detail += "; breach streak ended: the condition is no longer met"
			}
			st.BreachSince, st.Silent = time.Time{}, 0
			continue
		default:
			// No verdict is not evidence either way: the streak is kept
			// as it is (on_no_data/on_error: hold) unless the policy says
			// to fail after so many silent evaluations.
			st.Silent++
			pol := cond.OnNoData
			if res.Verdict == VerdictError {
				pol = cond.OnError
			}
			if res.Verdict == VerdictNotApplicable {
				pol = nil
			}
			if pol != nil && pol.FailAfter > 0 && st.Silent >= pol.FailAfter {
				res.Fired = true
				res.Detail += fmt.Sprintf("; %d evaluations in a row without a verdict (fail_after %d)", st.Silent, pol.FailAfter)
				fired = append(fired, res.Condition+": "+res.Detail)
				continue
			}
			if !st.BreachSince.IsZero() {
				res.BreachingFor = now.Sub(st.BreachSince).Seconds()
				res.Detail += fmt.Sprintf("; breach streak of %s kept, not advanced (no verdict, hold)", fmtDur(now.Sub(st.BreachSince).Truncate(time.Second)))
			}
			continue
		}
		d := now.Sub(st.BreachSince)
		res.BreachingFor = d.Seconds()
		if d >= cond.For.D() {
			res.Fired = true
			fired = append(fired, res.Condition+": "+res.Detail)
		}
	}
	if len(fired) > 0 {
		expl.Decision = DecisionRollback
		expl.Reason = "guardrail fired: " + strings.Join(fired, "; ")
		r.last = expl
		return []Event{c.transitionLocked(r, now, ActionRollback, "controller", expl.Reason, expl, func() {
			r.state = StateRolledBack
		})}
	}
	if !due {
		return nil // a health-only check between evaluations, nothing fired
	}
	r.last = expl
	stp := r.spec.Steps[r.step]
	hold := stp.Hold.D()
	held := r.held(now)
	var events []Event
	// A step past its hold whose conditions still lack samples says so,
	// once per step: silence is how a rollout stalls unnoticed.
	if held >= max(hold, r.policy.steps[r.step].longestWindow()) && r.state == StateProgressing && !r.waitNotified {
		var silent []string
		for _, res := range append(append([]ConditionResult(nil), expl.Promote...), expl.Rollback...) {
			if res.Verdict == VerdictNoData {
				silent = append(silent, res.Condition+": "+res.Detail)
			}
		}
		if len(silent) > 0 {
			r.waitNotified = true
			why := fmt.Sprintf("waiting for samples at %s%% longer than the %s hold: %s", r.percent(), fmtDur(hold), strings.Join(silent, "; "))
			r.log.Warn("rollout step is waiting for samples", zap.Int("step", r.step), zap.String("reason", why))
			events = append(events, c.eventLocked(r, now, ActionWaiting, "controller", why, expl, r.step, r.percent()))
		}
	}
	if d := stp.Deadline.D(); d > 0 && held >= d && r.state == StateProgressing {
		why := fmt.Sprintf("deadline of %s at %s%% passed without promotion", fmtDur(d), r.percent())
		if pend := pendingText(expl); pend != "" {
			why += ": " + pend
		}
		expl.Reason = why
		if stp.OnDeadline == "rollback" {
			expl.Decision = DecisionRollback
			return append(events, c.transitionLocked(r, now, ActionRollback, "deadline", why, expl, func() { r.state = StateRolledBack }))
		}
		expl.Decision = DecisionHold
		return append(events, c.transitionLocked(r, now, ActionPause, "deadline", why, expl, func() { r.state, r.pausedAt = StatePaused, now }))
	}
	if ev := c.promoteDecisionLocked(r, now, expl, evalPromote); ev != nil {
		events = append(events, *ev)
	}
	return events
}

// pendingText lists the promote conditions not passing and the guardrails
// without a verdict.
func pendingText(expl *Explanation) string {
	var out []string
	for _, res := range expl.Promote {
		if res.Verdict != VerdictPass && res.Verdict != VerdictNotApplicable {
			out = append(out, res.Condition+": "+res.Detail)
		}
	}
	for _, res := range expl.Rollback {
		if res.Verdict == VerdictNoData || res.Verdict == VerdictError {
			out = append(out, res.Condition+": "+res.Detail)
		}
	}
	return strings.Join(out, "; ")
}

// promoteDecisionLocked decides whether to promote, and explains.
func (c *Controller) promoteDecisionLocked(r *route, now time.Time, expl *Explanation, evalPromote bool) *Event {
	stp := r.spec.Steps[r.step]
	hold := stp.Hold.D()
	one := func(e Event) *Event { return &e }
	switch {
	case r.state == StatePaused:
		expl.Decision, expl.Reason = DecisionHold, "paused: promotion stopped; guardrails stay armed"
		if r.reason != "" {
			expl.Reason = "paused (" + r.reason + "); guardrails stay armed"
		}
		return nil
	case !evalPromote:
		expl.Decision = DecisionHold
		expl.Reason = fmt.Sprintf("holding at %s%%: %s of the %s hold elapsed", r.percent(), fmtDur(r.held(now).Truncate(time.Second)), fmtDur(hold))
		return nil
	}
	var pending []string
	for _, res := range expl.Promote {
		if res.Verdict != VerdictPass && res.Verdict != VerdictNotApplicable {
			pending = append(pending, res.Condition+": "+res.Detail)
		}
	}
	if len(pending) > 0 {
		expl.Decision = DecisionHold
		expl.Reason = "hold passed; waiting for promote_when: " + strings.Join(pending, "; ")
		r.ready = false
		return nil
	}
	why := fmt.Sprintf("hold of %s passed and all %d promote_when passed", fmtDur(hold), len(expl.Promote))
	if len(expl.Promote) == 0 {
		why = fmt.Sprintf("hold of %s passed (no promote_when)", fmtDur(hold))
	}
	if r.confirmErr != "" && r.spec.Mode == ModeAuto && !stp.Pause {
		expl.Decision, expl.Reason = DecisionHold, why+"; waiting for confirm_promotion: "+r.confirmErr
		return nil
	}
	if r.spec.Mode == ModeManual || stp.Pause {
		expl.Decision, expl.Reason = DecisionReady, why+"; waiting for a promote command (manual mode)"
		if stp.Pause {
			expl.Reason = why + "; waiting for a promote command (the step has pause: true)"
		}
		r.ready = true
		if r.readyNotified {
			return nil
		}
		r.readyNotified = true
		return one(c.eventLocked(r, now, ActionReady, "controller", expl.Reason, expl, r.step, r.percent()))
	}
	return one(c.promoteLocked(r, now, "controller", why, expl))
}

// promoteLocked moves to the next step, or completes at the last one.
func (c *Controller) promoteLocked(r *route, now time.Time, by, why string, expl *Explanation) Event {
	if r.step+1 >= len(r.spec.Steps) {
		if expl != nil {
			expl.Decision = DecisionComplete
			expl.Reason = why + "; rollout complete"
		}
		return c.transitionLocked(r, now, ActionComplete, by, why, expl, func() { r.state, r.completedAt = StateCompleted, now })
	}
	if expl != nil {
		expl.Decision = DecisionPromote
		expl.Reason = why
	}
	return c.transitionLocked(r, now, ActionPromote, by, why, expl, func() {
		r.step++
		r.stepStartedAt, r.pausedFor = now, 0
		r.gatePending = r.hasBeforeGates()
		r.afterPending = !r.gatePending && r.spec.Smoke.SmokeRuns(SmokeAfterPromote) && !r.dryRun()
		r.gateNotified = false
		if !r.pausedAt.IsZero() {
			r.pausedAt = now
		}
	})
}

// transitionLocked applies mutate, pushes the result to the proxy,
// persists it, logs it and returns the event to emit once unlocked.
func (c *Controller) transitionLocked(r *route, now time.Time, action, by, reason string, expl *Explanation, mutate func()) Event {
	fromStep, fromBP := r.step, r.percent()
	mutate()
	r.gen++
	r.reason = reason
	r.lastAction, r.lastActionAt, r.lastActionBy = action, now, by
	if r.step != fromStep {
		r.newStepLocked()
	}
	r.ready, r.readyNotified = false, false
	r.applyLocked()
	r.persistLocked(now)
	ev := c.eventLocked(r, now, action, by, reason, expl, fromStep, fromBP)
	r.timeline = append(r.timeline, TimelineEntry{At: now, Action: action, By: by, Step: r.step, Percent: r.percent().Percent(), Reason: reason})
	if len(r.timeline) > maxTimeline {
		r.timeline = append(r.timeline[:0], r.timeline[len(r.timeline)-maxTimeline:]...)
	}
	if action == ActionRollback && !r.dryRun() && c.opts.Evidence != nil {
		ev.evidence = c.evidenceLocked(r, now, by, reason, expl, fromStep, fromBP.Percent())
		ev.Evidence = ev.evidence.ID
	}
	msg := "rollout " + action
	if r.dryRun() {
		msg = "dry_run: would " + action + " (nothing changed)"
	}
	fields := []zap.Field{zap.String("action", action), zap.String("by", by), zap.String("state", string(r.state)),
		zap.Int("from_step", fromStep), zap.Int("step", r.step), zap.Float64("from_percent", fromBP.Percent()),
		zap.Float64("percent", r.percent().Percent()), zap.String("reason", reason)}
	if action == ActionRollback {
		r.log.Warn(msg, fields...)
	} else {
		r.log.Info(msg, fields...)
	}
	return ev
}

func (c *Controller) eventLocked(r *route, now time.Time, action, by, reason string, expl *Explanation, fromStep int, fromBP cfgtypes.BasisPoints) Event {
	return Event{
		Route: r.name, Action: action, Mode: r.spec.Mode, DryRun: r.dryRun(), State: r.state,
		FromStep: fromStep, FromPercent: fromBP.Percent(), Step: r.step, Steps: len(r.spec.Steps),
		Percent: r.percent().Percent(), Reason: reason, By: by, At: now, Explanation: expl,
		Targets: append([]string(nil), r.spec.Notify...), bp: r.percent(),
	}
}

// emit delivers events outside every lock, so that a Notifier may call
// back into the Controller.
func (c *Controller) emit(events []Event) {
	for _, e := range events {
		if e.evidence != nil && !c.saveEvidence(e.evidence) {
			e.Evidence = ""
		}
		if !e.DryRun && e.Action != ActionReady && c.opts.OnTransition != nil {
			c.opts.OnTransition(e.Route, e.Action, e.Step, e.bp)
		}
		if !e.quiet && c.opts.Notifier != nil {
			c.opts.Notifier.Notify(e)
		}
	}
}

// Command applies an operator action: pause, resume, promote or rollback.
// It returns an error wrapping ErrUnknownRoute, ErrUnknownAction or
// ErrInvalidTransition. In dry_run it acts on the virtual state.
func (c *Controller) Command(routeName, action string) error {
	c.mu.Lock()
	r := c.routes[routeName]
	c.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w %q", ErrUnknownRoute, routeName)
	}
	now := c.now()
	r.mu.Lock()
	invalid := func(why string) error {
		r.mu.Unlock()
		return fmt.Errorf("%w: cannot %s route %q: %s", ErrInvalidTransition, action, routeName, why)
	}
	var ev Event
	switch action {
	case ActionPause:
		if r.state != StateProgressing {
			return invalid("it is " + string(r.state))
		}
		ev = c.transitionLocked(r, now, ActionPause, "command", "paused by command", nil, func() {
			r.state, r.pausedAt = StatePaused, now
		})
	case ActionResume:
		switch r.state {
		case StatePaused:
			ev = c.transitionLocked(r, now, ActionResume, "command", "resumed by command", nil, func() {
				r.pausedFor += now.Sub(r.pausedAt)
				r.state, r.pausedAt = StateProgressing, time.Time{}
			})
		case StateRolledBack:
			// A rolled-back canary earns trust again from the first step,
			// on fresh data only.
			ev = c.transitionLocked(r, now, ActionResume, "command", "resumed by command after rollback: restarting at steps[0]", nil, func() {
				r.state, r.step, r.stepStartedAt, r.pausedAt, r.pausedFor, r.dataSince = StateProgressing, 0, now, time.Time{}, 0, now
				r.seqs = nil // a new attempt: fresh evidence and a fresh alpha
				r.gatePending, r.afterPending, r.gateNotified = r.hasBeforeGates(), false, false
			})
		default:
			return invalid("it is " + string(r.state) + ", not paused or rolled_back")
		}
	case ActionPromote:
		switch r.state {
		case StateProgressing, StatePaused:
			ev = c.promoteLocked(r, now, "command", "promoted by command", nil)
		case StateRolledBack:
			return invalid("it is rolled_back; resume first")
		default:
			return invalid("it is " + string(r.state))
		}
	case ActionRollback:
		if r.state == StateRolledBack {
			return invalid("it is already rolled_back")
		}
		ev = c.transitionLocked(r, now, ActionRollback, "command", "rolled back by command", nil, func() {
			r.state, r.pausedAt = StateRolledBack, time.Time{}
			r.gatePending, r.afterPending = false, false
		})
	default:
		r.mu.Unlock()
		return fmt.Errorf("%w %q: want pause, resume, promote or rollback", ErrUnknownAction, action)
	}
	r.mu.Unlock()
	c.emit([]Event{ev})
	return nil
}

// RouteStatus is one route's rollout as the admin API shows it.
type RouteStatus struct {
	Route string `json:"route"`
	Mode  Mode   `json:"mode"`
	State State  `json:"state"`
	// Step is the index into steps (0-based, like steps[i] in the config).
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Percent is the canary share in force (0 when rolled back); in
	// dry_run, the virtual share (the proxy's split is unchanged).
	Percent   float64              `json:"percent"`
	PercentBP cfgtypes.BasisPoints `json:"percent_bp"`
	// Since is when the current step began.
	Since                time.Time `json:"since"`
	TimeInStepSeconds    float64   `json:"time_in_step_seconds"`
	HoldSeconds          float64   `json:"hold_seconds"`
	HoldRemainingSeconds float64   `json:"hold_remaining_seconds"`
	// Ready: manual mode and every promote_when passes.
	Ready        bool       `json:"ready"`
	Reason       string     `json:"reason,omitempty"`
	LastAction   string     `json:"last_action,omitempty"`
	LastActionAt *time.Time `json:"last_action_at,omitempty"`
	LastActionBy string     `json:"last_action_by,omitempty"`
	StateFile    string     `json:"state_file,omitempty"`
	PersistError string     `json:"persist_error,omitempty"`
	// LastEvaluation is the latest explanation (null before the first).
	LastEvaluation *Explanation `json:"last_evaluation"`
	// GatePending: the step waits for its before_step gates (smoke
	// checks, pre_step webhooks) and gets no traffic until they pass.
	GatePending bool `json:"gate_pending"`
	// Gate says why a gate holds the step, or what the last one found.
	Gate string `json:"gate,omitempty"`
	// LastSmoke is the latest smoke run with every assertion.
	LastSmoke *SmokeReport `json:"last_smoke,omitempty"`
	// CompletedAt is when the rollout completed; StaleAfterSeconds is
	// stale_after, after which the split should be removed from the config.
	CompletedAt       *time.Time `json:"completed_at,omitempty"`
	StaleAfterSeconds float64    `json:"stale_after_seconds"`
	Stale             bool       `json:"stale"`
}

// Status returns every route's rollout, sorted by route.
func (c *Controller) Status() []RouteStatus {
	now := c.now()
	routes := c.snapshot()
	out := make([]RouteStatus, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.status(now))
	}
	return out
}

// RouteStatus returns one route's rollout.
func (c *Controller) RouteStatus(name string) (RouteStatus, bool) {
	c.mu.Lock()
	r := c.routes[name]
	c.mu.Unlock()
	if r == nil {
		return RouteStatus{}, false
	}
	return r.status(c.now()), true
}

func (r *route) status(now time.Time) RouteStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	held, hold := r.held(now), r.spec.Steps[r.step].Hold.D()
	s := RouteStatus{
		Route: r.name, Mode: r.spec.Mode, State: r.state, Step: r.step, Steps: len(r.spec.Steps),
		Percent: r.percent().Percent(), PercentBP: r.percent(), Since: r.stepStartedAt,
		TimeInStepSeconds: held.Seconds(), HoldSeconds: hold.Seconds(), HoldRemainingSeconds: max(hold-held, 0).Seconds(),
		Ready: r.ready, Reason: r.reason, LastAction: r.lastAction, LastActionBy: r.lastActionBy,
		StateFile: r.spec.StateFile, PersistError: r.persistErr, LastEvaluation: r.last,
		GatePending: r.gatePending, Gate: r.gateReason, LastSmoke: r.lastSmoke, StaleAfterSeconds: r.spec.StaleAfter.D().Seconds(),
	}
	if r.state == StateCompleted && !r.completedAt.IsZero() {
		t := r.completedAt
		s.CompletedAt = &t
		s.Stale = now.Sub(t) >= r.spec.StaleAfter.D()
	}
	if !r.lastActionAt.IsZero() {
		t := r.lastActionAt
		s.LastActionAt = &t
	}
	return s
}

// cloneSpec copies the parts of s that ApplyDefaults writes to, so that the
// caller's Spec is never modified.
func cloneSpec(s Spec) Spec {
	if s.HealthCheck != nil {
		hc := *s.HealthCheck
		s.HealthCheck = &hc
	}
	s.ExternalMetrics = append([]ExternalMetric(nil), s.ExternalMetrics...)
	s.Steps = append([]Step(nil), s.Steps...)
	s.Notify = append([]string(nil), s.Notify...)
	if s.Smoke != nil {
		sm := *s.Smoke
		sm.Checks = append([]SmokeCheck(nil), sm.Checks...)
		sm.On = append([]string(nil), sm.On...)
		s.Smoke = &sm
	}
	s.Webhooks = append([]GateWebhook(nil), s.Webhooks...)
	return s
}
