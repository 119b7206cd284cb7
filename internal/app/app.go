// Package app assembles a running shadowproxy from a validated
// configuration: the proxy listener, the admin listener, comparison and the
// rollout controller, plus reload and graceful shutdown. cmd/shadowproxy only
// parses flags and signals; tests drive an App directly.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/admin"
	"github.com/shadowproxy/shadowproxy/internal/analysis"
	"github.com/shadowproxy/shadowproxy/internal/evidence"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/internal/tracing"
	"github.com/shadowproxy/shadowproxy/proxy"
)

// Options configure an App beyond the config file.
type Options struct {
	// ConfigPath is re-read on Reload; empty disables file reloads.
	ConfigPath string
	// Logger overrides the logger built from the config's log section.
	Logger  *zap.Logger
	Version string
	// ReloadFunc, when set, produces the config for Reload instead of
	// reading ConfigPath (the demo uses it).
	ReloadFunc func() (*config.Config, error)
}

// App is one shadowproxy process.
type App struct {
	opts     Options
	log      *zap.Logger
	metrics  *metrics.Metrics
	proxy    *proxy.Server
	analyzer *analysis.Analyzer
	rollouts *rolloutManager
	// tracer exports spans when the config has a tracing section (else nil).
	tracer *tracing.Tracer
	// evidence keeps rollback and cutover records; cutovers swaps dark
	// launches' primary and shadow.
	evidence *evidence.Store
	cutovers *cutoverManager

	// reloadMu makes reloads one at a time, whoever asks (SIGHUP, the
	// file watcher, POST /api/v1/reload).
	reloadMu sync.Mutex

	mu  sync.Mutex
	cfg *config.Config
	// pending is the config being applied by a reload, visible to the
	// callbacks the proxy makes while compiling it.
	pending  *config.Config
	proxyLn  net.Listener
	adminLn  net.Listener
	adminSrv *http.Server
	serveErr chan error
	// stopBackground ends the goroutines Start launched (history ticker,
	// rollout controller).
	stopBackground context.CancelFunc
}

// New builds an App for cfg without listening.
func New(cfg *config.Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		var err error
		if log, err = NewLogger(cfg.Log); err != nil {
			return nil, err
		}
	}
	a := &App{opts: opts, log: log, cfg: cfg, metrics: metrics.New(opts.Version), serveErr: make(chan error, 2)}
	a.evidence = newEvidenceStore(a)
	a.cutovers = newCutoverManager(a, cfg)
	cfg = a.cutovers.transform(cfg)
	a.cfg = cfg
	a.analyzer = analysis.New(a.metrics, log, nil)
	if err := a.analyzer.Configure(cfg); err != nil {
		return nil, err
	}
	a.rollouts = newRolloutManager(a)
	if cfg.Fleet != nil {
		f, err := newFleetManager(a, cfg)
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		a.rollouts.fleet = f
	}
	rp, err := a.rollouts.plan(cfg)
	if err != nil {
		return nil, err
	}
	a.rollouts.commit(rp)
	popts := proxy.Options{Logger: log, Metrics: a.metrics, Comparer: a.analyzer,
		Observers: a.rollouts.observer, SplitOverride: a.rollouts.splitOverride}
	if cfg.Tracing != nil {
		tr, err := tracing.New(cfg.Tracing, tracing.Options{Version: opts.Version, Metrics: a.metrics, Logger: log})
		if err != nil {
			return nil, err
		}
		a.tracer, popts.Tracer = tr, tr
		log.Info("tracing on", zap.String("otlp_endpoint", cfg.Tracing.TracesURL()), zap.Float64("sample_ratio", cfg.Tracing.Ratio()))
	}
	p, err := proxy.New(cfg, popts)
	if err != nil {
		return nil, err
	}
	a.proxy = p
	if err := a.rollouts.sync(cfg); err != nil {
		return nil, err
	}
	a.metrics.ConfigLastReloadOK.Set(1)
	a.metrics.ConfigLastReloadTime.SetToCurrentTime()
	initRouteMetrics(a.metrics, cfg)
	return a, nil
}

// NewLogger builds the zap logger the log section describes, writing to
// standard error.
func NewLogger(c config.Log) (*zap.Logger, error) {
	return newLogger(c, zapcore.Lock(os.Stderr))
}

// newLogger builds the logger on out. Both formats share one encoder
// configuration, so a field has the same type in console and JSON:
// numbers stay numbers and durations are milliseconds (the fields say so in
// their names: duration_ms). No stack traces: every error is reported by a
// message that says what to do, and a trace only adds build paths.
func newLogger(c config.Log, out zapcore.WriteSyncer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.MillisDurationEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, out, lvl), zap.AddCaller(), zap.ErrorOutput(out)), nil
}

// pendingOrCurrentConfig is the config being applied, else the current one.
func (a *App) pendingOrCurrentConfig() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending != nil {
		return a.pending
	}
	return a.cfg
}

// Logger returns the process logger.
func (a *App) Logger() *zap.Logger { return a.log }

// Metrics returns the process's collectors.
func (a *App) Metrics() *metrics.Metrics { return a.metrics }

// Proxy returns the proxy server.
func (a *App) Proxy() *proxy.Server { return a.proxy }

// Config returns the configuration in force.
func (a *App) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Start opens both listeners and serves in the background.
func (a *App) Start() error {
	cfg := a.Config()
	pl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	al, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pl.Close()
		return fmt.Errorf("admin_listen %s: %w", cfg.AdminListen, err)
	}
	a.proxyLn, a.adminLn = pl, al
	a.adminSrv = &http.Server{
		Handler:           admin.Handler(a.adminOptions(cfg)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(a.log),
	}
	bg, cancel := context.WithCancel(context.Background())
	a.stopBackground = cancel
	go a.analyzer.Run(bg)
	if f := a.rollouts.fleet; f != nil {
		// Only the fleet's leader evaluates, through the coordinator.
		f.start(bg)
	} else {
		go a.rollouts.controller.Run(bg)
	}
	go a.cutovers.run(bg)
	if cfg.WatchConfig && a.opts.ConfigPath != "" {
		go a.watchConfig(bg, a.opts.ConfigPath, watchInterval)
	}
	go func() { a.serveErr <- a.proxy.Serve(pl) }()
	go func() {
		if err := a.adminSrv.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	a.log.Info("shadowproxy started", zap.String("listen", pl.Addr().String()), zap.String("admin", al.Addr().String()),
		zap.Int("routes", len(cfg.Routes)), zap.Int("upstreams", len(cfg.Upstreams)), zap.String("version", a.opts.Version))
	return nil
}

func (a *App) adminOptions(cfg *config.Config) admin.Options {
	return admin.Options{
		Logger:         a.log,
		Registry:       a.metrics.Registry,
		Token:          cfg.Admin.Token,
		ProtectReads:   cfg.Admin.ProtectReads,
		Loopback:       cfg.AdminIsLoopback(),
		ListenAddr:     cfg.AdminListen,
		Hosts:          adminHosts(cfg),
		Pprof:          cfg.Admin.Pprof,
		Ready:          a.proxy.Ready,
		Dashboard:      admin.Dashboard(),
		Routes:         func() any { return a.routeViews() },
		Rollouts:       a.rollouts.status,
		RolloutCommand: a.rollouts.command,
		Diffs:          a.diffs,
		Fleet:          a.rollouts.fleetStatus(),
		FleetWindows:   a.rollouts.fleetWindows(),
		FleetRoutes:    a.rollouts.fleetRoutes(),
		History:        a.history,
		NoiseReset:     a.noiseReset,
		Evidence:       a.evidenceAPI,
		Cutover:        a.cutovers.status,
		CutoverCommand: a.cutovers.command,
		Reload: func() (any, error) {
			if err := a.Reload(); err != nil {
				return nil, err
			}
			return map[string]string{"result": "reloaded"}, nil
		},
	}
}

// ProxyAddr is the proxy listener's address (after Start).
func (a *App) ProxyAddr() string { return a.proxyLn.Addr().String() }

// AdminAddr is the admin listener's address (after Start).
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// Errors delivers a fatal listener error.
func (a *App) Errors() <-chan error { return a.serveErr }

// Reload reads the configuration again and swaps it in when valid. An
// invalid file leaves the running configuration untouched. Reloads run one
// at a time.
func (a *App) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	var (
		cfg *config.Config
		err error
	)
	switch {
	case a.opts.ReloadFunc != nil:
		cfg, err = a.opts.ReloadFunc()
	case a.opts.ConfigPath != "":
		cfg, err = config.LoadFile(a.opts.ConfigPath)
	default:
		err = errors.New("no configuration file to reload from")
	}
	if err == nil {
		err = a.apply(cfg)
	}
	if err != nil {
		a.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		a.metrics.ConfigLastReloadOK.Set(0)
		// The operator's file is wrong, not the process: a warning, on one
		// line, listing every error (a config error is one per line).
		a.log.Warn("configuration reload rejected; keeping the previous configuration",
			zap.Strings("errors", strings.Split(err.Error(), "\n")))
		return err
	}
	a.metrics.ConfigReloads.WithLabelValues("success").Inc()
	a.metrics.ConfigLastReloadOK.Set(1)
	a.metrics.ConfigLastReloadTime.SetToCurrentTime()
	a.log.Info("configuration reloaded", zap.Int("routes", len(cfg.Routes)), zap.Int("upstreams", len(cfg.Upstreams)))
	return nil
}

// apply is one transaction: every part of cfg is compiled first (compare
// rules, the Prometheus source and rollout recorders, the proxy snapshot
// with its pools and certificate) while the running configuration stays
// untouched; only when all of them succeeded is each put in force, by steps
// that cannot fail. A rejected cfg changes nothing.
func (a *App) apply(cfg *config.Config) error {
	base := cfg
	cfg = a.cutovers.transform(cfg)
	old := a.Config()
	if cfg.Listen != old.Listen || cfg.AdminListen != old.AdminListen {
		return fmt.Errorf("listen and admin_listen cannot change on reload (restart the process): %s/%s -> %s/%s",
			old.Listen, old.AdminListen, cfg.Listen, cfg.AdminListen)
	}
	ap, err := a.analyzer.Plan(cfg)
	if err != nil {
		return err
	}
	rp, err := a.rollouts.plan(cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.pending = cfg
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.pending = nil
		a.mu.Unlock()
	}()
	pr, err := a.proxy.PrepareReload(cfg)
	if err != nil {
		a.rollouts.abort()
		return err
	}
	// Commit: nothing below can fail.
	a.analyzer.Apply(ap)
	a.rollouts.commit(rp)
	pr.Commit()
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.cutovers.setBase(base)
	if !reflect.DeepEqual(cfg.Tracing, old.Tracing) {
		// The exporter and sampler are built once; swapping them under
		// running requests is not worth the risk for a setting this rare.
		a.log.Warn("the tracing section changed; it takes effect at the next restart")
	}
	if err := a.rollouts.sync(cfg); err != nil {
		a.log.Error("rollout configuration not applied", zap.Error(err))
	}
	if f := a.rollouts.fleet; f != nil {
		// Policy hashes may have changed: the leader holds a route while
		// members disagree.
		f.node.Republish()
	}
	for _, r := range old.Routes {
		if !hasRoute(cfg, r.Name) {
			a.metrics.ForgetRoute(r.Name)
		}
	}
	initRouteMetrics(a.metrics, cfg)
	return nil
}

func hasRoute(cfg *config.Config, name string) bool {
	for _, r := range cfg.Routes {
		if r.Name == name {
			return true
		}
	}
	return false
}

// Shutdown drains: /readyz turns 503, the proxy stops accepting and finishes
// in-flight requests until the configured shutdown_timeout (or ctx), then the
// admin listener closes.
func (a *App) Shutdown(ctx context.Context) error {
	timeout := a.Config().Limits.ShutdownTimeout.D()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a.log.Info("shutting down", zap.Duration("deadline_ms", timeout))
	if a.stopBackground != nil {
		a.stopBackground()
	}
	err := a.proxy.Shutdown(ctx)
	if a.tracer != nil {
		// The last spans go out within what is left of the drain deadline.
		if terr := a.tracer.Shutdown(ctx); terr != nil {
			a.log.Warn("trace export at shutdown incomplete", zap.Error(terr))
		}
	}
	a.rollouts.close(ctx)
	if f := a.rollouts.fleet; f != nil {
		f.close()
	}
	if a.adminSrv != nil {
		actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer acancel()
		a.adminSrv.Shutdown(actx)
	}
	a.log.Info("shutdown complete", zap.Error(err))
	a.log.Sync()
	return err
}
