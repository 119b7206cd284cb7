package diff

import (
	"fmt"
)

// Outcome is the verdict of one comparison.
type Outcome uint8

const (
	// Match: no difference outside the ignored paths.
	Match Outcome = iota
	// Mismatch: at least one difference; see Result.Differences.
	Mismatch
	// Uncomparable: no verdict is possible (an upstream failed, or a body
	// was cut at max_body and nothing else differed).
	Uncomparable
	// Learning: compared while the endpoint's noise was still being learnt
	// (fewer than noise.min_observations secondary answers); it is neither
	// a match nor a mismatch and never enters match rates or field counts.
	Learning
)

// NumOutcomes is the number of outcomes, for arrays indexed by Outcome.
const NumOutcomes = int(Learning) + 1

var outcomeNames = [...]string{Match: "match", Mismatch: "mismatch", Uncomparable: "uncomparable", Learning: "learning"}

// String returns "match", "mismatch", "uncomparable" or "learning": the
// values of the result label of shadowproxy_comparisons_total.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// MarshalText renders the outcome name in JSON.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText parses an outcome name.
func (o *Outcome) UnmarshalText(b []byte) error {
	for i, n := range outcomeNames {
		if n == string(b) {
			*o = Outcome(i)
			return nil
		}
	}
	return fmt.Errorf("unknown outcome %q: want match, mismatch, uncomparable or learning", b)
}

// Kind says how a value differs.
type Kind uint8

const (
	// Changed: present on both sides with different values (including a
	// value on one side and null on the other).
	Changed Kind = iota + 1
	// Added: present only in the shadow response.
	Added
	// Removed: present only in the primary response.
	Removed
	// TypeChanged: present on both sides with different JSON types, other
	// than null (a number became a string, an object became an array).
	TypeChanged
)

var kindNames = [...]string{Changed: "changed", Added: "added", Removed: "removed", TypeChanged: "type"}

// String returns "changed", "added", "removed" or "type".
func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText renders the kind name in JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses a kind name.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if i > 0 && n == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("unknown difference kind %q: want changed, added, removed or type", b)
}

// Paths that are not JSON Pointers.
const (
	// StatusPath is the path of a status code difference.
	StatusPath = "status"
	// HeaderPathPrefix starts a header difference's path:
	// "header/Content-Type", with the canonical header name.
	HeaderPathPrefix = "header/"
	// rootPath is a difference of the whole body: non-JSON bodies, or JSON
	// documents whose top-level values differ.
	rootPath = "body"
)

// BodyPath is the path of a difference of the whole body: bodies compared as
// bytes, or JSON documents that differ at the top level (an object versus an
// array, two different numbers). JSON differences inside the document have
// JSON Pointer paths ("/items/0/id").
const BodyPath = rootPath

// Difference is one place where the responses differ. Primary and Shadow are
// compact JSON renderings of the values (a string is quoted, a status code is
// a number), cut to at most MaxValueLen bytes plus "…"; the side where the
// value is absent is "". Secret values are "\"[REDACTED]\"".
type Difference struct {
	Path    string `json:"path"`
	Kind    Kind   `json:"kind"`
	Primary string `json:"primary"`
	Shadow  string `json:"shadow"`
}

// MaxValueLen bounds the rendering of one value in a Difference.
const MaxValueLen = 256

// MaxDifferences bounds the differences listed in one Result; the rest are
// only counted in Result.Omitted, so two unrelated 1MiB documents cannot
// produce a 1MiB list.
const MaxDifferences = 100

// BodyMode says how the bodies were compared.
type BodyMode uint8

const (
	// BodyJSON: the bodies were compared as JSON, semantically (or were
	// byte-identical JSON, which needs no parse).
	BodyJSON BodyMode = iota + 1
	// BodyBytes: compared byte for byte, after masks.
	BodyBytes
	// BodySkipped: not compared (truncated at max_body, or an upstream
	// error).
	BodySkipped
)

var bodyModeNames = [...]string{BodyJSON: "json", BodyBytes: "bytes", BodySkipped: "skipped"}

// String returns "json", "bytes" or "skipped".
func (m BodyMode) String() string {
	if m > 0 && int(m) < len(bodyModeNames) {
		return bodyModeNames[m]
	}
	return "none"
}

// MarshalText renders the mode name in JSON.
func (m BodyMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Result is the outcome of comparing a primary and a shadow response.
type Result struct {
	Outcome Outcome `json:"result"`
	// Differences lists where the responses differ, status first, then
	// headers in configured order, then body paths in key order. Only a
	// Mismatch has differences.
	Differences []Difference `json:"differences,omitempty"`
	// Omitted counts differences beyond MaxDifferences.
	Omitted int `json:"omitted,omitempty"`
	// Body says how the bodies were compared.
	Body BodyMode `json:"body"`
	// Note explains an uncomparable result or a fallback ("shadow body is
	// not valid JSON (...); compared as bytes").
	Note string `json:"note,omitempty"`
	// NoiseFiltered counts differences a noise Filter dropped (see
	// CompareFiltered and NoiseTracker.Judge).
	NoiseFiltered int `json:"noise_filtered,omitempty"`
}
