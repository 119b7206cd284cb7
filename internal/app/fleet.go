package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/fleet"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// fleetManager wires fleet mode into the app. The split of every member,
// the leader's included, follows only the state in etcd (applied from the
// watch); the local rollout controller keeps its state in etcd too (see
// controllerDecider), is ticked only on the leader, on recorders rebuilt
// from every member's windows.
type fleetManager struct {
	a     *App
	log   *zap.Logger
	fc    config.Fleet
	cli   *clientv3.Client
	node  *fleet.Node
	coord *fleet.Coordinator
	dec   *controllerDecider
	met   *metrics.Fleet

	mu        sync.Mutex
	applied   map[string]fleet.RouteState
	fleetRecs map[string]*rollout.Recorder
}

func newFleetManager(a *App, cfg *config.Config) (*fleetManager, error) {
	fc := *cfg.Fleet
	f := &fleetManager{a: a, log: a.log.Named("fleet"), fc: fc, met: a.metrics.NewFleet(),
		applied: map[string]fleet.RouteState{}, fleetRecs: map[string]*rollout.Recorder{}}
	e := fc.Etcd
	cli, err := fleet.NewClient(fleet.EtcdConfig{Endpoints: e.Endpoints, DialTimeout: e.DialTimeout.D(),
		Username: e.Username, Password: e.Password, CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile},
		f.log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)))
	if err != nil {
		return nil, err
	}
	f.cli = cli
	f.dec = &controllerDecider{f: f}
	f.node, err = fleet.New(fleet.Options{Client: cli, Prefix: e.Prefix, Name: fc.Name, Advertise: fc.Advertise,
		LeaseTTL: fc.LeaseTTL.D(), Policies: f.dec.Policies, OnState: f.onState, Logger: a.log, Metrics: f.met})
	if err != nil {
		cli.Close()
		return nil, err
	}
	merger := &fleet.Merger{Self: fc.Name, Token: cfg.Admin.Token, MaxMissingShare: float64(*fc.MaxMissingShare),
		Metrics: f.met, Local: f.localSlots}
	f.coord = &fleet.Coordinator{Node: f.node, Merger: merger, Decider: f.dec, Interval: time.Second}
	f.met.EtcdUp.Set(0)
	return f, nil
}

// start joins the fleet and, bounded by dial_timeout, adopts the fleet's
// state before the proxy serves its first request; with etcd down it
// serves the last known shares (fleet.state_dir) and adopts them later.
func (f *fleetManager) start(ctx context.Context) {
	f.node.Start()
	wctx, cancel := context.WithTimeout(ctx, f.fc.Etcd.DialTimeout.D())
	defer cancel()
	if err := f.node.WaitSynced(wctx); err != nil {
		f.log.Warn("fleet state not read before serving; using the last known shares until etcd answers", zap.Error(err))
	}
	go f.coord.Run(ctx)
}

func (f *fleetManager) close() {
	f.node.Close()
	f.cli.Close()
}

// recorder is the route's fleet-wide recorder (given to the controller),
// refilled from every member's slots before each leader evaluation.
func (f *fleetManager) recorder(route string, spec rollout.Spec) *rollout.Recorder {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.fleetRecs[route]
	if rec == nil || rec.Retention() < spec.LongestWindow() {
		rec = rollout.NewRecorder(time.Now, spec.RecorderOptions()...)
		f.fleetRecs[route] = rec
	}
	return rec
}

// localSlots answers for this member's own traffic (its proxy's recorder).
func (f *fleetManager) localSlots(route string, from, to time.Time) ([]rollout.WindowStats, bool) {
	m := f.a.rollouts
	m.mu.Lock()
	rec := m.recorders[route]
	m.mu.Unlock()
	if rec == nil {
		return nil, false
	}
	return rec.SlotWindows(from, to), true
}

// windows is GET /api/v1/fleet/windows.
func (f *fleetManager) windows(q url.Values) (any, error) {
	route, from, to, err := fleet.ParseWindowQuery(q)
	if err != nil {
		return nil, err
	}
	slots, ok := f.localSlots(route, from, to)
	if !ok {
		return nil, fmt.Errorf("route %q has no rollout here: %w", route, admin.ErrNotFound)
	}
	return fleet.EncodeSlots(f.fc.Name, route, slots), nil
}

// FleetView is GET /api/v1/fleet.
type FleetView struct {
	fleet.Status
	// Holds names the routes the leader holds and why (on the leader).
	Holds map[string]string `json:"holds,omitempty"`
	// Routes is the fleet state this member applies.
	Routes map[string]fleet.RouteState `json:"routes"`
	// Numbers says, per route, whose windows the leader's latest
	// evaluation added up and who did not answer (on the leader).
	Numbers map[string]FleetNumbers `json:"numbers,omitempty"`
}

// FleetNumbers is where a leader's evaluation got its numbers from.
type FleetNumbers struct {
	Answered     []string        `json:"answered"`
	Missing      []fleet.Missing `json:"missing,omitempty"`
	MissingShare float64         `json:"missing_share"`
	Explanation  string          `json:"explanation"`
}

func (f *fleetManager) status() any {
	v := FleetView{Status: f.node.Status(), Holds: f.coord.Holds(), Routes: map[string]fleet.RouteState{}}
	if v.IsLeader {
		for route := range f.dec.Policies() {
			if w, ok := f.coord.LastWindow(route); ok {
				if v.Numbers == nil {
					v.Numbers = map[string]FleetNumbers{}
				}
				v.Numbers[route] = FleetNumbers{Answered: w.Answered, Missing: w.Missing, MissingShare: w.MissingShare, Explanation: w.Explain()}
			}
		}
	}
	f.mu.Lock()
	for k, s := range f.applied {
		s.Controller = nil // the controller's own record: large, and shown by /api/v1/rollouts
		v.Routes[k] = s
	}
	f.mu.Unlock()
	return v
}

// command is a rollout command on any member: written to the fleet state
// with a revision check; every member (this one too) applies it from the
// watch.
func (f *fleetManager) command(route, action string) (any, error) {
	if !f.node.EtcdUp() {
		return nil, fmt.Errorf("etcd is unreachable: fleet commands need it (the shares in force stay as they are): %w", admin.ErrConflict)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := f.coord.Command(ctx, route, action)
	if err != nil {
		// The controller may hold the refused command's result: put it
		// back to the fleet's state.
		f.mu.Lock()
		cur, ok := f.applied[route]
		f.mu.Unlock()
		if ok {
			_ = f.dec.adopt(cur)
		}
	}
	switch {
	case errors.Is(err, fleet.ErrUnknownRoute):
		return nil, fmt.Errorf("%w: %w", err, admin.ErrNotFound)
	case errors.Is(err, rollout.ErrInvalidTransition), errors.Is(err, fleet.ErrConflict):
		return nil, fmt.Errorf("%w: %w", err, admin.ErrConflict)
	case err != nil:
		return nil, err
	}
	return st, nil
}

// onState applies a fleet state to this member's split (halting before
// lowering, raising before un-halting, as the controller does) and to the
// controller mirror.
func (f *fleetManager) onState(v fleet.Versioned) {
	st := v.RouteState
	h := routeHandle{f.a, st.Route}
	if st.Halted {
		h.SetHalted(true)
		h.SetCanaryPercent(0)
	} else {
		h.SetCanaryPercent(cfgtypes.BasisPoints(st.PercentBP))
		h.SetHalted(false)
	}
	if err := f.dec.adopt(st); err != nil {
		f.log.Warn("fleet state not adopted by the local controller", zap.String("route", st.Route), zap.Error(err))
	}
	f.saveLocal(st)
	// Recorded last, so that whoever sees it in the fleet view also sees
	// it in /api/v1/rollouts.
	f.mu.Lock()
	prev, seen := f.applied[st.Route]
	f.applied[st.Route] = st
	f.mu.Unlock()
	met := f.a.metrics
	met.RolloutPercent.WithLabelValues(st.Route).Set(cfgtypes.BasisPoints(st.PercentBP).Percent())
	met.RolloutStep.WithLabelValues(st.Route).Set(float64(st.Step))
	// Every member counts each fleet transition once, as it applies it;
	// the state found at start is not a transition of this process, nor
	// is a write of the controller's bookkeeping alone.
	if seen && st.LastAction != "" && transition(prev, st) {
		met.RolloutTransitions.WithLabelValues(st.Route, st.LastAction).Inc()
	}
}

// saveLocal keeps this member's copy of the route's fleet state (its
// state_file under fleet.state_dir), which a restart loads while etcd has
// not answered yet.
func (f *fleetManager) saveLocal(st fleet.RouteState) {
	spec, ok := f.dec.spec(st.Route)
	if !ok || spec.StateFile == "" || spec.Mode == rollout.ModeDryRun {
		return
	}
	if err := (rollout.FileStore{Path: spec.StateFile}).Save(controllerBytes(st)); err != nil {
		f.log.Warn("local copy of the fleet state not saved; a restart while etcd is down would start from an older one",
			zap.String("route", st.Route), zap.String("state_file", spec.StateFile), zap.Error(err))
	}
}

// coordinated reports whether route's rollout is run by the fleet (not a
// dry run), whose transitions are counted from etcd, not the controller.
func (f *fleetManager) coordinated(route string) bool {
	_, ok := f.dec.Policies()[route]
	return ok
}

// override is splitOverride in fleet mode: a snapshot being built starts
// from the fleet's share.
func (f *fleetManager) override(route string) (cfgtypes.BasisPoints, bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.applied[route]
	if !ok {
		return 0, false, false
	}
	return cfgtypes.BasisPoints(st.PercentBP), st.Halted, true
}

// applyInitial sets the split from the controller's restored state (the
// member's last known fleet state) for a route the fleet has not told
// this member about yet.
func (f *fleetManager) applyInitial(route string, st rollout.RouteStatus) {
	f.mu.Lock()
	_, known := f.applied[route]
	f.mu.Unlock()
	if known || st.Mode == rollout.ModeDryRun {
		return
	}
	h := routeHandle{f.a, route}
	if st.State == rollout.StateRolledBack {
		h.SetHalted(true)
		h.SetCanaryPercent(0)
		return
	}
	h.SetCanaryPercent(st.PercentBP)
	h.SetHalted(false)
}

// controllerDecider adapts the rollout controller to fleet.Decider.
//
// In fleet mode a coordinated route's StateStore is a fleetStore: the
// controller's whole record of the route (step, share, pause, hold clock,
// breach streaks, sequential tests) lives in etcd, in the route's fleet
// state. Before each evaluation or command the controller is made to hold
// exactly the fleet state just read from etcd (Controller.Reload, only when
// it holds something else); what it saves is then the decision, which the
// coordinator writes with a revision check fenced by leadership (commands:
// revision-checked by fleet.Store.Update). A write that loses leaves the
// controller ahead of etcd until the next evaluation reloads it.
type controllerDecider struct {
	f *fleetManager
	// mu serializes evaluations, commands and adoptions (controller
	// reloads) so that a decision is always read from the state it began at.
	mu sync.Mutex
	// events are controller events waiting for their write (see notify).
	evMu   sync.Mutex
	events map[string][]rollout.Event
	// numbers is, per route, where the last refill's numbers came from.
	numbers map[string]string

	// stMu guards the two maps below; the fleetStores use them from inside
	// controller calls, so it is never held across one.
	stMu sync.Mutex
	// target is the fleet state each route's controller is to hold: what
	// fleetStore.Load hands it.
	target map[string]fleet.RouteState
	// holds is what each route's controller holds: the bytes it last
	// loaded or saved (compacted JSON, comparable with etcd's copy).
	holds map[string][]byte
}

// fleetStore is a coordinated route's rollout.StateStore in fleet mode.
// Load hands the controller the fleet state it is to hold or, before etcd
// has answered, this member's local copy of the last fleet state it applied
// (fleet.state_dir), so that a restart with etcd down serves the last
// shares. Save records what the controller holds; the leader's coordinator
// writes it to etcd (see controllerDecider).
type fleetStore struct {
	d     *controllerDecider
	route string
	local string // path of the local copy; "" for none
}

// Load implements rollout.StateStore.
func (s fleetStore) Load() ([]byte, error) {
	s.d.stMu.Lock()
	st, ok := s.d.target[s.route]
	s.d.stMu.Unlock()
	var b []byte
	if ok {
		b = controllerBytes(st)
	} else {
		if s.local == "" {
			return nil, fmt.Errorf("route %q: no fleet state yet: %w", s.route, os.ErrNotExist)
		}
		var err error
		if b, err = (rollout.FileStore{Path: s.local}).Load(); err != nil {
			return nil, err
		}
	}
	s.d.setHolds(s.route, b)
	return b, nil
}

// Save implements rollout.StateStore.
func (s fleetStore) Save(data []byte) error {
	s.d.setHolds(s.route, data)
	return nil
}

func (d *controllerDecider) setHolds(route string, data []byte) {
	data = canonical(data)
	d.stMu.Lock()
	defer d.stMu.Unlock()
	if d.holds == nil {
		d.holds = map[string][]byte{}
	}
	d.holds[route] = data
}

// canonical is data as etcd gives it back inside a fleet state (compacted
// and HTML-escaped, as encoding/json writes a RawMessage), so that the
// controller's bytes and etcd's compare equal when they say the same.
func canonical(data []byte) []byte {
	var c, e bytes.Buffer
	if err := json.Compact(&c, data); err != nil {
		return append([]byte(nil), data...) // fromController reports it
	}
	json.HTMLEscape(&e, c.Bytes())
	return e.Bytes()
}

func (d *controllerDecider) held(route string) []byte {
	d.stMu.Lock()
	defer d.stMu.Unlock()
	return d.holds[route]
}

// stateStore is the controller's Options.StateStore: a fleetStore for a
// coordinated route in fleet mode, else the route's state_file.
func (m *rolloutManager) stateStore(route string, spec *rollout.Spec) rollout.StateStore {
	if f := m.fleet; f != nil && spec.Mode != rollout.ModeDryRun {
		return fleetStore{d: f.dec, route: route, local: spec.StateFile}
	}
	if spec.StateFile == "" {
		return nil
	}
	return rollout.FileStore{Path: spec.StateFile}
}

// savedVersion is the controller's state format version (rollout/state.go).
const savedVersion = 1

// controllerBytes is the controller's record of st: st.Controller, or, for
// a state written without it (by an older member), one rebuilt from the
// fields, which carry the same JSON names as the controller's format.
func controllerBytes(st fleet.RouteState) []byte {
	if len(st.Controller) > 0 {
		return canonical(st.Controller)
	}
	st.Controller = nil
	b, err := json.Marshal(struct {
		Version int `json:"version"`
		fleet.RouteState
	}{savedVersion, st})
	if err != nil {
		return nil
	}
	return canonical(b)
}

// fromController is the fleet state of the controller's record data.
func fromController(route string, data []byte) (fleet.RouteState, error) {
	var st fleet.RouteState
	if err := json.Unmarshal(data, &st); err != nil {
		return fleet.RouteState{}, fmt.Errorf("route %q: controller state: %w", route, err)
	}
	st.Route = route
	st.Controller = append(json.RawMessage(nil), data...)
	// The controller keeps the step's share when rolled back; the fleet
	// state says what every member applies.
	st.Halted = st.State == string(rollout.StateRolledBack)
	if st.Halted {
		st.PercentBP = 0
	}
	return st, nil
}

// transition reports whether next moves the rollout (rather than only
// the controller's bookkeeping, such as a breach streak that began).
func transition(cur, next fleet.RouteState) bool {
	return cur.State != next.State || cur.Step != next.Step || cur.LastAction != next.LastAction
}

// policyHash hashes a route's rollout policy as configured (YAML of the
// spec), so members can tell when they disagree.
func policyHash(spec *rollout.Spec) string {
	s := *spec
	s.StateFile = "" // where a member keeps its copy is not policy
	b, err := yaml.Marshal(s)
	if err != nil {
		return "unhashable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Policies is every non-dry-run rollout route of the config in force. A
// dry run changes nothing, so each member keeps its own.
func (d *controllerDecider) Policies() map[string]string {
	out := map[string]string{}
	for _, rc := range d.f.a.Config().Routes {
		if rc.Rollout != nil && rc.Rollout.Mode != rollout.ModeDryRun {
			out[rc.Name] = policyHash(rc.Rollout)
		}
	}
	return out
}

func (d *controllerDecider) spec(route string) (rollout.Spec, bool) {
	for _, rc := range d.f.a.Config().Routes {
		if rc.Name == route && rc.Rollout != nil {
			return *rc.Rollout, true
		}
	}
	return rollout.Spec{}, false
}

// adopt makes the controller's route hold st (no-op when it already does).
func (d *controllerDecider) adopt(st fleet.RouteState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.adoptLocked(st)
}

func (d *controllerDecider) adoptLocked(st fleet.RouteState) error {
	if spec, ok := d.spec(st.Route); !ok || spec.Mode == rollout.ModeDryRun {
		return nil
	}
	want := controllerBytes(st)
	d.stMu.Lock()
	if d.target == nil {
		d.target = map[string]fleet.RouteState{}
	}
	d.target[st.Route] = st
	same := bytes.Equal(d.holds[st.Route], want)
	d.stMu.Unlock()
	if same {
		return nil
	}
	return d.f.a.rollouts.controller.Reload(st.Route)
}

// Initial is the controller's state of a route the fleet has none for
// (restored from the member's local copy: steps[0] on a new fleet).
func (d *controllerDecider) Initial(route string, now time.Time) fleet.RouteState {
	st, err := fromController(route, d.held(route))
	if err != nil || st.StepStartedAt.IsZero() {
		d.f.log.Warn("controller state unusable; the fleet starts this route at steps[0]", zap.String("route", route), zap.Error(err))
		spec, _ := d.spec(route)
		spec.ApplyDefaults()
		return fleet.RouteState{Route: route, State: string(rollout.StateProgressing), PercentBP: uint32(spec.Steps[0].Percent.BP()),
			StepStartedAt: now, DataSince: now, LastAction: rollout.ActionStart}
	}
	return st
}

// Decide makes every route's controller hold its fleet state, refills the
// route's fleet recorder from every member's slots, ticks the controller
// once and returns the routes whose record the controller changed.
//
// The refill is exact for what the controller reads: the recorder is
// cleared and given every member's slot windows over the longest condition
// window, slot by slot at the slots' own instants, so each window the
// controller asks for sums the same slots the members hold (counts and
// histograms add); the controller's window caches rebuild after a Clear,
// so a member that answers now and did not before counts in full. It runs
// right before each evaluation, and only then. Sequential tests fold each
// completed slot once, with the members that answered at that evaluation.
func (d *controllerDecider) Decide(ctx context.Context, now time.Time, states map[string]fleet.RouteState, windows func(string) fleet.Windows) map[string]fleet.RouteState {
	d.mu.Lock()
	defer d.mu.Unlock()
	for route, st := range states {
		d.dropEvents(route)
		if err := d.adoptLocked(st); err != nil {
			d.f.log.Warn("fleet state not adopted", zap.String("route", route), zap.Error(err))
		}
		spec, _ := d.spec(route)
		spec.ApplyDefaults()
		// Only an evaluation reads the recorder, and the controller runs
		// one when its interval has passed since the last (the same rule
		// as its own): refill right before it, and only then, which keeps
		// the members' window traffic at one fetch per interval.
		if rs, ok := d.f.a.rollouts.controller.RouteStatus(route); ok && rs.LastEvaluation != nil &&
			now.Sub(rs.LastEvaluation.At) < spec.Interval.D() {
			continue
		}
		rec := d.f.recorder(route, spec)
		rec.Clear() // the controller's window caches rebuild after it
		fw := windows(route)(now.Add(-spec.LongestWindow()), now, func(w *rollout.WindowStats) { rec.AddWindow(w.From, w) })
		if d.numbers == nil {
			d.numbers = map[string]string{}
		}
		d.numbers[route] = fw.Explain()
	}
	d.f.a.rollouts.controller.Tick(now)
	out := map[string]fleet.RouteState{}
	for route, st := range states {
		b := d.held(route)
		if b == nil || bytes.Equal(b, controllerBytes(st)) {
			continue
		}
		next, err := fromController(route, b)
		if err != nil {
			d.f.log.Warn("controller state not written to the fleet", zap.String("route", route), zap.Error(err))
			continue
		}
		if !transition(st, next) {
			next.Reason = st.Reason
		} else if n := d.numbers[route]; n != "" && next.Reason != "" {
			// Say whose traffic the decision rests on, and who was missing.
			next.Reason += " (" + n + ")"
		}
		out[route] = next
	}
	return out
}

// Command runs an operator action through the controller at st.
func (d *controllerDecider) Command(route, action string, st fleet.RouteState, now time.Time) (fleet.RouteState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropEvents(route) // a retried command keeps only its last attempt's events
	if err := d.adoptLocked(st); err != nil {
		return st, err
	}
	if err := d.f.a.rollouts.controller.Command(route, action); err != nil {
		return st, err
	}
	return fromController(route, d.held(route))
}

// noopHandle is the controller's RouteHandle in fleet mode: the proxy's
// split follows the fleet state from the watch (onState), never the
// controller, whose decision may still lose its write.
type noopHandle struct{}

func (noopHandle) SetCanaryPercent(cfgtypes.BasisPoints) {}
func (noopHandle) SetHalted(bool)                        {}

// addRoute registers a rollout route with the controller: as before
// standalone; in fleet mode with the fleet-wide recorder and a no-op
// handle (its state in etcd through stateStore), then the split set from
// the restored state until the fleet's arrives.
func (m *rolloutManager) addRoute(name string, spec rollout.Spec, rec *rollout.Recorder) error {
	f := m.fleet
	if f == nil || spec.Mode == rollout.ModeDryRun {
		return m.controller.AddRoute(name, spec, rec, routeHandle{m.app, name})
	}
	if err := m.controller.AddRoute(name, spec, f.recorder(name, spec), noopHandle{}); err != nil {
		return err
	}
	if st, ok := m.controller.RouteStatus(name); ok {
		f.applyInitial(name, st)
	}
	return nil
}

// fleetStatus is admin.Options.Fleet (nil outside fleet mode).
func (m *rolloutManager) fleetStatus() func() any {
	if m.fleet == nil {
		return nil
	}
	return m.fleet.status
}

// fleetWindows is admin.Options.FleetWindows (nil outside fleet mode).
func (m *rolloutManager) fleetWindows() func(url.Values) (any, error) {
	if m.fleet == nil {
		return nil
	}
	return m.fleet.windows
}

// notify is the controller's Notifier. Standalone it sends webhooks at
// once. In fleet mode every event comes from the adapter's Decide or
// Command (adoption is quiet), and a decision only happened once etcd took
// it: events wait in the adapter until Committed says so, and are dropped
// when the write lost (a promotion held for missing members, a conflict).
func (m *rolloutManager) notify(e rollout.Event) {
	if f := m.fleet; f != nil && !e.DryRun {
		f.dec.hold(e)
		return
	}
	rollout.Webhooks(m.notifier).Notify(e)
}

// hold keeps a controller event until its route's write is settled.
func (d *controllerDecider) hold(e rollout.Event) {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	if d.events == nil {
		d.events = map[string][]rollout.Event{}
	}
	// Bounded: a route produces at most a few events per evaluation, and
	// each evaluation or command starts with an empty list.
	if len(d.events[e.Route]) < 16 {
		d.events[e.Route] = append(d.events[e.Route], e)
	}
}

func (d *controllerDecider) dropEvents(route string) {
	d.evMu.Lock()
	delete(d.events, route)
	d.evMu.Unlock()
}

// Committed implements fleet.Committer: deliver the route's held events if
// its state reached etcd (or nothing needed writing), drop them otherwise.
func (d *controllerDecider) Committed(route string, ok bool) {
	d.evMu.Lock()
	evs := d.events[route]
	delete(d.events, route)
	d.evMu.Unlock()
	if !ok {
		return
	}
	n := rollout.Webhooks(d.f.a.rollouts.notifier)
	for _, e := range evs {
		n.Notify(e)
	}
}

// adminHosts is admin.hosts plus, in fleet mode, the host of
// fleet.advertise: the other members address this one by that name.
func adminHosts(cfg *config.Config) []string {
	hosts := cfg.Admin.Hosts
	if cfg.Fleet == nil {
		return hosts
	}
	u, err := url.Parse(cfg.Fleet.Advertise)
	if err != nil || u.Hostname() == "" {
		return hosts
	}
	return append(append([]string(nil), hosts...), u.Hostname())
}
