package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/fleet"
)

// maxRoutesBody bounds a member's /api/v1/routes answer.
const maxRoutesBody = 4 << 20

// FleetRoutesView is GET /api/v1/routes?scope=fleet: request and
// comparison counts added over every member that answered.
type FleetRoutesView struct {
	Scope    string           `json:"scope"`
	Answered []string         `json:"answered"`
	Missing  []fleet.Missing  `json:"missing,omitempty"`
	Routes   []FleetRouteView `json:"routes"`
}

// FleetRouteView is one route over the fleet.
type FleetRouteView struct {
	Route    string  `json:"route"`
	Requests float64 `json:"requests"`
	// Comparison is per shadow target; match rates are recomputed from the
	// added counts (not averaged), so a busy member weighs as it should.
	Comparison []FleetComparison `json:"comparison"`
}

// FleetComparison is one shadow target's counts over the fleet.
type FleetComparison struct {
	Target         string      `json:"target"`
	Counts         diff.Counts `json:"counts"`
	Counts1m       diff.Counts `json:"counts_1m"`
	Counts5m       diff.Counts `json:"counts_5m"`
	MatchRate1m    *float64    `json:"match_rate_1m"`
	MatchRate5m    *float64    `json:"match_rate_5m"`
	MatchRateTotal *float64    `json:"match_rate_total"`
}

// memberRoutes is the part of a member's RouteView the fleet merges.
type memberRoutes []struct {
	Route      string  `json:"route"`
	Requests   float64 `json:"requests"`
	Comparison *struct {
		Targets []struct {
			Target   string      `json:"target"`
			Counts   diff.Counts `json:"counts"`
			Counts1m diff.Counts `json:"counts_1m"`
			Counts5m diff.Counts `json:"counts_5m"`
		} `json:"targets"`
	} `json:"comparison"`
}

// routes answers /api/v1/routes?scope=fleet.
func (f *fleetManager) routes() (any, error) {
	members := f.node.Members()
	type answer struct {
		name string
		mr   memberRoutes
		err  error
	}
	answers := make([]answer, len(members))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range members {
		answers[i].name = m.Name
		wg.Add(1)
		go func(a *answer, m fleet.MemberInfo) {
			defer wg.Done()
			if m.Name == f.fc.Name {
				a.mr, a.err = localRoutes(f.a.routeViews())
				return
			}
			a.mr, a.err = f.fetchRoutes(ctx, m)
		}(&answers[i], m)
	}
	wg.Wait()
	views := make([]memberRoutes, 0, len(answers))
	out := FleetRoutesView{Scope: "fleet", Answered: []string{}}
	for _, a := range answers {
		if a.err != nil {
			out.Missing = append(out.Missing, fleet.Missing{Name: a.name, Error: a.err.Error()})
			continue
		}
		out.Answered = append(out.Answered, a.name)
		views = append(views, a.mr)
	}
	out.Routes = mergeRoutes(views)
	return out, nil
}

func localRoutes(v []RouteView) (memberRoutes, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var mr memberRoutes
	return mr, json.Unmarshal(b, &mr)
}

func (f *fleetManager) fetchRoutes(ctx context.Context, m fleet.MemberInfo) (memberRoutes, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(m.Advertise, "/")+"/api/v1/routes", nil)
	if err != nil {
		return nil, err
	}
	if tok := f.a.Config().Admin.Token; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRoutesBody+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("read answer: %w", err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	case len(body) > maxRoutesBody:
		return nil, fmt.Errorf("answer larger than %d bytes", maxRoutesBody)
	}
	var mr memberRoutes
	if err := json.Unmarshal(body, &mr); err != nil {
		return nil, fmt.Errorf("parse answer: %w", err)
	}
	return mr, nil
}

// mergeRoutes adds the members' counts route by route, target by target.
func mergeRoutes(views []memberRoutes) []FleetRouteView {
	byRoute := map[string]*FleetRouteView{}
	var order []string
	for _, v := range views {
		for _, r := range v {
			fr := byRoute[r.Route]
			if fr == nil {
				fr = &FleetRouteView{Route: r.Route, Comparison: []FleetComparison{}}
				byRoute[r.Route] = fr
				order = append(order, r.Route)
			}
			fr.Requests += r.Requests
			if r.Comparison == nil {
				continue
			}
			for _, t := range r.Comparison.Targets {
				i := -1
				for j := range fr.Comparison {
					if fr.Comparison[j].Target == t.Target {
						i = j
					}
				}
				if i < 0 {
					fr.Comparison = append(fr.Comparison, FleetComparison{Target: t.Target})
					i = len(fr.Comparison) - 1
				}
				c := &fr.Comparison[i]
				c.Counts = addCounts(c.Counts, t.Counts)
				c.Counts1m = addCounts(c.Counts1m, t.Counts1m)
				c.Counts5m = addCounts(c.Counts5m, t.Counts5m)
			}
		}
	}
	sort.Strings(order)
	out := make([]FleetRouteView, 0, len(order))
	for _, name := range order {
		fr := byRoute[name]
		for i := range fr.Comparison {
			c := &fr.Comparison[i]
			c.MatchRate1m, c.MatchRate5m, c.MatchRateTotal = c.Counts1m.MatchRate(), c.Counts5m.MatchRate(), c.Counts.MatchRate()
		}
		out = append(out, *fr)
	}
	return out
}

func addCounts(a, b diff.Counts) diff.Counts {
	return diff.Counts{Match: a.Match + b.Match, Mismatch: a.Mismatch + b.Mismatch, Uncomparable: a.Uncomparable + b.Uncomparable}
}

// fleetRoutes is admin.Options.FleetRoutes (nil outside fleet mode).
func (m *rolloutManager) fleetRoutes() func() (any, error) {
	if m.fleet == nil {
		return nil
	}
	return m.fleet.routes
}
