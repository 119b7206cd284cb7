package diff

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// noiseRig is a tracker for one endpoint with helpers to feed it.
type noiseRig struct {
	t     *testing.T
	rules *Rules
	tr    *NoiseTracker
}

func newNoiseRig(t *testing.T, spec Spec) *noiseRig {
	if spec.Secondary == "" {
		spec.Secondary = "twin"
	}
	r := mustRules(t, spec)
	return &noiseRig{t: t, rules: r, tr: NewNoiseTracker(r)}
}

// observe feeds one primary/secondary pair.
func (g *noiseRig) observe(primary, secondary string) *Observation {
	o := ObserveSecondary(jsonCap(200, primary), jsonCap(200, secondary), g.rules)
	g.tr.Observe(o)
	return o
}

// judge compares primary and candidate, with the request's secondary
// observation or nil.
func (g *noiseRig) judge(primary, candidate string, sec *Observation) Judgement {
	return g.tr.Judge("cand", jsonCap(200, primary), jsonCap(200, candidate), g.rules, sec)
}

func paths(r Result) string {
	var out []string
	for _, d := range r.Differences {
		out = append(out, d.Kind.String()+" "+d.Path)
	}
	return strings.Join(out, ",")
}

func TestNoiseLearningOutcome(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 10}})
	for i := 0; i < 9; i++ {
		g.observe(`{"a":1}`, `{"a":1}`)
		if j := g.judge(`{"a":1}`, `{"a":2}`, nil); j.Result.Outcome != Learning {
			t.Fatalf("observation %d: %v, want learning", i+1, j.Result.Outcome)
		}
	}
	g.observe(`{"a":1}`, `{"a":1}`)
	if j := g.judge(`{"a":1}`, `{"a":2}`, nil); j.Result.Outcome != Mismatch {
		t.Fatalf("after min_observations: %v", j.Result.Outcome)
	}
	// Without a secondary nothing is learnt and nothing is withheld.
	r := mustRules(t, Spec{})
	if j := NewNoiseTracker(r).Judge("c", jsonCap(200, `1`), jsonCap(200, `2`), r, nil); j.Result.Outcome != Mismatch {
		t.Errorf("no secondary: %v", j.Result.Outcome)
	}
	// Reset starts learning again.
	g.tr.Reset()
	if !g.tr.Learning() {
		t.Error("Reset did not restart learning")
	}
}

// TestNoisePerRequestIsKindAware: the secondary's disagreement on the same
// request cancels the same path and kind only.
func TestNoisePerRequestIsKindAware(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 1}})
	const p = `{"ts":"a","meta":{"v":1},"n":1}`
	tests := []struct {
		name, secondary, candidate, want string
	}{
		{"same value noise", `{"ts":"b","meta":{"v":1},"n":1}`, `{"ts":"c","meta":{"v":1},"n":1}`, ""},
		{"value noise does not hide a type change", `{"ts":"b","meta":{"v":1},"n":1}`, `{"ts":5,"meta":{"v":1},"n":1}`, "type /ts"},
		{"value noise does not hide a removal", `{"ts":"b","meta":{"v":1},"n":1}`, `{"meta":{"v":1},"n":1}`, "removed /ts"},
		{"other paths stay", `{"ts":"b","meta":{"v":1},"n":1}`, `{"ts":"c","meta":{"v":1},"n":2}`, "changed /n"},
		{"value noise does not cover descendants", `{"ts":"a","meta":{"v":2},"n":1}`, `{"ts":"a","meta":{"v":1,"w":1},"n":1}`, "added /meta/w"},
		{"structural noise covers descendants", `{"ts":"a","meta":[],"n":1}`, `{"ts":"a","meta":{"v":3},"n":1}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec := g.observe(p, tt.secondary)
			j := g.judge(p, tt.candidate, sec)
			if got := paths(j.Result); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNoiseComparativeBoundary pins the comparative rule at its edge: noise
// rate rn = 10%, threshold 5%, relative 20%: a candidate rate of exactly
// 15% is explained, 16% is not.
func TestNoiseComparativeBoundary(t *testing.T) {
	for _, tc := range []struct {
		prior int // candidate differences among the 99 earlier comparisons
		want  Outcome
	}{{14, Match}, {15, Mismatch}} {
		g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 100, Threshold: 0.05, Relative: 0.2}})
		for i := 0; i < 100; i++ {
			if i%10 == 0 {
				g.observe(`{"f":1}`, `{"f":2}`)
			} else {
				g.observe(`{"f":1}`, `{"f":1}`)
			}
		}
		for i := 0; i < 99; i++ {
			cand := `{"f":1}`
			if i < tc.prior {
				cand = `{"f":3}`
			}
			g.judge(`{"f":1}`, cand, nil)
		}
		// This comparison is the 100th: rc = (prior+1)/100.
		if j := g.judge(`{"f":1}`, `{"f":3}`, nil); j.Result.Outcome != tc.want {
			t.Errorf("rc=%d%%: %v, want %v", tc.prior+1, j.Result.Outcome, tc.want)
		}
	}
}

// TestNoiseRegressionOnNoisyField is the bug that started it: a field noisy
// in 6% of requests must not hide a candidate that always differs on it.
func TestNoiseRegressionOnNoisyField(t *testing.T) {
	g := newNoiseRig(t, Spec{})
	mism := 0
	for i := 0; i < 1000; i++ {
		sec := `{"price":10}`
		if i%50 < 3 {
			sec = `{"price":11}` // 6%
		}
		o := g.observe(`{"price":10}`, sec)
		j := g.judge(`{"price":10}`, `{"price":1000}`, o)
		if i >= DefaultMinObservations && j.Result.Outcome == Mismatch {
			mism++
		}
	}
	// Per request, the 6% where the secondary also differed are cancelled.
	if want := 900 * 94 / 100; mism < want-5 {
		t.Errorf("regression reported in %d of 900 requests, want about %d", mism, want)
	}
}

func TestNoiseFilteredBeforeCap(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 1}})
	doc := func(ts string, change int) string {
		var items []string
		for i := 0; i < 150; i++ {
			v := 1
			if i == 77 {
				v = change
			}
			items = append(items, fmt.Sprintf(`{"ts":"%s","v":%d}`, ts, v))
		}
		return `{"items":[` + strings.Join(items, ",") + `]}`
	}
	sec := g.observe(doc("p", 1), doc("s", 1))
	j := g.judge(doc("p", 1), doc("c", 2), sec)
	if got := paths(j.Result); got != "changed /items/77/v" || j.Result.Omitted != 0 || j.Result.NoiseFiltered != 150 {
		t.Errorf("got %q, omitted %d, filtered %d", got, j.Result.Omitted, j.Result.NoiseFiltered)
	}
}

// TestNoiseBytesBodyDoesNotCoverJSON: an HTML page with a nonce is noisy as
// a whole body; that must not hide JSON differences.
func TestNoiseBytesBodyDoesNotCoverJSON(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 10}})
	html := func(n int) *Capture {
		return &Capture{Status: 200, ContentType: "text/html", Body: []byte(fmt.Sprintf("<p nonce=%d>", n))}
	}
	for i := 0; i < 20; i++ {
		g.tr.Observe(ObserveSecondary(html(i), html(i+1000), g.rules))
	}
	if j := g.tr.Judge("cand", html(1), html(2), g.rules, nil); j.Result.Outcome != Match {
		t.Errorf("html nonce: %v %s", j.Result.Outcome, paths(j.Result))
	}
	if j := g.judge(`1`, `2`, nil); j.Result.Outcome != Mismatch {
		t.Errorf("top-level JSON change hidden by byte-body noise: %v", j.Result.Outcome)
	}
}

func TestNoiseAlwaysAndNever(t *testing.T) {
	g := newNoiseRig(t, Spec{AlwaysNoise: []string{"/build/**", "header/X-Build"}, NeverNoise: []string{"/price"}, Noise: NoiseSpec{MinObservations: 1}})
	sec := g.observe(`{"price":1,"build":{"n":1}}`, `{"price":2,"build":{"n":1}}`)
	j := g.judge(`{"price":1,"build":{"n":1}}`, `{"price":2,"build":{"n":9}}`, sec)
	if got := paths(j.Result); got != "changed /price" {
		t.Errorf("got %q: never_noise must win over the secondary, always_noise must drop /build", got)
	}
}

// TestNoiseFadesWithinWindow: noise not seen for noise.window observations
// is forgotten (default 1,000).
func TestNoiseFadesWithinWindow(t *testing.T) {
	g := newNoiseRig(t, Spec{})
	for i := 0; i < 300; i++ {
		g.observe(`{"f":1}`, `{"f":2}`) // always noisy
	}
	clean := 0
	for ; clean <= 2*DefaultNoiseWindow && g.tr.NoisyCount() > 0; clean++ {
		g.observe(`{"f":1}`, `{"f":1}`)
	}
	if j := g.judge(`{"f":1}`, `{"f":3}`, nil); j.Result.Outcome != Mismatch {
		t.Errorf("faded noise still explains a difference: %v", j.Result.Outcome)
	}
	if clean > DefaultNoiseWindow || clean < DefaultNoiseWindow*9/10 {
		t.Errorf("noise faded after %d clean observations, want within (0.9·window, window]", clean)
	}
}

func TestNoiseTrackerBounded(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MaxPaths: 3}})
	for i := 0; i < 10; i++ {
		g.observe(`{}`, fmt.Sprintf(`{"k%d":1}`, i))
	}
	if n := len(g.tr.Fields()); n != 3 || g.tr.Dropped() != 7 {
		t.Errorf("tracked %d, dropped %d", n, g.tr.Dropped())
	}
	// Uncomparable and status-changing observations teach nothing.
	g.tr.Observe(ObserveSecondary(jsonCap(200, `1`), jsonCap(500, `2`), g.rules))
	if _, skipped := g.tr.Observations(); skipped != 1 {
		t.Errorf("skipped = %d", skipped)
	}
}

func TestNoiseTrackerConcurrent(t *testing.T) {
	g := newNoiseRig(t, Spec{Noise: NoiseSpec{MinObservations: 5}})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				o := g.observe(`{"a":1,"b":2}`, fmt.Sprintf(`{"a":%d,"b":2}`, i%3))
				g.judge(`{"a":1,"b":2}`, `{"a":7,"b":3}`, o)
				g.tr.Fields()
			}
		}()
	}
	wg.Wait()
	if n, _ := g.tr.Observations(); n != 800 {
		t.Errorf("observations %d", n)
	}
}
