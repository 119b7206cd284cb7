package diff

import (
	"strings"
	"testing"
)

func TestEndpoint(t *testing.T) {
	r := mustRules(t, Spec{Endpoints: []string{"GET /users/{user}/avatar", "/files/{name}"}})
	tests := []struct{ method, uri, want string }{
		{"GET", "/", "GET /"},
		{"GET", "", "GET /"},
		{"GET", "/users/42", "GET /users/{id}"},
		{"GET", "/users/42?fields=a", "GET /users/{id}"},
		{"DELETE", "/users/42", "DELETE /users/{id}"},
		{"GET", "/orders/3f2b1c9a/items/7", "GET /orders/{id}/items/{id}"},
		{"GET", "/o/123e4567-e89b-12d3-a456-426614174000", "GET /o/{id}"},
		{"GET", "/t/aB3dE5gH7jK9mN1pQ", "GET /t/{id}"},
		{"GET", "/health/live", "GET /health/live"},
		{"GET", "/api/users/u80", "GET /api/users/{id}"},
		{"GET", "/v2/orders/ord-2024-17", "GET /v2/orders/{id}"},
		{"GET", "/api/v10/x", "GET /api/v10/x"},
		{"GET", "/oauth2/token", "GET /oauth2/token"},
		{"GET", "/docs/report.pdf", "GET /docs/report.pdf"},
		{"GET", "/feed/deadbeef", "GET /feed/deadbeef"}, // hex without a digit is a word
		{"GET", "/users/ada/avatar", "GET /users/{user}/avatar"},
		{"POST", "/users/ada/avatar", "POST /users/ada/avatar"},
		{"PUT", "/files/report.pdf", "PUT /files/{name}"},
		{"GET", "http://example.test/users/9", "GET /users/{id}"},
		{"GET", "/a/b/c/d/e/f/g/h/i/j", "GET /a/b/c/d/e/f/g/h/{...}"},
		{"GET", "/x/" + strings.Repeat("y", 60), "GET /x/{id}"},
	}
	for _, tt := range tests {
		if got := r.Endpoint(tt.method, tt.uri); got != tt.want {
			t.Errorf("%s %s = %q, want %q", tt.method, tt.uri, got, tt.want)
		}
	}
}

func TestEndpointAndNoiseValidation(t *testing.T) {
	spec := Spec{
		Endpoints:    []string{"users/{id}", "get /x", "/a/{id", "/q?x=1"},
		AlwaysNoise:  []string{"status", "header/", "nope"},
		NeverNoise:   []string{"/ok", "body", "header/Etag"},
		MaxEndpoints: -1,
		Noise:        NoiseSpec{Window: 5, Relative: -1},
	}
	want := map[string]string{
		"endpoints[0]":    "want a path",
		"endpoints[1]":    "upper-case method",
		"endpoints[2]":    "a parameter is a whole segment",
		"endpoints[3]":    "query string",
		"always_noise[0]": "never noise",
		"always_noise[1]": "invalid header name",
		"always_noise[2]": "must start with",
		"max_endpoints":   "invalid count",
		"noise.window":    "at least 10",
		"noise.relative":  "invalid ratio",
	}
	errs := spec.Validate()
	got := map[string]string{}
	for _, e := range errs {
		path, msg, _ := strings.Cut(e.Error(), ": ")
		got[path] = msg
	}
	for path, frag := range want {
		if !strings.Contains(got[path], frag) {
			t.Errorf("%s: got %q, want it to mention %q", path, got[path], frag)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d errors, want %d: %v", len(errs), len(want), errs)
	}
}

// FuzzEndpoint: any template either fails validation or compiles, and any
// request names an endpoint without panicking, starting with its method
// and never carrying the query string.
func FuzzEndpoint(f *testing.F) {
	f.Add("GET /users/{id}", "GET", "/users/42?x=1")
	f.Add("/a/{b}/c", "POST", "http://h/a/1/c")
	f.Add("{", "GET", "")
	f.Fuzz(func(t *testing.T, tmpl, method, uri string) {
		spec := Spec{Endpoints: []string{tmpl}}
		r, err := CompileRules(spec)
		if err != nil {
			r = mustRules(t, Spec{})
		}
		got := r.Endpoint(method, uri)
		if !strings.HasPrefix(got, method+" /") {
			t.Fatalf("Endpoint(%q, %q) = %q", method, uri, got)
		}
		if strings.ContainsAny(got[len(method):], "?#") {
			t.Fatalf("Endpoint(%q, %q) = %q keeps the query", method, uri, got)
		}
	})
}
