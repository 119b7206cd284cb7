package main

import (
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, -1},
		{"one sample, p50", ms(7), 0.5, 7 * time.Millisecond},
		{"one sample, max", ms(7), 1, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, time.Millisecond},
		{"p50 of 4 (nearest rank)", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 1..100", hundred, 0.99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 0.999, 100 * time.Millisecond},
		{"max", hundred, 1, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.sorted, tc.q); got != tc.want {
				t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestOver(t *testing.T) {
	s := []time.Duration{1, 2, 2, 5, 9}
	for _, tc := range []struct {
		limit time.Duration
		want  int
	}{{0, 5}, {1, 4}, {2, 2}, {5, 1}, {9, 0}, {10, 0}} {
		if got := over(s, tc.limit); got != tc.want {
			t.Errorf("over(%v) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	if got := over(nil, 1); got != 0 {
		t.Errorf("over(nil) = %d", got)
	}
}

func TestBound(t *testing.T) {
	if got := bound(0); got != 6250*time.Microsecond {
		t.Errorf("bound(default) = %v, want 6.25ms", got)
	}
	if got := bound(20 * time.Millisecond); got != 25*time.Millisecond {
		t.Errorf("bound(20ms) = %v, want 25ms", got)
	}
}

func TestPct(t *testing.T) {
	for f, want := range map[float64]string{0.01: "1%", 0: "0%", 0.0005: "0.05%", 0.125: "12.5%", 1: "100%"} {
		if got := pct(f); got != want {
			t.Errorf("pct(%v) = %q, want %q", f, got, want)
		}
	}
}

// TestRender checks the table from fixed measurements: a row per
// configuration and load, the pipeline counters only where pipelining is
// on, and the comparison flags a difference beyond the bound.
func TestRender(t *testing.T) {
	lat := func(fast ...time.Duration) loadResult {
		return loadResult{requests: int64(len(fast)) + 1, elapsed: time.Second, fast: fast, slow: []time.Duration{50 * time.Millisecond}}
	}
	pipe := counters{pipe: map[string]float64{"answered": 90, "bypassed": 7, "rescued": 3, "retried": 0, "rescue_denied": 1}, backend: 4}
	rep := report{
		command: "go run ./bench/holcmp -out x.md", started: time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC),
		uptime: "17:00:00 up 1 day, load average: 0.50, 0.40, 0.30", loadEnd: "0.6 0.4 0.3", pin: "none",
		o:   options{slowDelay: 50 * time.Millisecond, slowFrac: 0.01, pipelineConns: 4, slice: time.Second, maxRequests: 100},
		sat: shape{name: "saturation", conns: 64}, light: shape{name: "light", conns: 16, pause: 4 * time.Millisecond},
		satN: 4, lightN: 4, bound: bound(0), maxWait: defaultMaxWait,
		rows: []row{
			{config: "pool", shape: "light", m: measured{load: lat(1*time.Millisecond, 2*time.Millisecond), delta: counters{backend: 3}}},
			{config: "pipelined", shape: "light", m: measured{load: lat(1*time.Millisecond, 51*time.Millisecond), delta: pipe}},
		},
	}
	got := rep.render()
	for _, want := range []string{
		"<!-- `go run ./bench/holcmp -out x.md`, 2026-12-01 17:00 UTC, uptime before: 17:00:00 up 1 day, load average: 0.50, 0.40, 0.30 -->",
		"| pool | light | 3 | 3 | 1.00 | 2.00 | 2.00 | 2.00 | 0 (0%) | 50.00 | 1.000 | – | – | – | – | – |",
		"| pipelined | light | 3 | 3 | 1.00 | 51.00 | 51.00 | 51.00 | 1 (50%) | 50.00 | 1.333 | 90 | 7 | 3 | 0 | 1 |",
		"| light | pipelined | p50 | 1.00 | 1.00 | +0.00 | yes |",
		"| light | pipelined | max | 2.00 | 51.00 | +49.00 | **no** |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| saturation |") {
		t.Errorf("render compares a load shape that did not run:\n%s", got)
	}
}
