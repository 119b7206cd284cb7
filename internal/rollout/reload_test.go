package rollout

import (
	"strings"
	"testing"
	"time"
)

// A controller that reloads the state another one saved in a shared store
// (a fleet's new leader) continues its step and breach streak: the rollback
// comes no later than if the first controller had kept running.
func TestReloadContinuesAnotherControllersStreak(t *testing.T) {
	spec := parseSpec(t, `
steps: [{percent: 50, hold: 1h}, {percent: 100}]
rollback_when: [{metric: error_rate_5xx, above: 20%, for: 2m}]
`)
	failing := cohortModel{errRate: 0.5, median: 40 * time.Millisecond, sigma: 0.5}
	run := func(handover bool) (rolledBack, handedAt time.Time) {
		store := &memStore{}
		s := newSim(t, spec, 41)
		s.canary = failing
		s.opts.StateStore = func(string, *Spec) StateStore { return store }
		s.start()
		// The follower: its own controller and handle on the same store.
		follower := NewController(s.opts)
		fh := &fakeHandle{}
		if err := follower.AddRoute(s.route, s.spec, s.rec, fh); err != nil {
			t.Fatal(err)
		}
		defer follower.Close()
		end := s.runFor(time.Hour, func() bool {
			if handover && handedAt.IsZero() {
				store.mu.Lock()
				streak := strings.Contains(string(store.data), `"breach_since": "2`)
				store.mu.Unlock()
				if streak {
					// The leader dies mid-breach; the follower reloads what
					// it saved and takes over.
					s.ctrl.Close()
					before := s.logs.FilterMessage("restored rollout state").Len()
					if err := follower.Reload(s.route); err != nil {
						t.Fatal(err)
					}
					// A follower reloads on every fleet state change: no
					// info line each time.
					if n := s.logs.FilterMessage("restored rollout state").Len(); n != before {
						t.Errorf("Reload logged %d restore lines at info", n-before)
					}
					s.ctrl, s.handle, handedAt = follower, fh, s.clock.Now()
				}
			}
			return s.status().State == StateRolledBack
		})
		if st := s.status(); st.State != StateRolledBack {
			t.Fatalf("no rollback within an hour: %+v", st)
		}
		return end, handedAt
	}
	want, _ := run(false)
	got, handedAt := run(true)
	if handedAt.IsZero() {
		t.Fatal("test bug: no breach streak was saved, nothing was handed over")
	}
	if !handedAt.Before(got) {
		t.Fatalf("test bug: handed over at %s, after the rollback at %s", handedAt, got)
	}
	if got.After(want) {
		t.Errorf("rolled back at %s after the handover at %s, later than %s without it", got, handedAt, want)
	}
}

// Reload of a route the controller does not manage says so.
func TestReloadUnknownRoute(t *testing.T) {
	c := NewController(Options{})
	if err := c.Reload("nope"); err == nil || !strings.Contains(err.Error(), "unknown rollout route") {
		t.Fatalf("Reload(unknown) = %v", err)
	}
}
