package rollout

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Smoke phases (smoke.on).
const (
	// SmokeBeforeStep runs the checks before a step's share is applied:
	// the step gets real traffic only once they pass.
	SmokeBeforeStep = "before_step"
	// SmokeAfterPromote runs them again once the new share is in force.
	SmokeAfterPromote = "after_promote"
)

// Gate failure policies (smoke.failure).
const (
	GateFailRollback = "rollback"
	GateFailHold     = "hold"
)

// Gating webhook types.
const (
	// WebhookPreStep must answer 2xx before a step gets traffic; a failure
	// counts like a smoke failure.
	WebhookPreStep = "pre_step"
	// WebhookConfirmPromotion must answer 2xx before a promotion; until it
	// does, the step holds.
	WebhookConfirmPromotion = "confirm_promotion"
)

// Gate defaults and bounds.
const (
	DefaultSmokeRetries      = 1
	MaxSmokeRetries          = 5
	MaxSmokeChecks           = 20
	DefaultWebhookTimeout    = 5 * time.Second
	MaxWebhookTimeout        = time.Minute
	DefaultWebhookRetries    = 2
	MaxWebhookRetries        = 10
	DefaultStaleAfter        = 14 * 24 * time.Hour
	MaxSmokeExcerptBytes     = 512
	maxSmokeRequestBodyBytes = 64 << 10
)

// Smoke is a rollout's production smoke tests: scripted requests the proxy
// sends to the canary and to stable (so a failing stable reads as an
// environment problem, not a canary failure). They are read-only unless
// allow_writes, and synthetic: they never reach the rollout statistics.
type Smoke struct {
	// Checks are run in order; all must pass.
	Checks []SmokeCheck `yaml:"checks"`
	// On lists when they run: before_step, after_promote (default both).
	On []string `yaml:"on,omitempty"`
	// Retries is how many more times a failing check is tried (default 1).
	Retries *int `yaml:"retries,omitempty"`
	// Failure is what a canary failure does: rollback (default) or hold.
	Failure string `yaml:"failure,omitempty"`
	// AllowWrites permits non-safe methods (POST, PUT, DELETE, ...); then
	// cleanup must undo what the checks created.
	AllowWrites bool `yaml:"allow_writes,omitempty"`
	// Cleanup requests are sent to each side after the checks, pass or fail.
	Cleanup []SmokeRequest `yaml:"cleanup,omitempty"`
}

// SmokeCheck is one scripted request and what its answer must be.
type SmokeCheck struct {
	// Name labels the check in results and metrics.
	Name    string       `yaml:"name"`
	Request SmokeRequest `yaml:"request"`
	Expect  SmokeExpect  `yaml:"expect"`
}

// SmokeRequest is a request sent to an upstream directly.
type SmokeRequest struct {
	// Method defaults to GET.
	Method string `yaml:"method,omitempty"`
	// Path with query, starting with "/".
	Path    string            `yaml:"path"`
	Headers map[string]string `yaml:"headers,omitempty"`
	Body    string            `yaml:"body,omitempty"`
}

// SmokeExpect is what a check's answer must satisfy.
type SmokeExpect struct {
	// Status is the wanted status code (default 200).
	Status int `yaml:"status,omitempty"`
	// JSON maps a JSON pointer (RFC 6901) to the wanted value, or to
	// {exists: true|false}.
	JSON map[string]any `yaml:"json,omitempty"`
	// MaxLatency fails a slower answer (0: no limit).
	MaxLatency cfgtypes.Duration `yaml:"max_latency,omitempty"`
}

// GateWebhook is an outside system a step waits for.
type GateWebhook struct {
	// Type is pre_step or confirm_promotion.
	Type string `yaml:"type"`
	// URL receives a POST with the route, step and share as JSON.
	URL string `yaml:"url"`
	// Timeout bounds one attempt (default 5s).
	Timeout cfgtypes.Duration `yaml:"timeout,omitempty"`
	// Retries after a failed attempt (default 2).
	Retries *int `yaml:"retries,omitempty"`
}

// SmokeRuns reports whether the checks run in phase.
func (s *Smoke) SmokeRuns(phase string) bool {
	return s != nil && len(s.Checks) > 0 && slices.Contains(s.On, phase)
}

func (s *Spec) applyGateDefaults() {
	if sm := s.Smoke; sm != nil {
		if len(sm.On) == 0 {
			sm.On = []string{SmokeBeforeStep, SmokeAfterPromote}
		}
		if sm.Retries == nil {
			n := DefaultSmokeRetries
			sm.Retries = &n
		}
		if sm.Failure == "" {
			sm.Failure = GateFailRollback
		}
		for i := range sm.Checks {
			c := &sm.Checks[i]
			if c.Request.Method == "" {
				c.Request.Method = "GET"
			}
			if c.Expect.Status == 0 {
				c.Expect.Status = 200
			}
		}
		for i := range sm.Cleanup {
			if sm.Cleanup[i].Method == "" {
				sm.Cleanup[i].Method = "DELETE"
			}
		}
	}
	for i := range s.Webhooks {
		w := &s.Webhooks[i]
		if w.Timeout == 0 {
			w.Timeout = cfgtypes.Duration(DefaultWebhookTimeout)
		}
		if w.Retries == nil {
			n := DefaultWebhookRetries
			w.Retries = &n
		}
	}
	if s.StaleAfter == 0 {
		s.StaleAfter = cfgtypes.Duration(DefaultStaleAfter)
	}
}

func safeMethod(m string) bool {
	switch strings.ToUpper(m) {
	case "", "GET", "HEAD", "OPTIONS":
		return true
	}
	return false
}

func (s *Spec) validateGates() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, cfgtypes.Errorf(path, format, args...))
	}
	if s.StaleAfter < 0 {
		add("stale_after", "must not be negative, got %s", s.StaleAfter.D())
	}
	if sm := s.Smoke; sm != nil {
		if len(sm.Checks) == 0 {
			add("smoke.checks", "required: list at least one check, e.g. {name: health, request: {path: /healthz}, expect: {status: 200}}")
		}
		if len(sm.Checks) > MaxSmokeChecks {
			add("smoke.checks", "%d checks; at most %d are allowed (they run before every step)", len(sm.Checks), MaxSmokeChecks)
		}
		for i, v := range sm.On {
			if v != SmokeBeforeStep && v != SmokeAfterPromote {
				add(fmt.Sprintf("smoke.on[%d]", i), "unknown phase %q; want before_step or after_promote", v)
			}
		}
		if sm.Retries != nil && (*sm.Retries < 0 || *sm.Retries > MaxSmokeRetries) {
			add("smoke.retries", "must be between 0 and %d, got %d", MaxSmokeRetries, *sm.Retries)
		}
		if sm.Failure != "" && sm.Failure != GateFailRollback && sm.Failure != GateFailHold {
			add("smoke.failure", "unknown value %q; want rollback (take the canary to 0%%) or hold (keep the step from getting traffic until the checks pass)", sm.Failure)
		}
		seen := map[string]int{}
		writes := false
		for i := range sm.Checks {
			c := &sm.Checks[i]
			p := fmt.Sprintf("smoke.checks[%d]", i)
			switch {
			case c.Name == "":
				add(p+".name", "required: name the check (it labels shadowproxy_smoke_checks_total), e.g. health")
			case !cfgtypes.IsLabelValue(c.Name):
				add(p+".name", "invalid name %q: use up to 64 letters, digits, '_' and '-'", c.Name)
			default:
				if j, dup := seen[c.Name]; dup {
					add(p+".name", "duplicate check name %q (also smoke.checks[%d])", c.Name, j)
				}
				seen[c.Name] = i
			}
			errs = append(errs, validateSmokeRequest(p+".request", &c.Request)...)
			if !safeMethod(c.Request.Method) {
				writes = true
				if !sm.AllowWrites {
					add(p+".request.method", "%s changes data in production; smoke checks are read-only unless smoke.allow_writes: true (then add smoke.cleanup requests that undo it)", strings.ToUpper(c.Request.Method))
				}
			}
			if st := c.Expect.Status; st != 0 && (st < 100 || st > 599) {
				add(p+".expect.status", "%d is not an HTTP status code", st)
			}
			if c.Expect.MaxLatency < 0 {
				add(p+".expect.max_latency", "must not be negative")
			}
			for ptr, want := range c.Expect.JSON {
				if ptr != "" && !strings.HasPrefix(ptr, "/") {
					add(p+".expect.json", "pointer %q must start with '/' (RFC 6901), e.g. /status", ptr)
				}
				if m, ok := want.(map[string]any); ok {
					if _, isBool := m["exists"].(bool); len(m) != 1 || !isBool {
						add(p+".expect.json."+ptr, "a mapping must be {exists: true} or {exists: false}; to compare an object, assert its fields one pointer each")
					}
				}
			}
		}
		if writes && sm.AllowWrites && len(sm.Cleanup) == 0 {
			add("smoke.cleanup", "required with allow_writes and a non-safe check: list the requests that undo what the checks create (create-verify-cleanup)")
		}
		for i := range sm.Cleanup {
			errs = append(errs, validateSmokeRequest(fmt.Sprintf("smoke.cleanup[%d]", i), &sm.Cleanup[i])...)
		}
	}
	for i, w := range s.Webhooks {
		p := fmt.Sprintf("webhooks[%d]", i)
		if w.Type != WebhookPreStep && w.Type != WebhookConfirmPromotion {
			add(p+".type", "unknown type %q; want pre_step (must answer 2xx before a step gets traffic) or confirm_promotion (must answer 2xx before a promotion)", w.Type)
		}
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(p+".url", "invalid URL %q: want http:// or https:// with a host", w.URL)
		}
		if w.Timeout < 0 || w.Timeout.D() > MaxWebhookTimeout {
			add(p+".timeout", "must be between 0 and %s, got %s", MaxWebhookTimeout, w.Timeout.D())
		}
		if w.Retries != nil && (*w.Retries < 0 || *w.Retries > MaxWebhookRetries) {
			add(p+".retries", "must be between 0 and %d, got %d", MaxWebhookRetries, *w.Retries)
		}
	}
	return errs
}

func validateSmokeRequest(p string, r *SmokeRequest) []error {
	var errs []error
	if !strings.HasPrefix(r.Path, "/") {
		errs = append(errs, cfgtypes.Errorf(p+".path", "%q must start with '/', e.g. /api/health", r.Path))
	}
	if r.Method != "" && !cfgtypes.IsToken(r.Method) {
		errs = append(errs, cfgtypes.Errorf(p+".method", "invalid method %q", r.Method))
	}
	for h := range r.Headers {
		if !cfgtypes.IsToken(h) {
			errs = append(errs, cfgtypes.Errorf(p+".headers", "invalid header name %q", h))
		}
	}
	if len(r.Body) > maxSmokeRequestBodyBytes {
		errs = append(errs, cfgtypes.Errorf(p+".body", "%d bytes; at most %d", len(r.Body), maxSmokeRequestBodyBytes))
	}
	return errs
}

// SmokeAssertion is one expectation checked against one answer.
type SmokeAssertion struct {
	What   string `json:"what"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Passed bool   `json:"passed"`
}

// SmokeResult is one check against one side.
type SmokeResult struct {
	Check string `json:"check"`
	// Target is "canary" or "stable".
	Target     string           `json:"target"`
	Upstream   string           `json:"upstream"`
	Passed     bool             `json:"passed"`
	Attempts   int              `json:"attempts"`
	Status     int              `json:"status,omitempty"`
	LatencyMS  float64          `json:"latency_ms"`
	Assertions []SmokeAssertion `json:"assertions,omitempty"`
	// Excerpt is the start of the answer's body (bounded).
	Excerpt string `json:"excerpt,omitempty"`
	Error   string `json:"error,omitempty"`
}

// SmokeReport is one run of a route's checks.
type SmokeReport struct {
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
	Step  int       `json:"step"`
	// Verdict: pass, fail (the canary fails where stable passes) or
	// environment (stable fails as well: not the canary's fault).
	Verdict string        `json:"verdict"`
	Summary string        `json:"summary"`
	Results []SmokeResult `json:"results"`
}

// Smoke verdicts.
const (
	SmokePass        = "pass"
	SmokeFail        = "fail"
	SmokeEnvironment = "environment"
)

// judge sets the report's verdict from its results: any canary failure on
// a check stable passes is the canary's; a check failing on both sides is
// the environment's.
func (rep *SmokeReport) judge() {
	stable := map[string]bool{}
	for _, r := range rep.Results {
		if r.Target == "stable" {
			stable[r.Check] = r.Passed
		}
	}
	var canaryFails, envFails []string
	for _, r := range rep.Results {
		if r.Target != "canary" || r.Passed {
			continue
		}
		why := r.Check + " (" + r.Error
		for _, a := range r.Assertions {
			if !a.Passed {
				if why[len(why)-1] != '(' {
					why += "; "
				}
				why += fmt.Sprintf("%s: want %s, got %s", a.What, a.Want, a.Got)
			}
		}
		why += ")"
		if ok, ran := stable[r.Check]; ran && !ok {
			envFails = append(envFails, why)
		} else {
			canaryFails = append(canaryFails, why)
		}
	}
	switch {
	case len(canaryFails) > 0:
		rep.Verdict = SmokeFail
		rep.Summary = "smoke checks failed on the canary (stable passes them): " + strings.Join(canaryFails, ", ")
	case len(envFails) > 0:
		rep.Verdict = SmokeEnvironment
		rep.Summary = "smoke checks fail on stable too, an environment problem rather than the canary's: " + strings.Join(envFails, ", ")
	default:
		rep.Verdict = SmokePass
		rep.Summary = fmt.Sprintf("all %d smoke checks passed on the canary", countTarget(rep.Results, "canary"))
	}
}

func countTarget(rs []SmokeResult, target string) int {
	n := 0
	for _, r := range rs {
		if r.Target == target {
			n++
		}
	}
	return n
}

// GatePayload is the JSON body a gating webhook receives.
type GatePayload struct {
	Route   string    `json:"route"`
	Type    string    `json:"type"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	At      time.Time `json:"at"`
}

// Gates runs what a step waits for: smoke checks and gating webhooks. The
// application provides it (it knows the upstreams' addresses); the
// controller calls it without holding any lock.
type Gates interface {
	// Smoke runs the checks against the route's canary and stable and
	// returns every result; the controller judges them.
	Smoke(ctx context.Context, route string, s *Smoke) []SmokeResult
	// Webhook calls w with payload, retrying as w says; nil means it
	// answered 2xx.
	Webhook(ctx context.Context, route string, w GateWebhook, payload GatePayload) error
}
