//go:build !race

// The race detector makes sync.Pool drop entries on purpose, so allocation
// counts are only meaningful without it.

package diff

import "testing"

func TestCompareMatchDoesNotAllocate(t *testing.T) {
	rules := mustRules(t, Spec{Ignore: []string{"/ts"}})
	p := jsonCap(200, `{"a":[1,2,{"b":"c"}],"ts":1,"s":"x\u00e9","n":1.0}`)
	s := jsonCap(200, `{"n":1,"ts":2,"s":"xé","a":[1,2,{"b":"c"}]}`)
	Compare(p, s, rules) // warm the pool
	allocs := testing.AllocsPerRun(200, func() {
		if r := Compare(p, s, rules); r.Outcome != Match {
			t.Fatalf("%+v", r)
		}
	})
	// sync.Pool may drop an entry when a GC runs; allow a fraction.
	if allocs > 0.5 {
		t.Errorf("a matching comparison allocated %v times", allocs)
	}
}
