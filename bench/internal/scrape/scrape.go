// Package scrape reads the numbers the benchmark harnesses need from the
// servers under test over loopback HTTP: a backend's /__stats counters and
// the sum of a Prometheus metric's samples from shadowproxy's admin
// listener. Every request goes on a fresh connection (so a backend does not
// count it as reuse) and only to loopback addresses.
package scrape

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/backend"
)

// CheckLoopback refuses any address that is not on the loopback interface.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address", addr)
	}
	return nil
}

// Get fetches http://addr+path on a new connection and returns the body of
// a 200 answer.
func Get(addr, path string) ([]byte, error) {
	if err := CheckLoopback(addr); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return b, nil
}

// Backend returns a bench backend's counters.
func Backend(addr string) (backend.Stats, error) {
	var s backend.Stats
	b, err := Get(addr, backend.StatsPath)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// Series returns every sample of http://addr/metrics (text format) by its
// series: "name" for an unlabelled one, "name{labels}" as exported
// otherwise, for example `shadowproxy_config_reloads_total{result="success"}`.
func Series(addr string) (map[string]float64, error) {
	b, err := Get(addr, "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad sample %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// MetricSum returns the sum of the samples of metric name (from
// http://addr/metrics, text format) whose label set contains label, e.g.
// `outcome="dropped"`; an empty label sums every sample.
func MetricSum(addr, name, label string) (float64, error) {
	series, err := Series(addr)
	if err != nil {
		return 0, err
	}
	var sum float64
	for k, v := range series {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue // another metric, or a longer name sharing the prefix
		}
		if label != "" && !strings.Contains(rest, label) {
			continue
		}
		sum += v
	}
	return sum, nil
}
