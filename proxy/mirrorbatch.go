package proxy

import (
	"errors"
	"runtime"
	"time"

	"github.com/valyala/fasthttp"
)

// Batched shadow sends.
//
// A mirrored request used to cost more proxy CPU than forwarding the primary
// request: one write and at least one read syscall on the shadow connection,
// deadline updates and a worker wake-up per request. When several mirrored
// requests are already queued and every target of the route has been fast,
// a worker takes up to maxShadowBatch of them, writes them back to back on
// one pooled shadow connection with a single write, and reads the answers in
// order (HTTP/1.1 pipelining), so the syscalls, deadline updates and wake-ups
// are paid once per batch.
//
// The batching adapts to the target: a target whose moving-average shadow
// latency reaches batchLatency is sent one request per connection at a time,
// exactly as before. A slow shadow therefore keeps every worker's connection
// busy with one request each (pipelining it would let one slow answer hold up
// the whole batch: measured with 4 pipelined connections, delivery to a 200 ms
// shadow fell to 1%). Head-of-line blocking is bounded twice: a batch is only
// formed while the target answers within batchLatency on average, and the
// whole batch runs under the shadow timeout. It only ever delays shadow
// requests: the primary path never waits for a worker.
//
// Only GET, HEAD and OPTIONS requests without a body are batched (the
// methods mirrored by default): a request left unanswered when a pipelined
// connection breaks is then safe to send again on a connection of its own.

// maxShadowBatch bounds how many queued requests one worker sends in one
// batch.
const maxShadowBatch = 16

// batchLatency: a target is batched only while its moving-average latency
// stays below this. Batching a target that answers one request at a time
// (as HTTP/1.1 servers do on one connection) never lowers its throughput,
// as long as every worker has a connection of its own, but it delays the
// requests behind the first of a batch; a few milliseconds times
// maxShadowBatch stays far inside any shadow timeout.
const batchLatency = 5 * time.Millisecond

// shadowBatch is a worker's reusable state for batched sends.
type shadowBatch struct {
	jobs  []*mirrorJob
	reqs  [maxShadowBatch]fasthttp.Request
	resps [maxShadowBatch]fasthttp.Response
	lat   [maxShadowBatch]time.Duration
	idx   [maxShadowBatch]int // b.jobs index of each request written, in order
}

// observeLatency records a shadow latency in the histogram and the moving
// average (weight 1/8). Two workers racing may lose one update of the
// average, which only delays the switch by a request.
func (t *shadowTarget) observeLatency(d time.Duration) {
	t.duration.Observe(d.Seconds())
	old := t.latency.Load()
	t.latency.Store(old + (int64(d)-old)/8)
}

// batching reports whether every target of the route is fast enough for
// batched sends.
func (mi *mirror) batching() bool {
	for _, t := range mi.targets {
		if t.latency.Load() >= int64(batchLatency) {
			return false
		}
	}
	return true
}

// receiveBatch collects up to maxShadowBatch queued jobs into b.jobs. One
// worker at a time collects (recvMu): with every worker waiting on the
// queue, each job would go straight to a worker of its own and none would
// ever wait to be batched. After the first job the collector yields once, so
// request goroutines already runnable can enqueue theirs. It returns false
// when the mirror stops.
func (mi *mirror) receiveBatch(b *shadowBatch) bool {
	mi.recvMu.Lock()
	defer mi.recvMu.Unlock()
	b.jobs = b.jobs[:0]
	select {
	case <-mi.stop:
		return false
	case j := <-mi.queue:
		b.jobs = append(b.jobs, j)
	}
	if len(mi.queue) == 0 {
		runtime.Gosched()
	}
fill:
	for len(b.jobs) < maxShadowBatch {
		select {
		case j := <-mi.queue:
			b.jobs = append(b.jobs, j)
		default:
			break fill
		}
	}
	mi.queueDepth.Set(float64(len(mi.queue)))
	return true
}

// sendBatch sends the jobs of b to every target, then releases them.
func (mi *mirror) sendBatch(b *shadowBatch, req *fasthttp.Request, resp *fasthttp.Response) {
	for i, t := range mi.targets {
		mi.sendBatchTo(b, i, t, req, resp)
	}
	for i, j := range b.jobs {
		j.release()
		b.jobs[i] = nil
	}
}

// sendBatchTo sends the batch's jobs to target ti: batchable ones pipelined
// on one connection, the others one by one.
func (mi *mirror) sendBatchTo(b *shadowBatch, ti int, t *shadowTarget, req *fasthttp.Request, resp *fasthttp.Response) {
	n := 0
	for k, j := range b.jobs {
		// Requests that are skipped, traced (their span wraps one send) or
		// not safe to send again go through send, one at a time.
		skip := t.up == j.primaryUp && !t.secondary || t.secondary && mi.stable != nil && j.primaryUp != mi.stable
		if skip || j.trace != nil || !pipelinable(&j.req) {
			mi.send(j, t, &j.results[ti], req, resp)
			continue
		}
		b.idx[n] = k
		n++
	}
	if n < 2 {
		if n == 1 {
			j := b.jobs[b.idx[0]]
			mi.send(j, t, &j.results[ti], req, resp)
		}
		return
	}
	up := t.up
	ep := up.pick(nil)
	for i := 0; i < n; i++ {
		q := &b.reqs[i]
		t.prepare(b.jobs[b.idx[i]], q)
		ep.prepare(up, ep.shadow, q, t.host)
		// What HostClient.Do would do: send the URI byte for byte.
		q.URI().DisablePathNormalizing = true
	}
	t.inflight.Add(float64(n))
	answered, err := mi.pipeline(ep.shadow, b, n)
	t.inflight.Sub(float64(n))
	up.observe(ep, err)
	for i := 0; i < n; i++ {
		j := b.jobs[b.idx[i]]
		r := &j.results[ti]
		r.err, r.status, r.trunc = nil, 0, false
		r.head, r.body = r.head[:0], r.body[:0]
		switch {
		case i < answered:
			r.latency = b.lat[i]
			mi.record(t, r, &b.resps[i], nil)
		case i == answered && errors.Is(err, fasthttp.ErrBodyTooLarge):
			// A body over the shadow limit is this request's own answer:
			// its status and headers were read and still compare.
			r.latency = b.lat[i]
			mi.record(t, r, &b.resps[i], err)
		case isTimeout(err) || errors.Is(err, fasthttp.ErrTimeout):
			// Time is up for the rest of the batch.
			r.latency = b.lat[i]
			mi.record(t, r, nil, err)
		default:
			// Unanswered on the shared connection (closed by the upstream,
			// stale, refused): send it on a connection of its own, with the
			// usual retry of a stale one.
			mi.send(j, t, r, req, resp)
		}
		b.reqs[i].Reset()
		dropLargeBody(&b.resps[i])
		b.resps[i].Reset()
	}
}

// pipeline writes b.reqs[:n] with one flush on one pooled connection of hc
// and reads the answers in order, all under the shadow timeout. It returns
// how many were answered and the error that stopped it, if any; b.lat[i]
// is each answered request's latency since the answer before it, and for
// unanswered ones the time until the error.
func (mi *mirror) pipeline(hc *fasthttp.HostClient, b *shadowBatch, n int) (answered int, err error) {
	start := time.Now()
	defer func() {
		for i := answered; i < n; i++ {
			b.lat[i] = time.Since(start)
		}
		if isTimeout(err) {
			err = fasthttp.ErrTimeout
		}
	}()
	cc, err := hc.AcquireConn(mi.timeout, false)
	if err != nil {
		return 0, err
	}
	conn := cc.Conn()
	if err := conn.SetDeadline(start.Add(mi.timeout)); err != nil {
		hc.CloseConn(cc)
		return 0, err
	}
	bw := hc.AcquireWriter(conn)
	for i := 0; i < n && err == nil; i++ {
		err = b.reqs[i].Write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return 0, err
	}
	br := hc.AcquireReader(conn)
	closeConn := false
	prev := start
	for answered < n {
		r := &b.resps[answered]
		r.Reset()
		r.SkipBody = b.reqs[answered].Header.IsHead()
		if err = r.ReadLimitBody(br, hc.MaxResponseBodySize); err != nil {
			break
		}
		// Each answer's latency counts from the previous answer (or the
		// write): what the target spent on it, without the head-of-line
		// wait behind the requests before it in the batch.
		now := time.Now()
		b.lat[answered] = now.Sub(prev)
		prev = now
		answered++
		if r.ConnectionClose() {
			closeConn = true
			break
		}
	}
	hc.ReleaseReader(br)
	if err != nil || closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	if err == nil && answered < n {
		err = fasthttp.ErrConnectionClosed
	}
	return answered, err
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
