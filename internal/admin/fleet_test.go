package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestFleetEndpoints(t *testing.T) {
	on := Options{Token: "s3", Loopback: true,
		Routes:       func() any { return "instance" },
		Fleet:        func() any { return map[string]string{"leader": "a"} },
		FleetRoutes:  func() (any, error) { return "fleet", nil },
		FleetWindows: func(q url.Values) (any, error) { return q.Get("route"), nil },
	}
	off := Options{Loopback: true, Routes: func() any { return "instance" }}
	tests := []struct {
		name     string
		opts     Options
		path     string
		token    bool
		code     int
		contains string
	}{
		{"routes default scope", on, "/api/v1/routes", false, 200, `"instance"`},
		{"routes instance scope", on, "/api/v1/routes?scope=instance", false, 200, `"instance"`},
		{"routes fleet scope", on, "/api/v1/routes?scope=fleet", false, 200, `"fleet"`},
		{"routes bad scope", on, "/api/v1/routes?scope=world", false, 400, "scope must be instance or fleet"},
		{"routes fleet scope off", off, "/api/v1/routes?scope=fleet", false, 404, "fleet mode is off"},
		{"fleet status", on, "/api/v1/fleet", false, 200, `"leader": "a"`},
		{"fleet status off", off, "/api/v1/fleet", false, 404, "fleet mode is off"},
		// Windows need the token whatever protect_reads says.
		{"windows without token", on, "/api/v1/fleet/windows?route=shop", false, 401, "Bearer"},
		{"windows with token", on, "/api/v1/fleet/windows?route=shop", true, 200, `"shop"`},
		{"windows off", off, "/api/v1/fleet/windows?route=shop", false, 404, "fleet mode is off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(tt.opts))
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
			if tt.token {
				req.Header.Set("Authorization", "Bearer s3")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code || !strings.Contains(string(b), tt.contains) {
				t.Errorf("GET %s: %d %s, want %d containing %q", tt.path, resp.StatusCode, b, tt.code, tt.contains)
			}
		})
	}
}
