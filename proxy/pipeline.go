package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// pipeline carries one endpoint's bodiless GET, HEAD and OPTIONS requests
// over a few pipelined HTTP/1.1 connections (upstream pipeline_conns).
//
// Why not fasthttp.PipelineClient: its writer goroutine is woken by the
// first request and, being scheduled next, flushes that one request alone,
// so on a busy proxy nearly every request still cost the upstream one
// write and the proxy two goroutine hand-offs (measured: 1.1 requests per
// write). Here the request goroutine that finds no flush pending becomes
// the flusher and yields once before writing, so every request that became
// ready in the same scheduling round leaves in the same write, and one
// reader goroutine per connection parses the answers of a whole read.
//
// Head-of-line blocking is bounded, which is what makes pipelining safe to
// recommend:
//   - a connection takes requests behind others only while queueing is on:
//     the upstream is fast (the moving average of pipelined answers under a
//     quarter of pipeline_max_wait) and no connection got stuck in the last
//     second; otherwise a request needs an idle pipelined connection, or
//     goes to the pool;
//   - once the oldest request on a connection has waited pipeline_max_wait
//     with others queued behind it, the connection is stuck: it takes
//     nothing new until it has caught up, queueing turns off for a second
//     on every connection, and every request on it whose answer has not
//     started is sent again on the pool (a rescue). The oldest one too: an
//     upstream that holds a batch's answers until the whole batch is done
//     (fasthttp servers do) delays it behind the slow one. They are
//     idempotent and bodiless; the abandoned copies' answers are read and
//     dropped. Rescues are limited to a budget of 10% of pipelined
//     requests (with a burst of pipeline_conns x pipeline_depth), so an
//     upstream slow across the board is not sent every request twice. An
//     answer that has started arriving is not rescued: the reader is
//     filling its response;
//   - timeouts hold as on the pool: past a request's timeout its connection
//     is closed and the request fails with a timeout; the others on it are
//     sent again on the pool.
type pipeline struct {
	addr     string
	dial     fasthttp.DialFunc
	tls      *tls.Config // nil for plain http
	maxConns int
	depth    int
	maxWait  int64 // nanoseconds
	idle     int64 // nanoseconds: idle connections are closed after this
	maxBody  int
	counts   pipelineCounters

	// ewma is the moving average of the latency of pipelined answers, in
	// nanoseconds; written by the readers, read when choosing a connection.
	ewma atomic.Int64
	// budget is the rescue budget in thousandths of a rescue, at most bank.
	budget atomic.Int64
	bank   int64
	// queueOff keeps requests from queueing behind others for backoff
	// (queueBackoff) after a connection got stuck; offUntil (unix
	// nanoseconds) belongs to the watchdog.
	queueOff atomic.Bool
	offUntil int64
	backoff  int64

	// conns is read without a lock on every request and replaced, never
	// modified, under mu.
	conns  atomic.Pointer[[]*pipeConn]
	closed atomic.Bool

	mu      sync.Mutex
	dialing int
	// noDialUntil (unix nanoseconds) holds dialing off after a failure.
	noDialUntil int64
	watching    bool
	works       sync.Pool
}

// pipelineCounters are the pipeline's series of
// upstream_pipeline_requests_total.
type pipelineCounters struct {
	answered, bypassed, rescued, retried, rescueDenied prometheus.Counter
}

// Rescue budget, in thousandths: each pipelined answer earns a tenth of a
// rescue, a rescue spends one. The bank holds enough to empty every
// connection once (pipeline_conns x pipeline_depth, at least 10): a stuck
// connection turns queueing off for a second, so that is what one stall
// can strand, and a budget smaller than that left requests waiting for the
// slow answer (measured: fast p99.9 49 ms with a bank of 10).
const (
	rescueEarn    = 100
	rescueCost    = 1000
	minRescueBank = 10 * rescueCost
)

// queueBackoff is how long queueing stays off after a connection got
// stuck: an upstream with a heavy tail (1% of answers 100 times slower than
// the rest, measured with bench/holcmp) strands every request queued behind
// each slow answer, and is served better one request per connection.
const queueBackoff = time.Second

// errPipeRescued and errPipeBroken tell the waiting request that it was
// not answered on its pipelined connection and goes to the pool;
// errPipeUnsolicited ends a connection that answered more than was asked.
var (
	errPipeRescued     = errors.New("pipelined request waited past pipeline_max_wait")
	errPipeBroken      = errors.New("pipelined connection closed before the answer")
	errPipeUnsolicited = errors.New("upstream answered a request that was not sent")
)

// dialBackoff keeps a pipeline from dialing again for a while after a dial
// failed: the request falls back to the pool, which dials (and reports the
// failure) itself, so a blackholed upstream costs one connect timeout, not
// two, per request.
const dialBackoff = time.Second

// Work states: a queued work is claimed by the reader when its answer
// starts, or abandoned by a rescue or a failed connection, never both.
const (
	workQueued int32 = iota
	workClaimed
	workAbandoned
)

// pipeWork is one request waiting for its answer on a pipelined connection.
type pipeWork struct {
	resp     *fasthttp.Response
	head     bool  // a HEAD request: the answer has no body
	timeout  int64 // nanoseconds
	sent     int64 // unix nanoseconds of the write; 0 until then
	deadline int64
	state    atomic.Int32
	err      error
	done     chan struct{}
}

func newPipeline(addr string, dial fasthttp.DialFunc, tlsCfg *tls.Config, conns, depth int, maxWait, idle time.Duration, maxBody int, c pipelineCounters) *pipeline {
	p := &pipeline{addr: addr, dial: dial, tls: tlsCfg, maxConns: conns, depth: depth,
		maxWait: int64(maxWait), idle: int64(idle), maxBody: maxBody, counts: c, backoff: int64(queueBackoff)}
	p.bank = max(minRescueBank, int64(conns*depth)*rescueCost)
	p.budget.Store(p.bank)
	p.works.New = func() any { return &pipeWork{done: make(chan struct{}, 1)} }
	return p
}

// do sends req on a pipelined connection and reads the answer into resp.
// fallback reports that the request was not answered there and should be
// sent on the pool within left (resp is then untouched).
func (p *pipeline) do(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) (err error, fallback bool, left time.Duration) {
	pc := p.acquire()
	if pc == nil {
		p.counts.bypassed.Inc()
		return nil, true, timeout
	}
	w := p.works.Get().(*pipeWork)
	w.resp, w.head, w.timeout, w.sent, w.err = resp, req.Header.IsHead(), int64(timeout), 0, nil
	w.state.Store(workQueued)
	if !pc.enqueue(w, req) {
		p.works.Put(w)
		p.counts.bypassed.Inc()
		return nil, true, timeout
	}
	<-w.done
	err = w.err
	if err == errPipeRescued || err == errPipeBroken {
		left = timeout
		if w.sent != 0 {
			left -= time.Duration(time.Now().UnixNano() - w.sent)
		}
		if err == errPipeRescued {
			// Still queued on its connection, whose reader drops its
			// answer: not recycled.
			p.counts.rescued.Inc()
			return nil, true, max(left, time.Millisecond)
		}
		p.counts.retried.Inc()
		w.resp = nil
		p.works.Put(w)
		return nil, true, max(left, time.Millisecond)
	}
	if err == nil {
		p.counts.answered.Inc()
	}
	w.resp = nil
	p.works.Put(w)
	return err, false, 0
}

// acquire chooses the connection with the fewest requests in flight that
// may take one more, dialing a new one while there are fewer than
// pipeline_conns and none is idle; nil sends the request to the pool.
// Choosing takes no lock; only growing the set does.
func (p *pipeline) acquire() *pipeConn {
	if p.closed.Load() {
		return nil
	}
	queue := p.ewma.Load() < p.maxWait/4 && !p.queueOff.Load()
	var best *pipeConn
	bestN := int32(p.depth)
	conns := p.list()
	for _, pc := range conns {
		n := pc.inflight.Load()
		if pc.broken.Load() || pc.stuck.Load() || n > 0 && !queue {
			continue
		}
		if n < bestN {
			best, bestN = pc, n
		}
	}
	if best != nil && bestN == 0 || len(conns) >= p.maxConns {
		return best
	}
	if pc := p.grow(); pc != nil {
		return pc
	}
	return best
}

// list is the current set of connections.
func (p *pipeline) list() []*pipeConn {
	if l := p.conns.Load(); l != nil {
		return *l
	}
	return nil
}

// setList replaces the set of connections; p.mu is held.
func (p *pipeline) setList(conns []*pipeConn) { p.conns.Store(&conns) }

// grow dials one more connection, unless pipeline_conns are open or being
// dialed, or a dial failed less than dialBackoff ago; nil if it did not.
func (p *pipeline) grow() *pipeConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() || len(p.list())+p.dialing >= p.maxConns ||
		p.noDialUntil != 0 && time.Now().UnixNano() < p.noDialUntil {
		return nil
	}
	p.dialing++
	p.mu.Unlock()
	pc, err := p.dialConn()
	p.mu.Lock()
	p.dialing--
	if err != nil {
		// The pool dials again and reports the error as the request's own.
		p.noDialUntil = time.Now().Add(dialBackoff).UnixNano()
		return nil
	}
	p.noDialUntil = 0
	if p.closed.Load() {
		pc.conn.Close()
		return nil
	}
	p.setList(append(slices.Clone(p.list()), pc))
	if !p.watching {
		p.watching = true
		go p.watch()
	}
	go pc.read()
	return pc
}

func (p *pipeline) dialConn() (*pipeConn, error) {
	c, err := p.dial(p.addr)
	if err != nil {
		return nil, err
	}
	c = fastIO(c)
	if p.tls != nil {
		c = tls.Client(c, p.tls)
	}
	pc := &pipeConn{p: p, conn: c, ring: make([]*pipeWork, p.depth), spare: make([]byte, 0, 4<<10)}
	pc.bw = bufio.NewWriterSize(&pc.sink, 4<<10)
	pc.lastActive.Store(time.Now().UnixNano())
	return pc, nil
}

// remove forgets a closed connection.
func (p *pipeline) remove(pc *pipeConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.list(), pc); i >= 0 {
		p.setList(slices.Delete(slices.Clone(p.list()), i, i+1))
	}
}

// close stops new requests; idle connections close now, busy ones once
// their requests are answered.
func (p *pipeline) close() {
	// Under mu: a connection being dialed is either in the list read here
	// or sees closed when it would be added.
	p.mu.Lock()
	p.closed.Store(true)
	conns := p.list()
	p.mu.Unlock()
	for _, pc := range conns {
		pc.closeWhenIdle()
	}
}

// earn credits the rescue budget for one pipelined answer.
func (p *pipeline) earn() {
	if p.budget.Load() < p.bank {
		p.budget.Add(rescueEarn)
	}
}

// spend takes one rescue from the budget.
func (p *pipeline) spend() bool {
	for {
		b := p.budget.Load()
		if b < rescueCost {
			return false
		}
		if p.budget.CompareAndSwap(b, b-rescueCost) {
			return true
		}
	}
}

// watch enforces timeouts, pipeline_max_wait and the idle limit, a quarter
// of pipeline_max_wait apart, while the pipeline has connections.
func (p *pipeline) watch() {
	t := time.NewTicker(time.Duration(max(p.maxWait/4, int64(100*time.Microsecond))))
	defer t.Stop()
	for range t.C {
		p.mu.Lock()
		conns := p.list()
		if len(conns) == 0 {
			p.watching = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		now := time.Now().UnixNano()
		if p.queueOff.Load() && now >= p.offUntil {
			p.queueOff.Store(false)
		}
		for _, pc := range conns {
			if pc.check(now) {
				p.offUntil = now + p.backoff
				p.queueOff.Store(true)
			}
		}
	}
}

// pipeConn is one pipelined connection: requests are written in batches
// by the goroutines sending them, answers read by its reader goroutine.
type pipeConn struct {
	p    *pipeline
	conn net.Conn
	// inflight counts queued works; broken and stuck keep new ones away.
	inflight   atomic.Int32
	broken     atomic.Bool
	stuck      atomic.Bool
	lastActive atomic.Int64

	// writeMu keeps batches in the order their works were queued.
	writeMu sync.Mutex

	mu sync.Mutex
	// ring holds the works in the order their requests were written.
	ring        []*pipeWork
	first, n    int
	unsent      int // works at the tail not yet written
	flushing    bool
	sink        byteSink // the batch being built
	spare       []byte
	bw          *bufio.Writer
	timedOut    bool
	idleClose   bool
	denyCounted bool
}

// byteSink collects serialized requests for the next write.
type byteSink struct{ b []byte }

func (s *byteSink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// enqueue serializes req behind the connection's batch and queues w; the
// first request of a batch writes it. false: the connection cannot take it.
func (pc *pipeConn) enqueue(w *pipeWork, req *fasthttp.Request) bool {
	pc.mu.Lock()
	if pc.broken.Load() || pc.n == len(pc.ring) {
		pc.mu.Unlock()
		return false
	}
	mark := len(pc.sink.b)
	req.URI().DisablePathNormalizing = true
	if err := req.Write(pc.bw); err != nil || pc.bw.Flush() != nil {
		pc.bw.Reset(&pc.sink)
		pc.sink.b = pc.sink.b[:mark]
		pc.mu.Unlock()
		return false
	}
	pc.ring[(pc.first+pc.n)%len(pc.ring)] = w
	pc.n++
	pc.unsent++
	pc.inflight.Add(1)
	lead := !pc.flushing
	pc.flushing = true
	pc.mu.Unlock()
	if lead {
		pc.flush()
	}
	return true
}

// flush writes the batch. It yields first, so that requests that are
// ready to go on the same connection join the batch.
func (pc *pipeConn) flush() {
	runtime.Gosched()
	pc.writeMu.Lock()
	defer pc.writeMu.Unlock()
	pc.mu.Lock()
	if pc.broken.Load() {
		// fail() has ended the batch's requests.
		pc.flushing = false
		pc.mu.Unlock()
		return
	}
	buf := pc.sink.b
	pc.sink.b = pc.spare[:0]
	pc.spare = nil
	now := time.Now().UnixNano()
	for i := pc.n - pc.unsent; i < pc.n; i++ {
		// A work rescued before its batch left has a caller that may
		// read sent already; its request goes out regardless.
		if w := pc.ring[(pc.first+i)%len(pc.ring)]; w.state.Load() == workQueued {
			w.sent, w.deadline = now, now+w.timeout
		}
	}
	pc.unsent = 0
	pc.flushing = false
	pc.mu.Unlock()
	// No write deadline: a write stuck on an upstream that stopped reading
	// ends when the watchdog closes the connection at the timeout.
	_, err := pc.conn.Write(buf)
	if cap(buf) <= keepBodyBuffer {
		pc.mu.Lock()
		pc.spare = buf[:0]
		pc.mu.Unlock()
	}
	if err != nil {
		pc.broken.Store(true)
		pc.conn.Close()
	}
}

// read parses answers in order and hands each to its request, until the
// connection fails or closes.
func (pc *pipeConn) read() {
	p := pc.p
	br := bufio.NewReaderSize(pc.conn, 16<<10)
	var discard fasthttp.Response
	var now int64
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				pc.fail(err, nil)
				return
			}
			now = time.Now().UnixNano()
		}
		pc.mu.Lock()
		var w *pipeWork
		if pc.n > 0 {
			w = pc.ring[pc.first]
		}
		pc.mu.Unlock()
		if w == nil {
			pc.fail(errPipeUnsolicited, nil)
			return
		}
		target := &discard
		claimed := w.state.CompareAndSwap(workQueued, workClaimed)
		if claimed {
			target = w.resp
		}
		target.Reset()
		target.SkipBody = w.head
		err := target.ReadLimitBody(br, p.maxBody)
		if err == nil && br.Buffered() == 0 {
			now = time.Now().UnixNano()
		}
		keep := err == nil && !target.ConnectionClose() && target.StatusCode() != fasthttp.StatusSwitchingProtocols
		pc.mu.Lock()
		sent := w.sent
		pc.ring[pc.first] = nil
		pc.first = (pc.first + 1) % len(pc.ring)
		pc.n--
		empty := pc.n == 0
		if empty {
			pc.stuck.Store(false)
			pc.denyCounted = false
		}
		closeNow := empty && pc.idleClose
		pc.mu.Unlock()
		pc.inflight.Add(-1)
		pc.lastActive.Store(now)
		if err != nil {
			if claimed {
				pc.fail(err, w)
			} else {
				pc.fail(err, nil)
			}
			return
		}
		if sent != 0 {
			e := p.ewma.Load()
			p.ewma.Store(e + (now-sent-e)/8)
		}
		p.earn()
		if claimed {
			w.done <- struct{}{}
		} else {
			discard.Reset()
		}
		if !keep || closeNow {
			pc.fail(errPipeBroken, nil)
			return
		}
	}
}

// fail closes the connection and ends every request still queued on it:
// claimed (whose answer was being read) gets err, or a timeout when the
// watchdog closed the connection at its deadline; the others go to the
// pool, except those past their own timeout.
func (pc *pipeConn) fail(err error, claimed *pipeWork) {
	pc.broken.Store(true)
	pc.conn.Close()
	pc.p.remove(pc)
	now := time.Now().UnixNano()
	pc.mu.Lock()
	// expired reports a work past its timeout on a connection the watchdog
	// closed for it.
	expired := func(w *pipeWork) bool { return pc.timedOut && w.sent != 0 && now >= w.deadline }
	if claimed != nil && expired(claimed) {
		err = fasthttp.ErrTimeout
	}
	// Requests not yet written will not be.
	pc.unsent = 0
	pc.sink.b = pc.sink.b[:0]
	var works []*pipeWork
	if pc.n > 0 {
		works = make([]*pipeWork, 0, pc.n)
	}
	for ; pc.n > 0; pc.n-- {
		w := pc.ring[pc.first]
		pc.ring[pc.first] = nil
		pc.first = (pc.first + 1) % len(pc.ring)
		if !w.state.CompareAndSwap(workQueued, workAbandoned) {
			continue // rescued earlier: its request has moved on
		}
		w.err = errPipeBroken
		if expired(w) {
			w.err = fasthttp.ErrTimeout
		}
		works = append(works, w)
	}
	pc.mu.Unlock()
	pc.inflight.Store(0)
	if claimed != nil {
		claimed.err = err
		claimed.done <- struct{}{}
	}
	for _, w := range works {
		w.done <- struct{}{}
	}
}

// check runs on every watchdog tick: it closes the connection when its
// oldest request is past its timeout or it has been idle too long, and
// rescues the requests on it once the oldest has waited pipeline_max_wait
// with others queued behind. stuck reports that this happened now.
func (pc *pipeConn) check(now int64) (stuck bool) {
	p := pc.p
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.broken.Load() {
		return false
	}
	if pc.n == 0 {
		if now-pc.lastActive.Load() > p.idle || pc.idleClose {
			pc.broken.Store(true)
			pc.conn.Close() // the reader fails and forgets it
		}
		return false
	}
	head := pc.ring[pc.first]
	if head.sent == 0 {
		return false
	}
	if now >= head.deadline {
		pc.timedOut = true
		pc.broken.Store(true)
		pc.conn.Close()
		return false
	}
	// Alone, the oldest request is just slow: nothing waits for it.
	if now-head.sent < p.maxWait || pc.n == 1 {
		return false
	}
	stuck = !pc.stuck.Load()
	pc.stuck.Store(true)
	for i := 0; i < pc.n; i++ {
		w := pc.ring[(pc.first+i)%len(pc.ring)]
		if w.state.Load() != workQueued {
			continue
		}
		if !p.spend() {
			if !pc.denyCounted {
				pc.denyCounted = true
				p.counts.rescueDenied.Inc()
			}
			return stuck
		}
		if w.state.CompareAndSwap(workQueued, workAbandoned) {
			w.err = errPipeRescued
			w.done <- struct{}{}
		}
	}
	return stuck
}

// closeWhenIdle closes the connection now if nothing is queued on it,
// otherwise after its last answer.
func (pc *pipeConn) closeWhenIdle() {
	pc.mu.Lock()
	pc.idleClose = true
	idle := pc.n == 0
	if idle {
		pc.broken.Store(true)
	}
	pc.mu.Unlock()
	if idle {
		pc.conn.Close()
	}
}
