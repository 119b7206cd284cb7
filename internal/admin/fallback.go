package admin

import (
	"net/http"
	"sort"
	"strings"
)

// catchAll patterns answer what no endpoint does; they never count as an
// endpoint that exists for another method.
var catchAll = map[string]bool{"GET /": true, "GET /{$}": true,
	"GET /api/": true, "POST /api/": true, "PUT /api/": true, "PATCH /api/": true, "DELETE /api/": true}

// methods are those the fallback probes to build Allow.
var methods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// withFallback answers requests no endpoint matches with JSON, as the API's
// other errors are: 405 with Allow when the path exists for other methods,
// 404 otherwise. Unknown paths under /api/ are answered here too, not by
// the dashboard's file server.
func withFallback(mux *http.ServeMux) http.Handler {
	// One pattern per method: a method-less "/api/" would conflict with the
	// dashboard's "GET /".
	for _, m := range methods {
		mux.HandleFunc(m+" /api/", func(w http.ResponseWriter, r *http.Request) { notFound(mux, w, r) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			notFound(mux, w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func notFound(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range methods {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && !catchAll[pattern] {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		if contains(allow, http.MethodGet) {
			allow = append(allow, http.MethodHead)
		}
		sort.Strings(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{
			"error": r.Method + " is not allowed on " + r.URL.Path + "; use " + strings.Join(allow, " or ")})
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{
		"error": "no such endpoint: " + r.URL.Path + " (the API is listed in the README's Admin API section, and at GET / without the dashboard)"})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
