// Package admin serves the admin listener: /healthz, /readyz, /metrics, the
// JSON API under /api/v1/ and the dashboard. It knows nothing of forwarding:
// every answer comes from a function in Options, so the package can be tested
// with stubs and the proxy never waits on it.
//
// Every request must name this listener in Host: a loopback name or
// address, the address the connection arrived on, admin_listen's host, or
// an admin.hosts entry; anything else gets 421, so a DNS-rebinding page
// cannot reach it through its own host name.
//
// Mutating endpoints (POST) need "Authorization: Bearer TOKEN" when a token
// is configured, and are refused outright when the listener is reachable
// from other machines and no token is configured. On a loopback listener
// without a token they need the X-Shadowproxy-Admin header (which a web page
// on another origin cannot send without a CORS preflight this listener never
// answers) and an Origin that is absent or this listener's own. Reads are
// open unless ProtectReads is set. /debug/pprof/ exists only with Pprof and
// always needs the token.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
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
	// Evidence lists a route's evidence records (id "") or returns one.
	Evidence func(route, id string) (any, error)
	// Cutover reports a dark launch's readiness to cut over.
	Cutover func(route string) (any, error)
	// CutoverCommand cuts over or reverts (action "cutover" or "revert");
	// force cuts over even when the criterion does not hold.
	CutoverCommand func(route, action string, force bool) (any, error)
	// Fleet answers GET /api/v1/fleet (fleet mode only).
	Fleet func() any
	// FleetRoutes answers GET /api/v1/routes?scope=fleet (fleet mode only).
	FleetRoutes func() (any, error)
	// FleetWindows answers GET /api/v1/fleet/windows for the fleet leader;
	// it needs the token whenever one is configured.
	FleetWindows func(q url.Values) (any, error)
	// Dashboard serves "/" and its assets; nil serves a plain index.
	Dashboard http.Handler

	// ListenAddr is admin_listen; its host is always an accepted Host.
	ListenAddr string
	// Hosts are further accepted Host names (admin.hosts), without port.
	Hosts []string
	// Pprof mounts /debug/pprof/ behind the token.
	Pprof bool
}

// CSRFHeader is the field a browser client must send with a mutation on a
// loopback listener without a token. Any non-empty value will do: what
// matters is that a cross-origin page cannot send it without a preflight.
const CSRFHeader = "X-Shadowproxy-Admin"

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
	mux.HandleFunc("GET /api/v1/rollouts/{route}/evidence", a.read(a.evidence))
	mux.HandleFunc("GET /api/v1/rollouts/{route}/evidence/{id}", a.read(a.evidence))
	mux.HandleFunc("GET /api/v1/routes/{route}/cutover", a.read(a.cutover))
	mux.HandleFunc("POST /api/v1/routes/{route}/cutover", a.write(a.cutoverCommand))
	mux.HandleFunc("POST /api/v1/routes/{route}/revert", a.write(a.cutoverCommand))
	mux.HandleFunc("GET /api/v1/fleet", a.read(a.fleet))
	mux.HandleFunc("GET /api/v1/fleet/windows", a.member(a.fleetWindows))
	if o.Pprof {
		// Profiles expose memory contents and cost CPU: opt-in, and always
		// behind the token (a loopback listener is no protection against a
		// page that can make the browser read it).
		mux.HandleFunc("GET /debug/pprof/", a.tokenOnly(pprof.Index))
		mux.HandleFunc("GET /debug/pprof/cmdline", a.tokenOnly(pprof.Cmdline))
		mux.HandleFunc("GET /debug/pprof/profile", a.tokenOnly(pprof.Profile))
		mux.HandleFunc("GET /debug/pprof/symbol", a.tokenOnly(pprof.Symbol))
		mux.HandleFunc("GET /debug/pprof/trace", a.tokenOnly(pprof.Trace))
	}
	if o.Dashboard != nil {
		// The page's files hold no data (the API reads stay protected), and
		// it must load to ask for the token when reads are protected.
		mux.Handle("GET /", o.Dashboard)
	} else {
		mux.HandleFunc("GET /{$}", a.index)
	}
	return a.checkHost(withFallback(mux))
}

// checkHost answers 421 to a request whose Host names another server.
func (a *api) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.hostAllowed(r) {
			a.o.Logger.Warn("admin request for a foreign host refused", zap.String("host", r.Host),
				zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			writeJSON(w, http.StatusMisdirectedRequest, map[string]string{"error": "this admin listener does not answer for host " +
				strconv.Quote(r.Host) + ": use a loopback address or add the name to admin.hosts"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) hostAllowed(r *http.Request) bool {
	host := hostOnly(r.Host)
	if host == "" {
		return false
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsLoopback() {
			return true
		}
		// The address the connection arrived on: a rebinding page's Host
		// is its own name, never an address.
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ta, ok := la.(*net.TCPAddr); ok && ta.IP.Equal(ip) {
				return true
			}
		}
	}
	if lh := hostOnly(a.o.ListenAddr); lh != "" && lh == host {
		return true
	}
	for _, h := range a.o.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// hostOnly is a Host value (or host:port address) without the port and
// brackets, lower case.
func hostOnly(hostport string) string {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	return strings.ToLower(strings.Trim(h, "[]"))
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
		case a.o.Token == "" && r.Header.Get(CSRFHeader) == "":
			a.forbid(w, r, "a mutation without admin.token needs the "+CSRFHeader+" header (curl -H '"+CSRFHeader+": 1')")
			return
		case a.o.Token == "" && !sameOrigin(r):
			a.forbid(w, r, "cross-origin mutation refused (Origin "+strconv.Quote(r.Header.Get("Origin"))+")")
			return
		}
		h(w, r)
	}
}

// tokenOnly requires the token whatever the listener (pprof).
func (a *api) tokenOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			a.deny(w, r, "this endpoint needs Authorization: Bearer <admin.token> (and admin.token set)")
			return
		}
		h(w, r)
	}
}

// sameOrigin accepts a request without Origin (curl, the CLI) or whose
// Origin is this listener as the request names it.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, r.Host)
}

func (a *api) forbid(w http.ResponseWriter, r *http.Request, msg string) {
	a.o.Logger.Warn("admin mutation refused", zap.String("reason", msg), zap.String("path", r.URL.Path),
		zap.String("origin", r.Header.Get("Origin")), zap.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusForbidden, map[string]string{"error": msg})
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

func (a *api) evidence(w http.ResponseWriter, r *http.Request) {
	if a.o.Evidence == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no evidence store"})
		return
	}
	v, err := a.o.Evidence(r.PathValue("route"), r.PathValue("id"))
	a.answer(w, v, err)
}

func (a *api) cutover(w http.ResponseWriter, r *http.Request) {
	if a.o.Cutover == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no cutovers configured"})
		return
	}
	v, err := a.o.Cutover(r.PathValue("route"))
	a.answer(w, v, err)
}

func (a *api) cutoverCommand(w http.ResponseWriter, r *http.Request) {
	if a.o.CutoverCommand == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no cutovers configured"})
		return
	}
	action := "cutover"
	if strings.HasSuffix(r.URL.Path, "/revert") {
		action = "revert"
	}
	force := r.URL.Query().Get("force") == "true" || r.URL.Query().Get("force") == "1"
	v, err := a.o.CutoverCommand(r.PathValue("route"), action, force)
	if err == nil {
		a.o.Logger.Info("cutover command", zap.String("route", r.PathValue("route")), zap.String("action", action),
			zap.Bool("force", force), zap.String("remote", r.RemoteAddr))
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
	w.Write([]byte("shadowproxy admin\n\n/healthz\n/readyz\n/metrics\n/api/v1/routes\n/api/v1/diffs?route=NAME&limit=N&field=F\n/api/v1/history?route=NAME\n/api/v1/rollouts\n/api/v1/rollouts/NAME/evidence\n/api/v1/routes/NAME/cutover\n"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
