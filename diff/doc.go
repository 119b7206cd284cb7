// Package diff decides whether a shadow response matches the primary one,
// says exactly where they differ, learns which differences are noise, and
// aggregates results into match rates, field counts, latency comparisons and
// stored samples. It knows nothing of HTTP servers: the proxy hands it
// captured responses (Capture) and events (Event).
//
// # Comparing
//
// CompileRules turns a route's compare: section (Spec) into immutable Rules;
// Compare(primary, shadow, rules) returns a Result: match, mismatch or
// uncomparable, with a list of Differences. Paths are:
//
//   - "status" for the status code;
//   - "header/Content-Type" for a compared header (canonical name);
//   - a JSON Pointer such as "/items/3/id" inside a JSON body;
//   - "body" for the whole body: bodies compared as bytes, or JSON documents
//     that differ at the top level.
//
// JSON bodies (Content-Type application/json or *+json, or both bodies
// starting with "{" or "[") are compared semantically: key order does not
// matter, numbers compare by exact decimal value (1 equals 1.0, and large
// integers keep every digit), a missing key is "removed" or "added" while a
// value that became null is "changed", and differing non-null types are
// "type". Arrays compare by index, or as multisets with array_order: ignore.
// A body that does not parse falls back to a byte comparison, with a Note.
//
// The JSON engine is this package's own (a flat pooled parse tree and a merge
// walk) rather than github.com/wI2L/jsondiff: jsondiff's ignores are exact
// pointers only, it has no numeric tolerance, its unordered mode only handles
// equal-length arrays (and sorts the caller's arrays in place), and it reports
// removed array elements at one shared index and appended ones at "/-". The
// tests use jsondiff as an independent oracle.
//
// # Noise
//
// A NoiseTracker (one per endpoint, see Rules.Endpoint) learns from
// primary-vs-secondary answers which (path, kind) differ between two
// instances of the same version, and Judge decides per difference of a
// primary-vs-shadow comparison whether it is noise: per request when the
// secondary answered the same request, comparatively (the learnt noise
// rate must explain the shadow's own difference rate) otherwise. The
// decision is made through a Filter inside the comparison, before the
// difference cap.
//
// # Aggregating
//
// Stats keeps, per route and shadow target and in bounded memory, outcome
// counts with 1-minute and 5-minute windows, per-field mismatch counts capped
// at max_fields (raw and noise-filtered), latency quantiles and the last
// mismatches as redacted samples, for the admin API and the metrics.
package diff
