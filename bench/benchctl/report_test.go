package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedianSpread(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing should be NaN")
	}
	if s := spread([]float64{90, 100, 110}); math.Abs(s-20) > 1e-9 {
		t.Errorf("spread = %v, want 20", s)
	}
}

// TestReport renders a small raw file and checks ratios and medians.
func TestReport(t *testing.T) {
	raw := `meta date=2026-01-01 00:00 UTC
meta pinning=wrk on CPU 0, every server on CPU 1
phase round=1 config=nginx shape=sat cpu_s=1.500 requests=100000 duration_us=2000000 errors=0 non2xx=0 p50_us=1000 p99_us=3000 p999_us=5000 max_us=6000
phase round=2 config=nginx shape=sat cpu_s=1.500 requests=100000 duration_us=2000000 errors=0 non2xx=0 p50_us=1000 p99_us=3000 p999_us=5000 max_us=6000
phase round=1 config=nginx shape=light cpu_s=0.1 requests=10000 duration_us=3000000 errors=0 non2xx=0 p50_us=300 p99_us=1000 p999_us=2000 max_us=3000
phase round=1 config=shadowproxy shape=sat cpu_s=1.200 requests=120000 duration_us=2000000 errors=0 non2xx=0 p50_us=900 p99_us=2500 p999_us=4000 max_us=5000
phase round=1 config=shadowproxy shape=light cpu_s=0.1 requests=10000 duration_us=3000000 errors=0 non2xx=0 p50_us=250 p99_us=800 p999_us=1500 max_us=2000
cell round=all config=shadowproxy rss_kib=20480 primary_requests=130000 primary_conns=64
meta scale_conns=10000
scale round=1 config=shadowproxy conns=10000 rss0_kib=21440 rss1_kib=61440 cpu_s=0.4 requests=20000 duration_us=4000000 errors=0 p99_us=40000
scale round=2 config=shadowproxy conns=10000 rss0_kib=21440 rss1_kib=102400 cpu_s=0.4 requests=20000 duration_us=4000000 errors=0 p99_us=40000
scale round=1 config=nginx conns=10000 rss0_kib=6000 rss1_kib=26000 cpu_s=0.4 requests=16000 duration_us=4000000 errors=0 p99_us=50000
`
	dir := t.TempDir()
	in, out := filepath.Join(dir, "latest.raw"), filepath.Join(dir, "latest.md")
	if err := os.WriteFile(in, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(in, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	md := string(b)
	for _, want := range []string{
		"- pinning: wrk on CPU 0, every server on CPU 1",
		"| shadowproxy | 60,000 |", // 120000 requests in 2 s
		"| 1.20x | 2.50 | 0.25 |",  // vs nginx, sat p99 ms, light p50 ms
		"| 0.100 | 0.67x | 20.0 |", // CPU s/10k req (10 µs/req), vs nginx's 15, RSS MiB
		"| shadowproxy req/s / nginx (defaults) | 1.20 | >= 1.00 | met |",
		"## Scale: 10000 concurrent keep-alive connections",
		// Per connection from the first pass; the second pass's growth apart.
		"| shadowproxy | 5,000 | 1.25x | 40.00 | 0.80x | 0 | 0.200 | 80.0 | 4.0 | 2.00x | 8.1 |",
		"| 10k connections: RSS per connection / nginx | 2.00 | <= 2.00 | met |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "| shadowproxy |") > strings.Index(md, "| nginx, 1 worker") {
		t.Error("rows are not in the known order")
	}
}
