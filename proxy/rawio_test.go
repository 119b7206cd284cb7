//go:build linux

package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// loopbackPair returns both ends of a loopback TCP connection, the first
// wrapped by fastIO.
func loopbackPair(t *testing.T) (fast net.Conn, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer = <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	fast = fastIO(c)
	if _, ok := fast.(*fastConn); !ok {
		t.Fatalf("fastIO(%T) = %T, want *fastConn", c, fast)
	}
	t.Cleanup(func() { fast.Close(); peer.Close() })
	return fast, peer
}

// TestFastConnBehavesLikeNetConn: raw system-call I/O keeps net.Conn's
// contract: whole writes larger than the socket buffer (through EAGAIN and
// the poller), reads, io.EOF at the end, deadlines as timeouts, resets as
// ECONNRESET, and a closed connection as net.ErrClosed.
func TestFastConnBehavesLikeNetConn(t *testing.T) {
	t.Run("large write and read back", func(t *testing.T) {
		fast, peer := loopbackPair(t)
		payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: many EAGAINs
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(peer)
			got <- b
		}()
		n, err := fast.Write(payload)
		if err != nil || n != len(payload) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(payload))
		}
		fast.(*fastConn).CloseWrite()
		if b := <-got; !bytes.Equal(b, payload) {
			t.Fatalf("peer read %d bytes, not the payload", len(b))
		}
	})
	t.Run("read then EOF", func(t *testing.T) {
		fast, peer := loopbackPair(t)
		go func() {
			peer.Write([]byte("hello"))
			peer.Close()
		}()
		b, err := io.ReadAll(fast)
		if err != nil || string(b) != "hello" {
			t.Fatalf("ReadAll = %q, %v", b, err)
		}
		if n, err := fast.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("Read after end = %d, %v; want 0, io.EOF", n, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		fast, _ := loopbackPair(t)
		fast.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := fast.Read(make([]byte, 8))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past deadline: %v, want a timeout", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		fast, _ := loopbackPair(t) // the peer never reads
		fast.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := fast.Write(make([]byte, 64<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write past deadline: %v, want a timeout", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		fast, peer := loopbackPair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close() // RST
		time.Sleep(20 * time.Millisecond)
		_, err := fast.Read(make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Read after reset: %v, want ECONNRESET", err)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "read" {
			t.Fatalf("Read after reset: %#v, want a *net.OpError for read", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		fast, _ := loopbackPair(t)
		fast.Close()
		if _, err := fast.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
		}
		if _, err := fast.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("close unblocks a waiting read", func(t *testing.T) {
		fast, _ := loopbackPair(t)
		done := make(chan error, 1)
		go func() {
			_, err := fast.Read(make([]byte, 1))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		fast.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Read after Close: %v, want net.ErrClosed", err)
		}
	})
}

// TestFastIOLeavesOtherConnsAlone: only TCP connections are wrapped.
func TestFastIOLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := fastIO(a); got != a {
		t.Fatalf("fastIO(net.Pipe) = %T, want the same conn", got)
	}
}
