package main

import (
	"os"
	"strings"
	"testing"

	"github.com/shadowproxy/shadowproxy/config"
)

// TestReadmeFleetExampleIsValid keeps the "Fleet mode" worked example
// true: the per-member config it writes loads without error or warning.
func TestReadmeFleetExampleIsValid(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## Fleet mode")
	if i < 0 {
		t.Fatal("README lost its Fleet mode section")
	}
	s = s[i:]
	start := strings.Index(s, "<<YAML\n")
	end := strings.Index(s, "\nYAML\n")
	if start < 0 || end < start {
		t.Fatal("no <<YAML heredoc in the Fleet mode section")
	}
	text := strings.NewReplacer("$name", "a", "$port", "8081", "$admin", "9901").Replace(s[start+len("<<YAML\n") : end])
	cfg, err := config.Load("README.md", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("the README's fleet example is invalid:\n%v\n%s", err, text)
	}
	if cfg.Fleet == nil || cfg.Fleet.Name != "a" || cfg.Fleet.Advertise != "http://127.0.0.1:9901" {
		t.Errorf("fleet = %+v", cfg.Fleet)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Errorf("the README's fleet example has warnings: %v", w)
	}
}
