package proxy

import (
	"net"
	"sync/atomic"
	"time"
)

// deadlineConn skips deadline updates that would move a deadline already in
// force by less than its slack.
//
// fasthttp arms a read and a write deadline on every request of a
// keep-alive connection (the upstream client twice, the server's response
// write once); each is a clock read plus a timer change in the Go runtime
// (about 5% of the proxy's CPU in a profile of the request path). Setting
// a deadline slack beyond what was asked, and skipping the next updates
// while the deadline in force stays within [wanted, wanted+slack], turns that
// into one timer change per connection and direction per slack interval.
// The slack is 1/16 of the time left until the wanted deadline, at most
// maxSlack: a timeout fires between its configured value and 1/16 more
// (a 400 ms shadow timeout within 425 ms, a 10 s upstream timeout within
// 10.625 s, a 30 s one within 31 s), never earlier. A deadline already in
// the past (how a blocked read is interrupted) and the zero time are always
// applied exactly.
//
// A read deadline is applied by the next Read, not when it is set (unless a
// Read is blocked at that moment): the server sets two per request, the
// idle timeout before waiting for the next request and read_timeout once
// its first byte arrived, and the second is almost always replaced by the
// next idle one before any Read needs it (the whole request came in the
// first read). Applied eagerly, the two alternate (90 s, 30 s by default)
// and neither is ever within the other's slack: two timer changes per
// request. A Read that does need the read_timeout (a head or body still
// arriving) applies it, so it is enforced as before.
type deadlineConn struct {
	net.Conn
	maxSlack int64 // nanoseconds
	// read and write are the deadlines in force, in unix nanoseconds, 0 for
	// none; readSlack and writeSlack the slack each was given. Atomics: a
	// tunnel's stop may set a deadline from another goroutine than the one
	// serving the connection.
	read, write           atomic.Int64
	readSlack, writeSlack atomic.Int64
	// readWant is the read deadline last asked for (unix nanoseconds, 0 for
	// none), not yet applied while readPending is set; reading is set while
	// a Read runs, so that a deadline set meanwhile (to end a blocked read)
	// is applied at once.
	readWant             atomic.Int64
	readPending, reading atomic.Bool
	// ip is the remote address as X-Forwarded-For text (ipLen bytes, 0
	// until first needed), for connections the proxy accepted; only the
	// goroutine serving the connection touches it. 45 bytes hold any IPv6
	// address.
	ip    [45]byte
	ipLen uint8
}

// maxDeadlineSlack bounds how late a long timeout may fire.
const maxDeadlineSlack = time.Second

// newDeadlineConn wraps c; maxSlack <= 0 returns c unchanged.
func newDeadlineConn(c net.Conn, maxSlack time.Duration) net.Conn {
	if maxSlack <= 0 {
		return c
	}
	return &deadlineConn{Conn: c, maxSlack: int64(maxSlack)}
}

// SetDeadline sets both deadlines under the same rule.
func (c *deadlineConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline records t for the next Read, which applies it unless the
// read deadline in force is within [t, t+slack]. While a Read is blocked,
// t is applied at once.
func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.readWant.Store(unixNano(t))
	c.readPending.Store(true)
	// After readPending: a Read starting now either sees it or is seen
	// here (both are sequentially consistent), so none blocks without t.
	if c.reading.Load() {
		return c.applyRead()
	}
	return nil
}

// Read applies a pending read deadline, then reads.
func (c *deadlineConn) Read(p []byte) (int, error) {
	c.reading.Store(true)
	if c.readPending.Load() {
		if err := c.applyRead(); err != nil {
			c.reading.Store(false)
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	c.reading.Store(false)
	return n, err
}

// applyRead applies the pending read deadline, if still pending.
func (c *deadlineConn) applyRead() error {
	if !c.readPending.Swap(false) {
		return nil
	}
	return c.set(&c.read, &c.readSlack, c.readWant.Load(), c.Conn.SetReadDeadline)
}

// SetWriteDeadline applies t unless the write deadline in force is within
// [t, t+slack].
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, &c.writeSlack, unixNano(t), c.Conn.SetWriteDeadline)
}

// unixNano is t in unix nanoseconds, 0 for the zero time (no deadline).
// The epoch itself, a deadline in the past, becomes 1 ns after it.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

// set applies the deadline want (unix nanoseconds, 0 for none) through
// apply unless the one in force, cur, is within [want, want+slack].
func (c *deadlineConn) set(cur, slack *atomic.Int64, want int64, apply func(time.Time) error) error {
	if want == 0 {
		if cur.Load() == 0 {
			return nil
		}
		cur.Store(0)
		return apply(time.Time{})
	}
	if in := cur.Load(); in != 0 && in >= want && in-want <= slack.Load() {
		return nil
	}
	now := time.Now().UnixNano()
	if want <= now {
		// Already expired: the caller wants the blocked call ended now.
		cur.Store(want)
		slack.Store(0)
		return apply(time.Unix(0, want))
	}
	s := min((want-now)/16, c.maxSlack)
	at := want + s
	cur.Store(at)
	slack.Store(s)
	return apply(time.Unix(0, at))
}

// deadlineListener wraps every accepted connection in a deadlineConn.
type deadlineListener struct {
	net.Listener
	slack time.Duration
}

// Accept returns the next connection, wrapped.
func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newDeadlineConn(fastIO(c), l.slack), nil
}
