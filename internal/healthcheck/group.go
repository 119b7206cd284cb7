package healthcheck

import (
	"errors"
	"fmt"
)

// Group probes every endpoint of one upstream with one configuration, so
// that a failing endpoint is seen even when its siblings answer.
type Group struct {
	checkers []*Checker
}

// NewGroup returns a Group with one Checker per URL, each configured as cfg
// with its URL. onChange, when not nil, is called as the Checker of urls[i]
// flips between healthy and unhealthy (it replaces cfg.OnChange).
func NewGroup(urls []string, cfg Config, onChange func(i int, healthy bool, s Status)) (*Group, error) {
	if len(urls) == 0 {
		return nil, errors.New("healthcheck: no endpoints to probe")
	}
	g := &Group{}
	for i, u := range urls {
		c := cfg
		c.URL = u
		if onChange != nil {
			i := i
			c.OnChange = func(healthy bool, s Status) { onChange(i, healthy, s) }
		}
		ch, err := New(c)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", u, err)
		}
		g.checkers = append(g.checkers, ch)
	}
	return g, nil
}

// Start starts every Checker probing.
func (g *Group) Start() {
	for _, c := range g.checkers {
		c.Start()
	}
}

// Close stops every Checker and waits for them.
func (g *Group) Close() error {
	for _, c := range g.checkers {
		c.Close()
	}
	return nil
}

// ConsecutiveFailures is the worst endpoint's count of probes failed in a
// row: one failing instance of a canary is a failing canary, even while
// the load balancer hides it from most requests.
func (g *Group) ConsecutiveFailures() int {
	worst := 0
	for _, c := range g.checkers {
		worst = max(worst, c.ConsecutiveFailures())
	}
	return worst
}

// Status returns a snapshot of every endpoint, in the order of the URLs.
func (g *Group) Status() []Status {
	out := make([]Status, len(g.checkers))
	for i, c := range g.checkers {
		out[i] = c.Status()
	}
	return out
}
