package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// WindowsPath is the admin API path a member serves its recorder windows
// on: GET WindowsPath?route=R&from=UNIXNANO&to=UNIXNANO.
const WindowsPath = "/api/v1/fleet/windows"

// maxWindowBody bounds a member's answer: an hour of 10s slots with a few
// dozen non-zero buckets each stays well below it.
const maxWindowBody = 8 << 20

// WireCohort is one cohort's totals with the latency histogram as sparse
// [bucket, count] pairs.
type WireCohort struct {
	Requests       uint64      `json:"requests"`
	Errors5xx      uint64      `json:"errors_5xx"`
	UpstreamErrors uint64      `json:"upstream_errors"`
	Hist           [][2]uint64 `json:"hist,omitempty"`
}

// WireWindow is a member's window of one route, as sent to the leader.
type WireWindow struct {
	Member      string     `json:"member"`
	Route       string     `json:"route"`
	Buckets     int        `json:"buckets"`
	From        time.Time  `json:"from"`
	To          time.Time  `json:"to"`
	Control     WireCohort `json:"control"`
	Canary      WireCohort `json:"canary"`
	Excluded    WireCohort `json:"excluded"`
	Comparisons uint64     `json:"comparisons"`
	Matches     uint64     `json:"matches"`
}

// WireSlots is a member's answer on WindowsPath: its recorder's non-empty
// slots within the asked range, so the leader can rebuild the fleet's
// history slot by slot.
type WireSlots struct {
	Member string       `json:"member"`
	Route  string       `json:"route"`
	Slots  []WireWindow `json:"slots"`
}

// EncodeSlots turns a recorder's slot windows into the wire answer.
func EncodeSlots(member, route string, slots []rollout.WindowStats) WireSlots {
	out := WireSlots{Member: member, Route: route, Slots: make([]WireWindow, len(slots))}
	for i := range slots {
		out.Slots[i] = EncodeWindow(member, route, &slots[i])
	}
	return out
}

// EncodeWindow turns a local window into its wire form.
func EncodeWindow(member, route string, w *rollout.WindowStats) WireWindow {
	enc := func(c *rollout.ArmStats) WireCohort {
		wc := WireCohort{Requests: c.Requests, Errors5xx: c.Errors5xx, UpstreamErrors: c.UpstreamErrors}
		for i, v := range c.Histogram() {
			if v != 0 {
				wc.Hist = append(wc.Hist, [2]uint64{uint64(i), v})
			}
		}
		return wc
	}
	return WireWindow{Member: member, Route: route, Buckets: rollout.HistogramBuckets, From: w.From, To: w.To,
		Control: enc(&w.Control), Canary: enc(&w.Canary), Excluded: enc(&w.Excluded),
		Comparisons: w.Comparisons, Matches: w.Matches}
}

// Decode turns a wire window back into WindowStats; it refuses a window
// recorded with another histogram layout, which could not merge exactly.
func (ww *WireWindow) Decode() (rollout.WindowStats, error) {
	if ww.Buckets != rollout.HistogramBuckets {
		return rollout.WindowStats{}, fmt.Errorf("member %q uses %d latency buckets, this member %d (different versions?)", ww.Member, ww.Buckets, rollout.HistogramBuckets)
	}
	w := rollout.WindowStats{From: ww.From, To: ww.To, Comparisons: ww.Comparisons, Matches: ww.Matches}
	for _, p := range []struct {
		in  *WireCohort
		out *rollout.ArmStats
	}{{&ww.Control, &w.Control}, {&ww.Canary, &w.Canary}, {&ww.Excluded, &w.Excluded}} {
		p.out.Requests, p.out.Errors5xx, p.out.UpstreamErrors = p.in.Requests, p.in.Errors5xx, p.in.UpstreamErrors
		for _, b := range p.in.Hist {
			if b[0] >= uint64(rollout.HistogramBuckets) {
				return rollout.WindowStats{}, fmt.Errorf("member %q: latency bucket %d out of range", ww.Member, b[0])
			}
			if err := p.out.AddBucket(int(b[0]), b[1]); err != nil {
				return rollout.WindowStats{}, err
			}
		}
	}
	return w, nil
}

// ParseWindowQuery reads the route, from and to of a WindowsPath request.
func ParseWindowQuery(q url.Values) (route string, from, to time.Time, err error) {
	route = q.Get("route")
	if route == "" {
		return "", time.Time{}, time.Time{}, fmt.Errorf("query parameter route is required")
	}
	f, err1 := strconv.ParseInt(q.Get("from"), 10, 64)
	t, err2 := strconv.ParseInt(q.Get("to"), 10, 64)
	if err1 != nil || err2 != nil || t < f {
		return "", time.Time{}, time.Time{}, fmt.Errorf("query parameters from and to must be unix nanoseconds with from <= to")
	}
	return route, time.Unix(0, f), time.Unix(0, t), nil
}

// Missing is a member whose window is not in a merge.
type Missing struct {
	Name  string `json:"name"`
	Error string `json:"error"`
	// Share is the member's estimated share of the fleet's traffic.
	Share float64 `json:"share"`
}

// FleetWindow is a route's window merged over the fleet.
type FleetWindow struct {
	Stats    rollout.WindowStats `json:"stats"`
	Answered []string            `json:"answered"`
	Missing  []Missing           `json:"missing,omitempty"`
	// MissingShare is the estimated share of the fleet's traffic carried
	// by the missing members.
	MissingShare float64 `json:"missing_share"`
	// Hold is set when MissingShare exceeds the limit: the numbers are not
	// the fleet's, so no decision may rest on them.
	Hold   bool   `json:"hold"`
	Reason string `json:"reason,omitempty"`
}

// Explain is the sentence the leader adds to an evaluation.
func (f *FleetWindow) Explain() string {
	if len(f.Missing) == 0 {
		return fmt.Sprintf("fleet numbers from %d member(s): %s", len(f.Answered), strings.Join(f.Answered, ", "))
	}
	names := make([]string, len(f.Missing))
	for i, m := range f.Missing {
		names[i] = fmt.Sprintf("%s (%s)", m.Name, m.Error)
	}
	return fmt.Sprintf("fleet numbers from %s; missing %s, carrying about %.0f%% of the traffic",
		strings.Join(f.Answered, ", "), strings.Join(names, ", "), 100*f.MissingShare)
}

// Merger fetches every live member's window of a route and merges them.
type Merger struct {
	// Self is this member's name; Local answers for it without HTTP, with
	// its recorder's slot windows (rollout.Recorder.SlotWindows).
	Self  string
	Local func(route string, from, to time.Time) ([]rollout.WindowStats, bool)
	// Token is the admin token sent to the other members.
	Token string
	// Client does the requests (default: 2s timeout).
	Client *http.Client
	// MaxMissingShare is the largest traffic share of missing members that
	// still allows a decision.
	MaxMissingShare float64
	Metrics         *metrics.Fleet

	mu sync.Mutex
	// rates remembers each member's last seen request rate per route, to
	// estimate the share of a member that does not answer.
	rates map[string]map[string]float64
}

// Merge fetches route's slots within [from, to] from every member
// concurrently and adds the answers; each, when set, receives every slot
// window of every answering member (to rebuild a fleet-wide recorder). A
// missing member's traffic share is estimated from its last answer (the
// average member's when it never answered); when the missing members carry
// more than MaxMissingShare, the result says Hold.
func (m *Merger) Merge(ctx context.Context, route string, from, to time.Time, members []MemberInfo, each func(*rollout.WindowStats)) FleetWindow {
	type answer struct {
		name  string
		slots []rollout.WindowStats
		w     rollout.WindowStats
		err   error
	}
	answers := make([]answer, len(members))
	var wg sync.WaitGroup
	for i, mem := range members {
		answers[i].name = mem.Name
		if mem.Name == m.Self && m.Local != nil {
			slots, ok := m.Local(route, from, to)
			if !ok {
				answers[i].err = fmt.Errorf("route %q has no recorder here", route)
			}
			answers[i].slots = slots
			continue
		}
		wg.Add(1)
		go func(a *answer, mem MemberInfo) {
			defer wg.Done()
			a.slots, a.err = m.fetch(ctx, mem, route, from, to)
		}(&answers[i], mem)
	}
	wg.Wait()
	for i := range answers {
		a := &answers[i]
		for j := range a.slots {
			a.w.Merge(&a.slots[j])
			if each != nil && a.err == nil {
				each(&a.slots[j])
			}
		}
	}

	secs := max(to.Sub(from).Seconds(), 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rates == nil {
		m.rates = map[string]map[string]float64{}
	}
	rates := m.rates[route]
	if rates == nil {
		rates = map[string]float64{}
		m.rates[route] = rates
	}
	var out FleetWindow
	out.Stats.From, out.Stats.To = from, to
	var known, knownN float64
	for _, a := range answers {
		if a.err != nil {
			continue
		}
		out.Stats.Merge(&a.w)
		out.Answered = append(out.Answered, a.name)
		r := float64(a.w.Control.Requests+a.w.Canary.Requests+a.w.Excluded.Requests) / secs
		rates[a.name] = r
		known += r
		knownN++
	}
	var missingRate float64
	for _, a := range answers {
		if a.err == nil {
			continue
		}
		if m.Metrics != nil {
			m.Metrics.WindowFetchFailures.Inc()
		}
		r, seen := rates[a.name]
		if !seen && knownN > 0 {
			// Never answered: assume an average member.
			r = known / knownN
		}
		missingRate += r
		out.Missing = append(out.Missing, Missing{Name: a.name, Error: a.err.Error(), Share: r})
	}
	// Without any traffic to weigh by, every member counts the same.
	total := known + missingRate
	for i := range out.Missing {
		if total > 0 {
			out.Missing[i].Share /= total
		} else {
			out.Missing[i].Share = 1 / float64(len(answers))
		}
		out.MissingShare += out.Missing[i].Share
	}
	// Forget members that left, so the memory stays bounded by the fleet.
	for name := range rates {
		if !slices.ContainsFunc(members, func(mi MemberInfo) bool { return mi.Name == name }) {
			delete(rates, name)
		}
	}
	sort.Strings(out.Answered)
	if out.MissingShare > m.MaxMissingShare {
		out.Hold = true
		out.Reason = fmt.Sprintf("holding: members carrying %.0f%% of the traffic did not answer (limit %.0f%%): %s",
			100*out.MissingShare, 100*m.MaxMissingShare, out.Explain())
	}
	return out
}

func (m *Merger) fetch(ctx context.Context, mem MemberInfo, route string, from, to time.Time) ([]rollout.WindowStats, error) {
	q := url.Values{"route": {route}, "from": {strconv.FormatInt(from.UnixNano(), 10)}, "to": {strconv.FormatInt(to.UnixNano(), 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(mem.Advertise, "/")+WindowsPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("bad advertise URL %q: %w", mem.Advertise, err)
	}
	if m.Token != "" {
		req.Header.Set("Authorization", "Bearer "+m.Token)
	}
	c := m.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWindowBody+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if len(body) > maxWindowBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxWindowBody)
	}
	var ws WireSlots
	if err := json.Unmarshal(body, &ws); err != nil {
		return nil, fmt.Errorf("parse answer: %w", err)
	}
	out := make([]rollout.WindowStats, 0, len(ws.Slots))
	for i := range ws.Slots {
		w, err := ws.Slots[i].Decode()
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}
