package main

import (
	"testing"
	"time"
)

// TestGrowthVerdict pins the soak's verdict: only a series that ends far
// above where it started and is still rising fails. A warm-up jump that
// then stays flat, noise, and a spike that came back down all pass.
func TestGrowthVerdict(t *testing.T) {
	series := func(f func(i int) float64) ([]float64, []time.Duration) {
		var xs []float64
		var at []time.Duration
		for i := 0; i < 24; i++ {
			xs = append(xs, f(i))
			at = append(at, time.Duration(i+1)*5*time.Second)
		}
		return xs, at
	}
	tests := []struct {
		name  string
		f     func(i int) float64
		grows bool
	}{
		{"flat", func(int) float64 { return 100 }, false},
		{"noisy but flat", func(i int) float64 { return 100 + float64(i%3*7) }, false},
		{"warm-up jump, then flat", func(i int) float64 { return map[bool]float64{true: 60, false: 180}[i < 4] }, false},
		{"spike that came back", func(i int) float64 { return map[bool]float64{true: 400, false: 100}[i > 10 && i < 16] }, false},
		{"slow growth under the factor", func(i int) float64 { return 100 + float64(i) }, false},
		{"linear leak", func(i int) float64 { return 100 + 40*float64(i) }, true},
		{"accelerating leak", func(i int) float64 { return 100 + float64(i*i) }, true},
	}
	for _, tt := range tests {
		xs, at := series(tt.f)
		tr := analyze(tt.name, "", xs, at, 2, 50)
		if !tr.enoughSamples || tr.grows != tt.grows {
			t.Errorf("%s: grows = %v (first %.0f, last %.0f, slope %.1f/min), want %v", tt.name, tr.grows, tr.first, tr.last, tr.slope, tt.grows)
		}
	}
	if tr := analyze("short", "", []float64{1, 2, 3}, make([]time.Duration, 3), 2, 0); tr.enoughSamples {
		t.Error("three samples cannot show a trend")
	}
}
