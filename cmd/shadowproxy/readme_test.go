package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/shadowproxy/shadowproxy/config"
)

// TestReadmeExampleIsValid keeps the README's complete example true: it
// must load with no error.
func TestReadmeExampleIsValid(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(b)
	i := strings.Index(section, "### A complete example")
	if i < 0 {
		t.Fatal("README lost its complete example")
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(section[i:])
	if m == nil {
		t.Fatal("no yaml block after the heading")
	}
	env := func(string) (string, bool) { return "", false }
	if _, err := config.Load("README.md", []byte(m[1]), env); err != nil {
		t.Errorf("the README's complete example is invalid:\n%v", err)
	}
}
