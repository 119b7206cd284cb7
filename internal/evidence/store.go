// Package evidence keeps the records written for every rollback and
// cutover: on disk under a directory per route (next to the rollout state)
// or, without a directory, in memory; bounded either way, oldest first out.
package evidence

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultMax is how many records a route keeps.
const DefaultMax = 50

// ErrNotFound is returned for an unknown record.
var ErrNotFound = errors.New("evidence record not found")

// Summary is one record as the list shows it.
type Summary struct {
	ID     string    `json:"id"`
	Kind   string    `json:"kind"`
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

// Store keeps records. The zero value keeps DefaultMax per route in memory.
type Store struct {
	// Dir returns the directory of a route's records ("" keeps them in
	// memory).
	Dir func(route string) string
	// Max bounds the records per route (default DefaultMax).
	Max int
	// Dropped is called for every record pruned to stay within Max.
	Dropped func(route string)

	mu  sync.Mutex
	mem map[string]map[string][]byte
}

func (s *Store) max() int {
	if s.Max <= 0 {
		return DefaultMax
	}
	return s.Max
}

func (s *Store) dir(route string) string {
	if s.Dir == nil {
		return ""
	}
	return s.Dir(route)
}

// validID keeps ids to what NewEvidenceID makes: no path separators.
func validID(id string) bool {
	if id == "" || len(id) > 100 || strings.Contains(id, "..") {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// Save stores a record and prunes the oldest beyond Max. Ids sort by time.
func (s *Store) Save(route, id string, data []byte) error {
	if !validID(id) {
		return fmt.Errorf("evidence: invalid id %q", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.dir(route)
	if dir == "" {
		if s.mem == nil {
			s.mem = map[string]map[string][]byte{}
		}
		m := s.mem[route]
		if m == nil {
			m = map[string][]byte{}
			s.mem[route] = m
		}
		m[id] = slices.Clone(data)
		ids := slices.Sorted(func(yield func(string) bool) {
			for k := range m {
				if !yield(k) {
					return
				}
			}
		})
		for len(ids) > s.max() {
			delete(m, ids[0])
			ids = ids[1:]
			if s.Dropped != nil {
				s.Dropped(route)
			}
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	tmp := filepath.Join(dir, "."+id+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, id+".json")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("evidence: %w", err)
	}
	ids, err := s.diskIDs(dir)
	if err != nil {
		return err
	}
	for len(ids) > s.max() {
		if err := os.Remove(filepath.Join(dir, ids[0]+".json")); err != nil {
			return fmt.Errorf("evidence: prune: %w", err)
		}
		ids = ids[1:]
		if s.Dropped != nil {
			s.Dropped(route)
		}
	}
	return nil
}

func (s *Store) diskIDs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			ids = append(ids, strings.TrimSuffix(n, ".json"))
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Get returns one record's JSON.
func (s *Store) Get(route, id string) ([]byte, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.dir(route)
	if dir == "" {
		if b, ok := s.mem[route][id]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b, err := os.ReadFile(filepath.Join(dir, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return b, err
}

// List returns a route's records, newest first.
func (s *Store) List(route string) ([]Summary, error) {
	s.mu.Lock()
	var ids []string
	dir := s.dir(route)
	if dir == "" {
		for k := range s.mem[route] {
			ids = append(ids, k)
		}
		slices.Sort(ids)
	} else {
		var err error
		if ids, err = s.diskIDs(dir); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	s.mu.Unlock()
	out := []Summary{}
	for i := len(ids) - 1; i >= 0; i-- {
		b, err := s.Get(route, ids[i])
		if err != nil {
			continue // pruned meanwhile
		}
		var sum Summary
		if err := json.Unmarshal(b, &sum); err != nil {
			sum = Summary{ID: ids[i], Reason: "unreadable record: " + err.Error()}
		}
		out = append(out, sum)
	}
	return out, nil
}
