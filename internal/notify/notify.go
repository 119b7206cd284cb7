// Package notify delivers webhook notifications (rollout transitions,
// alerts) off the request path: a bounded queue feeds a few workers that
// POST JSON with a Slack-compatible "text" field plus the structured event,
// with a bounded time per attempt and a few retries with exponential
// backoff. When the queue is full a notification is dropped and counted
// rather than ever blocking the caller: a webhook endpoint that hangs must
// not slow a rollback down.
//
// The package is generic: it knows nothing of rollouts. rollout.Webhooks
// adapts a *Dispatcher to rollout.Notifier.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options configures a Dispatcher. Zero values take the defaults noted.
type Options struct {
	// QueueSize bounds pending deliveries (one per message and URL); 256.
	QueueSize int
	// Workers is the number of concurrent deliveries; 2.
	Workers int
	// Timeout bounds one HTTP attempt, connect to last byte; 5s.
	Timeout time.Duration
	// MaxAttempts per delivery, the first included; 4.
	MaxAttempts int
	// Backoff before the first retry, doubled each time; 500ms.
	Backoff time.Duration
	// MaxBackoff caps the backoff and any Retry-After honoured; 10s.
	MaxBackoff time.Duration
	// Client sends the requests; a dedicated client by default.
	Client *http.Client
	// Logger receives delivery failures; none by default.
	Logger *zap.Logger
	// UserAgent of the requests; "shadowproxy-notify".
	UserAgent string
}

// Stats are the Dispatcher's counters, for Prometheus collectors.
type Stats struct {
	// Enqueued deliveries accepted into the queue.
	Enqueued uint64 `json:"enqueued"`
	// Delivered deliveries answered with a 2xx.
	Delivered uint64 `json:"delivered"`
	// Failed deliveries given up after their attempts (or a permanent 4xx).
	Failed uint64 `json:"failed"`
	// Dropped deliveries refused because the queue was full or closed, or
	// whose payload could not be encoded.
	Dropped uint64 `json:"dropped"`
	// Retries counts attempts after the first.
	Retries uint64 `json:"retries"`
	// QueueLength is the number of deliveries waiting now.
	QueueLength int `json:"queue_length"`
}

type job struct {
	url  string
	body []byte
}

// Dispatcher delivers webhooks in the background. It is safe for
// concurrent use.
type Dispatcher struct {
	opts   Options
	log    *zap.Logger
	queue  chan job
	mu     sync.RWMutex // guards closed against Send racing Close
	closed bool
	ctx    context.Context // canceled when Close gives up waiting
	cancel context.CancelFunc
	wg     sync.WaitGroup

	enqueued, delivered, failed, dropped, retries atomic.Uint64
}

// New starts a Dispatcher's workers. Call Close to stop them.
func New(opts Options) *Dispatcher {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 4
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "shadowproxy-notify"
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{opts: opts, log: opts.Logger.Named("notify"), queue: make(chan job, opts.QueueSize), ctx: ctx, cancel: cancel}
	for i := 0; i < opts.Workers; i++ {
		d.wg.Add(1)
		go d.worker()
	}
	return d
}

// Encode builds the JSON body: payload's fields (when it encodes as an
// object) with "text" added, so that Slack shows the text and other
// receivers get structured fields at the top level. Other payloads go
// under "data".
func Encode(text string, payload any) ([]byte, error) {
	if payload == nil {
		return json.Marshal(map[string]string{"text": text})
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode notification payload: %w", err)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return json.Marshal(map[string]any{"text": text, "data": json.RawMessage(raw)})
	}
	t, _ := json.Marshal(text)
	fields["text"] = t
	return json.Marshal(fields)
}

// Send queues one notification for each URL and returns at once. It
// returns false when anything was dropped (queue full, closed, or a
// payload that cannot be encoded).
func (d *Dispatcher) Send(urls []string, text string, payload any) bool {
	if len(urls) == 0 {
		return true
	}
	body, err := Encode(text, payload)
	if err != nil {
		d.dropped.Add(uint64(len(urls)))
		d.log.Error("notification dropped", zap.Error(err))
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	ok := true
	for _, u := range urls {
		if d.closed {
			d.dropped.Add(1)
			ok = false
			continue
		}
		select {
		case d.queue <- job{url: u, body: body}:
			d.enqueued.Add(1)
		default:
			d.dropped.Add(1)
			ok = false
			d.log.Warn("notification queue full: dropped", zap.String("target", redact(u)), zap.Int("queue_size", d.opts.QueueSize))
		}
	}
	return ok
}

// Close stops accepting notifications and waits for queued ones until ctx
// is done; then in-flight attempts are aborted and the rest dropped.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.queue)
	d.mu.Unlock()

	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		d.cancel()
		return nil
	case <-ctx.Done():
		d.cancel()
		<-done
		return fmt.Errorf("notify: close: %w", ctx.Err())
	}
}

// Stats returns the counters.
func (d *Dispatcher) Stats() Stats {
	return Stats{
		Enqueued: d.enqueued.Load(), Delivered: d.delivered.Load(), Failed: d.failed.Load(),
		Dropped: d.dropped.Load(), Retries: d.retries.Load(), QueueLength: len(d.queue),
	}
}

func (d *Dispatcher) worker() {
	defer d.wg.Done()
	for j := range d.queue {
		if d.ctx.Err() != nil {
			d.dropped.Add(1)
			continue
		}
		d.deliver(j)
	}
}

// errPermanent marks an answer that retrying cannot fix (a 4xx other than
// 408 and 429: a wrong URL or a rejected payload).
var errPermanent = errors.New("permanent failure")

func (d *Dispatcher) deliver(j job) {
	backoff := d.opts.Backoff
	var err error
	for attempt := 1; attempt <= d.opts.MaxAttempts; attempt++ {
		var retryAfter time.Duration
		retryAfter, err = d.attempt(j)
		if err == nil {
			d.delivered.Add(1)
			return
		}
		if errors.Is(err, errPermanent) || attempt == d.opts.MaxAttempts || d.ctx.Err() != nil {
			break
		}
		wait := max(backoff, retryAfter)
		wait = min(wait, d.opts.MaxBackoff)
		d.log.Debug("notification attempt failed; retrying", zap.String("target", redact(j.url)), zap.Int("attempt", attempt), zap.Duration("backoff_ms", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-d.ctx.Done():
			t.Stop()
		}
		backoff = min(backoff*2, d.opts.MaxBackoff)
		d.retries.Add(1)
	}
	d.failed.Add(1)
	d.log.Warn("notification failed", zap.String("target", redact(j.url)), zap.Error(err))
}

// attempt makes one POST, bounded by Timeout. It returns the Retry-After
// the server asked for, if any.
func (d *Dispatcher) attempt(j job) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.url, bytes.NewReader(j.body))
	if err != nil {
		return 0, fmt.Errorf("%w: build request: %v", errPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opts.UserAgent)
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	// Drain a little so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("status %d", resp.StatusCode)
	default:
		return 0, fmt.Errorf("%w: status %d", errPermanent, resp.StatusCode)
	}
}

func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// redact keeps a webhook URL's scheme and host only: chat webhook paths
// are secrets (https://hooks.slack.com/services/T/B/token).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
