package diff

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wI2L/jsondiff"
)

// benchDoc builds a realistic API response of about size bytes: metadata with
// a volatile timestamp and request id, and a list of order lines. variant
// changes a few values; stamp changes only the ignored volatile fields.
func benchDoc(size int, variant, stamp int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"requestId":"req-%08d","timestamp":"2025-03-01T12:00:%02dZ","customer":{"id":42,"name":"Ada Lovelace","email":"ada@example.com","tier":"gold"},"items":[`, stamp, stamp%60)
	for i := 0; b.Len() < size-120; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		price := 10.5 + float64(i)
		if variant != 0 && i%7 == 3 {
			price += 1
		}
		fmt.Fprintf(&b, `{"sku":"SKU-%05d","qty":%d,"price":%.2f,"tags":["a","b"],"available":%t}`, i, i%5+1, price, i%2 == 0)
	}
	fmt.Fprintf(&b, `],"total":%d,"currency":"EUR","next":null}`, 1234+variant)
	return []byte(b.String())
}

func BenchmarkCompare(b *testing.B) {
	rules, err := CompileRules(Spec{Ignore: []string{"/timestamp", "**/requestId"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 64 << 10} {
		primary := benchDoc(size, 0, 1)
		for _, tc := range []struct {
			name   string
			shadow []byte
			want   Outcome
		}{
			{"match", benchDoc(size, 0, 2), Match}, // differs only in ignored fields
			{"differ", benchDoc(size, 1, 2), Mismatch},
		} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, tc.name), func(b *testing.B) {
				p := &Capture{Status: 200, ContentType: "application/json", Body: primary}
				s := &Capture{Status: 200, ContentType: "application/json", Body: tc.shadow}
				if r := Compare(p, s, rules); r.Outcome != tc.want {
					b.Fatalf("setup: %v %+v", r.Outcome, r.Differences)
				}
				b.SetBytes(int64(len(primary) + len(tc.shadow)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					Compare(p, s, rules)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmp/s")
			})
		}
	}
}

// BenchmarkCompareUnordered measures multiset array comparison: the shadow
// lists the same items in reverse order.
func BenchmarkCompareUnordered(b *testing.B) {
	rules, err := CompileRules(Spec{ArrayOrder: ArrayOrderIgnore, Ignore: []string{"/timestamp", "**/requestId"}})
	if err != nil {
		b.Fatal(err)
	}
	primary := benchDoc(1<<10, 0, 1)
	var d doc
	if err := d.parse(primary); err != nil {
		b.Fatal(err)
	}
	// Reverse the items array textually.
	start := strings.Index(string(primary), `"items":[`) + len(`"items":[`)
	end := strings.Index(string(primary), `],"total"`)
	items := strings.Split(string(primary[start:end]), "},{")
	for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
		items[i], items[j] = items[j], items[i]
	}
	for i := range items {
		items[i] = "{" + strings.Trim(items[i], "{}") + "}"
	}
	shadow := []byte(string(primary[:start]) + strings.Join(items, ",") + string(primary[end:]))
	p := &Capture{Status: 200, ContentType: "application/json", Body: primary}
	s := &Capture{Status: 200, ContentType: "application/json", Body: shadow}
	if r := Compare(p, s, rules); r.Outcome != Match {
		b.Fatalf("setup: %+v", r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Compare(p, s, rules)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmp/s")
}

// BenchmarkJSONDiffBaseline runs github.com/wI2L/jsondiff on the same 1KiB
// pair, for comparison (it has no ignore wildcards, so the volatile fields
// show up as differences there).
func BenchmarkJSONDiffBaseline(b *testing.B) {
	primary, shadow := benchDoc(1<<10, 0, 1), benchDoc(1<<10, 1, 2)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := jsondiff.CompareJSON(primary, shadow); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmp/s")
}

func BenchmarkStatsRecord(b *testing.B) {
	s := NewStats(nil, nil)
	ev := Event{PrimaryLatency: 3 * time.Millisecond, ShadowLatency: 4 * time.Millisecond, Result: mismatch("/items/3/price", "/total")}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Record(ev)
	}
}
