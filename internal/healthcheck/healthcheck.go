// Package healthcheck probes an upstream actively over HTTP and reports its
// health as consecutive failures and successes. The rollout controller reads
// ConsecutiveFailures (rollout.HealthProber) to roll a canary back after N
// failed probes in a row; upstream pools can use Healthy, with its
// rise/fall thresholds, to take a backend out of rotation.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Config configures a Checker. Zero values take the defaults noted.
type Config struct {
	// URL probed with GET (the upstream's base URL plus the health path).
	URL string
	// Interval between probes; 5s.
	Interval time.Duration
	// Timeout of one probe, connect to last byte; 2s.
	Timeout time.Duration
	// ExpectStatus is the healthy status; 0 accepts any 2xx.
	ExpectStatus int
	// UnhealthyAfter consecutive failures make Healthy false; 3.
	UnhealthyAfter int
	// HealthyAfter consecutive successes make Healthy true again; 1.
	HealthyAfter int
	// Client sends the probes; a dedicated one without keep-alive reuse
	// across upstreams by default.
	Client *http.Client
	// Logger receives health changes; none by default.
	Logger *zap.Logger
	// OnChange is called (from the probing goroutine) when Healthy flips.
	OnChange func(healthy bool, s Status)
}

// Status is a snapshot of a Checker.
type Status struct {
	URL                  string        `json:"url"`
	Healthy              bool          `json:"healthy"`
	ConsecutiveFailures  int           `json:"consecutive_failures"`
	ConsecutiveSuccesses int           `json:"consecutive_successes"`
	Checks               uint64        `json:"checks"`
	Failures             uint64        `json:"failures"`
	LastCheck            time.Time     `json:"last_check"`
	LastStatus           int           `json:"last_status"`
	LastLatency          time.Duration `json:"last_latency_ns"`
	LastError            string        `json:"last_error,omitempty"`
}

// Checker probes one URL. It starts healthy (optimistic), so that a new
// upstream is not reported failing before its first probe.
type Checker struct {
	cfg Config
	log *zap.Logger

	failures atomic.Int64 // consecutive failures, read lock-free by the rollout
	mu       sync.Mutex
	status   Status

	life    sync.Mutex // guards started and closed
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// New validates cfg and returns a Checker; call Start to probe
// periodically, or Probe to probe once.
func New(cfg Config) (*Checker, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("healthcheck: invalid URL %q: want http:// or https:// with a host", cfg.URL)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.UnhealthyAfter <= 0 {
		cfg.UnhealthyAfter = 3
	}
	if cfg.HealthyAfter <= 0 {
		cfg.HealthyAfter = 1
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 2 * cfg.Interval}}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Checker{cfg: cfg, log: cfg.Logger.Named("healthcheck").With(zap.String("url", cfg.URL)),
		stop: make(chan struct{}), done: make(chan struct{})}
	c.status = Status{URL: cfg.URL, Healthy: true}
	return c, nil
}

// Start probes at once and then every Interval, in a goroutine, until Close.
// Calling it again does nothing.
func (c *Checker) Start() {
	c.life.Lock()
	defer c.life.Unlock()
	if c.started || c.closed {
		return
	}
	c.started = true
	go c.run()
}

func (c *Checker) run() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		_ = c.Probe(ctx)
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

// Close stops probing and waits for the probing goroutine, aborting a
// probe in flight.
func (c *Checker) Close() error {
	c.life.Lock()
	if !c.closed {
		c.closed = true
		close(c.stop)
	}
	started := c.started
	c.life.Unlock()
	if started {
		<-c.done
	}
	return nil
}

// Probe makes one probe now and records its result; the error says why a
// probe failed.
func (c *Checker) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	status, err := c.get(ctx)
	latency := time.Since(start)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// Aborted by Close, not a verdict on the upstream.
		return err
	}
	c.record(status, latency, err)
	return err
}

func (c *Checker) get(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("build probe: %w", err)
	}
	req.Header.Set("User-Agent", "shadowproxy-healthcheck")
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if c.cfg.ExpectStatus != 0 {
		ok = resp.StatusCode == c.cfg.ExpectStatus
	}
	if !ok {
		want := "2xx"
		if c.cfg.ExpectStatus != 0 {
			want = fmt.Sprint(c.cfg.ExpectStatus)
		}
		return resp.StatusCode, fmt.Errorf("probe: status %d, want %s", resp.StatusCode, want)
	}
	return resp.StatusCode, nil
}

func (c *Checker) record(status int, latency time.Duration, err error) {
	c.mu.Lock()
	s := &c.status
	s.Checks++
	s.LastCheck, s.LastStatus, s.LastLatency = time.Now(), status, latency
	was := s.Healthy
	if err != nil {
		s.Failures++
		s.ConsecutiveFailures++
		s.ConsecutiveSuccesses = 0
		s.LastError = err.Error()
		if s.ConsecutiveFailures >= c.cfg.UnhealthyAfter {
			s.Healthy = false
		}
	} else {
		s.ConsecutiveSuccesses++
		s.ConsecutiveFailures = 0
		s.LastError = ""
		if s.ConsecutiveSuccesses >= c.cfg.HealthyAfter {
			s.Healthy = true
		}
	}
	c.failures.Store(int64(s.ConsecutiveFailures))
	snap := *s
	c.mu.Unlock()
	if was != snap.Healthy {
		if snap.Healthy {
			c.log.Info("upstream healthy again", zap.Int("consecutive_successes", snap.ConsecutiveSuccesses))
		} else {
			c.log.Warn("upstream unhealthy", zap.Int("consecutive_failures", snap.ConsecutiveFailures), zap.String("last_error", snap.LastError))
		}
		if c.cfg.OnChange != nil {
			c.cfg.OnChange(snap.Healthy, snap)
		}
	}
}

// ConsecutiveFailures is the number of probes that failed in a row (0 after
// a success). It is a single atomic load.
func (c *Checker) ConsecutiveFailures() int { return int(c.failures.Load()) }

// Healthy applies the rise/fall thresholds to the probe history.
func (c *Checker) Healthy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.Healthy
}

// Status returns a snapshot.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
