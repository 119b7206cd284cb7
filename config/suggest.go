package config

import (
	"fmt"
	"slices"
	"strings"
)

// Suggest returns ` (did you mean "x"?)` for the candidate closest to got
// when it is close enough to be a typo, and "" otherwise.
func Suggest(got string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(got, c)
		if bestD < 0 || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	limit := max(1, min(3, len(got)/3))
	if bestD < 0 || bestD > limit {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Damerau-Levenshtein (optimal string alignment) distance,
// so a swapped pair of letters ("stabel") counts as one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// foreignNames are keys people bring from Envoy, Istio, Traefik and nginx
// configurations, each with the key shadowproxy uses for the same idea
// (when the mapping it is found in has that key) and how to write it.
var foreignNames = []struct {
	keys    []string
	ours    string
	example string
}{
	{[]string{"prefix", "path", "pathprefix", "pathPrefix", "path_regex", "regex"}, "path_prefix", "routes match by path prefix: match: {path_prefix: /api/}"},
	{[]string{"weight", "weights", "percentage", "traffic_percentage"}, "percent", "a share in percent: percent: 10"},
	{[]string{"weight", "weights", "weighted_clusters", "traffic_split", "canary"}, "split", "a weighted canary is split: {to: CANARY, percent: 10, key: header:X-User-ID}"},
	{[]string{"mirror", "mirrors", "mirroring", "mirror_percentage", "mirrorPercentage", "request_mirror_policies", "request_mirror_policy"}, "shadow", "mirroring is shadow: {targets: [NAME], percent: 100}"},
	{[]string{"cluster", "service", "backend", "destination", "host_rewrite"}, "upstream", "a route names the upstream that serves it: upstream: NAME"},
	{[]string{"endpoints", "servers", "hosts"}, "urls", "several endpoints of one upstream: urls: [http://10.0.0.1:8080, http://10.0.0.2:8080]"},
}

// ForeignName returns a hint for a key that another proxy's configuration
// uses, pointing to shadowproxy's own among known (the keys of the mapping
// the key was found in), or "" when got is not such a key. A key ending in
// _ms or _seconds whose stem is known gets the duration form.
func ForeignName(got string, known []string) string {
	for _, f := range foreignNames {
		if slices.Contains(f.keys, got) && slices.Contains(known, f.ours) {
			return fmt.Sprintf(" (did you mean %q? %s)", f.ours, f.example)
		}
	}
	for _, unit := range []string{"_ms", "_seconds", "_sec", "_s"} {
		stem, ok := strings.CutSuffix(got, unit)
		if ok && slices.Contains(known, stem) {
			return fmt.Sprintf(" (did you mean %q? durations carry their unit: %s: 500ms or 5s)", stem, stem)
		}
	}
	return ""
}
