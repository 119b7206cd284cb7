package config

import (
	"strings"
	"testing"
	"time"
)

const fleetBase = base + `
admin: {token: s3cret}
`

func TestFleetDefaults(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(fleetBase+`
fleet:
  name: edge-a
  advertise: http://127.0.0.1:9901
  etcd:
    endpoints: [http://127.0.0.1:2379]
    prefix: /shadowproxy/prod/
`), noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	f := cfg.Fleet
	if f == nil || f.Name != "edge-a" || f.Etcd.Prefix != "/shadowproxy/prod" {
		t.Fatalf("fleet = %+v", f)
	}
	if f.Etcd.DialTimeout.D() != DefaultEtcdDialTimeout || f.LeaseTTL.D() != DefaultFleetLeaseTTL || float64(*f.MaxMissingShare) != DefaultFleetMaxMissingShare {
		t.Errorf("defaults not applied: %+v", f)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("unexpected warnings: %v", w)
	}

	withRollout, err := Load("t.yaml", []byte(`
admin: {token: s3cret}
upstreams:
  - {name: stable, url: http://127.0.0.1:9001}
  - {name: canary, url: http://127.0.0.1:9002}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    rollout: {steps: [{percent: 10}, {percent: 100}]}
fleet:
  name: edge-a
  advertise: http://127.0.0.1:9901
  state_dir: /var/lib/sp
  etcd: {endpoints: [http://127.0.0.1:2379]}
`), noEnv)
	if err != nil {
		t.Fatalf("Load with rollout: %v", err)
	}
	if got := withRollout.Routes[0].Rollout.StateFile; got != "/var/lib/sp/shop.json" {
		t.Errorf("rollout state_file in fleet mode = %q, want it under fleet.state_dir", got)
	}

	plain, err := Load("t.yaml", []byte(base), noEnv)
	if err != nil || plain.Fleet != nil {
		t.Fatalf("without fleet: %v, %+v", err, plain.Fleet)
	}
}

// TestFleetValidation is the catalogue of fleet messages.
func TestFleetValidation(t *testing.T) {
	tests := []struct {
		name, fleet string
		want        []string
	}{
		{"missing advertise and endpoints", `
fleet:
  name: a
`, []string{
			"fleet.advertise: required: the admin URL other members reach this one at, such as http://10.1.2.3:9901",
			"fleet.etcd.endpoints: at least one etcd endpoint is required, such as http://127.0.0.1:2379",
		}},
		{"bad urls", `
fleet:
  name: a
  advertise: 10.1.2.3:9901
  etcd: {endpoints: ["127.0.0.1:2379"]}
`, []string{
			`fleet.advertise: invalid URL "10.1.2.3:9901": want http(s)://host:port of this member's admin listener, without a path`,
			`fleet.etcd.endpoints[0]: invalid URL "127.0.0.1:2379": want http(s)://host:port of an etcd client listener`,
		}},
		{"bad name, credentials, tls, ttl, share", `
fleet:
  name: "edge a"
  advertise: http://127.0.0.1:9901
  lease_ttl: 1s
  max_missing_share: 100%
  etcd:
    endpoints: [https://127.0.0.1:2379]
    username: root
    tls: {cert_file: /nonexistent/c.pem}
`, []string{
			`fleet.name: invalid member name "edge a": want letters, digits, '.', '_' or '-' (at most 63), such as ${HOSTNAME}`,
			"fleet.etcd.username: give both username and password, or neither",
			"fleet.etcd.tls: give both cert_file and key_file for a client certificate, or neither",
			"fleet.etcd.tls.cert_file: stat /nonexistent/c.pem: no such file or directory",
			"fleet.lease_ttl: 1s is below etcd's minimum lease of 2s",
			"fleet.max_missing_share: must be at least 0 and below 1 (such as 25%)",
		}},
		{"root prefix", `
fleet:
  name: a
  advertise: http://127.0.0.1:9901
  etcd: {endpoints: [http://127.0.0.1:2379], prefix: /}
`, []string{`fleet.etcd.prefix: invalid prefix "/": want a path such as /shadowproxy/prod (one fleet per prefix)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("t.yaml", []byte(fleetBase+tt.fleet), noEnv)
			if err == nil {
				t.Fatal("Load accepted an invalid fleet section")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if n := strings.Count(err.Error(), "fleet."); n != len(tt.want) {
				t.Errorf("got %d fleet messages, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

func TestFleetWarnings(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(base+`
fleet:
  name: a
  advertise: http://127.0.0.1:9901
  lease_ttl: 3s
  etcd: {endpoints: [http://127.0.0.1:2379], username: u, password: p}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Fleet.LeaseTTL.D() != 3*time.Second {
		t.Errorf("lease_ttl = %v", cfg.Fleet.LeaseTTL.D())
	}
	w := strings.Join(cfg.Warnings(), "\n")
	for _, want := range []string{"admin.token is empty", "password in clear"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
}
