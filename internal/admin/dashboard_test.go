package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func getDashboard(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Host = "localhost" // the admin listener answers loopback names only
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestDashboardServesAssetsWithTypesAndCSP(t *testing.T) {
	// Through the admin handler, as the process serves it.
	h := Handler(Options{Dashboard: Dashboard(), Loopback: true})
	cases := []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/index.html", "text/html; charset=utf-8", "<title>shadowproxy</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "/api/v1/routes"},
		{"/style.css", "text/css; charset=utf-8", ".panel"},
	}
	for _, c := range cases {
		resp, body := getDashboard(t, h, http.MethodGet, c.path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", c.path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", c.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: CSP %q allows inline code", c.path, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", c.path, got)
		}
		if !strings.Contains(body, c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
	}

	resp, body := getDashboard(t, h, http.MethodHead, "/app.js")
	if resp.StatusCode != http.StatusOK || body != "" || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD /app.js: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

func TestDashboardUnknownAssetIs404(t *testing.T) {
	h := Dashboard()
	for _, p := range []string{"/missing.js", "/nothing.css", "/ui/index.html", "/../dashboard.go", "/dashboard.go", "/app.js/x", "/%2e%2e/admin.go"} {
		resp, _ := getDashboard(t, h, http.MethodGet, p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
	}
	resp, _ := getDashboard(t, h, http.MethodPost, "/")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", resp.StatusCode)
	}
	// The API routes stay the admin mux's, not the dashboard's.
	api := Handler(Options{Dashboard: h, Loopback: true, Routes: func() any { return []string{} }})
	resp, body := getDashboard(t, api, http.MethodGet, "/api/v1/routes")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /api/v1/routes beside the dashboard: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// The page must work offline and under its own CSP: every script and style
// sheet is a local file, there is no inline script or style, and the script
// never turns data into markup.
func TestDashboardIsSelfContained(t *testing.T) {
	index, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(index)
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`).FindString(html); m != "" {
		t.Errorf("index.html loads from the network: %s", m)
	}
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script in index.html: %q", m[0])
		}
	}
	if regexp.MustCompile(`(?i)<style|\sstyle\s*=|\son[a-z]+\s*=`).MatchString(html) {
		t.Error("index.html has an inline style or event handler, which the CSP blocks")
	}
	js, err := uiFiles.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	// The SVG namespace is a name, not a request.
	code := strings.ReplaceAll(string(js), "http://www.w3.org/2000/svg", "")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://"} {
		if strings.Contains(code, bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
	if strings.Contains(string(js), "setAttribute('style'") || strings.Contains(string(js), "style:") {
		t.Error("app.js sets a style attribute, which the CSP blocks (use element.style)")
	}
}
