package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// cutoverTick is how often readiness is measured (and auto cutovers made).
const cutoverTick = 5 * time.Second

// cutoverFile is the cutover state's name under state_dir.
const cutoverFile = "cutover.json"

// cutoverEntry is one route's cutover as persisted.
type cutoverEntry struct {
	At time.Time `json:"at"`
	By string    `json:"by"`
	// Primary is the upstream that serves since the cutover (the former
	// shadow); Shadow the former primary, now mirrored to.
	Primary  string `json:"primary"`
	Shadow   string `json:"shadow"`
	Evidence string `json:"evidence,omitempty"`
}

type cutoverState struct {
	Version int                      `json:"version"`
	Routes  map[string]*cutoverEntry `json:"routes"`
}

// cutoverTrack follows one route's match-rate streak.
type cutoverTrack struct {
	target      string
	last        diff.Counts
	since       time.Time // zero: no streak
	comparisons uint64    // verdicts within the streak
	rate        *float64  // latest measured rate
}

// cutoverManager swaps a dark launch's primary and first shadow target.
// The swap is a config transformation applied before every snapshot build
// (start, reload, command), so the proxy's request path does not change:
// v2 serves, v1 is mirrored to, and comparisons continue reversed.
type cutoverManager struct {
	app *App
	log *zap.Logger
	// clock is the time source (tests replace it with setClock).
	clock atomic.Pointer[func() time.Time]
	seq   atomic.Uint64

	mu         sync.Mutex
	path       string // "" when state_dir is unset: not persisted
	routes     map[string]*cutoverEntry
	base       *config.Config // the configuration before transformation
	track      map[string]*cutoverTrack
	persistErr string
}

func newCutoverManager(a *App, cfg *config.Config) *cutoverManager {
	m := &cutoverManager{app: a, log: a.log.Named("cutover"), routes: map[string]*cutoverEntry{},
		base: cfg, track: map[string]*cutoverTrack{}}
	m.setClock(time.Now)
	if cfg.StateDir != "" {
		m.path = filepath.Join(cfg.StateDir, cutoverFile)
		b, err := os.ReadFile(m.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			m.log.Error("cannot read the cutover state: routes serve as configured until it is readable", zap.String("file", m.path), zap.Error(err))
		default:
			var st cutoverState
			if err := json.Unmarshal(b, &st); err != nil {
				m.log.Error("cutover state is unreadable: routes serve as configured", zap.String("file", m.path), zap.Error(err))
			} else if st.Routes != nil {
				m.routes = st.Routes
			}
		}
	}
	return m
}

// setClock replaces the time source.
func (m *cutoverManager) setClock(now func() time.Time) { m.clock.Store(&now) }

func (m *cutoverManager) now() time.Time { return (*m.clock.Load())() }

// setBase records the untransformed configuration now in force.
func (m *cutoverManager) setBase(cfg *config.Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.base = cfg
}

// transform returns cfg with every cut-over route's upstream and first
// shadow target swapped. A route whose config already says what the
// cutover did (made permanent) is left alone; cfg itself is never changed.
func (m *cutoverManager) transform(cfg *config.Config) *config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.routes) == 0 {
		return cfg
	}
	out := *cfg
	out.Routes = slices.Clone(cfg.Routes)
	for i := range out.Routes {
		r := &out.Routes[i]
		e := m.routes[r.Name]
		if e == nil || r.Shadow == nil || len(r.Shadow.Targets) == 0 {
			continue
		}
		if r.Upstream != e.Shadow || r.Shadow.Targets[0].Name != e.Primary {
			continue // the config changed since (made permanent, or rewired): it wins
		}
		sh := *r.Shadow
		sh.Targets = slices.Clone(sh.Targets)
		r.Upstream, sh.Targets[0].Name = sh.Targets[0].Name, r.Upstream
		r.Shadow = &sh
	}
	return &out
}

func (m *cutoverManager) persistLocked() {
	if m.path == "" {
		return
	}
	data, err := json.MarshalIndent(cutoverState{Version: 1, Routes: m.routes}, "", "  ")
	if err == nil {
		err = rollout.FileStore{Path: m.path}.Save(append(data, '\n'))
	}
	if err != nil {
		m.persistErr = err.Error()
		m.log.Error("cannot persist the cutover state; a restart would serve as configured", zap.String("file", m.path), zap.Error(err))
		return
	}
	m.persistErr = ""
}

// CutoverStatus answers GET /api/v1/routes/{route}/cutover.
type CutoverStatus struct {
	Route string `json:"route"`
	// Criterion as configured.
	AtLeast        float64 `json:"at_least"`
	ForSeconds     float64 `json:"for_seconds"`
	MinComparisons int     `json:"min_comparisons"`
	Auto           bool    `json:"auto"`
	// Serving is the upstream answering users; Shadow the one compared.
	Serving string `json:"serving"`
	Shadow  string `json:"shadow"`
	// MatchRate is the latest measured rate; the streak is how long and
	// over how many comparisons it has held at or above at_least.
	MatchRate         *float64 `json:"match_rate"`
	StreakSeconds     float64  `json:"streak_seconds"`
	StreakComparisons uint64   `json:"streak_comparisons"`
	Ready             bool     `json:"ready"`
	Reason            string   `json:"reason"`
	// CutOver and what follows describe a cutover in force.
	CutOver            bool       `json:"cut_over"`
	CutOverAt          *time.Time `json:"cut_over_at,omitempty"`
	CutOverBy          string     `json:"cut_over_by,omitempty"`
	Evidence           string     `json:"evidence,omitempty"`
	RetireAfterSeconds float64    `json:"retire_after_seconds"`
	RetireReady        bool       `json:"retire_ready"`
	PersistError       string     `json:"persist_error,omitempty"`
}

// routeConfig returns the route's configured (untransformed) section.
func (m *cutoverManager) routeConfigLocked(route string) (*config.Route, error) {
	for i := range m.base.Routes {
		r := &m.base.Routes[i]
		if r.Name == route {
			if r.Cutover == nil {
				return nil, fmt.Errorf("route %q has no cutover section: %w", route, admin.ErrNotFound)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("unknown route %q: %w", route, admin.ErrNotFound)
}

func (m *cutoverManager) statusLocked(route string, now time.Time) (CutoverStatus, error) {
	rc, err := m.routeConfigLocked(route)
	if err != nil {
		return CutoverStatus{}, err
	}
	c := rc.Cutover
	st := CutoverStatus{Route: route, AtLeast: float64(c.When.MatchRate.AtLeast), ForSeconds: c.When.MatchRate.For.D().Seconds(),
		MinComparisons: c.When.MinComparisons, Auto: c.Auto, Serving: rc.Upstream, Shadow: rc.Shadow.Targets[0].Name,
		RetireAfterSeconds: c.RetireAfter.D().Seconds(), PersistError: m.persistErr}
	e := m.routes[route]
	active := e != nil && rc.Upstream == e.Shadow && rc.Shadow.Targets[0].Name == e.Primary
	if active {
		st.CutOver, st.CutOverBy, st.Evidence = true, e.By, e.Evidence
		at := e.At
		st.CutOverAt = &at
		st.Serving, st.Shadow = e.Primary, e.Shadow
	}
	t := m.track[route]
	if t != nil && t.target == st.Shadow {
		st.MatchRate, st.StreakComparisons = t.rate, t.comparisons
		if !t.since.IsZero() {
			st.StreakSeconds = now.Sub(t.since).Seconds()
		}
	}
	need := c.When.MatchRate.For.D()
	holds := t != nil && t.target == st.Shadow && !t.since.IsZero() && now.Sub(t.since) >= need && t.comparisons >= uint64(c.When.MinComparisons)
	switch {
	case active:
		age := now.Sub(e.At)
		st.RetireReady = age >= c.RetireAfter.D() && holds
		if st.RetireReady {
			st.Reason = fmt.Sprintf("cut over %s ago; the old upstream %s has matched as a shadow for %s: it can be removed (set upstream: %s, drop it from shadow.targets)",
				age.Truncate(time.Second), e.Shadow, time.Duration(st.StreakSeconds*float64(time.Second)).Truncate(time.Second), e.Primary)
		} else {
			st.Reason = fmt.Sprintf("cut over %s ago; %s serves and the old upstream %s is the shadow, stable for %s; it can be removed once retire_after (%s) has passed with the match rate holding",
				age.Truncate(time.Second), e.Primary, e.Shadow, time.Duration(st.StreakSeconds*float64(time.Second)).Truncate(time.Second), c.RetireAfter.D())
		}
	case holds:
		st.Ready = true
		st.Reason = fmt.Sprintf("ready: the match rate has held at or above %s for %s over %d comparisons", pct(st.AtLeast), time.Duration(st.StreakSeconds*float64(time.Second)).Truncate(time.Second), st.StreakComparisons)
	case t == nil || t.rate == nil:
		st.Reason = "no comparisons measured yet"
	case t.since.IsZero():
		st.Reason = fmt.Sprintf("not ready: the match rate is %s, below %s", pct(*t.rate), pct(st.AtLeast))
	default:
		st.Reason = fmt.Sprintf("not ready: the match rate has held for %s of %s, over %d of %d comparisons",
			time.Duration(st.StreakSeconds*float64(time.Second)).Truncate(time.Second), need, t.comparisons, c.When.MinComparisons)
	}
	return st, nil
}

func pct(r float64) string { return fmt.Sprintf("%.2f%%", r*100) }

func (m *cutoverManager) status(route string) (any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.statusLocked(route, m.now())
	if err != nil {
		return nil, err
	}
	return st, nil
}

// command cuts over or reverts a route. A cutover needs the criterion to
// hold unless force. The swap is persisted first, then applied like a
// reload; if that fails, the state is put back.
func (m *cutoverManager) command(route, action string, force bool) (any, error) {
	return m.do(route, action, "command", force)
}

func (m *cutoverManager) do(route, action, by string, force bool) (any, error) {
	now := m.now()
	m.mu.Lock()
	st, err := m.statusLocked(route, now)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	prev := m.routes[route]
	switch action {
	case "cutover":
		if st.CutOver {
			m.mu.Unlock()
			return nil, fmt.Errorf("route %q is already cut over (%s serves): %w", route, st.Serving, admin.ErrConflict)
		}
		if !st.Ready && !force {
			m.mu.Unlock()
			return nil, fmt.Errorf("route %q is not ready to cut over (%s); add ?force=true to cut over anyway: %w", route, st.Reason, admin.ErrConflict)
		}
		m.routes[route] = &cutoverEntry{At: now, By: by, Primary: st.Shadow, Shadow: st.Serving}
	case "revert":
		if !st.CutOver {
			m.mu.Unlock()
			return nil, fmt.Errorf("route %q is not cut over: %w", route, admin.ErrConflict)
		}
		delete(m.routes, route)
	default:
		m.mu.Unlock()
		return nil, fmt.Errorf("unknown cutover action %q: want cutover or revert", action)
	}
	delete(m.track, route) // the compared pair changes: a fresh streak
	m.persistLocked()
	m.mu.Unlock()

	if err := m.app.reapply(); err != nil {
		m.mu.Lock()
		if prev == nil {
			delete(m.routes, route)
		} else {
			m.routes[route] = prev
		}
		m.persistLocked()
		m.mu.Unlock()
		return nil, fmt.Errorf("route %q: %s not applied: %w", route, action, err)
	}
	id := m.writeEvidence(route, action, by, st, now)
	m.mu.Lock()
	if e := m.routes[route]; e != nil && action == "cutover" {
		e.Evidence = id
		m.persistLocked()
	}
	out, _ := m.statusLocked(route, now)
	m.mu.Unlock()
	m.log.Warn("route "+action, zap.String("route", route), zap.String("by", by), zap.String("serving", out.Serving),
		zap.String("shadow", out.Shadow), zap.Bool("force", force), zap.String("evidence", id))
	m.app.metrics.CutoverActive.WithLabelValues(route).Set(boolGauge(out.CutOver))
	return out, nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeEvidence records the cutover with the readiness numbers it was
// made on. It returns the record's id ("" when it could not be stored).
func (m *cutoverManager) writeEvidence(route, action, by string, st CutoverStatus, now time.Time) string {
	e := &rollout.Evidence{ID: rollout.NewEvidenceID(rollout.EvidenceCutover, now, m.seq.Add(1)), Kind: rollout.EvidenceCutover,
		Route: route, At: now, By: by, Reason: action + ": " + st.Reason, TopFields: []rollout.FieldCount{}, Samples: []json.RawMessage{},
		Timeline: []rollout.TimelineEntry{{At: now, Action: action, By: by, Reason: st.Reason}}, Extra: st}
	m.app.completeEvidence(e)
	data, err := json.MarshalIndent(e, "", "  ")
	if err == nil {
		err = m.app.evidence.Save(route, e.ID, append(data, '\n'))
	}
	res := "written"
	if err != nil {
		res = "failed"
		m.log.Error("cannot write cutover evidence", zap.String("route", route), zap.Error(err))
	}
	m.app.metrics.Evidence.WithLabelValues(route, res).Inc()
	if err != nil {
		return ""
	}
	return e.ID
}

// run measures readiness every cutoverTick until ctx ends.
func (m *cutoverManager) run(ctx context.Context) {
	t := time.NewTicker(cutoverTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.tick(m.now())
		}
	}
}

// tick folds the comparisons since the last tick into each route's streak
// and cuts over the routes with auto whose criterion holds.
func (m *cutoverManager) tick(now time.Time) {
	cfg := m.app.Config()
	var auto []string
	for _, rc := range cfg.Routes {
		if rc.Cutover == nil || rc.Shadow == nil || len(rc.Shadow.Targets) == 0 {
			continue
		}
		target := rc.Shadow.Targets[0].Name
		var counts diff.Counts
		if s, err := m.app.analyzer.Summary(rc.Name); err == nil {
			for _, ts := range s.Targets {
				if ts.Target == target {
					counts = ts.Counts
				}
			}
		}
		m.mu.Lock()
		t := m.track[rc.Name]
		if t == nil || t.target != target || counts.Match < t.last.Match || counts.Mismatch < t.last.Mismatch {
			t = &cutoverTrack{target: target}
			m.track[rc.Name] = t
		}
		dm, dx := counts.Match-t.last.Match, counts.Mismatch-t.last.Mismatch
		t.last = counts
		if dm+dx > 0 {
			r := float64(dm) / float64(dm+dx)
			t.rate = &r
			if r >= float64(rc.Cutover.When.MatchRate.AtLeast) {
				if t.since.IsZero() {
					t.since = now
					t.comparisons = 0
				}
				t.comparisons += dm + dx
			} else {
				t.since, t.comparisons = time.Time{}, 0
			}
		}
		st, err := m.statusLocked(rc.Name, now)
		m.mu.Unlock()
		if err == nil {
			m.app.metrics.CutoverActive.WithLabelValues(rc.Name).Set(boolGauge(st.CutOver))
			if st.Ready && st.Auto && !st.CutOver {
				auto = append(auto, rc.Name)
			}
		}
	}
	for _, route := range auto {
		if _, err := m.do(route, "cutover", "auto", false); err != nil {
			m.log.Error("automatic cutover failed", zap.String("route", route), zap.Error(err))
		}
	}
	m.app.rollouts.exportCompleted()
}
