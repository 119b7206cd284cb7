package analysis

import (
	"context"
	"sync"
	"time"

	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/histogram"
)

// History settings: one point every HistoryInterval, HistoryPoints kept per
// target (an hour), so memory per target is fixed.
const (
	HistoryInterval = 10 * time.Second
	HistoryPoints   = 360
)

// Point is one interval of a target's comparisons.
type Point struct {
	Time        time.Time `json:"time"`
	Target      string    `json:"target"`
	MatchRate   *float64  `json:"match_rate"`
	Comparisons uint64    `json:"comparisons"`
	PrimaryP50  float64   `json:"primary_p50"`
	PrimaryP95  float64   `json:"primary_p95"`
	PrimaryP99  float64   `json:"primary_p99"`
	ShadowP50   float64   `json:"shadow_p50"`
	ShadowP95   float64   `json:"shadow_p95"`
	ShadowP99   float64   `json:"shadow_p99"`
}

// History is the answer of GET /api/v1/history.
type History struct {
	Route           string  `json:"route"`
	IntervalSeconds float64 `json:"interval_seconds"`
	Points          []Point `json:"points"`
}

// interval accumulates one target's comparisons until the next tick.
type interval struct {
	mu              sync.Mutex
	match, mismatch uint64
	uncomparable    uint64
	learning        uint64
	primary, shadow histogram.Histogram
	ring            [HistoryPoints]Point
	next, size      int
}

func (iv *interval) add(o diff.Outcome, primary, shadow time.Duration) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	switch o {
	case diff.Match:
		iv.match++
	case diff.Mismatch:
		iv.mismatch++
	case diff.Learning:
		iv.learning++
	default:
		iv.uncomparable++
	}
	iv.primary.Add(primary)
	iv.shadow.Add(shadow)
}

// close turns the accumulated interval into a point and starts a new one.
func (iv *interval) close(t time.Time, target string) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	p := Point{Time: t, Target: target, Comparisons: iv.match + iv.mismatch + iv.uncomparable + iv.learning}
	if n := iv.match + iv.mismatch; n > 0 {
		r := float64(iv.match) / float64(n)
		p.MatchRate = &r
	}
	p.PrimaryP50, p.PrimaryP95, p.PrimaryP99 = iv.primary.Quantile(0.5), iv.primary.Quantile(0.95), iv.primary.Quantile(0.99)
	p.ShadowP50, p.ShadowP95, p.ShadowP99 = iv.shadow.Quantile(0.5), iv.shadow.Quantile(0.95), iv.shadow.Quantile(0.99)
	iv.ring[iv.next] = p
	iv.next = (iv.next + 1) % HistoryPoints
	iv.size = min(iv.size+1, HistoryPoints)
	iv.match, iv.mismatch, iv.uncomparable, iv.learning = 0, 0, 0, 0
	iv.primary.Reset()
	iv.shadow.Reset()
}

func (iv *interval) points() []Point {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	out := make([]Point, 0, iv.size)
	start := (iv.next - iv.size + HistoryPoints) % HistoryPoints
	for i := 0; i < iv.size; i++ {
		out = append(out, iv.ring[(start+i)%HistoryPoints])
	}
	return out
}

// Tick closes the current interval of every target at time t. Run calls it
// every HistoryInterval; tests call it directly.
func (a *Analyzer) Tick(t time.Time) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, rs := range a.routes {
		for _, name := range rs.order {
			rs.targets[name].iv.close(t, name)
		}
	}
}

// Run ticks every HistoryInterval until ctx ends.
func (a *Analyzer) Run(ctx context.Context) {
	tk := time.NewTicker(HistoryInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			a.Tick(a.now())
		}
	}
}

// History returns the last hour of route's points, oldest first, targets
// interleaved by time.
func (a *Analyzer) History(route string) (History, error) {
	rs := a.route(route)
	if rs == nil {
		return History{}, ErrUnknownRoute
	}
	h := History{Route: route, IntervalSeconds: HistoryInterval.Seconds(), Points: []Point{}}
	for _, name := range rs.order {
		h.Points = append(h.Points, rs.targets[name].iv.points()...)
	}
	sortPoints(h.Points)
	return h, nil
}
