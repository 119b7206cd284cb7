package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
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
// watch); the local rollout controller is a mirror of that state, ticked
// only on the leader, on recorders rebuilt from every member's windows.
//
// Interim adapter (issue 16 rewrites the controller): the controller's
// state reaches etcd, and etcd's reaches the controller, through its
// state_file (set to fleet.state_dir/<route>.json) and RemoveRoute+AddRoute.
// See controllerDecider.
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

// routeSpec makes sure a route's state file exists in fleet mode (config
// defaults it into fleet.state_dir): it is the member's copy of the fleet
// state, and the adapter's exchange format with the controller.
func (f *fleetManager) routeSpec(route string, spec rollout.Spec) rollout.Spec {
	if spec.StateFile == "" {
		spec.StateFile = filepath.Join(f.fc.StateDir, route+".json")
	}
	return spec
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
		// The controller mirror may hold the refused command's result:
		// put it back to the fleet's state.
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
	// Recorded last, so that whoever sees it in the fleet view also sees
	// it in /api/v1/rollouts.
	f.mu.Lock()
	_, seen := f.applied[st.Route]
	f.applied[st.Route] = st
	f.mu.Unlock()
	met := f.a.metrics
	met.RolloutPercent.WithLabelValues(st.Route).Set(cfgtypes.BasisPoints(st.PercentBP).Percent())
	met.RolloutStep.WithLabelValues(st.Route).Set(float64(st.Step))
	// Every member counts each fleet transition once, as it applies it;
	// the state found at start is not a transition of this process.
	if seen && st.LastAction != "" {
		met.RolloutTransitions.WithLabelValues(st.Route, st.LastAction).Inc()
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

// controllerDecider adapts today's rollout.Controller to fleet.Decider.
//
// The controller keeps its state in memory and in its state_file; the
// adapter moves a fleet state into it by writing that file and re-adding
// the route (adopt), and reads a decision back from the file after a Tick.
// The controller's RouteHandle is a no-op: the proxy follows etcd only.
// After issue 16 (controller state behind a store interface, a per-route
// evaluation on a window source) this becomes: the store is fleet.Store,
// the window source the fleet recorder, and adopt/readState go away.
type controllerDecider struct {
	f  *fleetManager
	mu sync.Mutex
	// events are controller events waiting for their write (see notify).
	evMu   sync.Mutex
	events map[string][]rollout.Event
	// filled is when each route's fleet recorder was last refilled: once
	// per evaluation interval is enough (the controller evaluates no more
	// often), and it keeps the members' window traffic at one fetch per
	// interval.
	filled map[string]time.Time
	// numbers is, per route, where the last refill's numbers came from.
	numbers map[string]string
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
			return d.f.routeSpec(route, *rc.Rollout), true
		}
	}
	return rollout.Spec{}, false
}

// fileState is the controller's state_file format (rollout/state.go):
// its fields carry the same JSON names as fleet.RouteState's.
type fileState struct {
	Version int `json:"version"`
	fleet.RouteState
}

func (d *controllerDecider) readState(route string) (fleet.RouteState, error) {
	spec, ok := d.spec(route)
	if !ok {
		return fleet.RouteState{}, fmt.Errorf("route %q has no rollout", route)
	}
	b, err := os.ReadFile(spec.StateFile)
	if err != nil {
		return fleet.RouteState{}, err
	}
	var fs fileState
	if err := json.Unmarshal(b, &fs); err != nil {
		return fleet.RouteState{}, fmt.Errorf("parse %s: %w", spec.StateFile, err)
	}
	st := fs.RouteState
	st.Route = route
	st.Halted = st.State == string(rollout.StateRolledBack)
	if st.Halted {
		st.PercentBP = 0
	}
	return st, nil
}

// sameState compares what the controller keeps (not who wrote it when).
func sameState(a, b fleet.RouteState) bool {
	pa, pb := a.PausedAt != nil, b.PausedAt != nil
	return a.State == b.State && a.Step == b.Step && a.PercentBP == b.PercentBP && a.StepStartedAt.Equal(b.StepStartedAt) &&
		a.PausedNanos == b.PausedNanos && pa == pb && (!pa || a.PausedAt.Equal(*b.PausedAt)) && a.DataSince.Equal(b.DataSince)
}

// adopt makes the controller's route hold st (no-op when it already does).
func (d *controllerDecider) adopt(st fleet.RouteState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.adoptLocked(st)
}

func (d *controllerDecider) adoptLocked(st fleet.RouteState) error {
	spec, ok := d.spec(st.Route)
	if !ok || spec.Mode == rollout.ModeDryRun {
		return nil
	}
	if cur, err := d.readState(st.Route); err == nil && sameState(cur, st) {
		return nil
	}
	fs := fileState{Version: 1, RouteState: st}
	// The file holds the step's share even when rolled back (the
	// controller maps it back to the step).
	spec.ApplyDefaults()
	if st.Step < len(spec.Steps) {
		fs.PercentBP = uint32(spec.Steps[st.Step].Percent.BP())
	}
	fs.Controller = nil
	b, err := json.Marshal(fs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(spec.StateFile), 0o750); err != nil {
		return err
	}
	tmp := spec.StateFile + ".adopt"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	if err := os.Rename(tmp, spec.StateFile); err != nil {
		return err
	}
	return d.f.a.rollouts.readd(st.Route)
}

// Initial is the controller's state of a route the fleet has none for
// (its restored state_file: steps[0] on a new fleet).
func (d *controllerDecider) Initial(route string, now time.Time) fleet.RouteState {
	st, err := d.readState(route)
	if err != nil {
		d.f.log.Warn("controller state unreadable; the fleet starts this route at steps[0]", zap.String("route", route), zap.Error(err))
		spec, _ := d.spec(route)
		spec.ApplyDefaults()
		return fleet.RouteState{Route: route, State: string(rollout.StateProgressing), PercentBP: uint32(spec.Steps[0].Percent.BP()),
			StepStartedAt: now, DataSince: now, LastAction: rollout.ActionStart}
	}
	return st
}

// Decide adopts every route's fleet state, refills its fleet recorder from
// every member's slots, ticks the controller once and reads back what
// changed.
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
		if d.filled == nil {
			d.filled = map[string]time.Time{}
		}
		if last, ok := d.filled[route]; ok && now.Sub(last) < spec.Interval.D() {
			continue
		}
		d.filled[route] = now
		rec := d.f.recorder(route, spec)
		rec.Clear()
		fw := windows(route)(now.Add(-spec.LongestWindow()), now, func(w *rollout.WindowStats) { rec.AddWindow(w.From, w) })
		if d.numbers == nil {
			d.numbers = map[string]string{}
		}
		d.numbers[route] = fw.Explain()
	}
	d.f.a.rollouts.controller.Tick(now)
	out := map[string]fleet.RouteState{}
	for route, st := range states {
		next, err := d.readState(route)
		if err != nil || sameState(next, st) {
			continue
		}
		next.BreachStreaks, next.Controller = st.BreachStreaks, st.Controller
		if n := d.numbers[route]; n != "" && next.Reason != "" {
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
	next, err := d.readState(route)
	if err != nil {
		return st, err
	}
	return next, nil
}

// noopHandle is the controller's RouteHandle in fleet mode: the proxy's
// split follows the fleet state from the watch, never the controller.
type noopHandle struct{}

func (noopHandle) SetCanaryPercent(cfgtypes.BasisPoints) {}
func (noopHandle) SetHalted(bool)                        {}

// addRoute registers a rollout route with the controller: as before
// standalone; in fleet mode with the fleet's state file, the fleet-wide
// recorder and a no-op handle, then the split set from the restored state
// until the fleet's arrives.
func (m *rolloutManager) addRoute(name string, spec rollout.Spec, rec *rollout.Recorder) error {
	f := m.fleet
	if f == nil || spec.Mode == rollout.ModeDryRun {
		return m.controller.AddRoute(name, spec, rec, routeHandle{m.app, name})
	}
	if err := m.controller.AddRoute(name, f.routeSpec(name, spec), f.recorder(name, spec), noopHandle{}); err != nil {
		return err
	}
	if st, ok := m.controller.RouteStatus(name); ok {
		f.applyInitial(name, st)
	}
	return nil
}

// readd re-reads a route's state file into the controller (fleet adoption).
func (m *rolloutManager) readd(route string) error {
	for _, rc := range m.app.pendingOrCurrentConfig().Routes {
		if rc.Name != route || rc.Rollout == nil {
			continue
		}
		m.mu.Lock()
		rec := m.recorders[route]
		m.mu.Unlock()
		if rec == nil {
			return fmt.Errorf("route %q has no recorder", route)
		}
		m.controller.RemoveRoute(route)
		return m.addRoute(route, *rc.Rollout, rec)
	}
	return fmt.Errorf("route %q has no rollout", route)
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
