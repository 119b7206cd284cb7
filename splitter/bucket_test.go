package splitter

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/buckets.golden from the current hash (only when deliberately breaking the bucket contract)")

const goldenPath = "testdata/buckets.golden"

// goldenInputs returns the 1,000 (salt, key) pairs of the golden file: a mix
// of shapes real keys have (ids, UUIDs, emails, numbers, addresses) plus
// Unicode, control bytes and lengths on both sides of xxhash's 32-byte block.
func goldenInputs() [][2]string {
	r := rand.New(rand.NewPCG(20240601, 1))
	salts := []string{"api-v2", "checkout", "", "route:with:colons", "ünïcode"}
	out := make([][2]string, 0, 1000)
	for i := range 1000 {
		var key string
		switch i % 8 {
		case 0:
			key = fmt.Sprintf("user-%d", i)
		case 1:
			key = fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xffff, r.Uint32()&0xffff, r.Uint64()&0xffffffffffff)
		case 2:
			key = fmt.Sprintf("u%d@example.com", r.IntN(1_000_000))
		case 3:
			key = strconv.FormatUint(r.Uint64(), 10)
		case 4:
			key = fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))
		case 5:
			key = fmt.Sprintf("2001:db8::%x", r.Uint32()&0xffff)
		case 6:
			key = strings.Repeat("k", i%70) // lengths 0..69 cross the 32-byte block
		case 7:
			key = fmt.Sprintf("ключ-%d\t\"%c\x00", i, rune(0x1F600+r.IntN(64)))
		}
		out = append(out, [2]string{salts[i%len(salts)], key})
	}
	return out
}

func TestBucketGolden(t *testing.T) {
	if *update {
		var b strings.Builder
		b.WriteString("# Golden bucket vectors: bucket = XXH64(salt + \":\" + key, seed 0) mod 10000.\n")
		b.WriteString("# Columns: quoted salt, quoted key (Go syntax), XXH64 as decimal, bucket.\n")
		b.WriteString("# This pins a public contract; regenerate (go test -run TestBucketGolden -update) only to break it on purpose.\n")
		for _, in := range goldenInputs() {
			k := []byte(in[1])
			fmt.Fprintf(&b, "%s\t%s\t%d\t%d\n", strconv.Quote(in[0]), strconv.Quote(in[1]), Hash64(in[0], k), Bucket(in[0], k))
		}
		if err := os.WriteFile(goldenPath, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(goldenPath)
	if err != nil {
		t.Fatalf("%v (generate it once with go test -run TestBucketGolden -update)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) != 4 {
			t.Fatalf("line %d: want 4 tab-separated columns, got %d", line, len(cols))
		}
		salt, err1 := strconv.Unquote(cols[0])
		key, err2 := strconv.Unquote(cols[1])
		hash, err3 := strconv.ParseUint(cols[2], 10, 64)
		bucket, err4 := strconv.ParseUint(cols[3], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			t.Fatalf("line %d: unparsable: %v %v %v %v", line, err1, err2, err3, err4)
		}
		if got := Hash64(salt, []byte(key)); got != hash {
			t.Errorf("line %d: Hash64(%q, %q) = %d, golden %d", line, salt, key, got, hash)
		}
		if got := Bucket(salt, []byte(key)); uint64(got) != bucket {
			t.Errorf("line %d: Bucket(%q, %q) = %d, golden %d", line, salt, key, got, bucket)
		}
		d := saltedDigest(salt) // the Splitter's incremental path
		if got := bucketOf(&d, []byte(key)); uint64(got) != bucket {
			t.Errorf("line %d: Splitter bucket of (%q, %q) = %d, golden %d", line, salt, key, got, bucket)
		}
		if hash%10000 != bucket {
			t.Errorf("line %d: golden bucket %d is not hash %d mod 10000", line, bucket, hash)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1000 {
		t.Errorf("golden file has %d vectors, want 1000", n)
	}
}

// TestBucketIsTheRecipe checks the incremental hashing (salted digest copied
// per request) against the one-shot recipe on the concatenated string.
func TestBucketIsTheRecipe(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		salt := strings.Repeat("s", i%40)
		key := make([]byte, r.IntN(100))
		for j := range key {
			key[j] = byte(r.Uint32())
		}
		want := xxhash.Sum64String(salt + ":" + string(key))
		if got := Hash64(salt, key); got != want {
			t.Fatalf("Hash64(%q, %x) = %d, want %d", salt, key, got, want)
		}
		if got := Bucket(salt, key); got != uint32(want%10000) {
			t.Fatalf("Bucket(%q, %x) = %d, want %d", salt, key, got, want%10000)
		}
	}
}

// randomKeys returns n distinct pseudo-random keys (fixed seed: the
// statistical tests below are deterministic, the bounds say why they pass).
func randomKeys(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%016x-%d", r.Uint64(), i)
	}
	return keys
}

// binomialBound is the allowed deviation of an observed share from p over n
// independent trials: z standard deviations of the binomial proportion.
func binomialBound(p float64, n int, z float64) float64 {
	return z * math.Sqrt(p*(1-p)/float64(n))
}

func TestBucketUniform(t *testing.T) {
	const n = 100_000
	keys := randomKeys(n, 7)
	counts := make([]int, NumBuckets)
	for _, k := range keys {
		counts[Bucket("uniform", k)]++
	}
	// The canary share at p is the fraction of keys with bucket < p. If the
	// hash is uniform each key is a Bernoulli(p) trial, so the share lies
	// within 4.5 binomial standard deviations of p except with probability
	// about 7e-6.
	for _, bp := range []uint32{100, 1000, 5000} {
		in := 0
		for b := uint32(0); b < bp; b++ {
			in += counts[b]
		}
		p := float64(bp) / float64(NumBuckets)
		share := float64(in) / n
		if bound := binomialBound(p, n, 4.5); math.Abs(share-p) > bound {
			t.Errorf("at %d bp the canary share is %.5f, want %.5f ± %.5f", bp, share, p, bound)
		}
	}
	// Chi-square over 100 equal ranges of buckets: 99 degrees of freedom,
	// mean 99, standard deviation sqrt(198) ≈ 14; 4.5 standard deviations
	// above the mean is about 162.
	var chi2 float64
	expect := float64(n) / 100
	for r := range 100 {
		obs := 0
		for b := r * 100; b < (r+1)*100; b++ {
			obs += counts[b]
		}
		d := float64(obs) - expect
		chi2 += d * d / expect
	}
	if limit := 99 + 4.5*math.Sqrt(198); chi2 > limit {
		t.Errorf("chi-square over 100 bucket ranges = %.1f, want <= %.1f", chi2, limit)
	}
}

func TestBucketSaltsIndependent(t *testing.T) {
	const n = 100_000
	keys := randomKeys(n, 11)
	for _, bp := range []uint32{1000, 5000} {
		// 2x2 table of canary membership under two salts; phi is the
		// Pearson correlation of the two indicators. Under independence
		// n*phi^2 is chi-square with 1 degree of freedom, i.e. sqrt(n)*phi is
		// standard normal, so |phi| <= 4.5/sqrt(n) ≈ 0.0142 holds except
		// with probability about 7e-6.
		var a, b, ab float64
		for _, k := range keys {
			x := Bucket("route-a", k) < bp
			y := Bucket("route-b", k) < bp
			if x {
				a++
			}
			if y {
				b++
			}
			if x && y {
				ab++
			}
		}
		pa, pb, pab := a/n, b/n, ab/n
		phi := (pab - pa*pb) / math.Sqrt(pa*(1-pa)*pb*(1-pb))
		if bound := 4.5 / math.Sqrt(n); math.Abs(phi) > bound {
			t.Errorf("at %d bp the correlation of assignments under two salts is %.5f, want |phi| <= %.5f", bp, phi, bound)
		}
	}
}
