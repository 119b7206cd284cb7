package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/diff"
	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
	"github.com/shadowproxy/shadowproxy/internal/metrics"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// Comparer receives every finished mirror exchange, on a comparison
// goroutine, never on the request path. It must not keep ex, or anything in
// it, after returning: the exchange's buffers are reused.
type Comparer interface {
	Compare(ex *Exchange)
}

// Exchange is one mirrored request: the primary's captured answer and each
// shadow's, ready for comparison.
type Exchange struct {
	Route     string
	Method    string
	URI       string
	RequestID string
	Time      time.Time
	// Primary is the response the client got (or the error instead).
	Primary        diff.Capture
	PrimaryLatency time.Duration
	// Secondary is the answer of compare.secondary (same version as the
	// primary), or nil when none is configured.
	Secondary *ShadowResult
	// Shadows holds one result per shadow target, in configuration order.
	Shadows []ShadowResult
}

// ShadowResult is one target's answer to a mirrored request.
type ShadowResult struct {
	Target  string
	Outcome ShadowOutcome
	Latency time.Duration
	Capture diff.Capture
}

// ShadowOutcome is how a shadow request ended.
type ShadowOutcome uint8

// Shadow outcomes, the values of the outcome label.
const (
	ShadowOK ShadowOutcome = iota
	ShadowDropped
	ShadowError
	ShadowTimeout
	// ShadowSkipped: not sent because the primary already went to this
	// upstream (a canary request shadowed to the canary).
	ShadowSkipped
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "dropped", "error", "timeout", "skipped"}

// String returns the label value.
func (o ShadowOutcome) String() string { return outcomeNames[o] }

// compareWorkers is how many goroutines per route run comparisons; diffs are
// CPU-bound, so more than the core count only adds contention.
const compareWorkers = 2

// mirror owns one route's shadow traffic: sampling, the bounded queue, the
// workers bounding shadow requests in flight, and the hand-off to the
// comparison stage.
type mirror struct {
	route    string
	log      *zap.Logger
	sampler  *splitter.Sampler
	methods  [][]byte
	maxBody  int
	timeout  time.Duration
	targets  []*shadowTarget // shadow targets, then the secondary if any
	nShadows int             // targets[:nShadows] are shadows
	comparer Comparer
	// headers lists the response headers worth capturing (lower case):
	// the compare section's list plus Content-Type and Content-Encoding;
	// allHeaders when it says "*".
	headers    map[string]bool
	allHeaders bool

	queue    chan *mirrorJob
	compareQ chan *mirrorJob
	// recvMu lets one worker at a time collect a batch (see mirrorbatch.go).
	recvMu   sync.Mutex
	batches  sync.Pool // *shadowBatch
	jobs     sync.Pool
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	closed   atomic.Bool

	queueDepth prometheus.Gauge
	skipped    [numSkipReasons]prometheus.Counter

	// reqIDHeader is request_id.header, where the id an Exchange carries is.
	reqIDHeader string
	// stable is the route's own upstream: the secondary is only asked
	// about requests it served (split-aware).
	stable *Upstream
}

// shadowTarget is a shadow upstream with its request changes and metrics.
type shadowTarget struct {
	name      string
	up        *Upstream
	set       [][2]string
	remove    []string
	host      string
	outcomes  [numOutcomes]prometheus.Counter
	duration  prometheus.Observer
	inflight  prometheus.Gauge
	truncated prometheus.Counter
	secondary bool
	// latency is a moving average of this target's shadow latency in
	// nanoseconds; it decides whether queued requests are batched.
	latency atomic.Int64
}

// mirrorJob carries one mirrored request through the stages. refs counts the
// two parties that must finish before comparison: the request goroutine
// (delivering the primary capture) and the shadow worker.
type mirrorJob struct {
	m    *mirror
	refs atomic.Int32
	req  fasthttp.Request
	peer net.IP
	// primaryUp is the upstream that served the primary; a shadow target on
	// the same upstream is skipped.
	primaryUp *Upstream
	start     time.Time
	// trace is the primary's trace (nil when not traced): each shadow
	// request gets a span linked to it.
	trace RequestTrace

	primaryStatus  int
	primaryHead    []byte
	primaryBody    []byte
	primaryTrunc   bool
	primaryErr     error
	primaryLatency time.Duration

	results []jobResult
	ex      Exchange
}

type jobResult struct {
	outcome ShadowOutcome
	latency time.Duration
	status  int
	head    []byte
	body    []byte
	trunc   bool
	err     error
}

func newMirror(route string, sc *config.Shadow, splitKey string, stable *Upstream, snap *Snapshot, tp *splitter.TrustedProxies,
	m *metrics.Metrics, log *zap.Logger, comparer Comparer) (*mirror, error) {
	mi := &mirror{
		stable:      stable,
		route:       route,
		log:         log,
		maxBody:     int(sc.MaxBody),
		timeout:     sc.Timeout.D(),
		comparer:    comparer,
		queue:       make(chan *mirrorJob, sc.QueueSize),
		compareQ:    make(chan *mirrorJob, sc.QueueSize),
		stop:        make(chan struct{}),
		queueDepth:  m.ShadowQueue.WithLabelValues(route),
		reqIDHeader: snap.Config.RequestID.Header,
	}
	for r := SkipReason(0); r < numSkipReasons; r++ {
		mi.skipped[r] = m.ShadowSkipped.WithLabelValues(route, r.String())
	}
	keyText := sc.Key
	if keyText == "" {
		keyText = splitKey
	}
	var key *splitter.KeySource
	if keyText != "" {
		k, err := splitter.ParseKeySource(keyText)
		if err != nil {
			return nil, err
		}
		key = &k
	}
	mi.sampler = splitter.NewSampler(key, sc.Salt, cfgtypes.BasisPoints(*sc.Percent), tp)
	mi.headers = map[string]bool{"content-type": true, "content-encoding": true}
	for _, h := range sc.Compare.Headers {
		if h == "*" {
			mi.allHeaders = true
		}
		mi.headers[strings.ToLower(h)] = true
	}
	for _, meth := range sc.Methods {
		mi.methods = append(mi.methods, []byte(meth))
	}
	for _, tc := range sc.Targets {
		mi.targets = append(mi.targets, newShadowTarget(route, tc, snap.upstreams[tc.Name], m, false))
	}
	mi.nShadows = len(mi.targets)
	if sec := sc.Compare.Secondary; sec != "" {
		mi.targets = append(mi.targets, newShadowTarget(route, config.ShadowTarget{Name: sec}, snap.upstreams[sec], m, true))
	}
	mi.jobs.New = func() any { return &mirrorJob{m: mi, results: make([]jobResult, len(mi.targets))} }
	mi.batches.New = func() any { return &shadowBatch{} }
	for i := 0; i < sc.Workers; i++ {
		mi.wg.Add(1)
		go mi.worker()
	}
	for i := 0; i < compareWorkers; i++ {
		mi.wg.Add(1)
		go mi.runComparisons()
	}
	return mi, nil
}

func newShadowTarget(route string, tc config.ShadowTarget, up *Upstream, m *metrics.Metrics, secondary bool) *shadowTarget {
	// The role is a label of its own: label values carry no spaces, and a
	// query can select shadows or secondaries without parsing names.
	role := "shadow"
	if secondary {
		role = "secondary"
	}
	t := &shadowTarget{
		name:      tc.Name,
		up:        up,
		host:      tc.Host,
		duration:  m.ShadowDuration.WithLabelValues(route, tc.Name, role),
		inflight:  m.ShadowInflight.WithLabelValues(route, tc.Name, role),
		truncated: m.ShadowBodyTruncated.WithLabelValues(route, tc.Name, role),
		secondary: secondary,
	}
	for name, v := range tc.Headers.Set {
		t.set = append(t.set, [2]string{name, v})
	}
	t.remove = append(t.remove, tc.Headers.Remove...)
	for o := ShadowOutcome(0); o < numOutcomes; o++ {
		t.outcomes[o] = m.ShadowRequests.WithLabelValues(route, tc.Name, role, o.String())
	}
	// Not batched until an answer shows the target is fast: a target that
	// hangs from the start never gets a batch.
	t.latency.Store(int64(batchLatency))
	return t
}

// offer copies the request into a mirror job and enqueues it without
// blocking. It returns nil when the request is not mirrored. The request
// must already have had its hop-by-hop fields removed.
func (mi *mirror) offer(ctx *fasthttp.RequestCtx, primaryUp *Upstream, start time.Time, trace RequestTrace) *mirrorJob {
	if !mi.methodMirrored(ctx.Method()) {
		mi.skipped[SkipMethod].Inc()
		return nil
	}
	if !mi.sampler.Sample(&ctx.Request, ctx.RemoteIP()) {
		return nil
	}
	if ctx.Request.IsBodyStream() {
		// Past limits.buffer_body: the body passes through once and is not
		// kept, so there is nothing to send a shadow.
		mi.skipped[SkipStreamed].Inc()
		return nil
	}
	if len(ctx.Request.Body()) > mi.maxBody {
		mi.skipped[SkipBodyTooLarge].Inc()
		return nil
	}
	if mi.closed.Load() {
		return nil
	}
	if len(mi.queue) >= cap(mi.queue) {
		// Full already: drop before paying for the copy. (A racing worker
		// may free a slot; dropping one more job then is harmless.)
		mi.countDropped()
		return nil
	}
	j := mi.jobs.Get().(*mirrorJob)
	ctx.Request.CopyTo(&j.req)
	j.peer = append(j.peer[:0], ctx.RemoteIP()...)
	j.primaryUp = primaryUp
	j.start = start
	j.trace = trace
	j.refs.Store(2)
	select {
	case mi.queue <- j:
		mi.queueDepth.Set(float64(len(mi.queue)))
		return j
	default:
		mi.countDropped()
		mi.recycle(j)
		return nil
	}
}

func (mi *mirror) countDropped() {
	for _, t := range mi.targets {
		t.outcomes[ShadowDropped].Inc()
	}
}

func (mi *mirror) methodMirrored(method []byte) bool {
	for _, m := range mi.methods {
		if bytes.Equal(m, method) {
			return true
		}
	}
	return false
}

// deliverPrimary copies the primary's answer into the job (never keeping a
// reference to fasthttp's buffers, which the server reuses) and releases
// the request goroutine's hold on it.
func (j *mirrorJob) deliverPrimary(resp *fasthttp.Response, err error, latency time.Duration) {
	j.primaryLatency = latency
	j.primaryErr = err
	if err == nil {
		j.primaryStatus = resp.StatusCode()
		j.primaryHead = append(j.primaryHead[:0], resp.Header.Header()...)
		if resp.IsBodyStream() {
			// Streamed to the client (longer than limits.buffer_body): the
			// body is not kept, so it is not compared; status and headers
			// are.
			j.primaryBody, j.primaryTrunc = j.primaryBody[:0], true
		} else {
			j.primaryBody, j.primaryTrunc = appendCapped(j.primaryBody[:0], resp.Body(), j.m.maxBody)
		}
	}
	j.release()
}

func appendCapped(dst, src []byte, limit int) ([]byte, bool) {
	if len(src) > limit {
		return append(dst, src[:limit]...), true
	}
	return append(dst, src...), false
}

// release drops one hold; the last holder hands the job to comparison.
func (j *mirrorJob) release() {
	if j.refs.Add(-1) != 0 {
		return
	}
	mi := j.m
	if mi.comparer == nil {
		mi.recycle(j)
		return
	}
	select {
	case mi.compareQ <- j:
	default:
		mi.skipped[SkipCompareQueueFull].Inc()
		mi.recycle(j)
	}
}

func (mi *mirror) recycle(j *mirrorJob) {
	j.req.Reset()
	j.primaryErr = nil
	j.primaryUp = nil
	j.trace = nil
	for i := range j.results {
		j.results[i].err = nil
	}
	j.ex = Exchange{Shadows: j.ex.Shadows[:0]}
	mi.jobs.Put(j)
}

func (mi *mirror) worker() {
	defer mi.wg.Done()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for {
		if mi.batching() {
			// From a pool rather than one per worker: the few batches in
			// use at a time keep their grown buffers warm.
			b := mi.batches.Get().(*shadowBatch)
			ok := mi.receiveBatch(b)
			if ok {
				mi.sendBatch(b, req, resp)
			}
			mi.batches.Put(b)
			if !ok {
				return
			}
			continue
		}
		select {
		case <-mi.stop:
			return
		case j := <-mi.queue:
			mi.queueDepth.Set(float64(len(mi.queue)))
			for i, t := range mi.targets {
				mi.send(j, t, &j.results[i], req, resp)
			}
			j.release()
		}
	}
}

// send performs one shadow request and captures its answer into r.
func (mi *mirror) send(j *mirrorJob, t *shadowTarget, r *jobResult, req *fasthttp.Request, resp *fasthttp.Response) {
	r.err, r.status, r.trunc = nil, 0, false
	r.head, r.body = r.head[:0], r.body[:0]
	if t.up == j.primaryUp && !t.secondary {
		r.outcome = ShadowSkipped
		t.outcomes[ShadowSkipped].Inc()
		return
	}
	if t.secondary && mi.stable != nil && j.primaryUp != mi.stable {
		// The canary served this request: comparing the secondary (the
		// stable version) with the canary's answer would learn the real
		// v1→v2 differences as noise.
		r.outcome = ShadowSkipped
		t.outcomes[ShadowSkipped].Inc()
		mi.skipped[SkipSecondaryCanaryServed].Inc()
		return
	}
	t.prepare(j, req)
	resp.Reset()
	var span ShadowTrace
	if j.trace != nil {
		span = j.trace.StartShadow(mi.route, t.name, req)
	}
	t.inflight.Inc()
	t0 := time.Now()
	_, err := t.up.do(req, resp, true, t.host, mi.timeout)
	r.latency = time.Since(t0)
	t.inflight.Dec()
	mi.record(t, r, resp, err)
	dropLargeBody(resp)
	if span != nil {
		st := r.status
		if r.outcome != ShadowOK {
			st = 0
		}
		span.End(st, r.outcome.String(), r.err)
	}
}

// prepare copies j's request into req with t's changes.
func (t *shadowTarget) prepare(j *mirrorJob, req *fasthttp.Request) {
	j.req.CopyTo(req)
	req.Header.SetProtocol("HTTP/1.1")
	req.Header.Set(config.DefaultShadowMarker, "1")
	for _, name := range t.remove {
		req.Header.Del(name)
	}
	for _, kv := range t.set {
		req.Header.Set(kv[0], kv[1])
	}
}

// record counts the outcome of one shadow request (r.latency set) and
// captures its answer. resp may be nil when err says why there is none.
func (mi *mirror) record(t *shadowTarget, r *jobResult, resp *fasthttp.Response, err error) {
	t.observeLatency(r.latency)
	if resp != nil && err != nil && errors.Is(err, fasthttp.ErrBodyTooLarge) && t.up.shadowBodyCapped() {
		// The shadow pool stops reading at shadow.max_body (and closes the
		// connection): an endless or huge shadow answer costs max_body, not
		// the upstream's max_response_body. The status and headers were
		// read and still compare; the body is counted and not compared.
		t.truncated.Inc()
		r.status = resp.StatusCode()
		r.head = append(r.head, resp.Header.Header()...)
		r.trunc = true
		err = nil
	} else if err == nil {
		r.status = resp.StatusCode()
		r.head = append(r.head, resp.Header.Header()...)
		r.body, r.trunc = appendCapped(r.body, resp.Body(), mi.maxBody)
		if r.trunc {
			t.truncated.Inc()
		}
	}
	if err != nil {
		reason, _ := classify(err)
		r.outcome = ShadowError
		if reason == ReasonTimeout {
			r.outcome = ShadowTimeout
		}
		r.err = err
		t.outcomes[r.outcome].Inc()
		mi.log.Debug("shadow request failed", zap.String("route", mi.route), zap.String("target", t.name),
			zap.String("outcome", r.outcome.String()), zap.Error(err))
		return
	}
	r.outcome = ShadowOK
	t.outcomes[ShadowOK].Inc()
}

// runComparisons turns finished jobs into Exchanges and hands them to the
// Comparer, off the request path.
func (mi *mirror) runComparisons() {
	defer mi.wg.Done()
	for {
		select {
		case <-mi.stop:
			return
		case j := <-mi.compareQ:
			mi.compare(j)
			mi.recycle(j)
		}
	}
}

func (mi *mirror) compare(j *mirrorJob) {
	ex := &j.ex
	ex.Route = mi.route
	ex.Method = methodString(j.req.Header.Method())
	ex.URI = string(j.req.Header.RequestURI())
	ex.RequestID = string(j.req.Header.Peek(mi.reqIDHeader))
	ex.Time = j.start
	ex.PrimaryLatency = j.primaryLatency
	mi.fillCapture(&ex.Primary, j.primaryStatus, j.primaryHead, j.primaryBody, j.primaryTrunc, j.primaryErr)
	ex.Shadows = ex.Shadows[:0]
	ex.Secondary = nil
	for i, t := range mi.targets {
		r := &j.results[i]
		sr := ShadowResult{Target: t.name, Outcome: r.outcome, Latency: r.latency}
		err := r.err
		if r.outcome == ShadowSkipped {
			err = errSkipped
		}
		mi.fillCapture(&sr.Capture, r.status, r.head, r.body, r.trunc, err)
		if t.secondary {
			sec := sr
			ex.Secondary = &sec
			continue
		}
		ex.Shadows = append(ex.Shadows, sr)
	}
	mi.comparer.Compare(ex)
}

var errSkipped = errors.New("not sent: the primary was served by this upstream, or (secondary) by the canary")

// fillCapture parses a raw response head into c's headers and decodes a
// compressed body, so that two upstreams compressing differently (or the
// same content compressed twice) still compare by content. Only headers the
// comparison reads become strings.
func (mi *mirror) fillCapture(c *diff.Capture, status int, head, body []byte, trunc bool, err error) {
	*c = diff.Capture{Status: status, Body: body, Truncated: trunc, Err: err}
	if err != nil {
		return
	}
	encoding := ""
	var lower [64]byte
	if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
		head = head[i+2:] // skip the status line
	}
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i], head[i+2:]
		} else {
			head = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		if !mi.allHeaders && (len(name) > len(lower) || !mi.headers[string(appendLower(lower[:0], name))]) {
			continue
		}
		value := string(bytes.TrimSpace(line[colon+1:]))
		c.Headers = append(c.Headers, diff.Header{Name: string(name), Value: value})
		switch {
		case bytes.EqualFold(name, []byte("Content-Type")):
			c.ContentType = value
		case bytes.EqualFold(name, []byte("Content-Encoding")):
			encoding = strings.ToLower(value)
		}
	}
	if encoding == "" || encoding == "identity" || trunc {
		return
	}
	decoded, cut, derr := decodeBody(encoding, body, mi.maxBody)
	if derr != nil {
		c.Err = fmt.Errorf("content-encoding %q: %w", encoding, derr)
		return
	}
	c.Body, c.Truncated = decoded, cut
}

func appendLower(dst, b []byte) []byte {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// methodString returns a constant for common methods (no allocation).
func methodString(m []byte) string {
	for _, known := range [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		if string(m) == known {
			return known
		}
	}
	return string(m)
}

// decodeBody inflates gzip, deflate, br or zstd bodies up to limit bytes,
// so a decompression bomb costs at most limit.
func decodeBody(encoding string, body []byte, limit int) ([]byte, bool, error) {
	var r io.Reader
	switch encoding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, false, err
		}
		r = zr
	case "deflate":
		r = flate.NewReader(bytes.NewReader(body))
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		// Streaming with one goroutine; the window (the decoder's memory)
		// is capped so a frame cannot ask for more than max_body or 8MiB.
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(uint64(max(limit, 8<<20))))
		if err != nil {
			return nil, false, err
		}
		defer zr.Close()
		r = zr
	default:
		return nil, false, errors.New("not decoded for comparison (only gzip, deflate, br and zstd are)")
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, false, err
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// close stops accepting jobs and ends the workers; jobs still queued are
// abandoned (they are shadow work: dropping it is always allowed).
func (mi *mirror) close() {
	mi.stopOnce.Do(func() {
		mi.closed.Store(true)
		close(mi.stop)
	})
}

// wait blocks until every worker goroutine has ended.
func (mi *mirror) wait() { mi.wg.Wait() }
