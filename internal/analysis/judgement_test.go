package analysis

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// The judgement suite: each scenario runs a primary, a secondary of the
// same program and a candidate on loopback, behind the real proxy, and
// knows for every request which differences of the candidate are real.
// It reports, over the verdicts given after learning, how many real
// differences were found and how many mismatches were false. The goal is
// every real difference found and zero false mismatches; the README's
// table is this test's output (go test -run TestJudgementSuite -v
// ./internal/analysis/).

// role is which program answers.
type role int

const (
	stable    role = iota // the primary's version (primary and secondary)
	candidate             // the shadow's version
	canaryV2              // the canary of a split
)

// instance is one running program: a role and an instance id (the primary
// and the secondary are instances 0 and 1 of the stable program).
type instance struct {
	role role
	id   int
}

// rng is deterministic per instance and request, so every run sees the
// same noise.
func (in instance) rng(n int) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%d", in.role, in.id, n)
	return rand.New(rand.NewPCG(h.Sum64(), 7))
}

type scenario struct {
	name string
	// what the README table says about it
	what string
	// requests to send, and the path of request n
	requests int
	path     func(n int) string
	// compare section (YAML flow map content) and an optional split
	compare string
	split   bool
	// serve answers request n as instance in.
	serve func(w http.ResponseWriter, r *http.Request, in instance, n int)
	// truth lists the normalized paths that really differ for request n
	// (given the primary's answer, for a split).
	truth func(n int, primaryBody string) []string
	// perRequestMisses: real differences the rule is allowed to miss,
	// as a fraction (the 6%-noisy field: the requests where the secondary
	// also differed are cancelled, by design).
	allowMissed float64
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func reqNo(r *http.Request) int {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	return n
}

func byPath(n int) string { return fmt.Sprintf("/api/items/%d?n=%d", n%97, n) }

func scenarios() []scenario {
	return []scenario{
		{
			name: "volatile ids and timestamps", what: "requestId and timestamp differ on every answer; candidate is the same version",
			requests: 250, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				writeJSON(w, map[string]any{"id": n % 97, "requestId": fmt.Sprintf("%x", in.rng(n).Uint64()),
					"timestamp": time.Now().UnixNano(), "name": "item"})
			},
			truth: func(int, string) []string { return nil },
		},
		{
			name: "3% noisy field", what: "cache_hit is true on 3% of answers of each instance",
			requests: 400, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				writeJSON(w, map[string]any{"id": n % 97, "cache_hit": in.rng(n).IntN(100) < 3})
			},
			truth: func(int, string) []string { return nil },
		},
		{
			name: "regression on a 6% noisy field", what: "price is noisy on ~6% of pairs; the candidate answers 1000 always",
			requests: 400, path: byPath, allowMissed: 0.12,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				price := 10
				if in.rng(n).IntN(100) < 3 {
					price = 11
				}
				if in.role == candidate {
					price = 1000
				}
				writeJSON(w, map[string]any{"id": n % 97, "price": price})
			},
			truth: func(int, string) []string { return []string{"/price"} },
		},
		{
			name: "type change on a noisy field", what: "ts (a string) differs always; the candidate makes it a number",
			requests: 250, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				var ts any = time.Now().Format(time.RFC3339Nano)
				if in.role == candidate {
					ts = time.Now().UnixNano()
				}
				writeJSON(w, map[string]any{"id": n % 97, "ts": ts})
			},
			truth: func(int, string) []string { return []string{"/ts"} },
		},
		{
			name: "removal of a noisy field", what: "ts differs always; the candidate drops it",
			requests: 250, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				body := map[string]any{"id": n % 97}
				if in.role != candidate {
					body["ts"] = time.Now().Format(time.RFC3339Nano)
				}
				writeJSON(w, body)
			},
			truth: func(int, string) []string { return []string{"/ts"} },
		},
		{
			name: "endpoint with 4% of traffic", what: "/rare (4%) has its own noisy nonce and a real change; /busy is clean (min_observations 20)",
			requests: 1000, compare: "noise: {min_observations: 20}",
			path: func(n int) string {
				if n%25 == 0 {
					return fmt.Sprintf("/rare/%d?n=%d", n, n)
				}
				return fmt.Sprintf("/busy/%d?n=%d", n, n)
			},
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				if strings.HasPrefix(r.URL.Path, "/rare/") {
					label := "ok"
					if in.role == candidate {
						label = "OK"
					}
					writeJSON(w, map[string]any{"nonce": in.rng(n).Uint64(), "label": label})
					return
				}
				writeJSON(w, map[string]any{"busy": true, "n": n})
			},
			truth: func(n int, _ string) []string {
				if n%25 == 0 {
					return []string{"/label"}
				}
				return nil
			},
		},
		{
			name: "HTML page with a nonce next to JSON", what: "/page is HTML with a nonce on every answer; /api really changes total",
			requests: 400,
			path: func(n int) string {
				if n%10 == 0 {
					return fmt.Sprintf("/page?n=%d", n)
				}
				return byPath(n)
			},
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				if r.URL.Path == "/page" {
					w.Header().Set("Content-Type", "text/html")
					fmt.Fprintf(w, `<html><script nonce="%x"></script></html>`, in.rng(n).Uint64())
					return
				}
				total := 100
				if in.role == candidate {
					total = 101
				}
				writeJSON(w, map[string]any{"total": total})
			},
			truth: func(n int, _ string) []string {
				if n%10 == 0 {
					return nil
				}
				return []string{"/total"}
			},
		},
		{
			name: "arrays with extra items", what: "the candidate appends an item to items (array_order: ignore)",
			requests: 250, path: byPath, compare: "array_order: ignore",
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				items := []any{map[string]any{"sku": "a"}, map[string]any{"sku": "b"}, map[string]any{"sku": "c"}}
				in.rng(n).Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
				if in.role == candidate {
					items = append(items, map[string]any{"sku": "d"})
				}
				writeJSON(w, map[string]any{"items": items})
			},
			truth: func(int, string) []string { return []string{"/items/*"} },
		},
		{
			name: "warm-up", what: "half of the answers carry a random flag; nothing is judged before 100 secondary answers",
			requests: 250, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				writeJSON(w, map[string]any{"flag": in.rng(n).IntN(2) == 0, "id": n % 97})
			},
			truth: func(int, string) []string { return nil },
		},
		{
			name: "split and secondary", what: "50% canary (v2 changes version); the shadow runs v2; the secondary is only asked about stable-served requests",
			requests: 400, path: byPath, split: true,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				v := "v1"
				if in.role != stable {
					v = "v2"
				}
				writeJSON(w, map[string]any{"version": v, "requestId": in.rng(n).Uint64()})
			},
			truth: func(_ int, primary string) []string {
				if strings.Contains(primary, `"v1"`) {
					return []string{"/version"}
				}
				return nil
			},
		},
		{
			name: "many noisy items, one real change", what: "150 items each with a noisy ts; the candidate changes item 77",
			requests: 250, path: byPath,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				var items []any
				rng := in.rng(n)
				for i := 0; i < 150; i++ {
					v := 1
					if i == 77 && in.role == candidate {
						v = 2
					}
					items = append(items, map[string]any{"ts": rng.Uint64(), "v": v})
				}
				writeJSON(w, map[string]any{"items": items})
			},
			truth: func(int, string) []string { return []string{"/items/*/v"} },
		},
		{
			name: "volatile headers, one real header change", what: `headers: ["*"]; tracing headers, Date and Cache-Control order vary; the candidate changes X-Api-Version`,
			requests: 250, path: byPath, compare: `headers: ["*"]`,
			serve: func(w http.ResponseWriter, r *http.Request, in instance, n int) {
				rng := in.rng(n)
				w.Header().Set("Traceparent", fmt.Sprintf("00-%x-01", rng.Uint64()))
				w.Header().Set("X-B3-Traceid", fmt.Sprintf("%x", rng.Uint64()))
				w.Header().Set("X-Correlation-Id", fmt.Sprintf("%x", rng.Uint64()))
				w.Header().Set("Cf-Ray", fmt.Sprintf("%x", rng.Uint64()))
				w.Header().Set("X-Envoy-Upstream-Service-Time", strconv.Itoa(rng.IntN(50)))
				if rng.IntN(2) == 0 {
					w.Header().Set("Cache-Control", "no-cache, max-age=0")
				} else {
					w.Header().Set("Cache-Control", "max-age=0,  no-cache")
				}
				ver := "1"
				if in.role == candidate {
					ver = "2"
				}
				w.Header().Set("X-Api-Version", ver)
				writeJSON(w, map[string]any{"ok": true})
			},
			truth: func(int, string) []string { return []string{"header/X-Api-Version"} },
		},
	}
}

// scenarioResult is one row of the README table.
type scenarioResult struct {
	name, what       string
	judged, learning int
	real, found      int
	falseMismatches  int
	falseExample     string
	missedAllowed    float64
}

func runScenario(t *testing.T, sc scenario) scenarioResult {
	t.Helper()
	start := func(in instance) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sc.serve(w, r, in, reqNo(r))
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return "http://" + ln.Addr().String()
	}
	primary, secondary, cand := start(instance{stable, 0}), start(instance{stable, 1}), start(instance{candidate, 2})
	split := ""
	upstreams := fmt.Sprintf("  - {name: primary, url: %q}\n  - {name: twin, url: %q}\n  - {name: cand, url: %q}\n", primary, secondary, cand)
	if sc.split {
		upstreams += fmt.Sprintf("  - {name: canary, url: %q}\n", start(instance{canaryV2, 3}))
		split = "    split: {key: \"query:n\", to: canary, percent: 50}\n"
	}
	compare := "secondary: twin"
	if sc.compare != "" {
		compare += ", " + sc.compare
	}
	cfg, err := config.Load("suite.yaml", []byte(fmt.Sprintf(`
listen: 127.0.0.1:0
upstreams:
%sroutes:
  - name: api
    upstream: primary
%s    shadow: {targets: [cand], workers: 1, queue_size: 4096, timeout: 5s, compare: {%s}}
`, upstreams, split, compare)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	a := New(metrics.New("t"), nil, nil)
	if err := a.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	res := scenarioResult{name: sc.name, what: sc.what, missedAllowed: sc.allowMissed}
	var mu sync.Mutex
	done := 0
	rec := comparerFunc(func(ex *proxy.Exchange) {
		n, _ := strconv.Atoi(ex.URI[strings.Index(ex.URI, "n=")+2:])
		truth := sc.truth(n, string(ex.Primary.Body))
		a.compare(ex, func(_ string, r diff.Result) {
			mu.Lock()
			defer mu.Unlock()
			switch r.Outcome {
			case diff.Learning:
				res.learning++
				return
			case diff.Uncomparable:
				t.Errorf("request %d uncomparable: %s", n, r.Note)
				return
			}
			res.judged++
			var got []string
			for _, d := range r.Differences {
				got = append(got, diff.NormalizePath(d.Path))
			}
			if len(truth) > 0 {
				res.real++
				found := true
				for _, f := range truth {
					found = found && slices.Contains(got, f)
				}
				if found {
					res.found++
				}
			}
			for _, g := range got {
				if !slices.Contains(truth, g) {
					res.falseMismatches++
					if res.falseExample == "" {
						res.falseExample = fmt.Sprintf("request %d: %+v", n, r.Differences)
					}
					break
				}
			}
		})
		mu.Lock()
		done++
		mu.Unlock()
	})
	p, err := proxy.New(cfg, proxy.Options{Metrics: metrics.New("t"), Comparer: rec})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	for n := 0; n < sc.requests; n++ {
		resp, err := client.Get("http://" + ln.Addr().String() + sc.path(n))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// One request at a time through the mirror keeps the learning
		// order equal to the request order, so the suite is repeatable.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			d := done
			mu.Unlock()
			if d > n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d was never compared", n)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	return res
}

type comparerFunc func(ex *proxy.Exchange)

func (f comparerFunc) Compare(ex *proxy.Exchange) { f(ex) }

// TestJudgementSuite runs every scenario and checks the goal: every real
// difference found (up to what the rule misses by design) and zero false
// mismatches after learning. With JUDGEMENT_TABLE=file it also writes the
// README table.
func TestJudgementSuite(t *testing.T) {
	var rows []scenarioResult
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			r := runScenario(t, sc)
			rows = append(rows, r)
			if r.judged == 0 {
				t.Fatalf("nothing judged (%d learning)", r.learning)
			}
			if r.falseMismatches != 0 {
				t.Errorf("%d false mismatches of %d judged; first %s", r.falseMismatches, r.judged, r.falseExample)
			}
			if missed := r.real - r.found; float64(missed) > r.missedAllowed*float64(r.real) {
				t.Errorf("found %d of %d real differences", r.found, r.real)
			}
		})
	}
	var b strings.Builder
	b.WriteString("| scenario | what the programs do | judged | learning | real differences found | false mismatches |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		found := "—"
		if r.real > 0 {
			found = fmt.Sprintf("%d of %d", r.found, r.real)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %d |\n", r.name, r.what, r.judged, r.learning, found, r.falseMismatches)
	}
	t.Log("\n" + b.String())
	if path := os.Getenv("JUDGEMENT_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
