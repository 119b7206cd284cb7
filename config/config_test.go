package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

func TestLoadGoodFile(t *testing.T) {
	cfg, err := LoadFile("testdata/good.yaml")
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.AdminListen != "127.0.0.1:9901" {
		t.Errorf("listen = %q, admin = %q", cfg.Listen, cfg.AdminListen)
	}
	if got := cfg.Limits.MaxRequestBody; got != 10<<20 {
		t.Errorf("max_request_body = %d", got)
	}
	if got := cfg.Limits.ShutdownTimeout.D(); got != DefaultShutdownTimeout {
		t.Errorf("shutdown_timeout default = %v", got)
	}
	if len(cfg.Upstreams) != 2 || cfg.Upstreams[1].Timeout.D() != DefaultUpstreamTimeout || cfg.Upstreams[1].MaxConns != DefaultUpstreamMaxConns {
		t.Errorf("upstream defaults not applied: %+v", cfg.Upstreams[1])
	}
	if cfg.Upstreams[0].Timeout.D() != 10*time.Second || cfg.Upstreams[0].MaxConns != 512 {
		t.Errorf("upstream[0] = %+v", cfg.Upstreams[0])
	}
	if r := cfg.Routes[0]; r.Match.PathPrefix != "/api/" || strings.Join(r.Match.Methods, ",") != "GET,POST" {
		t.Errorf("route[0] = %+v", r)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("unexpected warnings: %v", w)
	}
}

const base = `
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
routes:
  - name: default
    upstream: stable
`

// TestValidationErrors is the catalogue of validation messages: each case is
// a file and every line Load must report for it, in order.
func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"misspelt upstream", `
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
routes:
  - name: api
    upstream: stabel
`, []string{`t.yaml:7: routes[0].upstream: unknown upstream "stabel" (did you mean "stable"?)`}},
		{"unknown key with suggestion", `
listen: 127.0.0.1:8080
admin_listn: 127.0.0.1:9901
` + base, []string{`t.yaml:3: admin_listn: unknown field (did you mean "admin_listen"?)`}},
		{"unknown nested key", `
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
    timeuot: 5s
routes:
  - name: default
    upstream: stable
    match: {path_prefx: /x}
`, []string{
			`t.yaml:5: upstreams[0].timeuot: unknown field (did you mean "timeout"?)`,
			`t.yaml:9: routes[0].match.path_prefx: unknown field (did you mean "path_prefix"?)`,
		}},
		{"pipeline bounds", `
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
    timeout: 1s
    pipeline_conns: 4
    pipeline_depth: 2000
    pipeline_max_wait: 2s
routes:
  - name: default
    upstream: stable
`, []string{
			`t.yaml:7: upstreams[0].pipeline_depth: must be between 1 and 1024 (default 32)`,
			`t.yaml:8: upstreams[0].pipeline_max_wait: must be shorter than timeout (1s): past the timeout the request has failed anyway`,
		}},
		{"names from other proxies", `
upstreams:
  - name: stable
    url: 127.0.0.1:9001
    timeout_ms: 500
    endpoints: [http://127.0.0.1:9002]
routes:
  - name: default
    cluster: stable
    upstream: stable
    weight: 10
    mirror: {cluster: stable}
    match: {prefix: /api/}
  - name: other
    upstream: stable
    match: {path: /x}
    split: {to: stable, weight: 5}
`, []string{
			`t.yaml:4: upstreams[0].url: invalid url "127.0.0.1:9001": the scheme is missing; write http://127.0.0.1:9001 (or https://127.0.0.1:9001)`,
			`t.yaml:5: upstreams[0].timeout_ms: unknown field (did you mean "timeout"? durations carry their unit: timeout: 500ms or 5s)`,
			`t.yaml:6: upstreams[0].endpoints: unknown field (did you mean "urls"? several endpoints of one upstream: urls: [http://10.0.0.1:8080, http://10.0.0.2:8080])`,
			`t.yaml:9: routes[0].cluster: unknown field (did you mean "upstream"? a route names the upstream that serves it: upstream: NAME)`,
			`t.yaml:11: routes[0].weight: unknown field (did you mean "split"? a weighted canary is split: {to: CANARY, percent: 10, key: header:X-User-ID})`,
			`t.yaml:12: routes[0].mirror: unknown field (did you mean "shadow"? mirroring is shadow: {targets: [NAME], percent: 100})`,
			`t.yaml:13: routes[0].match.prefix: unknown field (did you mean "path_prefix"? routes match by path prefix: match: {path_prefix: /api/})`,
			`t.yaml:16: routes[1].match.path: unknown field (did you mean "path_prefix"? routes match by path prefix: match: {path_prefix: /api/})`,
			`t.yaml:17: routes[1].split.weight: unknown field (did you mean "percent"? a share in percent: percent: 10)`,
			"t.yaml:17: routes[1].split.key: required: say which request field identifies a user, e.g. header:X-User-ID, cookie:session, query:uid or ip",
			`t.yaml:17: routes[1].split.to: "stable" is the route's own upstream; the canary must be a different upstream`,
		}},
		{"bad scalars all reported", `
limits: {max_request_body: lots, read_timeout: 5 seconds, max_connections: many}
` + base, []string{
			`t.yaml:2: limits.max_request_body: invalid size "lots": want a number with an optional unit such as 10MiB, 512KiB or 4096`,
			`t.yaml:2: limits.read_timeout: invalid duration "5 seconds": want a number with a unit such as 5s, 250ms or 2h`,
			`t.yaml:2: limits.max_connections: want a whole number, got "many"`,
		}},
		{"wrong shapes", `
upstreams: {name: stable}
routes:
  - name: default
    upstream: [stable]
`, []string{
			`t.yaml:2: upstreams: want a list, got a mapping`,
			`t.yaml:5: routes[0].upstream: want a single value, got a list`,
		}},
		{"missing sections", `listen: 127.0.0.1:8080`, []string{
			`t.yaml:1: upstreams: at least one upstream is required`,
			`t.yaml:1: routes: at least one route is required`,
		}},
		{"bad upstream urls and names", `
upstreams:
  - name: stable
    url: ftp://127.0.0.1:9001
  - name: stable
    url: http://127.0.0.1:9002/v1
  - name: "bad name"
    url: http://127.0.0.1:99999
  - url: http://127.0.0.1:9003
routes:
  - name: default
    upstream: stable
`, []string{
			`t.yaml:4: upstreams[0].url: invalid url "ftp://127.0.0.1:9001": scheme must be http or https`,
			`t.yaml:5: upstreams[1].name: duplicate upstream name "stable" (also upstreams[0])`,
			`t.yaml:6: upstreams[1].url: invalid url "http://127.0.0.1:9002/v1": give only scheme://host:port; paths, queries and credentials are not supported`,
			`t.yaml:7: upstreams[2].name: invalid name "bad name": use letters, digits, '-', '_' and '.'`,
			`t.yaml:8: upstreams[2].url: invalid url "http://127.0.0.1:99999": bad port "99999"`,
			`t.yaml:9: upstreams[3].name: a name is required`,
		}},
		{"route problems", `
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
routes:
  - name: a
    match: {path_prefix: api, host: "http://x", methods: [get, "G T", GET]}
    upstream: stable
  - name: a
    upstream: ""
`, []string{
			`t.yaml:7: routes[0].match.path_prefix: "api" must start with '/'`,
			`t.yaml:7: routes[0].match.host: invalid host "http://x": give a host name without port or scheme, optionally starting with *. for subdomains`,
			`t.yaml:7: routes[0].match.methods[1]: invalid method "G T"`,
			`t.yaml:7: routes[0].match.methods[2]: method GET listed twice`,
			`t.yaml:9: routes[1].name: duplicate route name "a" (also routes[0])`,
			`t.yaml:10: routes[1].upstream: an upstream name is required`,
		}},
		{"listeners and log", `
listen: nowhere
admin_listen: nowhere
log: {level: verbose, format: xml}
trusted_proxies: [10.0.0.0/33]
` + base, []string{
			`t.yaml:2: listen: invalid address "nowhere": want host:port such as 127.0.0.1:8080`,
			`t.yaml:3: admin_listen: invalid address "nowhere": want host:port such as 127.0.0.1:8080`,
			`t.yaml:3: admin_listen: must differ from listen (nowhere): the admin API needs its own port`,
			`t.yaml:4: log.level: unknown level "verbose": want debug, info, warn or error`,
			`t.yaml:4: log.format: unknown format "xml": want json or console`,
			`t.yaml:5: trusted_proxies[0]: invalid CIDR "10.0.0.0/33": want an address or a network such as 10.0.0.0/8`,
		}},
		{"unset environment variable", `
admin: {token: "${SP_TEST_UNSET_TOKEN}"}
` + base, []string{`t.yaml:2: environment variable SP_TEST_UNSET_TOKEN is not set (write ${SP_TEST_UNSET_TOKEN:-default} to give a default)`}},
		{"duplicate key", `
listen: 127.0.0.1:8080
listen: 127.0.0.1:8081
` + base, []string{`t.yaml:3: listen: key appears twice; remove one (YAML would silently keep the last)`}},
		{"syntax error", "upstreams: [\n", []string{`t.yaml:1: did not find expected node content`}},
		{"empty file", "", []string{`t.yaml: the file is empty: at least upstreams and routes are required`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("t.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatal("Load accepted an invalid config")
			}
			errs, ok := err.(Errors)
			if !ok {
				t.Fatalf("error type %T: %v", err, err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"UP": "http://127.0.0.1:9100", "TOKEN": "s3cret"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := Load("t.yaml", []byte(`
admin: {token: "${TOKEN}"}
listen: "${LISTEN:-127.0.0.1:8181}"
upstreams:
  - name: stable
    url: ${UP}
routes:
  - name: r
    match: {path_prefix: "/literal/$${NOT_ENV}"}
    upstream: stable
`), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token != "s3cret" || cfg.Upstreams[0].URL != "http://127.0.0.1:9100" || cfg.Listen != "127.0.0.1:8181" {
		t.Errorf("expansion wrong: %+v", cfg)
	}
	if cfg.Routes[0].Match.PathPrefix != "/literal/${NOT_ENV}" {
		t.Errorf("escape wrong: %q", cfg.Routes[0].Match.PathPrefix)
	}
}

func TestWarnings(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(`
admin_listen: 0.0.0.0:9901
upstreams:
  - name: stable
    url: http://127.0.0.1:9001
routes:
  - name: all
    upstream: stable
  - name: never
    match: {path_prefix: /x}
    upstream: stable
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	for _, want := range []string{"admin.token is empty", "routes[0] (all) matches every request, so the 1 route(s) after it are never used"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q lack %q", w, want)
		}
	}
	if cfg.AdminIsLoopback() {
		t.Error("0.0.0.0 reported as loopback")
	}
}

func TestParseUpstreamURL(t *testing.T) {
	for raw, want := range map[string]string{
		"http://127.0.0.1:9001": "127.0.0.1:9001",
		"http://backend":        "backend:80",
		"https://backend/":      "backend:443",
		"http://[::1]:8080":     "[::1]:8080",
	} {
		addr, _, err := ParseUpstreamURL(raw)
		if err != nil || addr != want {
			t.Errorf("ParseUpstreamURL(%q) = %q, %v; want %q", raw, addr, err, want)
		}
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := LoadFile("testdata/does-not-exist.yaml")
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("err = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestSplitAndShadowValidation(t *testing.T) {
	yamlText := `
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: canary, url: "http://127.0.0.1:9002"}
routes:
  - name: api
    upstream: stable
    split:
      key: hedaer:X-User
      to: canry
      percent: 150
      cohorts:
        - name: internal
          when: {header_regex: {X-Internal: "(["}}
    shadow:
      targets: [canary, shadw]
      queue_size: 0
      workers: -1
      compare:
        ignore: ["/ok", "no-slash"]
        array_order: sorted
        secondary: stabel
`
	_, err := Load("t.yaml", []byte(yamlText), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	got := err.Error()
	for _, want := range []string{
		`t.yaml:11: routes[0].split.percent: invalid percentage "150": must be between 0 and 100`,
		`routes[0].split.key:`,
		`routes[0].split.to: unknown upstream "canry" (did you mean "canary"?)`,
		`routes[0].split.cohorts[0].when.header_regex.X-Internal:`,
		`routes[0].shadow.targets[1]: unknown upstream "shadw"`,
		`routes[0].shadow.workers: must be between 1 and 4096`,
		`routes[0].shadow.compare.ignore[1]:`,
		`routes[0].shadow.compare.array_order:`,
		`routes[0].shadow.compare.secondary: unknown upstream "stabel" (did you mean "stable"?)`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
}

func TestShadowDefaultsAndWarnings(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(`
upstreams:
  - {name: stable, url: "http://127.0.0.1:9001"}
  - {name: shadow, url: "http://127.0.0.1:9002"}
routes:
  - name: api
    upstream: stable
    split: {key: "header:X-User", to: shadow, percent: 1.15}
    shadow:
      targets: [shadow, {name: stable, headers: {remove: [Authorization]}}]
      methods: [get, post]
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	sh := cfg.Routes[0].Shadow
	if sh.QueueSize != DefaultShadowQueueSize || sh.Workers != DefaultShadowWorkers || sh.Timeout.D() != DefaultShadowTimeout {
		t.Errorf("defaults: %+v", sh)
	}
	if sh.Percent.BP() != 10000 || sh.MaxBody != 1<<20 || sh.Salt != "api:shadow" {
		t.Errorf("percent %v max_body %v salt %q", sh.Percent.BP(), sh.MaxBody, sh.Salt)
	}
	if sh.Targets[1].Name != "stable" || sh.Targets[1].Headers.Remove[0] != "Authorization" {
		t.Errorf("mapping target: %+v", sh.Targets[1])
	}
	if cfg.Routes[0].Split.Percent.BP() != 115 || cfg.Routes[0].Split.Salt != "api" {
		t.Errorf("split: %+v", cfg.Routes[0].Split)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "mirrors non-safe methods POST") {
		t.Errorf("warnings: %s", w)
	}
}

func TestEdgeValidation(t *testing.T) {
	_, err := Load("t.yaml", []byte(`
tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem, min_version: "1.1"}
request_id: {header: "bad header"}
access_log: {enabled: true, sample: 2, fields: [method, stauts]}
upstreams:
  - name: pool
    url: http://127.0.0.1:1
    urls: [http://127.0.0.1:2, "ftp://x"]
    balance: random
    tls: {ca_file: /nonexistent/ca.pem}
    health: {path: health, expect_status: 99, interval: 1s, timeout: 2s}
routes:
  - {name: r, upstream: pool}
`), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	got := err.Error()
	for _, want := range []string{
		`t.yaml:2: tls.cert_file: cannot load the key pair`,
		`t.yaml:2: tls.min_version: unsupported "1.1": want 1.2 or 1.3`,
		`t.yaml:3: request_id.header: invalid header name "bad header"`,
		`t.yaml:4: access_log.sample: must be between 0 and 1`,
		`t.yaml:4: access_log.fields[1]: unknown field "stauts" (did you mean "status"?)`,
		`upstreams[0].balance: unknown "random": want round_robin or least_conn`,
		`upstreams[0].urls: give url or urls, not both`,
		`upstreams[0].urls[1]: invalid url "ftp://x"`,
		`upstreams[0].tls.ca_file: open /nonexistent/ca.pem`,
		`upstreams[0].health.path: must start with "/", got "health"`,
		`upstreams[0].health.expect_status: must be an HTTP status between 100 and 599, got 99`,
		`upstreams[0].health.timeout: must not exceed the interval (1s), got 2s`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
}

func TestEdgeHardeningValidation(t *testing.T) {
	_, err := Load("t.yaml", []byte(`
admin: {pprof: true, hosts: ["ops.example.com", "http://x:9901"]}
upgrades: {allow: [websocket, H2C, websocket/13, "bad token"]}
upstreams:
  - {name: s, url: http://127.0.0.1:1}
routes:
  - {name: r, upstream: s}
`), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	got := err.Error()
	for _, want := range []string{
		`t.yaml:2: admin.pprof: profiles need admin.token`,
		`admin.hosts[1]: "http://x:9901": give a host name or address without port or scheme`,
		`upgrades.allow[1]: h2c cannot be tunnelled`,
		`upgrades.allow[2]: "websocket/13": give the protocol name without a version`,
		`upgrades.allow[3]: invalid protocol name "bad token"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "admin.hosts[0]") || strings.Contains(got, "upgrades.allow[0]") {
		t.Errorf("valid entries refused:\n%s", got)
	}
	cfg, err := Load("t.yaml", []byte("upstreams: [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: s}]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.Upgrades.Allow) != "[websocket]" || cfg.Admin.Pprof || cfg.Limits.BufferBody != DefaultBufferBody {
		t.Errorf("defaults: upgrades.allow %v, admin.pprof %v, limits.buffer_body %d", cfg.Upgrades.Allow, cfg.Admin.Pprof, cfg.Limits.BufferBody)
	}
	_, err = Load("t.yaml", []byte("limits: {buffer_body: 100}\nupstreams: [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: s}]\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "limits.buffer_body: 100B is too small: at least 4KiB") {
		t.Errorf("buffer_body 100: %v", err)
	}
}

func TestEdgeDefaults(t *testing.T) {
	cfg, err := Load("t.yaml", []byte(`
upstreams:
  - {name: pool, urls: ["http://127.0.0.1:1", "http://127.0.0.1:2"], tls: {insecure_skip_verify: true}}
routes:
  - {name: r, upstream: pool}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams[0]
	if u.Balance != BalanceRoundRobin || u.Health.MaxFailures != DefaultMaxFailures || u.Health.Ejection.D() != DefaultEjectionDuration || len(u.Endpoints()) != 2 {
		t.Errorf("upstream defaults %+v", u)
	}
	if cfg.RequestID.Header != "X-Request-Id" || *cfg.AccessLog.Sample != 1 || cfg.Upgrades.IdleTimeout.D() != DefaultUpgradeIdle {
		t.Errorf("edge defaults %+v %+v", cfg.RequestID, cfg.Upgrades)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "insecure_skip_verify") {
		t.Errorf("warnings %q", w)
	}
}
