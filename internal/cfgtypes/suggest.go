package cfgtypes

import (
	"fmt"
	"slices"
	"strings"
)

// Suggest returns ` (did you mean "x"?)` for the candidate closest to got
// when it is close enough to be a typo, and "" otherwise. Every "unknown X"
// message of the configuration (config and every section it delegates to)
// uses it, so one validate run suggests by one rule:
//
//   - distance is Damerau-Levenshtein (optimal string alignment), so a
//     swapped pair of letters ("stabel") is one edit, like a wrong letter;
//   - letters compare case-folded, so "Stable" finds "stable" (names are
//     case-sensitive, and a wrong case is the likeliest typo of all);
//   - a suggestion is made within max(1, min(3, len(got)/3)) edits: short
//     words admit one slip, long ones at most three, so unrelated names
//     are not offered;
//   - ties go to the alphabetically first candidate, so messages are stable.
func Suggest(got string, candidates []string) string {
	if got == "" || slices.Contains(candidates, got) {
		return ""
	}
	folded := strings.ToLower(got)
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(folded, strings.ToLower(c))
		if bestD < 0 || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	limit := max(1, min(3, len([]rune(got))/3))
	if bestD < 0 || bestD > limit {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Damerau-Levenshtein (optimal string alignment) distance.
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
