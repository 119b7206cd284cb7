package splitter

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

var testPeer = net.ParseIP("198.51.100.7")

func mustCompile(t testing.TB, spec Spec) *Splitter {
	t.Helper()
	s, err := Compile(spec, "api", "stable", nil)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func userReq(id string) *fasthttp.Request { return newReq("/", "X-User-ID", id) }

func TestReasons(t *testing.T) {
	var names []string
	for _, r := range Reasons() {
		names = append(names, r.String())
	}
	want := []string{"forced", "halted", "cohort", "missing_key", "percent"}
	if !slices.Equal(names, want) {
		t.Errorf("Reasons() = %q, want %q", names, want)
	}
	if got := Reason(200).String(); got != "reason(200)" {
		t.Errorf("unknown reason renders as %q", got)
	}
}

func TestDecidePercentMatchesBucket(t *testing.T) {
	s := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary", Percent: 2500})
	if s.Salt() != "api" {
		t.Fatalf("default salt = %q, want the route name", s.Salt())
	}
	for i := range 2000 {
		id := fmt.Sprintf("user-%d", i)
		d := s.Decide(userReq(id), testPeer)
		wantCanary := Bucket("api", []byte(id)) < 2500
		if d.Reason != ReasonPercent || d.Cohort != -1 || (d.Target == TargetCanary) != wantCanary {
			t.Fatalf("%s: %+v, want canary=%v by percent", id, d, wantCanary)
		}
	}
	// The worked example of the package comment.
	ex := mustCompile(t, Spec{Key: "header:X-User-ID", Salt: "api-v2", To: "canary"})
	for bp, want := range map[cfgtypes.BasisPoints]uint8{2486: TargetStable, 2487: TargetCanary} {
		ex.SetPercent(bp)
		if d := ex.Decide(userReq("user-42"), testPeer); d.Target != want {
			t.Errorf("user-42 at %s%%: target %d, want %d", bp, d.Target, want)
		}
	}
}

func TestDecideSticky(t *testing.T) {
	spec := Spec{Key: "cookie:sid", Salt: "sticky", To: "canary", Percent: 3000}
	a, b := mustCompile(t, spec), mustCompile(t, spec)
	for i := range 5000 {
		req := newReq("/", "Cookie", fmt.Sprintf("sid=s%d", i))
		first := a.Decide(req, testPeer)
		for _, s := range []*Splitter{a, b, mustCompile(t, spec)} {
			if d := s.Decide(req, testPeer); d != first {
				t.Fatalf("key s%d: %+v then %+v", i, first, d)
			}
		}
	}
}

func TestDecideMonotonic(t *testing.T) {
	s := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary"})
	keys := randomKeys(10_000, 3)
	reqs := make([]*fasthttp.Request, len(keys))
	for i, k := range keys {
		reqs[i] = userReq(string(k))
	}
	// enteredAt[i] is the first percent step at which key i is in the canary.
	// Monotonic means: once in, in at every higher step, which makes every
	// pair of steps p < q satisfy canary(p) ⊆ canary(q).
	enteredAt := make([]int, len(keys))
	for i := range enteredAt {
		enteredAt[i] = -1
	}
	for p := 0; p <= 100; p++ {
		s.SetPercent(cfgtypes.BasisPoints(p * 100))
		in := 0
		for i, req := range reqs {
			canary := s.Decide(req, testPeer).Target == TargetCanary
			switch {
			case canary && enteredAt[i] < 0:
				enteredAt[i] = p
			case !canary && enteredAt[i] >= 0:
				t.Fatalf("key %s left the canary at %d%% after entering at %d%%", keys[i], p, enteredAt[i])
			}
			if canary {
				in++
			}
		}
		if p == 0 && in != 0 || p == 100 && in != len(keys) {
			t.Fatalf("at %d%% %d of %d keys in the canary", p, in, len(keys))
		}
	}
	// Lowering only removes keys: walk back down.
	for p := 100; p >= 0; p-- {
		s.SetPercent(cfgtypes.BasisPoints(p * 100))
		for i, req := range reqs {
			canary := s.Decide(req, testPeer).Target == TargetCanary
			if canary != (enteredAt[i] <= p) {
				t.Fatalf("key %s at %d%% going down: canary=%v, entered at %d%%", keys[i], p, canary, enteredAt[i])
			}
		}
	}
}

func TestCohorts(t *testing.T) {
	spec := Spec{
		Key: "header:X-User-ID", To: "canary", Percent: 0,
		Cohorts: []CohortSpec{
			{Name: "internal", When: Conditions{Header: map[string]string{"X-Internal": "true"}}},
			{Name: "plans", When: Conditions{HeaderIn: map[string][]string{"X-Plan": {"beta", "staff"}}, QueryRegex: map[string]string{"v": `^2\.`}}, To: "beta-pool"},
			{Name: "hdr-re", When: Conditions{HeaderRegex: map[string]string{"User-Agent": `(?i)synthetic`}}, To: "beta-pool"},
			{Name: "ck", When: Conditions{Cookie: map[string]string{"exp": "on"}}},
			{Name: "ck-in", When: Conditions{CookieIn: map[string][]string{"team": {"a", "b"}}}},
			{Name: "ck-re", When: Conditions{CookieRegex: map[string]string{"grp": `^g[0-9]+$`}}},
			{Name: "q", When: Conditions{Query: map[string]string{"canary": "1"}}},
			{Name: "q-in", When: Conditions{QueryIn: map[string][]string{"region": {"eu west", "us"}}}},
			{Name: "synthetic", When: Conditions{KeyIn: []string{"smoke-1", "smoke-2"}}},
			{Name: "optout", When: Conditions{Header: map[string]string{"X-Opt-Out": "1"}}, To: "stable"},
			{Name: "shadowed", When: Conditions{Header: map[string]string{"X-Internal": "true", "X-Second": "yes"}}, To: "never"},
		},
	}
	s := mustCompile(t, spec)
	if got, want := s.Targets(), []string{"stable", "canary", "beta-pool", "never"}; !slices.Equal(got, want) {
		t.Fatalf("Targets() = %q, want %q", got, want)
	}
	if got := s.CohortNames(); len(got) != len(spec.Cohorts) || got[1] != "plans" {
		t.Fatalf("CohortNames() = %q", got)
	}
	tests := []struct {
		name       string
		req        *fasthttp.Request
		wantTarget string
		wantCohort string // "" = no cohort
	}{
		{"header equals", newReq("/", "X-Internal", "true"), "canary", "internal"},
		{"header equals is case-sensitive in value", newReq("/", "X-Internal", "TRUE"), "stable", ""},
		{"header name is case-insensitive", newReq("/", "x-internal", "true"), "canary", "internal"},
		{"first match wins over a later, more specific rule", newReq("/", "X-Internal", "true", "X-Second", "yes"), "canary", "internal"},
		{"header_in and query_regex ANDed: both", newReq("/?v=2.1", "X-Plan", "staff"), "beta-pool", "plans"},
		{"ANDed: header only", newReq("/?v=1.9", "X-Plan", "staff"), "stable", ""},
		{"ANDed: query only", newReq("/?v=2.0", "X-Plan", "free"), "stable", ""},
		{"ANDed: query absent", newReq("/", "X-Plan", "beta"), "stable", ""},
		{"header_regex", newReq("/", "User-Agent", "Synthetic-Monitor/1"), "beta-pool", "hdr-re"},
		{"cookie equals", newReq("/", "Cookie", "exp=on"), "canary", "ck"},
		{"cookie_in", newReq("/", "Cookie", "x=1; team=b"), "canary", "ck-in"},
		{"cookie_in miss", newReq("/", "Cookie", "team=c"), "stable", ""},
		{"cookie_regex", newReq("/", "Cookie", "grp=g17"), "canary", "ck-re"},
		{"cookie_regex miss", newReq("/", "Cookie", "grp=g17x"), "stable", ""},
		{"query equals", newReq("/p?canary=1"), "canary", "q"},
		{"query equals decoded", newReq("/p?can%61ry=%31"), "canary", "q"},
		{"query_in decoded", newReq("/p?region=eu+west"), "canary", "q-in"},
		{"key_in", userReq("smoke-2"), "canary", "synthetic"},
		{"key_in miss", userReq("smoke-3"), "stable", ""},
		{"cohort to stable", newReq("/", "X-Opt-Out", "1"), "stable", "optout"},
		{"empty header fails equality and regex", newReq("/", "X-Internal", "", "User-Agent", ""), "stable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Decide(tt.req, testPeer)
			if got := s.Target(d); got != tt.wantTarget {
				t.Errorf("target = %q, want %q (%+v)", got, tt.wantTarget, d)
			}
			gotCohort := ""
			if d.Cohort >= 0 {
				gotCohort = s.CohortNames()[d.Cohort]
				if d.Reason != ReasonCohort {
					t.Errorf("cohort %q matched with reason %s", gotCohort, d.Reason)
				}
			}
			if gotCohort != tt.wantCohort {
				t.Errorf("cohort = %q, want %q", gotCohort, tt.wantCohort)
			}
		})
	}

	// Halted overrides every cohort.
	s.SetHalted(true)
	for _, tt := range tests {
		if d := s.Decide(tt.req, testPeer); d != (Decision{Target: TargetStable, Reason: ReasonHalted, Cohort: -1}) {
			t.Errorf("halted, %s: %+v", tt.name, d)
		}
	}
}

func TestHaltedKeepsPercent(t *testing.T) {
	s := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary", Percent: 10000})
	s.SetHalted(true)
	if !s.Halted() || s.Percent() != 10000 {
		t.Fatalf("halted=%v percent=%s", s.Halted(), s.Percent())
	}
	if d := s.Decide(userReq("u"), testPeer); d.Target != TargetStable || d.Reason != ReasonHalted {
		t.Errorf("halted: %+v", d)
	}
	s.SetHalted(false)
	if d := s.Decide(userReq("u"), testPeer); d.Target != TargetCanary || d.Reason != ReasonPercent {
		t.Errorf("resumed: %+v", d)
	}
	s.SetPercent(20000)
	if s.Percent() != cfgtypes.MaxBasisPoints {
		t.Errorf("SetPercent(20000) left %d, want clamped to 10000", s.Percent())
	}
}

func TestForceHeader(t *testing.T) {
	spec := Spec{
		Key: "header:X-User-ID", To: "canary", Percent: 0, ForceHeader: "X-Shadowproxy-Upstream",
		Cohorts: []CohortSpec{{Name: "b", When: Conditions{KeyIn: []string{"u1"}}, To: "blue"}},
	}
	s := mustCompile(t, spec)
	tests := []struct {
		name   string
		force  string
		halted bool
		want   Decision
	}{
		{"canary", "canary", false, Decision{TargetCanary, ReasonForced, -1}},
		{"stable over a cohort", "stable", false, Decision{TargetStable, ReasonForced, -1}},
		{"cohort target", "blue", false, Decision{2, ReasonForced, -1}},
		{"honoured while halted", "canary", true, Decision{TargetCanary, ReasonForced, -1}},
		{"unknown name ignored", "canry", false, Decision{2, ReasonCohort, 0}},
		{"case matters", "Canary", false, Decision{2, ReasonCohort, 0}},
		{"unknown name while halted", "nope", true, Decision{TargetStable, ReasonHalted, -1}},
	}
	for _, tt := range tests {
		s.SetHalted(tt.halted)
		req := newReq("/", "X-User-ID", "u1", "X-Shadowproxy-Upstream", tt.force)
		if d := s.Decide(req, testPeer); d != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, d, tt.want)
		}
	}
	// Off by default: the header means nothing.
	plain := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary"})
	if d := plain.Decide(newReq("/", "X-User-ID", "u1", "X-Shadowproxy-Upstream", "canary"), testPeer); d.Reason != ReasonPercent || d.Target != TargetStable {
		t.Errorf("force header honoured while off: %+v", d)
	}
}

func TestOnMissing(t *testing.T) {
	stable := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary", Percent: 10000})
	for _, req := range []*fasthttp.Request{newReq("/"), userReq("")} {
		if d := stable.Decide(req, testPeer); d != (Decision{TargetStable, ReasonMissingKey, -1}) {
			t.Errorf("on_missing stable: %+v", d)
		}
	}

	random := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary", OnMissing: OnMissingRandom})
	const n = 20_000
	for _, bp := range []cfgtypes.BasisPoints{0, 2000, 10000} {
		random.SetPercent(bp)
		canary := 0
		for range n {
			d := random.Decide(newReq("/"), testPeer)
			if d.Reason != ReasonMissingKey || d.Cohort != -1 {
				t.Fatalf("on_missing random: %+v", d)
			}
			if d.Target == TargetCanary {
				canary++
			}
		}
		// Per-request sampling: the canary share is binomial around the
		// percentage. 6 standard deviations (false alarm ~2e-9) because,
		// unlike the hash tests, this one draws fresh random numbers.
		p := bp.Percent() / 100
		share := float64(canary) / n
		if bound := binomialBound(p, n, 6); math.Abs(share-p) > bound {
			t.Errorf("on_missing random at %s%%: share %.4f, want %.4f ± %.4f", bp, share, p, bound)
		}
	}
	// A key that is present still decides by hash.
	random.SetPercent(5000)
	for i := range 200 {
		id := fmt.Sprintf("k%d", i)
		want := Bucket("api", []byte(id)) < 5000
		if d := random.Decide(userReq(id), testPeer); (d.Target == TargetCanary) != want || d.Reason != ReasonPercent {
			t.Fatalf("%s: %+v", id, d)
		}
	}
}

func TestDecideIPKey(t *testing.T) {
	tp := mustTP(t, "10.0.0.0/8")
	spec := Spec{Key: "ip", Salt: "ipsalt", To: "canary", Percent: 5000}
	trusting, err := Compile(spec, "api", "stable", tp)
	if err != nil {
		t.Fatal(err)
	}
	untrusting := mustCompile(t, spec)
	client := "203.0.113.5"
	want := Bucket("ipsalt", []byte(client)) < 5000
	// Find a spoofed address that lands on the other side, so a test that
	// passes cannot be luck.
	spoof := ""
	for i := range 256 {
		a := fmt.Sprintf("192.0.2.%d", i)
		if (Bucket("ipsalt", []byte(a)) < 5000) != want {
			spoof = a
			break
		}
	}
	if spoof == "" {
		t.Fatal("no address on the other side of the split")
	}
	tests := []struct {
		name string
		s    *Splitter
		peer string
		xff  string
		want bool
	}{
		{"behind a trusted proxy: the client from XFF", trusting, "10.0.0.1", spoof + ", " + client, want},
		{"direct client: its own address, spoofed XFF ignored", trusting, client, spoof, want},
		{"no trusted proxies: spoofed XFF ignored", untrusting, client, spoof, want},
		{"no trusted proxies: the proxy's address, not XFF", untrusting, "10.0.0.1", client, Bucket("ipsalt", []byte("10.0.0.1")) < 5000},
	}
	for _, tt := range tests {
		d := tt.s.Decide(newReq("/", "X-Forwarded-For", tt.xff), net.ParseIP(tt.peer))
		if d.Reason != ReasonPercent || (d.Target == TargetCanary) != tt.want {
			t.Errorf("%s: %+v, want canary=%v", tt.name, d, tt.want)
		}
	}
	if d := trusting.Decide(newReq("/"), nil); d.Reason != ReasonMissingKey {
		t.Errorf("no peer: %+v, want missing_key", d)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, route, stable string
		spec                Spec
		want                string
	}{
		{"canary is stable", "api", "v1", Spec{Key: "ip", To: "v1"}, `to: "v1" is the route's own upstream; the canary must be a different upstream`},
		{"no salt", "", "v1", Spec{Key: "ip", To: "v2"}, `salt: empty, and the route has no name to default to; set a salt such as the service name`},
		{"no stable", "api", "", Spec{Key: "ip", To: "v2"}, `splitter: the route's stable upstream name is empty; compile the split with the upstream the route forwards to`},
		{"invalid spec", "api", "v1", Spec{Key: "nope", To: "v2", OnMissing: "x"}, "key: invalid key \"nope\": want header:NAME, cookie:NAME, query:NAME or ip\n" +
			`on_missing: unknown value "x": want "stable" (keyless requests go to the stable upstream, the default) or "random" (sampled per request at the same percentage)`},
	}
	for _, tt := range tests {
		var msgs []string
		for _, e := range tt.spec.ValidateRoute(tt.route, tt.stable) {
			msgs = append(msgs, e.Error())
		}
		if got := strings.Join(msgs, "\n"); got != tt.want {
			t.Errorf("%s: ValidateRoute = %s\nwant %s", tt.name, got, tt.want)
		}
		s, err := Compile(tt.spec, tt.route, tt.stable, nil)
		if s != nil || err == nil || err.Error() != tt.want {
			t.Errorf("%s: Compile = %v, %v\nwant error %s", tt.name, s, err, tt.want)
		}
	}
}

func TestConcurrentPercentChanges(t *testing.T) {
	// Run with -race: the rollout controller writes while requests decide.
	s := mustCompile(t, Spec{Key: "header:X-User-ID", To: "canary"})
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.SetPercent(cfgtypes.BasisPoints(i % 10001))
			s.SetHalted(i%7 == 0)
		}
	}()
	var deciders sync.WaitGroup
	for g := range 4 {
		deciders.Add(1)
		go func() {
			defer deciders.Done()
			req := userReq(fmt.Sprintf("user-%d", g)) // a request belongs to one goroutine, as in the server
			for range 20_000 {
				d := s.Decide(req, testPeer)
				switch {
				case d.Reason == ReasonHalted && d.Target == TargetStable:
				case d.Reason == ReasonPercent && d.Target <= TargetCanary:
				default:
					t.Errorf("unexpected decision %+v", d)
					return
				}
			}
		}()
	}
	deciders.Wait()
	close(stop)
	<-writerDone
	if p := s.Percent(); p > cfgtypes.MaxBasisPoints {
		t.Errorf("percent %d out of range", p)
	}
}

func TestSampler(t *testing.T) {
	key, _ := ParseKeySource("header:X-User-ID")
	s := NewSampler(&key, "api:shadow", 3000, nil)
	for i := range 3000 {
		id := fmt.Sprintf("u%d", i)
		want := Bucket("api:shadow", []byte(id)) < 3000
		for range 2 { // consistent per user
			if got := s.Sample(userReq(id), testPeer); got != want {
				t.Fatalf("Sample(%s) = %v, want %v", id, got, want)
			}
		}
	}
	// Keyless requests and a nil key are sampled at random at the rate.
	const n = 20_000
	for _, smp := range []*Sampler{s, NewSampler(nil, "x", 3000, nil)} {
		hits := 0
		for range n {
			if smp.Sample(newReq("/"), testPeer) {
				hits++
			}
		}
		if bound := binomialBound(0.3, n, 6); math.Abs(float64(hits)/n-0.3) > bound {
			t.Errorf("random sampling share %.4f, want 0.3 ± %.4f", float64(hits)/n, bound)
		}
	}
	// Edges: 0% never, 100% always, clamped above.
	s.SetPercent(0)
	s2 := NewSampler(&key, "y", 50000, nil)
	if s2.Percent() != cfgtypes.MaxBasisPoints {
		t.Errorf("rate not clamped: %s", s2.Percent())
	}
	for i := range 500 {
		r := userReq(fmt.Sprint(i))
		if s.Sample(r, testPeer) || !s2.Sample(r, testPeer) {
			t.Fatalf("0%%/100%% edges wrong for %d", i)
		}
	}
}

// TestDecideIgnoresRequestMutationOrder checks that reading cookies (which
// makes fasthttp parse them) does not change what header or query keys see.
func TestDecideIgnoresRequestMutationOrder(t *testing.T) {
	s := mustCompile(t, Spec{Key: "query:uid", To: "canary", Percent: 5000,
		Cohorts: []CohortSpec{{Name: "c", When: Conditions{Cookie: map[string]string{"x": "nope"}}}}})
	req := newReq("/p?uid=u%2042", "Cookie", "x=1; y=2")
	first := s.Decide(req, testPeer)
	if first.Reason != ReasonPercent || (first.Target == TargetCanary) != (Bucket("api", []byte("u 42")) < 5000) {
		t.Fatalf("%+v", first)
	}
	if again := s.Decide(req, testPeer); again != first {
		t.Errorf("second decision %+v differs from %+v", again, first)
	}
	if !strings.Contains(req.Header.String(), "x=1; y=2") {
		t.Errorf("cookies lost after Decide:\n%s", req.Header.String())
	}
}
