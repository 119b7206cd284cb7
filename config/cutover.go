package config

import (
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
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
