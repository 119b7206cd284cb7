package diff

import (
	"bufio"
	"fmt"
	"io"
)

// FormatText writes a result for people, as the offline "shadowproxy diff"
// command prints it:
//
//	mismatch: 2 differences (body compared as json)
//	changed  /price  12.5 → 13
//	added    /items/2  (absent) → {"id":3}
//
// The first line is the outcome; each difference then takes one line: kind,
// path, primary value → shadow value, "(absent)" standing for a missing side.
// A note, if any, ends the output on a line starting with "note: ".
func FormatText(w io.Writer, r Result) error {
	bw := bufio.NewWriter(w)
	switch r.Outcome {
	case Mismatch:
		n := len(r.Differences) + r.Omitted
		plural := "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(bw, "mismatch: %d difference%s", n, plural)
	default:
		fmt.Fprintf(bw, "%s", r.Outcome)
	}
	if r.Body != 0 {
		fmt.Fprintf(bw, " (body %s)", bodyPhrase(r.Body))
	}
	bw.WriteByte('\n')
	for _, d := range r.Differences {
		fmt.Fprintf(bw, "%-8s %s  %s → %s\n", d.Kind, d.Path, orAbsent(d.Primary), orAbsent(d.Shadow))
	}
	if r.Omitted > 0 {
		fmt.Fprintf(bw, "… and %d more differences not listed\n", r.Omitted)
	}
	if r.NoiseFiltered > 0 {
		fmt.Fprintf(bw, "noise: %d differences on noisy paths filtered\n", r.NoiseFiltered)
	}
	if r.Note != "" {
		fmt.Fprintf(bw, "note: %s\n", r.Note)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing diff: %w", err)
	}
	return nil
}

func bodyPhrase(m BodyMode) string {
	switch m {
	case BodyJSON:
		return "compared as json"
	case BodyBytes:
		return "compared as bytes"
	case BodySkipped:
		return "not compared"
	}
	return m.String()
}

func orAbsent(v string) string {
	if v == "" {
		return "(absent)"
	}
	return v
}
