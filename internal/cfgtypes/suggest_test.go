package cfgtypes

import "testing"

func TestSuggest(t *testing.T) {
	upstreams := []string{"stable", "canary", "stable-twin"}
	metrics := []string{"error_rate_5xx", "upstream_error_rate", "latency_p99", "conversion_rate"}
	for _, tc := range []struct {
		name       string
		got        string
		candidates []string
		want       string
	}{
		{"transposed letters are one edit", "stabel", upstreams, `stable`},
		{"missing letter", "canry", upstreams, `canary`},
		{"wrong case is found", "Stable", upstreams, `stable`},
		{"wrong case and a transposition", "CANRAY", upstreams, `canary`},
		{"the candidate keeps its own case", "auto", []string{"Auto"}, `Auto`},
		{"unrelated word", "xyz", upstreams, ""},
		{"empty input", "", upstreams, ""},
		{"no candidates", "stable", nil, ""},
		{"an exact match is no typo", "stable", upstreams, ""},
		{"an exact match wins over another case", "stable", []string{"Stable", "stable"}, ""},
		// len 4: one edit allowed, two is another word.
		{"short word, one edit", "atuo", []string{"auto", "manual", "dry_run"}, `auto`},
		{"short word, two edits", "aXYo", []string{"auto"}, ""},
		// len 11 and 10: three edits is the cap.
		{"long word, three edits", "eror_rat_5x", metrics, `error_rate_5xx`},
		{"long word, four edits", "eror_rat_5", metrics, ""},
		{"tie goes to the first name", "ab", []string{"ac", "aa"}, `aa`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := ""
			if tc.want != "" {
				want = ` (did you mean "` + tc.want + `"?)`
			}
			if got := Suggest(tc.got, tc.candidates); got != want {
				t.Errorf("Suggest(%q) = %q, want %q", tc.got, got, want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"stable", "stable", 0},
		{"stabel", "stable", 1},
		{"ca", "abc", 3}, // optimal string alignment: no edit of a transposed pair
		{"kitten", "sitting", 3},
		{"héllo", "hello", 1}, // runes, not bytes
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}
