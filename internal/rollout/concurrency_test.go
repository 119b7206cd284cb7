package rollout

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/splitter"
)

// blockingSource answers only when released (or its context ends), and
// records how many lookups were in flight at once.
type blockingSource struct {
	release  chan struct{}
	mu       sync.Mutex
	inflight int
	maxSeen  int
	started  chan struct{}
}

func (s *blockingSource) Value(ctx context.Context, metric string, c splitter.Arm, window time.Duration) (float64, error) {
	s.mu.Lock()
	s.inflight++
	s.maxSeen = max(s.maxSeen, s.inflight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()
	select {
	case s.started <- struct{}{}:
	default:
	}
	select {
	case <-s.release:
		return 0.01, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// A route whose external source hangs neither delays another route's
// health-check rollback nor looks its metrics up one after the other.
func TestHangingExternalSourceDelaysNoOtherRoute(t *testing.T) {
	clock := newClock()
	prober := &fakeProber{}
	src := &blockingSource{release: make(chan struct{}), started: make(chan struct{}, 16)}
	ctrl := NewController(Options{Now: clock.Now, External: src, ExternalTimeout: time.Minute,
		HealthProbe: func(string, HealthCheck) (HealthProber, error) { return prober, nil }})
	slow := parseSpec(t, `
interval: 30s
external_metrics: [conversion_rate, crash_rate]
rollback_when:
  - {metric: conversion_rate, below_baseline: 0.5x}
  - {metric: crash_rate, above: 0.5}
`)
	healthy := parseSpec(t, `
health_check: {path: /healthz}
rollback_when: [{metric: health_check_failures, consecutive: 3}]
`)
	for name, sp := range map[string]Spec{"slow": slow, "probed": healthy} {
		sp2 := sp
		sp2.ApplyDefaults()
		if err := ctrl.AddRoute(name, sp, NewRecorder(clock.Now, sp2.RecorderOptions()...), &fakeHandle{}); err != nil {
			t.Fatal(err)
		}
	}
	prober.set(3)
	done := make(chan struct{})
	go func() {
		ctrl.Tick(clock.Advance(time.Second))
		close(done)
	}()
	<-src.started // the slow route is inside its lookup
	deadline := time.After(20 * time.Second)
	for {
		st, _ := ctrl.RouteStatus("probed")
		if st.State == StateRolledBack {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the probed route was not rolled back while the other route's source hung")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// All three lookups (conversion canary and control, crash canary) are
	// in flight together.
	for {
		src.mu.Lock()
		n := src.inflight
		src.mu.Unlock()
		if n == 3 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("lookups are not concurrent: %d in flight", n)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(src.release)
	<-done
	if st, _ := ctrl.RouteStatus("slow"); st.LastEvaluation == nil || len(st.LastEvaluation.Rollback) != 2 {
		t.Fatalf("slow route: %+v", st.LastEvaluation)
	}
	ctrl.Close()
}
