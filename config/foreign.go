package config

import (
	"fmt"
	"slices"
	"strings"
)

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
