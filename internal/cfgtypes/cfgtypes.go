// Package cfgtypes holds the scalar value types shared by every section of the
// configuration (durations, byte sizes, percentages, ratios) and the FieldError
// that every validator returns, so that the config loader can attach a line
// number to an error raised deep inside a package it does not understand.
//
// It is a leaf package: it imports nothing from the project, so config,
// splitter, diff and rollout can all depend on it without cycles.
package cfgtypes

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is a validation error tied to a field path such as
// "routes[1].split.percent". The config loader turns the path into a line.
type FieldError struct {
	Path string
	Msg  string
}

// Error implements error.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf builds a FieldError for path.
func Errorf(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Prefix returns errs with prefix joined in front of every FieldError's path;
// other errors are wrapped into a FieldError at prefix.
func Prefix(prefix string, errs []error) []error {
	out := make([]error, 0, len(errs))
	for _, err := range errs {
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, &FieldError{Path: JoinPath(prefix, fe.Path), Msg: fe.Msg})
			continue
		}
		out = append(out, &FieldError{Path: prefix, Msg: err.Error()})
	}
	return out
}

// JoinPath joins two field paths: ("a", "b") is "a.b", ("a", "[0].b") is "a[0].b".
func JoinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	default:
		return a + "." + b
	}
}

// Duration is a time.Duration written as "5s", "250ms" or "2h".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 5s or 250ms")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration parses a Go duration ("5s", "1m30s"); days are not accepted
// because their meaning around daylight-saving changes is ambiguous.
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a number with a unit such as 5s, 250ms or 2h", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return v, nil
}

// Size is a byte count written as "10MiB", "512KiB", "1MB" or a plain number.
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a size such as 10MiB or 4096")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return FormatSize(int64(s)), nil }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

// ParseSize parses a byte size. Binary (KiB, MiB, GiB; K, M, G) and decimal
// (KB, MB, GB) suffixes are accepted; a bare number is bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit such as 10MiB, 512KiB or 4096", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("invalid size %q: must not be negative", s)
	}
	v := n * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(v), nil
}

// FormatSize renders a byte count with the largest exact binary unit.
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// BasisPoints is a share in hundredths of a percent: 10000 is 100%.
type BasisPoints uint32

// MaxBasisPoints is 100%.
const MaxBasisPoints BasisPoints = 10000

// Percent returns the share as a percentage (115 is 1.15).
func (b BasisPoints) Percent() float64 { return float64(b) / 100 }

// String renders the share as a percentage without trailing zeros ("1.15").
func (b BasisPoints) String() string {
	whole, frac := b/100, b%100
	switch {
	case frac == 0:
		return strconv.Itoa(int(whole))
	case frac%10 == 0:
		return fmt.Sprintf("%d.%d", whole, frac/10)
	default:
		return fmt.Sprintf("%d.%02d", whole, frac)
	}
}

// Percent is a percentage in [0, 100] with at most two decimal places,
// written as 5, 12.25 or "0.5%". It is held exactly in basis points: 1.15 is
// 115, never 114 through float truncation.
type Percent BasisPoints

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a percentage such as 5, 12.25 or 0.5%")
	}
	v, err := ParsePercent(n.Value)
	if err != nil {
		return err
	}
	*p = Percent(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (p Percent) MarshalYAML() (any, error) { return BasisPoints(p).String(), nil }

// BP returns the value in basis points.
func (p Percent) BP() BasisPoints { return BasisPoints(p) }

// ParsePercent parses "12.25", "5" or "0.5%" into basis points by decimal
// arithmetic on the digits, so no float rounding can move a user across the
// canary boundary.
func ParsePercent(s string) (BasisPoints, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSpace(strings.TrimSuffix(t, "%"))
	bad := func(why string) (BasisPoints, error) {
		return 0, fmt.Errorf("invalid percentage %q: %s", s, why)
	}
	if t == "" {
		return bad("empty")
	}
	if strings.HasPrefix(t, "-") {
		return bad("must be between 0 and 100")
	}
	t = strings.TrimPrefix(t, "+")
	whole, frac, hasDot := strings.Cut(t, ".")
	if whole == "" {
		whole = "0"
	}
	if hasDot && frac == "" {
		return bad("want digits after the decimal point")
	}
	if len(frac) > 2 {
		// Allow trailing zeros beyond two places ("1.150"), reject real precision.
		if strings.Trim(frac[2:], "0") != "" {
			return bad("at most two decimal places (0.01% is the smallest step)")
		}
		frac = frac[:2]
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return bad("want a number such as 5, 12.25 or 0.5%")
			}
		}
	}
	if len(whole) > 3 {
		return bad("must be between 0 and 100")
	}
	w, _ := strconv.Atoi(whole)
	for len(frac) < 2 {
		frac += "0"
	}
	f, _ := strconv.Atoi(frac)
	v := w*100 + f
	if v > int(MaxBasisPoints) {
		return bad("must be between 0 and 100")
	}
	return BasisPoints(v), nil
}

// Ratio is a fraction written as a percentage ("0.5%", meaning 0.005) or a
// plain fraction (0.005). It is used for rates such as error_rate_5xx.
type Ratio float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Ratio) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a rate such as 0.5% or 0.005")
	}
	v, err := ParseRatio(n.Value)
	if err != nil {
		return err
	}
	*r = Ratio(v)
	return nil
}

// ParseRatio parses "0.5%" as 0.005 and "0.005" as 0.005.
func ParseRatio(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	t = strings.TrimSpace(strings.TrimSuffix(t, "%"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("invalid rate %q: want a percentage such as 0.5%% or a fraction such as 0.005", s)
	}
	if pct {
		v /= 100
	}
	if v < 0 {
		return 0, fmt.Errorf("invalid rate %q: must not be negative", s)
	}
	return v, nil
}

// Multiplier is a factor written as "2x" or 2, used for comparisons against a
// baseline ("above_baseline: 2x").
type Multiplier float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (m *Multiplier) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a factor such as 2x or 1.5")
	}
	t := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(n.Value), "x"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("invalid factor %q: want a positive number such as 2x or 1.5", n.Value)
	}
	*m = Multiplier(v)
	return nil
}

// IsLabelValue reports whether a configured name (a cohort, a smoke check)
// can be a metric label value as it is: 1 to 64 of [A-Za-z0-9_-], so that
// dashboards and alerts never see a space or an unbounded value.
func IsLabelValue(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// IsToken reports whether s is a non-empty RFC 9110 token (§5.6.2), the
// syntax of field names, methods and cookie names.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsTokenByte(s[i]) {
			return false
		}
	}
	return true
}

// IsTokenByte reports whether c may appear in an RFC 9110 token.
func IsTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
