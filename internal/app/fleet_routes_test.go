package app

import (
	"encoding/json"
	"testing"

	"github.com/shadowproxy/shadowproxy/config"
)

func TestMergeRoutesAddsCounts(t *testing.T) {
	parse := func(s string) memberRoutes {
		var mr memberRoutes
		if err := json.Unmarshal([]byte(s), &mr); err != nil {
			t.Fatal(err)
		}
		return mr
	}
	// Member a: busy and healthy; member b: quiet and failing. Averaging
	// rates would say 50%; adding counts says 900/1000 + 0/100.
	a := parse(`[{"route":"api","requests":1000,"comparison":{"targets":[{"target":"v2","counts":{"match":900,"mismatch":100},"counts_1m":{"match":90,"mismatch":10},"counts_5m":{"match":450,"mismatch":50}}]}},
		{"route":"static","requests":5,"comparison":null}]`)
	b := parse(`[{"route":"api","requests":100,"comparison":{"targets":[{"target":"v2","counts":{"mismatch":100,"uncomparable":7},"counts_1m":{"mismatch":10},"counts_5m":{"mismatch":50}}]}}]`)
	got := mergeRoutes([]memberRoutes{a, b})
	if len(got) != 2 || got[0].Route != "api" || got[1].Route != "static" {
		t.Fatalf("routes = %+v", got)
	}
	api := got[0]
	if api.Requests != 1100 || len(api.Comparison) != 1 {
		t.Fatalf("api = %+v", api)
	}
	c := api.Comparison[0]
	if c.Counts.Match != 900 || c.Counts.Mismatch != 200 || c.Counts.Uncomparable != 7 {
		t.Errorf("counts = %+v", c.Counts)
	}
	if c.MatchRateTotal == nil || *c.MatchRateTotal != 900.0/1100 {
		t.Errorf("match rate total = %v, want %v", c.MatchRateTotal, 900.0/1100)
	}
	if c.MatchRate1m == nil || *c.MatchRate1m != 90.0/110 {
		t.Errorf("match rate 1m = %v", c.MatchRate1m)
	}
	if got[1].Requests != 5 || len(got[1].Comparison) != 0 {
		t.Errorf("static = %+v", got[1])
	}
}

func TestAdminAcceptsTheAdvertisedHost(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{Hosts: []string{"ops.example"}},
		Fleet: &config.Fleet{Advertise: "http://proxy-a.fleet.internal:9901"}}
	got := adminHosts(cfg)
	if len(got) != 2 || got[0] != "ops.example" || got[1] != "proxy-a.fleet.internal" {
		t.Errorf("admin hosts = %v", got)
	}
	if len(cfg.Admin.Hosts) != 1 {
		t.Error("adminHosts changed the config")
	}
	cfg.Fleet = nil
	if got := adminHosts(cfg); len(got) != 1 {
		t.Errorf("without a fleet: %v", got)
	}
}
