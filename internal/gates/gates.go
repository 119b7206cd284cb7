// Package gates runs what a rollout step waits for: production smoke
// checks sent to the canary and to stable, and gating webhooks. The rollout
// controller judges the results; this package only does the I/O, bounded
// in time and size.
package gates

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
)

// SyntheticHeader marks every smoke request, so that an upstream (or a
// proxy in front of it with a synthetic rule) can tell it from users'.
const SyntheticHeader = "X-Shadowproxy-Synthetic"

// Bounds of one smoke request.
const (
	// DefaultCheckTimeout bounds a check without max_latency.
	DefaultCheckTimeout = 10 * time.Second
	// MaxBodyBytes is how much of an answer is read and parsed.
	MaxBodyBytes = 256 << 10
	// excerptBytes is how much of it a result shows.
	excerptBytes = rollout.MaxSmokeExcerptBytes
)

// Target is one side of a smoke check.
type Target struct {
	// Name is the upstream's name; URL its base (scheme://host:port).
	Name, URL string
	// Client, when set, sends this target's requests: it carries the
	// upstream's TLS settings (ca_file, server_name), so an https canary
	// is checked the way the proxy reaches it. Default: Runner's client.
	Client *http.Client
}

// Runner implements rollout.Gates over HTTP.
type Runner struct {
	// Client sends the requests (default: a client without redirects).
	Client *http.Client
	// Targets returns a route's canary and stable; ok=false when unknown.
	Targets func(route string) (canary, stable Target, ok bool)
	// OnWebhook is called after each gating webhook call, for metrics.
	OnWebhook func(route, typ string, err error)
	Logger    *zap.Logger
}

var _ rollout.Gates = (*Runner)(nil)

func (r *Runner) client() *http.Client {
	if r.Client != nil {
		return r.Client
	}
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (r *Runner) log() *zap.Logger {
	if r.Logger == nil {
		return zap.NewNop()
	}
	return r.Logger
}

// Smoke runs every check against the canary and stable, retrying a failing
// one s.Retries times, then the cleanup requests on each side.
func (r *Runner) Smoke(ctx context.Context, route string, s *rollout.Smoke) []rollout.SmokeResult {
	canary, stable, ok := r.Targets(route)
	if !ok {
		var out []rollout.SmokeResult
		for _, c := range s.Checks {
			out = append(out, rollout.SmokeResult{Check: c.Name, Target: "canary", Error: "route has no canary upstream"})
		}
		return out
	}
	retries := 0
	if s.Retries != nil {
		retries = *s.Retries
	}
	var out []rollout.SmokeResult
	for _, c := range s.Checks {
		for _, side := range []struct {
			role string
			t    Target
		}{{"canary", canary}, {"stable", stable}} {
			var res rollout.SmokeResult
			for attempt := 1; attempt <= retries+1; attempt++ {
				res = r.check(ctx, c, side.t)
				res.Target, res.Attempts = side.role, attempt
				if res.Passed || ctx.Err() != nil {
					break
				}
			}
			out = append(out, res)
		}
	}
	for _, t := range []Target{canary, stable} {
		for _, cr := range s.Cleanup {
			if _, _, _, err := r.send(ctx, t, cr, DefaultCheckTimeout); err != nil {
				r.log().Warn("smoke cleanup request failed", zap.String("route", route), zap.String("upstream", t.Name),
					zap.String("method", cr.Method), zap.String("path", cr.Path), zap.Error(err))
			}
		}
	}
	return out
}

// send performs one request and returns status, latency and the (bounded)
// body.
func (r *Runner) send(ctx context.Context, t Target, sr rollout.SmokeRequest, timeout time.Duration) (int, time.Duration, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := sr.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(t.URL, "/")+sr.Path, strings.NewReader(sr.Body))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range sr.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set(SyntheticHeader, "smoke")
	start := time.Now()
	c := t.Client
	if c == nil {
		c = r.client()
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, time.Since(start), nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	lat := time.Since(start)
	if err != nil {
		return resp.StatusCode, lat, body, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, lat, body, nil
}

func (r *Runner) check(ctx context.Context, c rollout.SmokeCheck, t Target) rollout.SmokeResult {
	res := rollout.SmokeResult{Check: c.Name, Upstream: t.Name}
	timeout := DefaultCheckTimeout
	if ml := c.Expect.MaxLatency.D(); ml > 0 {
		timeout = min(timeout, 2*ml) // past twice the limit the answer fails anyway
	}
	status, lat, body, err := r.send(ctx, t, c.Request, timeout)
	res.Status, res.LatencyMS = status, float64(lat.Microseconds())/1000
	res.Excerpt = excerpt(body)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Assertions, res.Passed = Assert(c.Expect, status, lat, body)
	return res
}

func excerpt(b []byte) string {
	if len(b) > excerptBytes {
		return string(b[:excerptBytes]) + "…"
	}
	return string(b)
}

// Assert checks an answer against expect and returns every assertion.
func Assert(expect rollout.SmokeExpect, status int, latency time.Duration, body []byte) ([]rollout.SmokeAssertion, bool) {
	want := expect.Status
	if want == 0 {
		want = http.StatusOK
	}
	out := []rollout.SmokeAssertion{{What: "status", Want: strconv.Itoa(want), Got: strconv.Itoa(status), Passed: status == want}}
	if ml := expect.MaxLatency.D(); ml > 0 {
		out = append(out, rollout.SmokeAssertion{What: "latency", Want: "<= " + ml.String(), Got: latency.Round(time.Millisecond).String(), Passed: latency <= ml})
	}
	if len(expect.JSON) > 0 {
		var doc any
		jerr := json.Unmarshal(body, &doc)
		for _, ptr := range slices.Sorted(maps.Keys(expect.JSON)) {
			a := rollout.SmokeAssertion{What: "json " + ptr}
			wantV := expect.JSON[ptr]
			got, found, perr := resolve(doc, ptr)
			if m, ok := wantV.(map[string]any); ok {
				wantExists, _ := m["exists"].(bool)
				a.Want = fmt.Sprintf("exists: %v", wantExists)
				a.Got = fmt.Sprintf("exists: %v", found && jerr == nil)
				a.Passed = (found && jerr == nil) == wantExists
			} else {
				wj, _ := json.Marshal(wantV)
				a.Want = string(wj)
				switch {
				case jerr != nil:
					a.Got = "body is not JSON: " + jerr.Error()
				case perr != nil:
					a.Got = perr.Error()
				case !found:
					a.Got = "absent"
				default:
					gj, _ := json.Marshal(got)
					a.Got = string(gj)
					a.Passed = bytes.Equal(gj, wj)
				}
			}
			out = append(out, a)
		}
	}
	for _, a := range out {
		if !a.Passed {
			return out, false
		}
	}
	return out, true
}

// resolve follows an RFC 6901 JSON pointer through doc.
func resolve(doc any, ptr string) (any, bool, error) {
	if ptr == "" {
		return doc, true, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false, fmt.Errorf("pointer %q does not start with '/'", ptr)
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, false, nil
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false, nil
			}
			cur = v[i]
		default:
			return nil, false, nil
		}
	}
	return cur, true, nil
}

// ErrNot2xx is wrapped by Webhook when the hook answered but not 2xx.
var ErrNot2xx = errors.New("gating webhook did not answer 2xx")

// Webhook POSTs payload to w.URL until it answers 2xx, at most
// 1+w.Retries times, each bounded by w.Timeout, with a short pause
// between attempts.
func (r *Runner) Webhook(ctx context.Context, route string, w rollout.GateWebhook, payload rollout.GatePayload) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	retries := 0
	if w.Retries != nil {
		retries = *w.Retries
	}
	timeout := w.Timeout.D()
	if timeout <= 0 {
		timeout = rollout.DefaultWebhookTimeout
	}
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		last = r.post(ctx, w.URL, body, timeout)
		if last == nil {
			break
		}
	}
	if r.OnWebhook != nil {
		r.OnWebhook(route, w.Type, last)
	}
	return last
}

func (r *Runner) post(ctx context.Context, url string, body []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client().Do(req)
	if err != nil {
		return errors.New(redactErr(err, url))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: answered %d", ErrNot2xx, resp.StatusCode)
	}
	return nil
}

// redactErr removes the URL (whose query may hold a token) from a client
// error's text.
func redactErr(err error, url string) string {
	return strings.ReplaceAll(err.Error(), url, "(webhook URL)")
}
