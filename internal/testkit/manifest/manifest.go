// Package manifest holds the helpers that the tests of the deployment
// artifacts share to read decoded Kubernetes objects: deploy's tests read
// the plain manifests, deploy/helm's the objects the chart renders, and
// both check them with the same walks. It is imported only by _test.go
// files.
//
// Like testkit, it uses the standard library only, so that deploy/helm (a
// module of its own that replaces this one with ../..) adds no dependency
// by importing it.
package manifest

import (
	"fmt"
	"net"
	"strconv"
	"testing"
)

// Get walks a decoded YAML/JSON value along keys (string) and indices
// (int); it returns nil where the path leaves the value.
func Get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

// Str is v as a string: "" for nil, a string as it is, anything else (a
// port number, a boolean) as fmt prints it.
func Str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// ByKind returns the objects of docs whose kind is kind, in order.
func ByKind(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

// LabelsMatch reports whether a matchLabels-style selector selects an
// object with labels. An empty selector matches nothing here: in these
// manifests it would be a mistake that selects every pod.
func LabelsMatch(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if Str(lab[k]) != Str(v) {
			return false
		}
	}
	return true
}

// PortOf returns the port of a host:port listen address, to compare with a
// container port; it fails the test when addr has none.
func PortOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
