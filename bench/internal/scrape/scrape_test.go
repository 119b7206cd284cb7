package scrape

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": true, "127.1.2.3:9": true, "[::1]:80": true,
		"10.0.0.1:80": false, "192.168.1.1:80": false, "example.com:80": false, "nonsense": false,
	} {
		if err := CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v", addr, err)
		}
	}
}

func TestMetricSum(t *testing.T) {
	const text = `# HELP shadowproxy_shadow_requests_total x
# TYPE shadowproxy_shadow_requests_total counter
shadowproxy_shadow_requests_total{route="a",target="s",outcome="ok"} 10
shadowproxy_shadow_requests_total{route="a",target="s",outcome="dropped"} 3
shadowproxy_shadow_requests_total{route="b",target="s",outcome="dropped"} 4.5
shadowproxy_shadow_requests_total_extra{outcome="dropped"} 100
go_gc_duration_seconds_count 7
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(text))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		name, label string
		want        float64
	}{
		{"shadowproxy_shadow_requests_total", `outcome="dropped"`, 7.5},
		{"shadowproxy_shadow_requests_total", "", 17.5},
		{"go_gc_duration_seconds_count", "", 7},
		{"missing_total", "", 0},
	} {
		got, err := MetricSum(addr, c.name, c.label)
		if err != nil || got != c.want {
			t.Errorf("MetricSum(%s, %s) = %v, %v; want %v", c.name, c.label, got, err, c.want)
		}
	}
}

func TestSeries(t *testing.T) {
	const text = `# HELP shadowproxy_config_reloads_total x
# TYPE shadowproxy_config_reloads_total counter
shadowproxy_config_reloads_total{result="success"} 4
shadowproxy_config_reloads_total{result="failure"} 0
go_goroutines 57

process_resident_memory_bytes 2.5e+07
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(text))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	got, err := Series(addr)
	want := map[string]float64{
		`shadowproxy_config_reloads_total{result="success"}`: 4,
		`shadowproxy_config_reloads_total{result="failure"}`: 0,
		"go_goroutines": 57, "process_resident_memory_bytes": 25e6,
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Series = %v, %v; want %v", got, err, want)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("go_goroutines many\n"))
	}))
	defer bad.Close()
	if _, err := Series(strings.TrimPrefix(bad.URL, "http://")); err == nil || !strings.Contains(err.Error(), `bad sample "go_goroutines many"`) {
		t.Errorf("a bad sample gave %v", err)
	}
}
