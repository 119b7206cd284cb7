package admin

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The dashboard is a handful of static files compiled into the binary, so
// that it works on an air-gapped host and cannot be changed on disk. It is
// plain JavaScript with SVG charts drawn by hand: no framework, no CDN, nothing
// to fetch at run time. Every number it shows comes from the JSON API on the
// same listener.
//
//go:embed ui
var uiFiles embed.FS

// dashboardCSP allows only the dashboard's own files and API. No inline
// script and no inline style sheet: values from upstream responses are
// rendered as text, and even if one slipped through as markup it could not
// run. frame-ancestors stops the page (and its rollout buttons) from being
// framed by another site.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// contentTypes are set explicitly rather than guessed from the system's MIME
// table, which differs between hosts (and nosniff makes a wrong one fatal).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".ico":  "image/x-icon",
}

// Dashboard serves the web dashboard: "/" is index.html and the other files
// of admin/ui are served by name. Anything else is 404. Pass it as
// Options.Dashboard.
func Dashboard() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embed directive guarantees the folder exists
	}
	return &dashboard{files: sub}
}

type dashboard struct{ files fs.FS }

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	ctype, ok := contentTypes[path.Ext(name)]
	if !ok || strings.Contains(name, "/") {
		// The ui folder is flat; refusing sub-paths and unknown types keeps
		// this a whitelist rather than a file server.
		http.NotFound(w, r)
		return
	}
	body, err := fs.ReadFile(d.files, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// The files change only with the binary; no-cache makes the browser
	// revalidate after an upgrade instead of running a stale app.js against
	// a newer API.
	h.Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}
