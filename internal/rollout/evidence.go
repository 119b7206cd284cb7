package rollout

import (
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Evidence kinds.
const (
	EvidenceRollback = "rollback"
	EvidenceCutover  = "cutover"
)

// maxTimeline bounds the transitions a route remembers for evidence.
const maxTimeline = 50

// evidenceSeriesPoints is how many points the windows' time series has.
const evidenceSeriesPoints = 12

// TimelineEntry is one transition of a route.
type TimelineEntry struct {
	At      time.Time `json:"at"`
	Action  string    `json:"action"`
	By      string    `json:"by"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	Reason  string    `json:"reason,omitempty"`
}

// SeriesPoint is one slice of the analysis window: what each cohort did.
type SeriesPoint struct {
	From             time.Time `json:"from"`
	To               time.Time `json:"to"`
	CanaryRequests   uint64    `json:"canary_requests"`
	CanaryErrors5xx  uint64    `json:"canary_errors_5xx"`
	CanaryP99MS      float64   `json:"canary_p99_ms"`
	ControlRequests  uint64    `json:"control_requests"`
	ControlErrors5xx uint64    `json:"control_errors_5xx"`
	ControlP99MS     float64   `json:"control_p99_ms"`
	Comparisons      uint64    `json:"comparisons"`
	Matches          uint64    `json:"matches"`
}

// FieldCount is a differing field and how often it differed.
type FieldCount struct {
	Path  string `json:"path"`
	Count uint64 `json:"count"`
}

// Evidence is the record kept for every rollback and cutover: enough to
// tell, after the fact, exactly why the proxy acted.
type Evidence struct {
	ID     string    `json:"id"`
	Kind   string    `json:"kind"`
	Route  string    `json:"route"`
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	// Policy is the rollout_policies entry the route uses ("" for none).
	Policy      string  `json:"policy,omitempty"`
	Mode        Mode    `json:"mode,omitempty"`
	Step        int     `json:"step"`
	StepPercent float64 `json:"step_percent"`
	// Evaluation is the evaluation that fired, with every number (null
	// for a command or a smoke gate).
	Evaluation *Explanation  `json:"evaluation"`
	Series     []SeriesPoint `json:"series"`
	// TopFields and Samples come from the diff engine (redacted).
	TopFields  []FieldCount      `json:"top_fields"`
	Samples    []json.RawMessage `json:"samples"`
	Smoke      *SmokeReport      `json:"smoke,omitempty"`
	ConfigHash string            `json:"config_hash,omitempty"`
	Timeline   []TimelineEntry   `json:"timeline"`
	// Extra holds kind-specific numbers (a cutover's readiness).
	Extra any `json:"extra,omitempty"`
}

// EvidenceStore keeps evidence records, bounded (the oldest go first).
type EvidenceStore interface {
	Save(route, id string, data []byte) error
}

// NewEvidenceID returns a sortable, unique-enough id for a record.
func NewEvidenceID(kind string, at time.Time, seq uint64) string {
	return fmt.Sprintf("%s-%s-%d", at.UTC().Format("20060102T150405.000Z"), kind, seq)
}

// seriesLocked slices the route's default window into points.
func (r *route) seriesLocked(now time.Time) []SeriesPoint {
	win := r.spec.window(&Condition{})
	step := win / evidenceSeriesPoints
	if step <= 0 {
		return nil
	}
	out := make([]SeriesPoint, 0, evidenceSeriesPoints)
	for i := 0; i < evidenceSeriesPoints; i++ {
		from := now.Add(-win + time.Duration(i)*step)
		w := r.rec.Between(from, from.Add(step))
		out = append(out, SeriesPoint{From: from, To: from.Add(step),
			CanaryRequests: w.Canary.Requests, CanaryErrors5xx: w.Canary.Errors5xx, CanaryP99MS: float64(w.Canary.Quantile(0.99).Microseconds()) / 1000,
			ControlRequests: w.Control.Requests, ControlErrors5xx: w.Control.Errors5xx, ControlP99MS: float64(w.Control.Quantile(0.99).Microseconds()) / 1000,
			Comparisons: w.Comparisons, Matches: w.Matches})
	}
	return out
}

// evidenceLocked builds the record of a rollback that just happened.
func (c *Controller) evidenceLocked(r *route, now time.Time, by, reason string, expl *Explanation, fromStep int, fromBP float64) *Evidence {
	e := &Evidence{ID: NewEvidenceID(EvidenceRollback, now, c.evidenceSeq.Add(1)), Kind: EvidenceRollback, Route: r.name, At: now, By: by, Reason: reason,
		Policy: r.spec.Policy, Mode: r.spec.Mode, Step: fromStep, StepPercent: fromBP, Evaluation: expl, Series: r.seriesLocked(now),
		TopFields: []FieldCount{}, Samples: []json.RawMessage{}, Smoke: r.lastSmoke, Timeline: append([]TimelineEntry(nil), r.timeline...)}
	return e
}

// saveEvidence completes (EvidenceExtra) and stores a record; it runs
// outside every lock. It returns false when the record could not be kept.
func (c *Controller) saveEvidence(e *Evidence) bool {
	if c.opts.EvidenceExtra != nil {
		c.opts.EvidenceExtra(e)
	}
	data, err := json.MarshalIndent(e, "", "  ")
	if err == nil {
		err = c.opts.Evidence.Save(e.Route, e.ID, append(data, '\n'))
	}
	if c.opts.OnEvidence != nil {
		c.opts.OnEvidence(e.Route, err)
	}
	if err != nil {
		c.log.Error("cannot write rollout evidence", zap.String("route", e.Route), zap.String("id", e.ID), zap.Error(err))
		return false
	}
	return true
}
