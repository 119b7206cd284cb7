package diff

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/testkit"
)

func newClock() *testkit.Clock { return testkit.NewClock(testkit.Epoch) }

func mismatch(paths ...string) Result {
	r := Result{Outcome: Mismatch, Body: BodyJSON}
	for _, p := range paths {
		r.Differences = append(r.Differences, Difference{Path: p, Kind: Changed, Primary: "1", Shadow: "2"})
	}
	return r
}

func rate(p *float64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprintf("%.3f", *p)
}

func TestStatsWindowsRollOver(t *testing.T) {
	clk := newClock()
	s := NewStats(mustRules(t, Spec{}), clk.Now)
	if snap := s.Summary(); snap.MatchRate1m != nil || snap.MatchRateTotal != nil {
		t.Fatalf("empty stats must have no rate: %+v", snap)
	}
	// Minute 0: 9 matches, 1 mismatch, 5 uncomparable (which do not count).
	for i := 0; i < 9; i++ {
		s.Record(Event{Result: Result{Outcome: Match}})
	}
	s.Record(Event{Result: mismatch("/a")})
	for i := 0; i < 5; i++ {
		s.Record(Event{Result: Result{Outcome: Uncomparable}})
	}
	snap := s.Summary()
	if rate(snap.MatchRate1m) != "0.900" || rate(snap.MatchRate5m) != "0.900" || rate(snap.MatchRateTotal) != "0.900" {
		t.Errorf("minute 0 rates: 1m=%s 5m=%s total=%s", rate(snap.MatchRate1m), rate(snap.MatchRate5m), rate(snap.MatchRateTotal))
	}
	if snap.Counts != (Counts{Match: 9, Mismatch: 1, Uncomparable: 5}) || snap.Counts.Total() != 15 {
		t.Errorf("counts %+v", snap.Counts)
	}

	// Minute 2: all mismatches. The 1m window forgets minute 0.
	clk.Advance(2 * time.Minute)
	for i := 0; i < 10; i++ {
		s.Record(Event{Result: mismatch("/b")})
	}
	snap = s.Summary()
	if rate(snap.MatchRate1m) != "0.000" || rate(snap.MatchRate5m) != "0.450" || rate(snap.MatchRateTotal) != "0.450" {
		t.Errorf("minute 2 rates: 1m=%s 5m=%s total=%s", rate(snap.MatchRate1m), rate(snap.MatchRate5m), rate(snap.MatchRateTotal))
	}

	// Just inside and just outside the windows.
	clk.Advance(59 * time.Second)
	if snap = s.Summary(); snap.Counts1m.Mismatch != 10 {
		t.Errorf("59s later the 1m window should still hold minute 2: %+v", snap.Counts1m)
	}
	clk.Advance(time.Second)
	if snap = s.Summary(); snap.MatchRate1m != nil || snap.Counts1m.Total() != 0 {
		t.Errorf("60s later the 1m window should be empty: %+v", snap.Counts1m)
	}

	// Minute 6: the 5m window has forgotten minute 0 but not minute 2.
	clk.Advance(3 * time.Minute)
	snap = s.Summary()
	if snap.Counts5m.Match != 0 || snap.Counts5m.Mismatch != 10 || rate(snap.MatchRateTotal) != "0.450" {
		t.Errorf("minute 6: 5m=%+v total=%s", snap.Counts5m, rate(snap.MatchRateTotal))
	}
	// Long after, ring slots are reused without leaking old counts.
	clk.Advance(time.Hour)
	s.Record(Event{Result: Result{Outcome: Match}})
	snap = s.Summary()
	if snap.Counts5m != (Counts{Match: 1}) || snap.Counts1m != (Counts{Match: 1}) {
		t.Errorf("after an hour: 1m=%+v 5m=%+v", snap.Counts1m, snap.Counts5m)
	}
	// An event stamped earlier than the ring covers counts in totals only.
	s.Record(Event{Time: clk.Now().Add(-time.Hour), Result: Result{Outcome: Match}})
	if snap2 := s.Summary(); snap2.Counts5m != snap.Counts5m || snap2.Counts.Match != snap.Counts.Match+1 {
		t.Errorf("old event: %+v %+v", snap2.Counts5m, snap2.Counts)
	}
}

func TestStatsFieldCap(t *testing.T) {
	s := NewStats(mustRules(t, Spec{MaxFields: 3}), newClock().Now)
	got := s.Record(Event{Result: mismatch("/a/0/x", "/a/1/x", "/b", "status")})
	if !reflect.DeepEqual(got, []string{"/a/*/x", "/b", "status"}) {
		t.Errorf("labels = %v", got)
	}
	got = s.Record(Event{Result: mismatch("/c", "/d", "/b", "header/Etag")})
	if !reflect.DeepEqual(got, []string{OtherField, "/b"}) {
		t.Errorf("labels past the cap = %v", got)
	}
	top := s.TopFields(0)
	want := []FieldCount{{"/b", 2, 0}, {"/a/*/x", 1, 0}, {OtherField, 1, 0}, {"status", 1, 0}}
	if !reflect.DeepEqual(top, want) {
		t.Errorf("top fields = %v, want %v", top, want)
	}
	if snap := s.Summary(); !snap.FieldsCapped || len(snap.TopFields) != 4 {
		t.Errorf("snapshot: %+v", snap)
	}
	if len(s.TopFields(2)) != 2 {
		t.Error("TopFields(2)")
	}
	if got := s.Record(Event{Result: Result{Outcome: Match}}); len(got) != 0 {
		t.Errorf("a match has labels %v", got)
	}
}

func TestStatsSamples(t *testing.T) {
	clk := newClock()
	s := NewStats(mustRules(t, Spec{Samples: 3, Redact: []string{"/user/ssn"}}), clk.Now)
	for i := 0; i < 5; i++ {
		clk.Advance(time.Second)
		s.Record(Event{
			Method: "GET", URI: fmt.Sprintf("/orders/%d?access_token=s3cret&page=2", i), RequestID: fmt.Sprint("req-", i),
			PrimaryStatus: 200, ShadowStatus: 200,
			Result: mismatch(fmt.Sprintf("/items/%d/price", i)),
		})
		s.Record(Event{Result: Result{Outcome: Match}}) // never stored
	}
	all := s.Samples(0, "")
	if len(all) != 3 {
		t.Fatalf("stored %d samples, want 3", len(all))
	}
	for i, sm := range all {
		want := fmt.Sprint("req-", 4-i)
		if sm.RequestID != want {
			t.Errorf("sample %d is %s, want %s (newest first)", i, sm.RequestID, want)
		}
		if !sm.Time.Equal(newClock().Now().Add(time.Duration(5-i) * time.Second)) {
			t.Errorf("sample %d time %v", i, sm.Time)
		}
		if strings.Contains(sm.URI, "s3cret") || !strings.Contains(sm.URI, "access_token=[REDACTED]&page=2") {
			t.Errorf("URI not redacted: %s", sm.URI)
		}
	}
	if got := s.Samples(2, ""); len(got) != 2 || got[0].RequestID != "req-4" {
		t.Errorf("limit: %+v", got)
	}
	if got := s.Samples(0, "/items/*/price"); len(got) != 3 {
		t.Errorf("filter by normalized field: %d", len(got))
	}
	if got := s.Samples(0, "/items/3/price"); len(got) != 1 || got[0].RequestID != "req-3" {
		t.Errorf("filter by exact path: %+v", got)
	}
	if got := s.Samples(0, "**/price"); len(got) != 3 {
		t.Errorf("filter by pattern: %d", len(got))
	}
	if got := s.Samples(0, "/items"); len(got) != 3 {
		t.Errorf("filter by ancestor pattern: %d", len(got))
	}
	if got := s.Samples(0, "/nope"); len(got) != 0 {
		t.Errorf("filter by unknown field: %d", len(got))
	}

	// Redaction of differences built outside Compare: secret headers and
	// configured or default body patterns.
	s.Record(Event{Result: Result{Outcome: Mismatch, Differences: []Difference{
		{Path: "header/Authorization", Kind: Changed, Primary: `"Bearer a"`, Shadow: `"Bearer b"`},
		{Path: "header/cookie", Kind: Added, Shadow: `"sid=1"`},
		{Path: "/user/ssn", Kind: Changed, Primary: `"123"`, Shadow: `"124"`},
		{Path: "/auth/Token", Kind: Removed, Primary: `"t"`},
		{Path: "/user/name", Kind: Changed, Primary: `"a"`, Shadow: `"b"`},
	}}})
	got := s.Samples(1, "")[0].Differences
	want := []Difference{
		{Path: "header/Authorization", Kind: Changed, Primary: redactedValue, Shadow: redactedValue},
		{Path: "header/cookie", Kind: Added, Shadow: redactedValue},
		{Path: "/user/ssn", Kind: Changed, Primary: redactedValue, Shadow: redactedValue},
		{Path: "/auth/Token", Kind: Removed, Primary: redactedValue},
		{Path: "/user/name", Kind: Changed, Primary: `"a"`, Shadow: `"b"`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("redacted:\n got %+v\nwant %+v", got, want)
	}

	if none := NewStats(mustRules(t, Spec{}), nil); len(none.Samples(10, "")) != 0 {
		t.Error("fresh stats have samples")
	}
}

func TestStatsQuantiles(t *testing.T) {
	s := NewStats(mustRules(t, Spec{}), newClock().Now)
	rng := rand.New(rand.NewPCG(7, 8))
	var primary, shadow []time.Duration
	for i := 0; i < 20000; i++ {
		// Log-normal-ish latencies from ~50µs to ~2s.
		p := time.Duration(math.Exp(rng.NormFloat64()*1.5+math.Log(5e6))) + 20*time.Microsecond
		sh := p * 3 / 2
		primary = append(primary, p)
		shadow = append(shadow, sh)
		s.Record(Event{PrimaryLatency: p, ShadowLatency: sh, Result: Result{Outcome: Match}})
	}
	snap := s.Summary()
	check := func(name string, got Quantiles, samples []time.Duration) {
		slices.Sort(samples)
		if got.Count != uint64(len(samples)) {
			t.Errorf("%s count %d", name, got.Count)
		}
		for _, q := range []struct {
			q   float64
			got float64
		}{{0.50, got.P50}, {0.95, got.P95}, {0.99, got.P99}} {
			exact := samples[int(math.Ceil(q.q*float64(len(samples))))-1].Seconds()
			if rel := math.Abs(q.got-exact) / exact; rel > 0.045 {
				t.Errorf("%s p%v = %v, exact %v: error %.2f%% exceeds 4.5%%", name, q.q*100, q.got, exact, rel*100)
			}
		}
	}
	check("primary", snap.Latency.Primary, primary)
	check("shadow", snap.Latency.Shadow, shadow)
}

func TestSnapshotJSONShape(t *testing.T) {
	clk := newClock()
	s := NewStats(mustRules(t, Spec{}), clk.Now)
	s.Record(Event{PrimaryLatency: 10 * time.Millisecond, ShadowLatency: 20 * time.Millisecond, Result: mismatch("/a")})
	s.Record(Event{Result: Result{Outcome: Match}})
	raw, err := json.Marshal(s.Summary())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"match_rate_1m", "match_rate_5m", "match_rate_total", "counts", "counts_1m", "counts_5m", "top_fields", "fields_capped", "latency", "since"} {
		if _, ok := m[k]; !ok {
			t.Errorf("snapshot JSON lacks %q: %s", k, raw)
		}
	}
	lat := m["latency"].(map[string]any)
	p50 := lat["shadow"].(map[string]any)["p50"].(float64)
	if p50 < 0.019 || p50 > 0.021 {
		t.Errorf("shadow p50 in seconds = %v: %s", p50, raw)
	}
	if m["match_rate_total"].(float64) != 0.5 {
		t.Errorf("match_rate_total: %s", raw)
	}

	sm, err := json.Marshal(s.Samples(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"time":"2025-03-01T12:00:00Z","method":"","uri":"","primary_status":0,"shadow_status":0,"differences":[{"path":"/a","kind":"changed","primary":"1","shadow":"2"}]}]`
	if string(sm) != want {
		t.Errorf("samples JSON:\n got %s\nwant %s", sm, want)
	}
}

func TestStatsConcurrent(t *testing.T) {
	clk := newClock()
	s := NewStats(mustRules(t, Spec{Samples: 10, MaxFields: 5}), clk.Now)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				s.Record(Event{PrimaryLatency: time.Millisecond, Result: mismatch(fmt.Sprintf("/f%d", i%10))})
				if i%100 == 0 {
					clk.Advance(time.Second)
					_ = s.Summary()
					_ = s.Samples(5, "/f1")
				}
			}
		}(g)
	}
	wg.Wait()
	snap := s.Summary()
	if snap.Counts.Mismatch != 4000 || len(s.Samples(0, "")) != 10 || len(snap.TopFields) != 6 {
		t.Errorf("after concurrent use: counts %+v, %d samples, %d fields", snap.Counts, len(s.Samples(0, "")), len(snap.TopFields))
	}
}

// TestStatsLearningAndRawFields: learning results are counted but carry no
// verdict (no match rate, field or sample); raw counts include what noise
// filtering removed.
func TestStatsLearningAndRawFields(t *testing.T) {
	s := NewStats(mustRules(t, Spec{}), newClock().Now)
	learning := mismatch("/a")
	learning.Outcome = Learning
	if labels := s.Record(Event{Result: learning, RawFields: []string{"/a", "/ts"}}); len(labels) != 0 {
		t.Errorf("learning result labelled %v", labels)
	}
	s.Record(Event{Result: Result{Outcome: Match, Body: BodyJSON, NoiseFiltered: 1}, RawFields: []string{"/ts"}})
	s.Record(Event{Result: mismatch("/price"), RawFields: []string{"/price", "/ts"}})
	snap := s.Summary()
	if snap.Counts.Learning != 1 || snap.Counts.Total() != 3 || *snap.MatchRateTotal != 0.5 {
		t.Errorf("counts %+v rate %v", snap.Counts, rate(snap.MatchRateTotal))
	}
	want := []FieldCount{{"/price", 1, 1}, {"/ts", 0, 2}}
	if !reflect.DeepEqual(snap.TopFields, want) {
		t.Errorf("top fields %v, want %v", snap.TopFields, want)
	}
	if n := len(s.Samples(0, "")); n != 1 {
		t.Errorf("%d samples, want only the mismatch", n)
	}
}
