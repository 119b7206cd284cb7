package main

import (
	"fmt"
	"io"
)

func cmdDiff(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "shadowproxy diff: not built yet")
	return 2
}
