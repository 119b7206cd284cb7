package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrConflict means a revision-checked write lost: the key changed since it
// was read (or the writer is no longer the leader). Read again and retry.
var ErrConflict = errors.New("fleet state changed concurrently")

// RouteState is one route's rollout as the whole fleet shares it. The hold
// clock is stored as the step's start plus the paused time, so a new leader
// continues it exactly where the old one was.
type RouteState struct {
	Route string `json:"route"`
	// State is progressing, paused, rolled_back or completed (rollout.State).
	State string `json:"state"`
	Step  int    `json:"step"`
	// PercentBP is the canary share in basis points that every member applies.
	PercentBP uint32 `json:"percent_bp"`
	// Halted turns cohort rules off (after a rollback).
	Halted        bool       `json:"halted"`
	StepStartedAt time.Time  `json:"step_started_at"`
	PausedAt      *time.Time `json:"paused_at,omitempty"`
	PausedNanos   int64      `json:"paused_ns"`
	// DataSince is when the current step's evaluation data starts.
	DataSince time.Time `json:"data_since"`
	// PolicyHash is the hash of the rollout policy the state was made under.
	PolicyHash string `json:"policy_hash"`
	Reason     string `json:"reason,omitempty"`
	LastAction string `json:"last_action,omitempty"`
	// UpdatedBy names the member that wrote the state.
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
	// Controller is the rollout controller's own record of the route (its
	// StateStore bytes: the fields above plus breach streaks, sequential
	// tests' e-values and spent alpha). The fleet does not interpret it;
	// a new leader's controller loads it, so it continues mid-breach.
	Controller json.RawMessage `json:"controller,omitempty"`
}

// Held is how long the current step has been held at now (paused time
// excluded).
func (s *RouteState) Held(now time.Time) time.Duration {
	d := now.Sub(s.StepStartedAt) - time.Duration(s.PausedNanos)
	if s.PausedAt != nil {
		d -= now.Sub(*s.PausedAt)
	}
	return max(d, 0)
}

// Versioned is a RouteState with the etcd revision it was read at (the
// key's ModRevision, which CompareAndSave checks).
type Versioned struct {
	RouteState
	Rev int64
}

// Store keeps rollout state under prefix/state/ in etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	// fence, when set, adds a condition to every write (the leader's key
	// still exists with its revision).
	fence func() (clientv3.Cmp, bool)
}

// NewStore returns a Store under prefix (such as /shadowproxy/prod).
func NewStore(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, prefix: strings.TrimRight(prefix, "/")}
}

func (s *Store) dir() string             { return s.prefix + "/state/" }
func (s *Store) key(route string) string { return s.dir() + route }

// Load reads a route's state; Rev is 0 when the fleet has none yet.
func (s *Store) Load(ctx context.Context, route string) (Versioned, error) {
	resp, err := s.cli.Get(ctx, s.key(route))
	if err != nil {
		return Versioned{}, fmt.Errorf("load fleet state of route %q: %w", route, err)
	}
	if len(resp.Kvs) == 0 {
		return Versioned{RouteState: RouteState{Route: route}}, nil
	}
	return decodeState(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// LoadAll reads every route's state and the store revision it was read at.
func (s *Store) LoadAll(ctx context.Context) (map[string]Versioned, int64, error) {
	resp, err := s.cli.Get(ctx, s.dir(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("load fleet state: %w", err)
	}
	out := make(map[string]Versioned, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := decodeState(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, fmt.Errorf("key %s: %w", kv.Key, err)
		}
		out[v.Route] = v
	}
	return out, resp.Header.Revision, nil
}

func decodeState(b []byte, rev int64) (Versioned, error) {
	var st RouteState
	if err := json.Unmarshal(b, &st); err != nil {
		return Versioned{}, fmt.Errorf("parse fleet state: %w", err)
	}
	if st.Route == "" || st.PercentBP > 10000 || st.Step < 0 {
		return Versioned{}, fmt.Errorf("invalid fleet state (route %q, step %d, percent_bp %d)", st.Route, st.Step, st.PercentBP)
	}
	return Versioned{RouteState: st, Rev: rev}, nil
}

// CompareAndSave writes st if the route's key is still at rev (0: absent)
// and returns the new revision; ErrConflict when it is not.
func (s *Store) CompareAndSave(ctx context.Context, st RouteState, rev int64) (int64, error) {
	if st.Route == "" {
		return 0, errors.New("fleet state without a route")
	}
	b, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode fleet state: %w", err)
	}
	k := s.key(st.Route)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev)}
	if s.fence != nil {
		c, ok := s.fence()
		if !ok {
			return 0, fmt.Errorf("%w: not the leader", ErrConflict)
		}
		cmps = append(cmps, c)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(k, string(b))).Commit()
	if err != nil {
		return 0, fmt.Errorf("save fleet state of route %q: %w", st.Route, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w (route %q, read at revision %d)", ErrConflict, st.Route, rev)
	}
	return resp.Header.Revision, nil
}

// Update applies change to the route's current state and saves it with a
// revision check, retrying on conflict (at most 5 times). change returning
// an error aborts without writing.
func (s *Store) Update(ctx context.Context, route string, change func(*RouteState) error) (Versioned, error) {
	var lastErr error
	for range 5 {
		cur, err := s.Load(ctx, route)
		if err != nil {
			return Versioned{}, err
		}
		next := cur.RouteState
		if err := change(&next); err != nil {
			return Versioned{}, err
		}
		rev, err := s.CompareAndSave(ctx, next, cur.Rev)
		if err == nil {
			return Versioned{RouteState: next, Rev: rev}, nil
		}
		if !errors.Is(err, ErrConflict) {
			return Versioned{}, err
		}
		lastErr = err
	}
	return Versioned{}, lastErr
}

// Watch calls fn with every route's state, then with every change, until
// ctx ends. After a broken watch (etcd restarted, history compacted) it
// reads everything again, so fn always ends up with the latest state; it
// may see the same revision twice and must apply idempotently. loaded, when
// set, is called after each full read.
func (s *Store) Watch(ctx context.Context, fn func(Versioned), loaded func()) {
	const retry = 200 * time.Millisecond
	for ctx.Err() == nil {
		all, rev, err := s.LoadAll(ctx)
		if err != nil {
			sleep(ctx, retry)
			continue
		}
		for _, v := range all {
			fn(v)
		}
		if loaded != nil {
			loaded()
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range s.cli.Watch(wctx, s.dir(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if v, err := decodeState(ev.Kv.Value, ev.Kv.ModRevision); err == nil {
					fn(v)
				}
			}
		}
		cancel()
		sleep(ctx, retry)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
