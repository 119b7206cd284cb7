package diff

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// response renders a fake API answer. The volatile parts depend on seed,
// so two "instances of the same version" disagree on them.
func response(id int, seed uint64, rng *rand.Rand, price string) string {
	cache := "false"
	if rng.IntN(100) < 30 { // nondeterministic 30% of the time
		cache = "true"
	}
	flake := 0
	if rng.IntN(1000) == 0 { // ~0.1%: below any sensible threshold
		flake = 1
	}
	return fmt.Sprintf(`{"id":%d,"price":%s,"timestamp":"t%d","cache_hit":%s,"flake":%d,`+
		`"items":[{"sku":"a","requestId":"r%d"},{"sku":"b","requestId":"r%d"}]}`,
		id, price, seed, cache, flake, seed, seed+1)
}

func TestNoiseTrackerLearnsAndFilters(t *testing.T) {
	rules := mustRules(t, Spec{})
	tr := NewNoiseTracker(rules)
	rng := rand.New(rand.NewPCG(1, 2))

	shadowDiff := func(i int) Result {
		p := jsonCap(200, response(i, rng.Uint64(), rng, "10"))
		s := jsonCap(200, response(i, rng.Uint64(), rng, "11")) // the real regression
		return Compare(p, s, rules)
	}

	// Before enough observations, nothing is filtered.
	for i := 0; i < DefaultMinObservations-1; i++ {
		tr.Observe(Compare(jsonCap(200, response(i, rng.Uint64(), rng, "10")), jsonCap(200, response(i, rng.Uint64(), rng, "10")), rules))
	}
	if r := tr.Filter(shadowDiff(0)); r.NoiseFiltered != 0 {
		t.Fatalf("filtered before min_observations: %+v", r)
	}

	for i := 0; i < 500; i++ {
		tr.Observe(Compare(jsonCap(200, response(i, rng.Uint64(), rng, "10")), jsonCap(200, response(i, rng.Uint64(), rng, "10")), rules))
	}
	// A secondary that failed or answered with another status teaches
	// nothing.
	tr.Observe(Result{Outcome: Uncomparable})
	tr.Observe(Result{Outcome: Mismatch, Differences: []Difference{{Path: "status", Kind: Changed}, {Path: "/price", Kind: Changed}}})
	counted, skipped := tr.Observations()
	if counted != DefaultMinObservations-1+500 || skipped != 2 {
		t.Errorf("observations = %d counted, %d skipped", counted, skipped)
	}

	noisy := map[string]bool{}
	for _, f := range tr.Snapshot() {
		if f.Noisy {
			noisy[f.Path] = true
		}
		if f.Observations != counted || f.Rate != float64(f.Disagreements)/float64(counted) {
			t.Errorf("inconsistent field %+v", f)
		}
	}
	wantNoisy := map[string]bool{"/timestamp": true, "/items/*/requestId": true, "/cache_hit": true}
	if !reflect.DeepEqual(noisy, wantNoisy) {
		t.Errorf("noisy paths = %v, want %v", noisy, wantNoisy)
	}
	if tr.NoisyCount() != len(wantNoisy) {
		t.Errorf("NoisyCount = %d", tr.NoisyCount())
	}

	// The real difference stays; the noise goes.
	r := tr.Filter(shadowDiff(1))
	if r.Outcome != Mismatch {
		t.Fatalf("real regression filtered away: %+v", r)
	}
	for _, d := range r.Differences {
		if wantNoisy[NormalizePath(d.Path)] {
			t.Errorf("noisy difference kept: %+v", d)
		}
	}
	if len(r.Differences) == 0 || r.Differences[0].Path != "/price" || r.NoiseFiltered < 3 {
		t.Errorf("filtered result: %+v", r)
	}

	// A shadow that differs only in noise matches.
	onlyNoise := Compare(jsonCap(200, response(2, 1, rng, "10")), jsonCap(200, response(2, 2, rng, "10")), rules)
	if onlyNoise.Outcome != Mismatch {
		t.Fatalf("setup: %+v", onlyNoise)
	}
	before := append([]Difference(nil), onlyNoise.Differences...)
	if f := tr.Filter(onlyNoise); f.Outcome != Match || f.Differences != nil {
		t.Errorf("noise-only result: %+v", f)
	}
	if !reflect.DeepEqual(before, onlyNoise.Differences) {
		t.Error("Filter modified its input")
	}

	// Status is never noise, and children of noisy paths are covered.
	r = tr.Filter(Result{Outcome: Mismatch, Body: BodyJSON, Differences: []Difference{
		{Path: "status", Kind: Changed}, {Path: "/timestamp/nested", Kind: Added},
	}})
	if len(r.Differences) != 1 || r.Differences[0].Path != "status" {
		t.Errorf("status filtering: %+v", r)
	}
	// A body that was not compared cannot become a match.
	r = tr.Filter(Result{Outcome: Mismatch, Body: BodySkipped, Differences: []Difference{{Path: "/timestamp", Kind: Changed}}})
	if r.Outcome != Uncomparable {
		t.Errorf("skipped body: %+v", r)
	}
}

func TestNoiseTrackerThresholdRule(t *testing.T) {
	rules := mustRules(t, Spec{Noise: NoiseSpec{MinObservations: 10, Threshold: 0.2}})
	tr := NewNoiseTracker(rules)
	d := Result{Outcome: Mismatch, Differences: []Difference{{Path: "/x", Kind: Changed}}}
	for i := 0; i < 10; i++ {
		if i < 2 {
			tr.Observe(d) // 2 of 10 = 0.2: not above the threshold
		} else {
			tr.Observe(Result{Outcome: Match})
		}
	}
	if tr.NoisyCount() != 0 {
		t.Errorf("rate equal to the threshold must not be noisy: %+v", tr.Snapshot())
	}
	tr.Observe(d) // 3 of 11
	if tr.NoisyCount() != 1 {
		t.Errorf("rate above the threshold must be noisy: %+v", tr.Snapshot())
	}
	for i := 0; i < 10; i++ {
		tr.Observe(Result{Outcome: Match}) // 3 of 21: decays below
	}
	if tr.NoisyCount() != 0 {
		t.Errorf("a path that stops disagreeing must stop being noisy: %+v", tr.Snapshot())
	}
}

func TestNoiseTrackerBounded(t *testing.T) {
	tr := NewNoiseTracker(mustRules(t, Spec{Noise: NoiseSpec{MaxPaths: 3}}))
	var ds []Difference
	for i := 0; i < 5; i++ {
		ds = append(ds, Difference{Path: fmt.Sprintf("/f%d", i), Kind: Changed})
	}
	tr.Observe(Result{Outcome: Mismatch, Differences: ds})
	tr.Observe(Result{Outcome: Mismatch, Differences: ds})
	if n := len(tr.Snapshot()); n != 3 {
		t.Errorf("tracked %d paths, want 3", n)
	}
	if tr.Dropped() != 4 {
		t.Errorf("dropped = %d, want 4", tr.Dropped())
	}
}

func TestNoiseTrackerConcurrent(t *testing.T) {
	tr := NewNoiseTracker(nil)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				tr.Observe(Result{Outcome: Mismatch, Differences: []Difference{{Path: fmt.Sprintf("/a/%d", i), Kind: Changed}}})
				tr.Filter(Result{Outcome: Mismatch, Differences: []Difference{{Path: "/a/1", Kind: Changed}}})
				_ = tr.Snapshot()
			}
		}()
	}
	wg.Wait()
	if counted, _ := tr.Observations(); counted != 2000 {
		t.Errorf("counted %d", counted)
	}
	if f := tr.Filter(Result{Outcome: Mismatch, Differences: []Difference{{Path: "/a/7", Kind: Changed}}}); f.Outcome != Match {
		t.Errorf("/a/* disagrees every time and should be noise: %+v", f)
	}
}
