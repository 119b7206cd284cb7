// Package admin serves the admin listener: /healthz, /readyz, /metrics, the
// JSON API under /api/v1/ and the dashboard. It knows nothing of forwarding:
// every answer comes from a function in Options, so the package can be tested
// with stubs and the proxy never waits on it.
//
// Mutating endpoints (POST) need "Authorization: Bearer TOKEN" when a token
// is configured, and are refused outright when the listener is reachable
// from other machines and no token is configured. Reads are open unless
// ProtectReads is set.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// ErrNotFound is returned by Options functions for an unknown route.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned by Options functions for an action the current
// state does not allow (for example resuming a rollout that is not paused).
var ErrConflict = errors.New("conflict")

// Options wires the admin listener to the rest of the process. Nil
// functions make their endpoints answer 404.
type Options struct {
	Logger   *zap.Logger
	Registry *prometheus.Registry
	// Token protects mutating endpoints (and reads with ProtectReads).
	Token        string
	ProtectReads bool
	// Loopback says the listener only accepts local connections; without a
	// token, mutations are then allowed (and refused otherwise).
	Loopback bool

	Ready          func() bool
	Routes         func() any
	Diffs          func(route string, limit int, field string) (any, error)
	History        func(route string) (any, error)
	Rollouts       func() any
	RolloutCommand func(route, action string) (any, error)
	Reload         func() (any, error)
	// NoiseReset forgets the noise a route learnt (POST
	// /api/v1/routes/{route}/noise/reset).
	NoiseReset func(route string) (any, error)
	// Fleet answers GET /api/v1/fleet (fleet mode only).
	Fleet func() any
	// FleetRoutes answers GET /api/v1/routes?scope=fleet (fleet mode only).
	FleetRoutes func() (any, error)
	// FleetWindows answers GET /api/v1/fleet/windows for the fleet leader;
	// it needs the token whenever one is configured.
	FleetWindows func(q url.Values) (any, error)
	// Dashboard serves "/" and its assets; nil serves a plain index.
	Dashboard http.Handler
}

// Handler builds the admin HTTP handler.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	a := &api{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if o.Ready != nil && !o.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	if o.Registry != nil {
		mux.Handle("GET /metrics", a.read(promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(o.Logger)}).ServeHTTP))
	}
	mux.HandleFunc("GET /api/v1/routes", a.read(a.routes))
	mux.HandleFunc("GET /api/v1/diffs", a.read(a.diffs))
	mux.HandleFunc("GET /api/v1/history", a.read(a.history))
	mux.HandleFunc("GET /api/v1/rollouts", a.read(a.rollouts))
	mux.HandleFunc("POST /api/v1/rollouts/{route}/{action}", a.write(a.rolloutCommand))
	mux.HandleFunc("POST /api/v1/reload", a.write(a.reload))
	mux.HandleFunc("POST /api/v1/routes/{route}/noise/reset", a.write(a.noiseReset))
	mux.HandleFunc("GET /api/v1/fleet", a.read(a.fleet))
	mux.HandleFunc("GET /api/v1/fleet/windows", a.member(a.fleetWindows))
	// Profiles expose memory contents and cost CPU: guarded like mutations.
	mux.HandleFunc("GET /debug/pprof/", a.write(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", a.write(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", a.write(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", a.write(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", a.write(pprof.Trace))
	if o.Dashboard != nil {
		// The page's files hold no data (the API reads stay protected), and
		// it must load to ask for the token when reads are protected.
		mux.Handle("GET /", o.Dashboard)
	} else {
		mux.HandleFunc("GET /{$}", a.index)
	}
	return withFallback(mux)
}

type api struct{ o Options }

func (a *api) authorized(r *http.Request) bool {
	if a.o.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.o.Token)) == 1
}

func (a *api) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.o.ProtectReads && !a.authorized(r) {
			a.deny(w, r, "this endpoint needs Authorization: Bearer <admin.token>")
			return
		}
		h(w, r)
	}
}

func (a *api) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.o.Token != "" && !a.authorized(r):
			a.deny(w, r, "this endpoint needs Authorization: Bearer <admin.token>")
			return
		case a.o.Token == "" && !a.o.Loopback:
			a.deny(w, r, "mutating endpoints are disabled: the admin listener is not loopback and admin.token is not set")
			return
		}
		h(w, r)
	}
}

func (a *api) deny(w http.ResponseWriter, r *http.Request, msg string) {
	a.o.Logger.Warn("admin request unauthorized", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
	w.Header().Set("WWW-Authenticate", `Bearer realm="shadowproxy"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
}

func (a *api) routes(w http.ResponseWriter, r *http.Request) {
	if a.fleetScope(w, r) {
		return
	}
	if a.o.Routes == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not available"})
		return
	}
	writeJSON(w, http.StatusOK, a.o.Routes())
}

func (a *api) diffs(w http.ResponseWriter, r *http.Request) {
	if a.o.Diffs == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not available"})
		return
	}
	q := r.URL.Query()
	limit := 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be a whole number from 1 to 1000"})
			return
		}
		limit = n
	}
	v, err := a.o.Diffs(q.Get("route"), limit, q.Get("field"))
	a.answer(w, v, err)
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	if a.o.History == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not available"})
		return
	}
	v, err := a.o.History(r.URL.Query().Get("route"))
	a.answer(w, v, err)
}

func (a *api) rollouts(w http.ResponseWriter, _ *http.Request) {
	if a.o.Rollouts == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, a.o.Rollouts())
}

func (a *api) rolloutCommand(w http.ResponseWriter, r *http.Request) {
	if a.o.RolloutCommand == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no rollouts configured"})
		return
	}
	action := r.PathValue("action")
	switch action {
	case "pause", "resume", "promote", "rollback":
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown action " + strconv.Quote(action) + ": want pause, resume, promote or rollback"})
		return
	}
	v, err := a.o.RolloutCommand(r.PathValue("route"), action)
	if err == nil {
		a.o.Logger.Info("rollout command", zap.String("route", r.PathValue("route")), zap.String("action", action), zap.String("remote", r.RemoteAddr))
	}
	a.answer(w, v, err)
}

func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	if a.o.Reload == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "reload not available"})
		return
	}
	v, err := a.o.Reload()
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "configuration rejected; the previous one stays in force", "details": strings.Split(err.Error(), "\n")})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *api) noiseReset(w http.ResponseWriter, r *http.Request) {
	if a.o.NoiseReset == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no shadowed routes"})
		return
	}
	v, err := a.o.NoiseReset(r.PathValue("route"))
	if err == nil {
		a.o.Logger.Info("noise reset", zap.String("route", r.PathValue("route")), zap.String("remote", r.RemoteAddr))
	}
	a.answer(w, v, err)
}

func (a *api) answer(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrConflict):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func (a *api) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("shadowproxy admin\n\n/healthz\n/readyz\n/metrics\n/api/v1/routes\n/api/v1/diffs?route=NAME&limit=N&field=F\n/api/v1/history?route=NAME\n/api/v1/rollouts\n"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
