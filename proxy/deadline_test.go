package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// recordingConn counts the deadlines that reach the connection. Its Read
// returns at once, or, with block set, when a read deadline reaches it.
type recordingConn struct {
	net.Conn
	reads, writes []time.Time
	block         chan struct{}
}

func (c *recordingConn) Read([]byte) (int, error) {
	if c.block != nil {
		<-c.block
	}
	return 0, nil
}

func (c *recordingConn) SetReadDeadline(t time.Time) error {
	c.reads = append(c.reads, t)
	if c.block != nil {
		close(c.block)
	}
	return nil
}

func (c *recordingConn) SetWriteDeadline(t time.Time) error {
	c.writes = append(c.writes, t)
	return nil
}

// The deadlines here are 20 s and more away, where the slack is its cap
// (1 s), so the applied values are exact.
func TestDeadlineConnSkipsUpdatesWithinSlack(t *testing.T) {
	const slack = time.Second
	now := time.Now().Add(10 * time.Second)
	tests := []struct {
		name    string
		sets    []time.Time // read deadlines asked for, in order
		applied []time.Time // what reached the connection
	}{
		{"first deadline is applied with slack", []time.Time{now.Add(10 * time.Second)},
			[]time.Time{now.Add(11 * time.Second)}},
		{"later deadlines within slack are skipped",
			[]time.Time{now.Add(10 * time.Second), now.Add(10*time.Second + 300*time.Millisecond), now.Add(11 * time.Second)},
			[]time.Time{now.Add(11 * time.Second)}},
		{"a deadline past the one in force is applied",
			[]time.Time{now.Add(10 * time.Second), now.Add(11*time.Second + time.Millisecond)},
			[]time.Time{now.Add(11 * time.Second), now.Add(12*time.Second + time.Millisecond)}},
		{"an earlier deadline is applied (a timeout never fires late by more than slack)",
			[]time.Time{now.Add(90 * time.Second), now.Add(30 * time.Second)},
			[]time.Time{now.Add(91 * time.Second), now.Add(31 * time.Second)}},
		{"zero clears once", []time.Time{now.Add(10 * time.Second), {}, {}},
			[]time.Time{now.Add(11 * time.Second), {}}},
		{"zero on a connection without deadline does nothing", []time.Time{{}}, nil},
		{"a past deadline is applied exactly (interrupting a blocked read)",
			[]time.Time{now.Add(10 * time.Second), time.Unix(1, 0)},
			[]time.Time{now.Add(11 * time.Second), time.Unix(1, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingConn{}
			c := newDeadlineConn(rec, slack)
			for _, d := range tt.sets {
				if err := c.SetReadDeadline(d); err != nil {
					t.Fatal(err)
				}
				c.Read(nil) // a read deadline is applied by the next read
			}
			if len(rec.reads) != len(tt.applied) {
				t.Fatalf("applied %v, want %v", rec.reads, tt.applied)
			}
			for i := range tt.applied {
				if !rec.reads[i].Equal(tt.applied[i]) {
					t.Errorf("applied[%d] = %v, want %v", i, rec.reads[i], tt.applied[i])
				}
			}
			if len(rec.writes) != 0 {
				t.Errorf("read deadlines reached the write side: %v", rec.writes)
			}
		})
	}
}

func TestDeadlineConnReadAndWriteAreIndependent(t *testing.T) {
	rec := &recordingConn{}
	c := newDeadlineConn(rec, time.Second)
	d := time.Now().Add(50 * time.Second)
	c.SetWriteDeadline(d)
	c.SetReadDeadline(d)
	c.Read(nil)
	c.SetWriteDeadline(d.Add(time.Millisecond))
	c.SetDeadline(time.Time{})
	c.Read(nil)
	if len(rec.reads) != 2 || len(rec.writes) != 2 {
		t.Fatalf("reads %v writes %v; want a set and a clear each", rec.reads, rec.writes)
	}
}

// TestDeadlineConnTimesOut: a coarsened deadline still ends a blocked read
// on a real loopback socket, within the slack.
func TestDeadlineConnTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done, exited := make(chan struct{}), make(chan struct{})
	defer func() { close(done); <-exited }()
	go func() {
		defer close(exited)
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			<-done // send nothing until the test ends
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := newDeadlineConn(raw, time.Second)
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read returned %v, want a deadline error", err)
	}
}

// TestDeadlineSlackScalesWithTimeout: a short timeout gets a short slack
// (1/16 of it), so a 400 ms shadow timeout is not stretched by the 1 s cap.
func TestDeadlineSlackScalesWithTimeout(t *testing.T) {
	rec := &recordingConn{}
	c := newDeadlineConn(rec, time.Second)
	start := time.Now()
	c.SetReadDeadline(start.Add(400 * time.Millisecond))
	c.Read(nil)
	if len(rec.reads) != 1 {
		t.Fatalf("applied %v", rec.reads)
	}
	late := rec.reads[0].Sub(start.Add(400 * time.Millisecond))
	if late <= 0 || late > 25*time.Millisecond {
		t.Fatalf("400 ms deadline applied %v late, want (0, 25ms]", late)
	}
	// 30 ms later the same timeout asks for a deadline past the one in
	// force plus its slack: applied again.
	c.SetReadDeadline(start.Add(430 * time.Millisecond))
	c.Read(nil)
	if len(rec.reads) != 2 {
		t.Fatalf("a deadline beyond the slack was skipped: %v", rec.reads)
	}
	if newDeadlineConn(&recordingConn{}, 0).(*recordingConn) == nil {
		t.Error("no slack must leave the connection unwrapped")
	}
}

// TestDeadlineConnReadDeadlineAppliedByRead: read deadlines set between
// reads reach the connection only when the next read starts, and only the
// last one (the server's read_timeout, replaced by the next idle timeout
// before any read needed it, costs nothing).
func TestDeadlineConnReadDeadlineAppliedByRead(t *testing.T) {
	rec := &recordingConn{}
	c := newDeadlineConn(rec, time.Second)
	now := time.Now()
	idle, read := now.Add(90*time.Second), now.Add(30*time.Second)
	c.SetReadDeadline(idle)
	c.Read(nil)
	c.SetReadDeadline(read)
	if len(rec.reads) != 1 {
		t.Fatalf("a read deadline reached the connection before a read: %v", rec.reads)
	}
	c.SetReadDeadline(idle.Add(time.Millisecond))
	c.Read(nil)
	if len(rec.reads) != 1 {
		t.Fatalf("the replaced read_timeout or an idle deadline within slack was applied: %v", rec.reads)
	}
	c.SetReadDeadline(read)
	c.Read(nil)
	if len(rec.reads) != 2 || !rec.reads[1].Equal(read.Add(time.Second)) {
		t.Fatalf("a read needing read_timeout did not apply it: %v", rec.reads)
	}
}

// TestDeadlineConnSetDuringBlockedRead: a deadline set while a read is
// blocked (how a tunnel's stop ends it) is applied at once.
func TestDeadlineConnSetDuringBlockedRead(t *testing.T) {
	rec := &recordingConn{block: make(chan struct{})}
	c := newDeadlineConn(rec, time.Second).(*deadlineConn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Read(nil)
	}()
	for !c.reading.Load() {
		time.Sleep(time.Millisecond)
	}
	c.SetDeadline(time.Unix(1, 0))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked read never saw the deadline")
	}
	if len(rec.reads) != 1 || !rec.reads[0].Equal(time.Unix(1, 0)) {
		t.Fatalf("applied %v, want exactly the past deadline", rec.reads)
	}
}
