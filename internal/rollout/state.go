package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// State is where a route's rollout stands.
type State string

const (
	// StateProgressing: at a step, waiting for its hold and promote_when
	// (in manual mode, for a promote command). Guardrails are armed.
	StateProgressing State = "progressing"
	// StatePaused: promotion is stopped and the hold clock frozen; the
	// guardrails stay armed, so a failing canary is still rolled back.
	StatePaused State = "paused"
	// StateRolledBack: the canary gets 0% and cohort rules are off until a
	// person resumes, which restarts at steps[0].
	StateRolledBack State = "rolled_back"
	// StateCompleted: the last step's hold passed with every promote_when;
	// the canary keeps the last step's share and evaluation stops.
	StateCompleted State = "completed"
)

func (s State) valid() bool {
	switch s {
	case StateProgressing, StatePaused, StateRolledBack, StateCompleted:
		return true
	}
	return false
}

// stateVersion is bumped on incompatible changes of the file format.
const stateVersion = 1

// savedState is the state_file's JSON. The hold clock is stored as the
// step's start plus the paused time, so that it survives restarts exactly.
type savedState struct {
	Version       int                  `json:"version"`
	Route         string               `json:"route"`
	State         State                `json:"state"`
	Step          int                  `json:"step"`
	PercentBP     cfgtypes.BasisPoints `json:"percent_bp"`
	StepStartedAt time.Time            `json:"step_started_at"`
	PausedAt      *time.Time           `json:"paused_at,omitempty"`
	PausedNanos   int64                `json:"paused_ns"`
	DataSince     time.Time            `json:"data_since"`
	Reason        string               `json:"reason,omitempty"`
	LastAction    string               `json:"last_action,omitempty"`
	UpdatedAt     time.Time            `json:"updated_at"`
	// Conditions are the sequential tests and breach streaks, so that a
	// restart mid-breach neither forgets the streak nor gets fresh alpha.
	Conditions []*condSeq `json:"conditions,omitempty"`
	// GatePending: the step's before_step gates had not passed, so a
	// restart keeps its share withheld until they do.
	GatePending bool `json:"gate_pending,omitempty"`
	// CompletedAt is when the rollout completed (for stale splits).
	CompletedAt time.Time `json:"completed_at,omitzero"`
}

// StateStore keeps one route's persisted rollout state, as opaque bytes
// (the controller owns the format). The file store behind state_file is
// one; a shared store (etcd) can replace it for a fleet.
type StateStore interface {
	// Load returns the saved bytes, or an error wrapping os.ErrNotExist
	// when nothing was saved yet.
	Load() ([]byte, error)
	// Save replaces the saved bytes atomically.
	Save(data []byte) error
}

// FileStore is the StateStore of a state_file.
type FileStore struct{ Path string }

// Load implements StateStore.
func (f FileStore) Load() ([]byte, error) { return os.ReadFile(f.Path) }

// Save implements StateStore.
func (f FileStore) Save(data []byte) error { return writeFileAtomic(f.Path, data) }

// writeFileAtomic replaces path with data so that a crash at any moment
// leaves either the old or the new content: write a temporary file in the
// same directory, fsync it, rename it over path, fsync the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary state file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state directory for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync state directory %s: %w", dir, err)
	}
	return nil
}

// errNoState means the state file does not exist: a first start.
var errNoState = errors.New("no saved state")

// readState loads and checks a state file. errNoState for a missing file;
// any other error means the file exists but cannot be trusted.
func readState(path string) (savedState, error) {
	return loadState(FileStore{Path: path})
}

// loadState loads and checks the state in store.
func loadState(store StateStore) (savedState, error) {
	data, err := store.Load()
	if errors.Is(err, os.ErrNotExist) {
		return savedState{}, errNoState
	}
	if err != nil {
		return savedState{}, fmt.Errorf("read: %w", err)
	}
	var s savedState
	if err := json.Unmarshal(data, &s); err != nil {
		return savedState{}, fmt.Errorf("parse: %w", err)
	}
	for _, c := range s.Conditions {
		if c == nil || !c.unpack() {
			return savedState{}, errors.New("malformed conditions")
		}
	}
	switch {
	case s.Version != stateVersion:
		return savedState{}, fmt.Errorf("unsupported version %d (want %d)", s.Version, stateVersion)
	case !s.State.valid():
		return savedState{}, fmt.Errorf("unknown state %q", s.State)
	case s.Step < 0:
		return savedState{}, fmt.Errorf("negative step %d", s.Step)
	case s.PercentBP > cfgtypes.MaxBasisPoints:
		return savedState{}, fmt.Errorf("percent_bp %d above 10000", s.PercentBP)
	case s.StepStartedAt.IsZero():
		return savedState{}, errors.New("missing step_started_at")
	}
	return s, nil
}

// CompletedAt reports when the rollout persisted in store completed, for
// the stale-split check of validate; ok is false when it has not (or the
// state cannot be read). States written before completed_at existed fall
// back to their last update, which a completed rollout no longer moves.
func CompletedAt(store StateStore) (at time.Time, ok bool) {
	s, err := loadState(store)
	if err != nil || s.State != StateCompleted {
		return time.Time{}, false
	}
	if s.CompletedAt.IsZero() {
		return s.UpdatedAt, true
	}
	return s.CompletedAt, true
}
