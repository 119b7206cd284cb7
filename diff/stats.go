package diff

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/histogram"
)

// OtherField is the label that stands for every field beyond max_fields.
const OtherField = "other"

// TopFieldsInSummary is how many fields Summary lists.
const TopFieldsInSummary = 20

// ringSlots one-second slots cover the longest window, five minutes.
const ringSlots = 300

// Event is one finished comparison of a primary and a shadow response.
type Event struct {
	// Time is when the comparison was made; zero means the Stats clock.
	Time           time.Time
	Method         string
	URI            string
	RequestID      string
	PrimaryStatus  int
	ShadowStatus   int
	PrimaryLatency time.Duration
	ShadowLatency  time.Duration
	// Result should already be noise-filtered (NoiseTracker.Judge).
	Result Result
	// RawFields lists the normalized paths that differed before noise was
	// filtered (Judgement.Raw), for raw-versus-filtered field counts.
	RawFields []string
}

// Counts are comparison outcomes.
type Counts struct {
	Match        uint64 `json:"match"`
	Mismatch     uint64 `json:"mismatch"`
	Uncomparable uint64 `json:"uncomparable"`
	// Learning counts comparisons made while noise was being learnt: no
	// verdict, so they are in no match rate.
	Learning uint64 `json:"learning"`
}

// Total is the number of comparisons, whatever their outcome.
func (c Counts) Total() uint64 { return c.Match + c.Mismatch + c.Uncomparable + c.Learning }

// MatchRate is match/(match+mismatch); uncomparable comparisons have no
// verdict and do not count. It is nil when there is no verdict at all, so
// "no data" never reads as 0% or 100%.
func (c Counts) MatchRate() *float64 {
	n := c.Match + c.Mismatch
	if n == 0 {
		return nil
	}
	r := float64(c.Match) / float64(n)
	return &r
}

func (c *Counts) add(o Outcome) {
	switch o {
	case Match:
		c.Match++
	case Mismatch:
		c.Mismatch++
	case Learning:
		c.Learning++
	default:
		c.Uncomparable++
	}
}

func (c *Counts) plus(o Counts) {
	c.Match += o.Match
	c.Mismatch += o.Mismatch
	c.Uncomparable += o.Uncomparable
	c.Learning += o.Learning
}

// FieldCount is how many comparisons differed on a field: Count after
// noise was filtered (what the verdicts counted), Raw before (like Diffy's
// noise toggle). A field that only ever differed as noise has Count 0.
type FieldCount struct {
	Field string `json:"field"`
	Count uint64 `json:"count"`
	Raw   uint64 `json:"raw"`
}

// Quantiles are latency quantiles in seconds, estimated from a histogram
// (see Stats for the error bound). They are 0 when Count is 0.
type Quantiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
}

// LatencySummary compares primary and shadow latency.
type LatencySummary struct {
	Primary Quantiles `json:"primary"`
	Shadow  Quantiles `json:"shadow"`
}

// Summary is the diff part of a route and target in GET /api/v1/routes.
type Summary struct {
	MatchRate1m    *float64       `json:"match_rate_1m"`
	MatchRate5m    *float64       `json:"match_rate_5m"`
	MatchRateTotal *float64       `json:"match_rate_total"`
	Counts         Counts         `json:"counts"`
	Counts1m       Counts         `json:"counts_1m"`
	Counts5m       Counts         `json:"counts_5m"`
	TopFields      []FieldCount   `json:"top_fields"`
	FieldsCapped   bool           `json:"fields_capped"`
	Latency        LatencySummary `json:"latency"`
	Since          time.Time      `json:"since"`
}

// Sample is one stored mismatch, redacted, for GET /api/v1/diffs.
type Sample struct {
	Time          time.Time    `json:"time"`
	Method        string       `json:"method"`
	URI           string       `json:"uri"`
	RequestID     string       `json:"request_id,omitempty"`
	PrimaryStatus int          `json:"primary_status"`
	ShadowStatus  int          `json:"shadow_status"`
	Differences   []Difference `json:"differences"`
	Omitted       int          `json:"omitted,omitempty"`
	Note          string       `json:"note,omitempty"`
}

// Stats aggregates the comparisons of one route and shadow target, in
// bounded memory:
//
//   - outcome counts since start, and per one-second slot in a 300-slot
//     ring for the 1-minute and 5-minute windows (a window covers the
//     current second and the 59 or 299 before it);
//   - per-field mismatch counts, at most max_fields names plus "other";
//   - latency histograms (internal/histogram, shared with the history and
//     the rollout recorder): quantiles interpolated within buckets at most
//     12.5% wide, clamped to the smallest and largest latency seen;
//   - the last `samples` mismatches, redacted, newest first.
//
// Stats is safe for concurrent use; the clock is injectable for tests.
type Stats struct {
	now        func() time.Time
	maxFields  int
	maxSamples int
	redact     []Pattern
	redactKeys []string

	mu       sync.Mutex
	start    time.Time
	total    Counts
	ring     [ringSlots]slot
	fields   map[string]*FieldCount
	named    int // fields with their own name (not "other")
	capped   bool
	primary  histogram.Histogram
	shadow   histogram.Histogram
	samples  []Sample // ring buffer
	next     int      // where the next sample goes
	nSamples int
}

type slot struct {
	sec    int64
	counts Counts
}

// NewStats returns empty stats using the samples, max_fields and redact
// settings of r (defaults when r is nil). now is the clock; nil means
// time.Now.
func NewStats(r *Rules, now func() time.Time) *Stats {
	if r == nil {
		r, _ = CompileRules(Spec{})
	}
	if now == nil {
		now = time.Now
	}
	s := &Stats{
		now:        now,
		maxFields:  r.spec.MaxFields,
		maxSamples: r.spec.Samples,
		redact:     r.redact,
		redactKeys: r.redactKeys,
		fields:     make(map[string]*FieldCount),
	}
	s.start = now()
	s.samples = make([]Sample, 0, min(s.maxSamples, 16))
	for i := range s.ring {
		s.ring[i].sec = math.MinInt64
	}
	return s
}

// EndpointSamples is how many mismatches the stats of one endpoint keep
// (at most the route's samples setting): endpoints multiply the store.
const EndpointSamples = 10

// NewEndpointStats is NewStats for one endpoint: it keeps at most
// EndpointSamples samples.
func NewEndpointStats(r *Rules, now func() time.Time) *Stats {
	s := NewStats(r, now)
	s.maxSamples = min(s.maxSamples, EndpointSamples)
	return s
}

// Record adds one comparison. It returns one label per distinct normalized
// difference path, capped ("other" past max_fields), for the caller to
// increment shadowproxy_diff_fields_total{route,target,field}; a field
// differing in several array elements counts once per comparison.
func (s *Stats) Record(ev Event) []string {
	t := ev.Time
	if t.IsZero() {
		t = s.now()
	}
	var paths, raw []string
	if ev.Result.Outcome != Learning {
		// Learning results carry no verdict: their fields would stay in
		// the top fields for good, next to the same fields learnt as noise.
		for _, d := range ev.Result.Differences {
			p := NormalizePath(d.Path)
			if !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
		raw = slices.Clone(ev.RawFields)
	}
	var sample Sample
	keep := ev.Result.Outcome == Mismatch && s.maxSamples > 0
	if keep {
		// Redaction happens before the lock and before storing: the store
		// never holds a secret.
		sample = Sample{
			Time:          t,
			Method:        ev.Method,
			URI:           redactQuery(ev.URI, s.redactKeys),
			RequestID:     ev.RequestID,
			PrimaryStatus: ev.PrimaryStatus,
			ShadowStatus:  ev.ShadowStatus,
			Differences:   redactDifferences(ev.Result.Differences, s.redact),
			Omitted:       ev.Result.Omitted,
			Note:          ev.Result.Note,
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.total.add(ev.Result.Outcome)
	sec := t.Unix()
	sl := &s.ring[mod(sec, ringSlots)]
	switch {
	case sl.sec == sec:
		sl.counts.add(ev.Result.Outcome)
	case sl.sec < sec:
		*sl = slot{sec: sec}
		sl.counts.add(ev.Result.Outcome)
	default:
		// Older than the ring: it only counts in the totals.
	}
	paths = dedupeLabels(s.labelsLocked(paths))
	raw = dedupeLabels(s.labelsLocked(raw))
	// Several fields past the cap are one "other" per comparison, as the
	// caller's metric will count it.
	for _, p := range paths {
		s.fields[p].Count++
	}
	for _, p := range raw {
		s.fields[p].Raw++
	}
	if ev.PrimaryLatency > 0 {
		s.primary.Add(ev.PrimaryLatency)
	}
	if ev.ShadowLatency > 0 {
		s.shadow.Add(ev.ShadowLatency)
	}
	if keep {
		if len(s.samples) < s.maxSamples {
			s.samples = append(s.samples, sample)
		} else {
			s.samples[s.next] = sample
		}
		s.next = (s.next + 1) % s.maxSamples
		s.nSamples = min(s.nSamples+1, s.maxSamples)
	}
	return paths
}

// labelsLocked maps field paths to their labels, creating counters for new
// fields while fewer than max_fields exist and using "other" beyond.
func (s *Stats) labelsLocked(paths []string) []string {
	for i, p := range paths {
		if _, ok := s.fields[p]; !ok {
			if s.named >= s.maxFields {
				paths[i] = OtherField
				s.capped = true
				if s.fields[OtherField] == nil {
					s.fields[OtherField] = &FieldCount{Field: OtherField}
				}
				continue
			}
			s.named++
			s.fields[p] = &FieldCount{Field: p}
		}
	}
	return paths
}

// dedupeLabels removes repeated "other" labels, keeping order.
func dedupeLabels(labels []string) []string {
	out := labels[:0]
	for _, l := range labels {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

func mod(a, n int64) int64 { return ((a % n) + n) % n }

// Summary returns the current aggregates.
func (s *Stats) Summary() Summary {
	now := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Summary{Counts: s.total, Since: s.start, FieldsCapped: s.capped}
	for i := range s.ring {
		sl := &s.ring[i]
		age := now - sl.sec
		if sl.sec == math.MinInt64 || age < 0 {
			continue
		}
		if age < 60 {
			snap.Counts1m.plus(sl.counts)
		}
		if age < ringSlots {
			snap.Counts5m.plus(sl.counts)
		}
	}
	snap.MatchRate1m = snap.Counts1m.MatchRate()
	snap.MatchRate5m = snap.Counts5m.MatchRate()
	snap.MatchRateTotal = snap.Counts.MatchRate()
	snap.TopFields = s.topFieldsLocked(TopFieldsInSummary)
	snap.Latency = LatencySummary{Primary: quantiles(&s.primary), Shadow: quantiles(&s.shadow)}
	return snap
}

// TopFields returns up to n fields with the most mismatches, most first
// (n <= 0: all of them, at most max_fields+1).
func (s *Stats) TopFields(n int) []FieldCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topFieldsLocked(n)
}

func (s *Stats) topFieldsLocked(n int) []FieldCount {
	out := make([]FieldCount, 0, len(s.fields))
	for _, c := range s.fields {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b FieldCount) int {
		switch {
		case a.Count > b.Count:
			return -1
		case a.Count < b.Count:
			return 1
		case a.Raw > b.Raw:
			return -1
		case a.Raw < b.Raw:
			return 1
		}
		return strings.Compare(a.Field, b.Field)
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Samples returns up to limit stored mismatches, newest first (limit <= 0:
// all). A non-empty field keeps only samples with a difference on that field:
// a normalized path ("/items/*/id", "status", "header/Etag") or any ignore
// pattern ("**/id"), matched against each difference path and its ancestors.
// The returned samples share their Differences with the store; do not
// modify them.
func (s *Stats) Samples(limit int, field string) []Sample {
	var pat *Pattern
	if strings.HasPrefix(field, "/") || strings.HasPrefix(field, "**") {
		if p, err := ParsePattern(field); err == nil {
			p = p.subtree()
			pat = &p
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Sample
	for k := 0; k < s.nSamples; k++ {
		if limit > 0 && len(out) >= limit {
			break
		}
		i := int(mod(int64(s.next-1-k), int64(s.maxSamples)))
		sm := s.samples[i]
		if field != "" && !sampleHasField(&sm, field, pat) {
			continue
		}
		out = append(out, sm)
	}
	return out
}

func sampleHasField(sm *Sample, field string, pat *Pattern) bool {
	for _, d := range sm.Differences {
		if d.Path == field || NormalizePath(d.Path) == field {
			return true
		}
		if pat != nil && pat.Match(d.Path) {
			return true
		}
	}
	return false
}

// redactDifferences copies differences with secret values replaced: the
// values of Authorization, Proxy-Authorization, Cookie and Set-Cookie
// headers, and body paths matching a redaction pattern. Compare already
// redacts inside rendered values; this catches results built elsewhere.
func redactDifferences(ds []Difference, redact []Pattern) []Difference {
	out := slices.Clone(ds)
	for i := range out {
		d := &out[i]
		secret := false
		switch {
		case strings.HasPrefix(d.Path, HeaderPathPrefix):
			secret = sensitiveHeader(canonicalHeader(d.Path[len(HeaderPathPrefix):]))
		case strings.HasPrefix(d.Path, "/"):
			if segs, err := splitPointer(d.Path); err == nil {
				secret = redactedSegs(redact, segs)
			}
		}
		if secret {
			if d.Primary != "" {
				d.Primary = redactedValue
			}
			if d.Shadow != "" {
				d.Shadow = redactedValue
			}
		}
	}
	return out
}

func canonicalHeader(h string) string {
	for _, n := range [...]string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"} {
		if strings.EqualFold(h, n) {
			return n
		}
	}
	return h
}

// redactQuery replaces the values of query parameters named like a redacted
// field (token, password, ...) with [REDACTED]: tokens in URLs are common.
func redactQuery(uri string, keys []string) string {
	q := strings.IndexByte(uri, '?')
	if q < 0 || len(keys) == 0 {
		return uri
	}
	var b strings.Builder
	changed := false
	b.WriteString(uri[:q+1])
	frag := ""
	query := uri[q+1:]
	if h := strings.IndexByte(query, '#'); h >= 0 {
		query, frag = query[:h], query[h:]
	}
	for i, part := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		name, _, hasValue := strings.Cut(part, "=")
		secret := false
		for _, k := range keys {
			if strings.EqualFold(name, k) {
				secret = true
				break
			}
		}
		if secret && hasValue {
			b.WriteString(name)
			b.WriteString("=[REDACTED]")
			changed = true
			continue
		}
		b.WriteString(part)
	}
	if !changed {
		return uri
	}
	b.WriteString(frag)
	return b.String()
}

func quantiles(h *histogram.Histogram) Quantiles {
	return Quantiles{Count: h.Count(), P50: h.Quantile(0.50), P95: h.Quantile(0.95), P99: h.Quantile(0.99)}
}
