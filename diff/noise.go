package diff

import (
	"slices"
	"strings"
	"sync"
)

// NoiseField is one tracked path in a NoiseTracker snapshot.
type NoiseField struct {
	Path          string  `json:"path"`
	Disagreements uint64  `json:"disagreements"`
	Observations  uint64  `json:"observations"`
	Rate          float64 `json:"rate"`
	Noisy         bool    `json:"noisy"`
}

// NoiseTracker learns, per route, which paths differ even between two
// instances of the same version (Diffy's idea): the primary and a secondary
// upstream running the primary's version answer the same request, and
// whatever they disagree on cannot be blamed on the shadow.
//
// The rule: every comparable primary-vs-secondary result is one observation;
// each distinct normalized path among its differences gets one disagreement.
// A path is noisy while
//
//	observations >= min_observations && disagreements/observations > threshold
//
// (defaults 20 and 0.05: at 20 observations two disagreements are needed).
// The rate is over all observations of the route, because a path missing from
// a result is taken as agreement. Counts never reset, so a path that stops
// disagreeing loses its noisy status as its rate decays.
//
// Two kinds of evidence are never used: the status code is never noise (a
// shadow answering 500 where the primary says 200 must always show), and an
// observation whose statuses differ is skipped whole (an error page differs
// from a real answer everywhere; learning from it would silence every field).
// Uncomparable results are skipped too.
//
// At most max_paths paths are tracked; disagreements on further paths are
// counted in Dropped. NoiseTracker is safe for concurrent use.
type NoiseTracker struct {
	minObs    uint64
	threshold float64
	maxPaths  int

	mu           sync.RWMutex
	observations uint64
	skipped      uint64
	dropped      uint64
	paths        map[string]uint64 // normalized path → disagreements
}

// NewNoiseTracker returns a tracker using the noise settings of r (defaults
// when r is nil).
func NewNoiseTracker(r *Rules) *NoiseTracker {
	spec := Spec{}
	if r != nil {
		spec = r.spec
	}
	spec.ApplyDefaults()
	return &NoiseTracker{
		minObs:    uint64(spec.Noise.MinObservations),
		threshold: float64(spec.Noise.Threshold),
		maxPaths:  spec.Noise.MaxPaths,
		paths:     make(map[string]uint64),
	}
}

// Observe counts one primary-vs-secondary result.
func (t *NoiseTracker) Observe(primaryVsSecondary Result) {
	r := primaryVsSecondary
	if r.Outcome == Uncomparable {
		t.mu.Lock()
		t.skipped++
		t.mu.Unlock()
		return
	}
	var seen []string
	for _, d := range r.Differences {
		if d.Path == StatusPath {
			t.mu.Lock()
			t.skipped++
			t.mu.Unlock()
			return
		}
		p := NormalizePath(d.Path)
		if !slices.Contains(seen, p) {
			seen = append(seen, p)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observations++
	for _, p := range seen {
		if _, ok := t.paths[p]; !ok && len(t.paths) >= t.maxPaths {
			t.dropped++
			continue
		}
		t.paths[p]++
	}
}

func (t *NoiseTracker) noisyLocked(dis uint64) bool {
	return t.observations >= t.minObs && t.observations > 0 &&
		float64(dis)/float64(t.observations) > t.threshold
}

// isNoisyLocked reports whether a difference path, or one of its ancestors,
// is noisy: noise learned on "/meta" covers "/meta/build".
func (t *NoiseTracker) isNoisyLocked(path string) bool {
	if path == StatusPath {
		return false
	}
	p := NormalizePath(path)
	if !strings.HasPrefix(p, "/") {
		// "header/Date", "body": no ancestors to consult.
		dis, ok := t.paths[p]
		return ok && t.noisyLocked(dis)
	}
	for {
		if dis, ok := t.paths[p]; ok && t.noisyLocked(dis) {
			return true
		}
		parent, ok := pathParent(p)
		if !ok {
			break
		}
		p = parent
	}
	// Noise learned on the whole body ("body") covers everything in it.
	dis, ok := t.paths[BodyPath]
	return ok && t.noisyLocked(dis)
}

// Filter removes the differences on noisy paths from a primary-vs-shadow
// result. A mismatch left without differences becomes a match (or
// uncomparable, when its body was not compared). The input is not modified.
func (t *NoiseTracker) Filter(shadowResult Result) Result {
	r := shadowResult
	if r.Outcome != Mismatch || len(r.Differences) == 0 {
		return r
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.observations < t.minObs {
		return r
	}
	var kept []Difference
	for i, d := range r.Differences {
		if !t.isNoisyLocked(d.Path) {
			if kept != nil {
				kept = append(kept, d)
			}
			continue
		}
		if kept == nil {
			kept = make([]Difference, i, len(r.Differences))
			copy(kept, r.Differences[:i])
		}
		r.NoiseFiltered++
	}
	if kept == nil {
		return r
	}
	r.Differences = kept
	if len(kept) == 0 && r.Omitted == 0 {
		r.Differences = nil
		if r.Body == BodySkipped {
			r.Outcome = Uncomparable
		} else {
			r.Outcome = Match
		}
	}
	return r
}

// Snapshot lists the tracked paths, noisiest first.
func (t *NoiseTracker) Snapshot() []NoiseField {
	t.mu.RLock()
	out := make([]NoiseField, 0, len(t.paths))
	for p, dis := range t.paths {
		f := NoiseField{Path: p, Disagreements: dis, Observations: t.observations, Noisy: t.noisyLocked(dis)}
		if t.observations > 0 {
			f.Rate = float64(dis) / float64(t.observations)
		}
		out = append(out, f)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b NoiseField) int {
		switch {
		case a.Rate > b.Rate:
			return -1
		case a.Rate < b.Rate:
			return 1
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out
}

// NoisyCount is the number of paths currently noisy, for the
// shadowproxy_noise_fields{route} gauge.
func (t *NoiseTracker) NoisyCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, dis := range t.paths {
		if t.noisyLocked(dis) {
			n++
		}
	}
	return n
}

// Observations returns how many results were counted and how many were
// skipped (uncomparable, or with differing status codes).
func (t *NoiseTracker) Observations() (counted, skipped uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.observations, t.skipped
}

// Dropped counts disagreements on paths that could not be tracked because
// max_paths paths already were.
func (t *NoiseTracker) Dropped() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.dropped
}
