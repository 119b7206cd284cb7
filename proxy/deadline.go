package proxy

import (
	"net"
	"sync/atomic"
	"time"
)

// deadlineConn skips deadline updates that would move a deadline already in
// force by less than slack.
//
// fasthttp arms a read and a write deadline on every request of a
// keep-alive connection (the upstream client twice, the server's response
// write once); each is a clock read plus a timer change in the Go runtime
// (about 5% of the proxy's CPU in a profile of the request path). Setting
// the deadline slack beyond what was asked, and skipping the next updates
// while the deadline in force stays within [wanted, wanted+slack], turns that
// into one timer change per connection and direction per slack interval. A
// timeout then fires between its configured value and that value plus
// slack, never earlier. A deadline already in the past (how a blocked read
// is interrupted) and the zero time are always applied exactly.
type deadlineConn struct {
	net.Conn
	slack int64 // nanoseconds
	// read and write are the deadlines in force, in unix nanoseconds, 0 for
	// none. Atomics: a tunnel's stop may set a deadline from another
	// goroutine than the one serving the connection.
	read, write atomic.Int64
}

// deadlineSlack is how far past its configured value a timeout of d may
// fire: 1/16 of it, at most one second (a 10 s upstream timeout fires
// within 10.625 s; a 30 s write timeout within 31 s).
func deadlineSlack(d time.Duration) time.Duration {
	return min(d/16, time.Second)
}

// newDeadlineConn wraps c; slack <= 0 returns c unchanged.
func newDeadlineConn(c net.Conn, slack time.Duration) net.Conn {
	if slack <= 0 {
		return c
	}
	return &deadlineConn{Conn: c, slack: int64(slack)}
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
	return c.set(&c.read, t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline applies t unless the write deadline in force is within
// [t, t+slack].
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, t, c.Conn.SetWriteDeadline)
}

func (c *deadlineConn) set(cur *atomic.Int64, t time.Time, apply func(time.Time) error) error {
	if t.IsZero() {
		if cur.Load() == 0 {
			return nil
		}
		cur.Store(0)
		return apply(t)
	}
	want := t.UnixNano()
	if in := cur.Load(); in != 0 && in >= want && in-want <= c.slack {
		return nil
	}
	if want <= time.Now().UnixNano() {
		// Already expired: the caller wants the blocked call ended now.
		cur.Store(want)
		return apply(t)
	}
	at := want + c.slack
	cur.Store(at)
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
	return newDeadlineConn(c, l.slack), nil
}

// shortestTimeout is the smallest positive duration among ds, 0 if none.
func shortestTimeout(ds ...time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		if d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}
