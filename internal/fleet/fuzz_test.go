package fleet

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// FuzzMemberAnswer feeds arbitrary bytes to what the leader does with a
// member's answer: it must decode or refuse, never panic, and a decoded
// window never holds a bucket outside the layout.
func FuzzMemberAnswer(f *testing.F) {
	w := rollout.WindowStats{From: time.Unix(100, 0), To: time.Unix(110, 0)}
	good, _ := json.Marshal(EncodeSlots("a", "api", []rollout.WindowStats{w}))
	f.Add(good)
	f.Add([]byte(`{"slots":[{"buckets":208,"canary":{"hist":[[3,4],[207,1]]}}]}`))
	f.Add([]byte(`{"slots":[{"buckets":208,"canary":{"hist":[[18446744073709551615,1]]}}]}`))
	f.Add([]byte(`{"slots":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ws WireSlots
		if json.Unmarshal(b, &ws) != nil {
			return
		}
		for i := range ws.Slots {
			st, err := ws.Slots[i].Decode()
			if err != nil {
				continue
			}
			if n := len(st.Canary.Histogram()); n != rollout.HistogramBuckets {
				t.Fatalf("decoded histogram has %d buckets", n)
			}
		}
	})
}

// FuzzFleetState: a state key holding anything is refused or read as a
// valid state, never a panic or an out-of-range share.
func FuzzFleetState(f *testing.F) {
	good, _ := json.Marshal(RouteState{Route: "api", State: "progressing", PercentBP: 1000, StepStartedAt: time.Unix(1, 0)})
	f.Add(good)
	f.Add([]byte(`{"route":"api","percent_bp":10001}`))
	f.Add([]byte(`{"route":"","step":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeState(b, 1)
		if err == nil && (v.Route == "" || v.PercentBP > 10000 || v.Step < 0) {
			t.Fatalf("accepted %+v", v.RouteState)
		}
	})
}

// FuzzWindowQuery: any query string is parsed or refused with a message.
func FuzzWindowQuery(f *testing.F) {
	f.Add("route=api&from=1&to=2")
	f.Add("route=&from=x&to=2")
	f.Add("route=api&from=5&to=1")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		route, from, to, err := ParseWindowQuery(q)
		if err == nil && (route == "" || to.Before(from)) {
			t.Fatalf("accepted route %q from %v to %v", route, from, to)
		}
	})
}
