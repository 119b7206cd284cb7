package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// configInfo describes a configuration of the comparison: its row label,
// the nginx configuration in the same role (the "vs nginx" column) and the
// configuration without shadowing it is compared to ("vs own no-shadow").
type configInfo struct {
	label string
	peer  string
	base  string
}

// knownConfigs are the configurations compare.sh runs, in table order.
var knownConfigs = []struct {
	id   string
	info configInfo
}{
	{"direct", configInfo{"direct to backend (the limit)", "nginx", ""}},
	{"shadowproxy", configInfo{"shadowproxy", "nginx", ""}},
	{"shadowproxy-tuned", configInfo{"shadowproxy, tuned env", "nginx", "shadowproxy"}},
	{"nginx", configInfo{"nginx, 1 worker, upstream keepalive", "nginx", ""}},
	{"haproxy", configInfo{"HAProxy, nbthread 1", "nginx", ""}},
	{"shadowproxy-shadow-fast", configInfo{"shadowproxy + 100% shadow (fast)", "nginx-mirror-fast", "shadowproxy"}},
	{"shadowproxy-shadow-fast-tuned", configInfo{"shadowproxy + 100% shadow (fast), tuned env", "nginx-mirror-fast", "shadowproxy-tuned"}},
	{"nginx-mirror-fast", configInfo{"nginx + mirror (fast)", "nginx-mirror-fast", "nginx"}},
	{"shadowproxy-shadow-slow", configInfo{"shadowproxy + 100% shadow (200 ms)", "nginx-mirror-slow", "shadowproxy"}},
	{"shadowproxy-shadow-slow-tuned", configInfo{"shadowproxy + 100% shadow (200 ms), tuned env", "nginx-mirror-slow", "shadowproxy-tuned"}},
	{"nginx-mirror-slow", configInfo{"nginx + mirror (200 ms)", "nginx-mirror-slow", "nginx"}},
	{"shadowproxy-64k", configInfo{"shadowproxy, 64 KiB responses", "nginx-64k", ""}},
	{"nginx-64k", configInfo{"nginx, 64 KiB responses", "nginx-64k", ""}},
	{"haproxy-64k", configInfo{"HAProxy, 64 KiB responses", "nginx-64k", ""}},
	{"shadowproxy-1m", configInfo{"shadowproxy, 1 MiB responses", "nginx-1m", ""}},
	{"nginx-1m", configInfo{"nginx, 1 MiB responses", "nginx-1m", ""}},
	{"haproxy-1m", configInfo{"HAProxy, 1 MiB responses", "nginx-1m", ""}},
	{"shadowproxy-baseline", configInfo{"shadowproxy, baseline build", "nginx", ""}},
	{"shadowproxy-shadow-fast-baseline", configInfo{"shadowproxy + 100% shadow (fast), baseline build", "nginx-mirror-fast", "shadowproxy-baseline"}},
	{"shadowproxy-shadow-slow-baseline", configInfo{"shadowproxy + 100% shadow (200 ms), baseline build", "nginx-mirror-slow", "shadowproxy-baseline"}},
}

// record is one line of the raw results: a kind and its key=value fields.
type record struct {
	kind   string
	fields map[string]string
}

func (r record) num(key string) (float64, bool) {
	v, ok := r.fields[key]
	if !ok || v == "" || v == "-" {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func parseRecords(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		parts := strings.Fields(line)
		if len(parts) == 0 || strings.HasPrefix(parts[0], "#") {
			continue
		}
		r := record{kind: parts[0], fields: map[string]string{}}
		if r.kind == "meta" {
			// "meta key=free text": one key per line, the value may hold spaces.
			k, v, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "meta")), "=")
			r.fields[k] = v
			out = append(out, r)
			continue
		}
		for _, p := range parts[1:] {
			if k, v, ok := strings.Cut(p, "="); ok {
				r.fields[k] = v
			}
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// samples collects one metric's values over the rounds of a configuration.
type samples map[string][]float64

func (s samples) add(key string, r record, field string) {
	if v, ok := r.num(field); ok {
		s[key] = append(s[key], v)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

func maxOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	m := v[0]
	for _, x := range v[1:] {
		m = max(m, x)
	}
	return m
}

// spread is (max-min)/median in percent: the run-to-run noise of a metric.
func spread(v []float64) float64 {
	if len(v) < 2 {
		return math.NaN()
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return (hi - lo) / median(v) * 100
}

// summary is one configuration's medians over its rounds.
type summary struct {
	id, label, peer, base string
	m                     map[string]float64
	rpsSpread             float64
	rounds                int
}

func (s *summary) get(k string) float64 {
	if v, ok := s.m[k]; ok {
		return v
	}
	return math.NaN()
}

func summarize(recs []record) ([]*summary, map[string]string) {
	meta := map[string]string{}
	per := map[string]samples{}
	rounds := map[string]map[string]bool{}
	var order []string
	for _, r := range recs {
		if r.kind == "meta" {
			for k, v := range r.fields {
				meta[k] = v
			}
			continue
		}
		id := r.fields["config"]
		if id == "" {
			continue
		}
		if per[id] == nil {
			per[id] = samples{}
			rounds[id] = map[string]bool{}
			order = append(order, id)
		}
		s := per[id]
		rounds[id][r.fields["round"]] = true
		switch r.kind {
		case "phase":
			shape := r.fields["shape"]
			dur, _ := r.num("duration_us")
			req, _ := r.num("requests")
			if dur > 0 {
				s[shape+"_rps"] = append(s[shape+"_rps"], req/(dur/1e6))
			}
			for _, p := range []string{"p50_us", "p99_us", "p999_us"} {
				s.add(shape+"_"+p, r, p)
			}
			if cpu, ok := r.num("cpu_s"); ok && req > 0 {
				s[shape+"_cpu_us_per_req"] = append(s[shape+"_cpu_us_per_req"], cpu/req*1e6)
			}
		case "scale":
			dur, _ := r.num("duration_us")
			req, _ := r.num("requests")
			conns, _ := r.num("conns")
			if dur > 0 {
				s["scale_rps"] = append(s["scale_rps"], req/(dur/1e6))
			}
			s.add("scale_p99_us", r, "p99_us")
			s.add("scale_errors", r, "errors")
			rss0, ok0 := r.num("rss0_kib")
			rss1, ok1 := r.num("rss1_kib")
			if ok0 && ok1 && conns > 0 {
				s["scale_rss_kib"] = append(s["scale_rss_kib"], rss1)
				// The first pass opens the connections on a process that
				// never held them: what they cost. Later passes add what the
				// runtime kept from the passes before (a Go heap grows from
				// pass to pass), reported apart.
				key := "scale_kib_per_conn_later"
				if r.fields["round"] == "1" {
					key = "scale_kib_per_conn"
				}
				s[key] = append(s[key], (rss1-rss0)/conns)
			}
			if cpu, ok := r.num("cpu_s"); ok && req > 0 {
				s["scale_cpu_us_per_req"] = append(s["scale_cpu_us_per_req"], cpu/req*1e6)
			}
		case "cell":
			for k := range r.fields {
				if k != "config" && k != "round" {
					s.add(k, r, k)
				}
			}
		}
	}
	// Known configurations first, in their order; then anything else.
	var ids []string
	seen := map[string]bool{}
	for _, k := range knownConfigs {
		if per[k.id] != nil {
			ids = append(ids, k.id)
			seen[k.id] = true
		}
	}
	for _, id := range order {
		if !seen[id] {
			ids = append(ids, id)
		}
	}
	var out []*summary
	for _, id := range ids {
		info := configInfo{label: id, peer: "nginx"}
		for _, k := range knownConfigs {
			if k.id == id {
				info = k.info
			}
		}
		s := &summary{id: id, label: info.label, peer: info.peer, base: info.base, m: map[string]float64{}, rounds: len(rounds[id])}
		for k, v := range per[id] {
			if k == "rss_kib" {
				s.m[k] = maxOf(v)
				continue
			}
			s.m[k] = median(v)
		}
		s.rpsSpread = spread(per[id]["sat_rps"])
		out = append(out, s)
	}
	return out, meta
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func fmtInt(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	// Thousands separators make six-digit counts readable.
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "x"
}

func ms(us float64) string {
	if math.IsNaN(us) {
		return "–"
	}
	return fmtNum(us/1000, 2)
}

// renderReport writes the Markdown tables.
func renderReport(sums []*summary, meta map[string]string) string {
	by := map[string]*summary{}
	for _, s := range sums {
		by[s.id] = s
	}
	val := func(id, k string) float64 {
		if s := by[id]; s != nil {
			return s.get(k)
		}
		return math.NaN()
	}
	var b strings.Builder
	b.WriteString("# shadowproxy vs direct, nginx and HAProxy\n\n")
	var keys []string
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, meta[k])
	}
	b.WriteString("\nEach figure is the median over the passes (all configurations stay up; the load moves between them slice by slice, " +
		"each pass in the opposite order of the one before; \"spread\" is (max-min)/median of req/s over the passes). " +
		"Saturation: `wrk -t2 -c64 --latency`; light load: 16 connections, each pausing between requests. " +
		"\"vs nginx\" compares with the nginx configuration in the same role (plain proxy, or mirror to the same shadow). " +
		"Proxy CPU is utime+stime of the proxy process (nginx: its worker) during the saturation phase; for \"direct\" it is the backend's.\n\n")

	b.WriteString("## Request path\n\n")
	b.WriteString("| configuration | req/s | spread | vs direct | vs nginx | sat p99 ms | light p50 ms | light p99 ms | light p99.9 ms | light p99 vs nginx | CPU s / 10k req | CPU vs nginx | peak RSS MiB |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		rps := s.get("sat_rps")
		cpu := s.get("sat_cpu_us_per_req")
		fmt.Fprintf(&b, "| %s | %s | %s%% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			s.label, fmtInt(rps), fmtNum(s.rpsSpread, 0),
			ratio(rps, val("direct", "sat_rps")), ratio(rps, val(s.peer, "sat_rps")),
			ms(s.get("sat_p99_us")),
			ms(s.get("light_p50_us")), ms(s.get("light_p99_us")), ms(s.get("light_p999_us")),
			ratio(s.get("light_p99_us"), val(s.peer, "light_p99_us")),
			fmtNum(cpu/100, 3), ratio(cpu, val(s.peer, "sat_cpu_us_per_req")),
			fmtNum(s.get("rss_kib")/1024, 1))
	}

	b.WriteString("\n## Shadowing and upstream connections\n\n")
	b.WriteString("Counts cover the whole run of each configuration (warm-up and every slice). " +
		"\"delivered\" is shadow requests received / primary requests received; \"dropped\" is shadowproxy's own count " +
		"(`shadowproxy_shadow_requests_total{outcome=\"dropped\"}`). \"vs baseline\" compares with the same proxy without shadow " +
		"(for a tuned row without shadow: the untuned one).\n\n")
	b.WriteString("| configuration | req/s vs baseline | light p99 vs baseline | primary: requests | primary: new conns | shadow: requests | delivered | dropped | shadow: new conns |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		if s.id == "direct" {
			continue
		}
		delivered := "–"
		if sr, pr := s.get("shadow_requests"), s.get("primary_requests"); !math.IsNaN(sr) && pr > 0 {
			delivered = fmtNum(sr/pr*100, 1) + "%"
		}
		base := func(k string) string {
			if s.base == "" {
				return "–"
			}
			return ratio(s.get(k), val(s.base, k))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			s.label, base("sat_rps"), base("light_p99_us"),
			fmtInt(s.get("primary_requests")), fmtInt(s.get("primary_conns")),
			fmtInt(s.get("shadow_requests")), delivered, fmtInt(s.get("shadow_dropped")),
			fmtInt(s.get("shadow_conns")))
	}
	if !math.IsNaN(val("shadowproxy", "scale_rps")) || !math.IsNaN(val("nginx", "scale_rps")) {
		fmt.Fprintf(&b, "\n## Scale: %s concurrent keep-alive connections\n\n", meta["scale_conns"])
		b.WriteString("`" + meta["scale"] + "`. Median over the passes. RSS per connection is what the open connections add " +
			"to the proxy's resident memory (nginx: its worker) while they are all open, in the first pass (the process has " +
			"never held them before); the later passes' median shows what the process keeps from pass to pass on top.\n\n")
		b.WriteString("| configuration | req/s | vs nginx | p99 ms | p99 vs nginx | errors | CPU s / 10k req | RSS MiB (all open) | KiB per connection | vs nginx | later passes, KiB per connection |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, id := range []string{"shadowproxy", "shadowproxy-tuned", "shadowproxy-baseline", "nginx", "haproxy"} {
			s := by[id]
			if s == nil || math.IsNaN(s.get("scale_rps")) {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s.label,
				fmtInt(s.get("scale_rps")), ratio(s.get("scale_rps"), val("nginx", "scale_rps")),
				ms(s.get("scale_p99_us")), ratio(s.get("scale_p99_us"), val("nginx", "scale_p99_us")),
				fmtInt(s.get("scale_errors")), fmtNum(s.get("scale_cpu_us_per_req")/100, 3),
				fmtNum(s.get("scale_rss_kib")/1024, 1), fmtNum(s.get("scale_kib_per_conn"), 1),
				ratio(s.get("scale_kib_per_conn"), val("nginx", "scale_kib_per_conn")), fmtNum(s.get("scale_kib_per_conn_later"), 1))
		}
	}
	b.WriteString("\n## Targets (issue 20)\n\n")
	target := func(name string, got float64, cmp string, want float64) {
		status := "–"
		if !math.IsNaN(got) {
			ok := got >= want
			if cmp == "<=" {
				ok = got <= want
			}
			status = "met"
			if !ok {
				status = "**not met**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s %s | %s |\n", name, fmtNum(got, 2), cmp, fmtNum(want, 2), status)
	}
	b.WriteString("| target | measured | goal | status |\n|---|---:|---|---|\n")
	target("shadowproxy req/s / nginx (defaults)", val("shadowproxy", "sat_rps")/val("nginx", "sat_rps"), ">=", 1.0)
	target("shadowproxy req/s / nginx (tuned twin)", val("shadowproxy-tuned", "sat_rps")/val("nginx", "sat_rps"), ">=", 1.2)
	target("shadowproxy light p99 / nginx", val("shadowproxy", "light_p99_us")/val("nginx", "light_p99_us"), "<=", 1)
	target("shadowproxy light p99 / nginx (tuned twin)", val("shadowproxy-tuned", "light_p99_us")/val("nginx", "light_p99_us"), "<=", 1)
	target("shadowproxy CPU per req / nginx", val("shadowproxy", "sat_cpu_us_per_req")/val("nginx", "sat_cpu_us_per_req"), "<=", 1)
	target("shadowproxy CPU per req / nginx (tuned twin)", val("shadowproxy-tuned", "sat_cpu_us_per_req")/val("nginx", "sat_cpu_us_per_req"), "<=", 1)
	target("fast shadow: proxy CPU per req / no-shadow", val("shadowproxy-shadow-fast", "sat_cpu_us_per_req")/val("shadowproxy", "sat_cpu_us_per_req"), "<=", 1.6)
	target("fast shadow: req/s / nginx mirror", val("shadowproxy-shadow-fast", "sat_rps")/val("nginx-mirror-fast", "sat_rps"), ">=", 2)
	target("fast shadow: delivered fraction", val("shadowproxy-shadow-fast", "shadow_requests")/val("shadowproxy-shadow-fast", "primary_requests"), ">=", 0.99)
	target("slow shadow: light p99 / no-shadow", val("shadowproxy-shadow-slow", "light_p99_us")/val("shadowproxy", "light_p99_us"), "<=", 1.2)
	target("slow shadow: sat p99 / no-shadow", val("shadowproxy-shadow-slow", "sat_p99_us")/val("shadowproxy", "sat_p99_us"), "<=", 1.2)
	target("10k connections: req/s / nginx", val("shadowproxy", "scale_rps")/val("nginx", "scale_rps"), ">=", 1)
	target("10k connections: p99 / nginx", val("shadowproxy", "scale_p99_us")/val("nginx", "scale_p99_us"), "<=", 1)
	target("10k connections: RSS per connection / nginx", val("shadowproxy", "scale_kib_per_conn")/val("nginx", "scale_kib_per_conn"), "<=", 2)
	target("64 KiB responses: req/s / nginx", val("shadowproxy-64k", "sat_rps")/val("nginx-64k", "sat_rps"), ">=", 1)
	target("1 MiB responses: req/s / nginx", val("shadowproxy-1m", "sat_rps")/val("nginx-1m", "sat_rps"), ">=", 1)
	return b.String()
}

// cmdReport reads the raw records and writes the Markdown report to OUT
// and stdout.
func cmdReport(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want IN OUT")
	}
	return writeReport(args[0], args[1], os.Stdout)
}

// writeReport renders the records in file in to file out and to w.
func writeReport(in, out string, w io.Writer) error {
	recs, err := parseRecords(in)
	if err != nil {
		return err
	}
	sums, meta := summarize(recs)
	if len(sums) == 0 {
		return fmt.Errorf("%s: no results", in)
	}
	md := renderReport(sums, meta)
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		return err
	}
	_, err = io.WriteString(w, md)
	return err
}
