package fleet

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
)

// BenchmarkTransitionReachesMembers measures one revision-checked state
// write until all three members' watches have delivered it: the latency
// of a fleet transition on loopback.
func BenchmarkTransitionReachesMembers(b *testing.B) {
	e := fleettest.StartEtcd(b)
	var seen [3]atomic.Int64
	var nodes []*Node
	for i := range 3 {
		cli, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, DialTimeout: 2 * time.Second}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		n, err := New(Options{Client: cli, Prefix: "/sp/bench", Name: string(rune('a' + i)), Advertise: "http://127.0.0.1:1",
			LeaseTTL: 2 * time.Second, OnState: func(v Versioned) { seen[i].Store(v.Rev) }})
		if err != nil {
			b.Fatal(err)
		}
		n.Start()
		defer n.Close()
		if err := n.WaitSynced(context.Background()); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	s := nodes[0].CommandStore()
	ctx := context.Background()
	var rev int64
	start := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		st := RouteState{Route: "api", State: "progressing", PercentBP: uint32(i % 10000), StepStartedAt: start}
		r, err := s.CompareAndSave(ctx, st, rev)
		if err != nil {
			b.Fatal(err)
		}
		rev = r
		for k := range seen {
			for seen[k].Load() < rev {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
}
