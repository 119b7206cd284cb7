package config

import (
	"fmt"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// Cutover defaults.
const (
	DefaultCutoverFor            = 24 * time.Hour
	DefaultCutoverMinComparisons = 10000
	DefaultRetireAfter           = 7 * 24 * time.Hour
)

// Cutover is the criterion under which a dark launch's shadow (the first
// shadow target) may replace the route's upstream: "v2 serves, v1 becomes
// the shadow, comparisons continue reversed". The swap itself is made by
// POST /api/v1/routes/{route}/cutover, or by the proxy when auto.
type Cutover struct {
	When CutoverWhen `yaml:"when"`
	// Auto cuts over by itself once the criterion holds.
	Auto bool `yaml:"auto"`
	// RetireAfter is how long the old upstream should stay as a shadow
	// after a cutover before the dashboard says it can be removed
	// (default 7d).
	RetireAfter cfgtypes.Duration `yaml:"retire_after"`
}

// CutoverWhen is the readiness criterion.
type CutoverWhen struct {
	MatchRate CutoverMatchRate `yaml:"match_rate"`
	// MinComparisons is how many comparisons the streak must include
	// (default 10000).
	MinComparisons int `yaml:"min_comparisons"`
}

// CutoverMatchRate: the match rate must have stayed at or above AtLeast
// for For without interruption.
type CutoverMatchRate struct {
	AtLeast cfgtypes.Ratio    `yaml:"at_least"`
	For     cfgtypes.Duration `yaml:"for"`
}

func (c *Cutover) applyDefaults() {
	if c.When.MatchRate.For == 0 {
		c.When.MatchRate.For = cfgtypes.Duration(DefaultCutoverFor)
	}
	if c.When.MinComparisons == 0 {
		c.When.MinComparisons = DefaultCutoverMinComparisons
	}
	if c.RetireAfter == 0 {
		c.RetireAfter = cfgtypes.Duration(DefaultRetireAfter)
	}
}

// validate checks the cutover section of r; paths are relative to the
// route.
func (c *Cutover) validate(r *Route) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(cfgtypes.JoinPath("cutover", path), format, args...))
	}
	if r.Shadow == nil || len(r.Shadow.Targets) == 0 {
		add("", "a cutover swaps the route's upstream with its first shadow target: add shadow.targets (the dark-launched version) to this route")
	}
	if r.Split != nil {
		add("", "a route with a split walks a canary instead; cut over a dark launch (shadow only), or finish the split first")
	}
	if ar := float64(c.When.MatchRate.AtLeast); ar <= 0 || ar > 1 {
		add("when.match_rate.at_least", "required: the match rate the shadow must hold, between 0%% and 100%%, e.g. 99%%")
	}
	if c.When.MatchRate.For < 0 {
		add("when.match_rate.for", "must not be negative")
	}
	if c.When.MinComparisons < 0 {
		add("when.min_comparisons", "must not be negative, got %d", c.When.MinComparisons)
	}
	if c.RetireAfter < 0 {
		add("retire_after", "must not be negative")
	}
	return errs
}

// StaleSplitWarnings names every route whose rollout completed (the canary
// serves 100% through the split) longer than its stale_after ago, with the
// exact config change that finishes it. It reads the rollouts' state files,
// so validate and run call it apart from Warnings.
func (c *Config) StaleSplitWarnings(now time.Time) []string {
	var w []string
	for i, r := range c.Routes {
		if r.Rollout == nil || r.Split == nil || r.Rollout.StateFile == "" {
			continue
		}
		at, ok := rollout.CompletedAt(rollout.FileStore{Path: r.Rollout.StateFile})
		if !ok {
			continue
		}
		staleAfter := r.Rollout.StaleAfter.D()
		if staleAfter == 0 {
			staleAfter = rollout.DefaultStaleAfter
		}
		if age := now.Sub(at); age >= staleAfter {
			w = append(w, fmt.Sprintf("routes[%d] (%s) rollout completed %s ago (stale_after %s) and still routes through its split: finish it by setting routes[%d].upstream: %s and removing routes[%d].split and routes[%d].rollout",
				i, r.Name, fmtDays(age), fmtDays(staleAfter), i, r.Split.To, i, i))
		}
	}
	return w
}

// fmtDays renders long durations in days ("15d"), short ones as usual.
func fmtDays(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return d.Truncate(time.Minute).String()
}
