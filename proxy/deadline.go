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
type deadlineConn struct {
	net.Conn
	maxSlack int64 // nanoseconds
	// read and write are the deadlines in force, in unix nanoseconds, 0 for
	// none; readSlack and writeSlack the slack each was given. Atomics: a
	// tunnel's stop may set a deadline from another goroutine than the one
	// serving the connection.
	read, write           atomic.Int64
	readSlack, writeSlack atomic.Int64
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

// SetReadDeadline applies t unless the read deadline in force is within
// [t, t+slack].
func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	return c.set(&c.read, &c.readSlack, t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline applies t unless the write deadline in force is within
// [t, t+slack].
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, &c.writeSlack, t, c.Conn.SetWriteDeadline)
}

func (c *deadlineConn) set(cur, slack *atomic.Int64, t time.Time, apply func(time.Time) error) error {
	if t.IsZero() {
		if cur.Load() == 0 {
			return nil
		}
		cur.Store(0)
		return apply(t)
	}
	want := t.UnixNano()
	if in := cur.Load(); in != 0 && in >= want && in-want <= slack.Load() {
		return nil
	}
	now := time.Now().UnixNano()
	if want <= now {
		// Already expired: the caller wants the blocked call ended now.
		cur.Store(want)
		slack.Store(0)
		return apply(t)
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
