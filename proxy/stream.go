package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/config"
)

// streamTransport is the primary pool's fasthttp.RoundTripper. It does what
// fasthttp's default transport does, except for the body: one up to
// limits.buffer_body is buffered as before (and the connection pooled at
// once, allocation-free), a longer one, or one of unknown length that turns
// out longer, is handed to the server as a stream, so a 1 GiB download
// costs a buffer, not a gigabyte. The connection goes back to the pool when
// the server has written the whole body to the client, or is closed when it
// could not.
//
// fasthttp's own StreamResponseBody cannot decide by size: it streams every
// body, at several allocations each, and the primary path allocates nothing.
type streamTransport struct {
	threshold int
	// timeout bounds connecting, writing and reading the head, and each
	// read of a streamed body (an idle bound: a long download may take
	// longer in all).
	timeout time.Duration
	// maxBody is max_response_body; a longer body is an error, streamed or
	// not (once streaming, the client connection is cut).
	maxBody int
	bodies  sync.Pool // *upstreamBody
}

func newStreamTransport(threshold int, u config.Upstream) *streamTransport {
	t := &streamTransport{threshold: threshold, timeout: u.Timeout.D(), maxBody: int(u.MaxResponseBody)}
	t.bodies.New = func() any { return &upstreamBody{} }
	return t
}

// errChunkCRLF is a chunk whose data is not followed by CRLF.
var errChunkCRLF = errors.New("chunk not followed by CRLF")

// errStreamTooLarge ends a streamed body that passed max_response_body.
var errStreamTooLarge = errors.New("streamed response body exceeds max_response_body")

// RoundTrip implements fasthttp.RoundTripper.
func (t *streamTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	deadline := time.Now().Add(t.timeout)
	cc, err := hc.AcquireConn(t.timeout, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	if err = conn.SetWriteDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return true, err
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return true, timeoutOr(err)
	}
	if err = conn.SetReadDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return true, err
	}
	br := hc.AcquireReader(conn)
	// done hands the connection back on the buffered paths: pooled, or
	// closed when it cannot carry another request.
	done := func(pool bool) {
		hc.ReleaseReader(br)
		if pool {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	if err = readHead(br, &resp.Header); err != nil {
		done(false)
		return true, timeoutOr(err)
	}
	keep := !req.ConnectionClose() && !resp.ConnectionClose()
	if resp.SkipBody || req.Header.IsHead() || noBody(resp.Header.StatusCode()) {
		resp.SkipBody = true
		done(keep)
		return false, nil
	}
	cl := resp.Header.ContentLength()
	switch {
	case t.maxBody > 0 && cl > t.maxBody:
		done(false)
		return false, fasthttp.ErrBodyTooLarge
	case cl >= 0 && cl <= t.threshold:
		if err = resp.ReadBody(br, t.maxBody); err != nil {
			done(false)
			return false, timeoutOr(err)
		}
		done(keep)
		return false, nil
	}
	// Chunked or read-until-close: buffer up to the threshold, and stream
	// only if the body turns out longer. A known length over the threshold
	// streams at once.
	b := t.bodies.Get().(*upstreamBody)
	b.reset(t, br, conn, cl)
	if cl < 0 {
		for len(resp.Body()) <= t.threshold {
			n, rerr := b.Read(b.scratch[:])
			resp.AppendBody(b.scratch[:n])
			if rerr == io.EOF {
				resp.Header.SetContentLength(len(resp.Body()))
				done(keep && cl != -2)
				t.bodies.Put(b)
				return false, nil
			}
			if rerr != nil {
				done(false)
				t.bodies.Put(b)
				return false, rerr
			}
		}
		// The buffered part goes first; the stream takes its array over
		// rather than copying it.
		b.prefix = resp.SwapBody(nil)
	}
	keepStream := keep && cl != -2
	b.release = func(pool bool) {
		hc.ReleaseReader(br)
		if pool && keepStream {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	// Read-until-close (-2) goes to the client chunked (-1).
	resp.SetBodyStream(b, max(cl, -1))
	return false, nil
}

// readHead reads a response head, skipping interim 1xx answers other than
// 101 as fasthttp does.
func readHead(br *bufio.Reader, h *fasthttp.ResponseHeader) error {
	for n := 0; ; n++ {
		if err := h.Read(br); err != nil {
			return err
		}
		if c := h.StatusCode(); c < 100 || c > 199 || c == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n >= 100 {
			return errors.New("too many 1xx informational responses")
		}
	}
}

func noBody(status int) bool {
	return status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified
}

func timeoutOr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}

// upstreamBody is a response body read from an upstream connection as the
// client consumes it: the prefix buffered before streaming began, then the
// rest, de-chunked. The server closes it after writing; Close pools the
// connection when the body was read to its end, and closes it otherwise.
type upstreamBody struct {
	t         *streamTransport
	br        *bufio.Reader
	conn      net.Conn
	release   func(pool bool)
	prefix    []byte
	off       int
	remaining int // Content-Length left, or -1 chunked, -2 until close
	chunkLeft int
	total     int
	eof       bool
	err       error
	// scratch is the read buffer while deciding whether to stream (kept
	// with the pooled body, so that deciding allocates nothing).
	scratch [8 << 10]byte
}

func (b *upstreamBody) reset(t *streamTransport, br *bufio.Reader, conn net.Conn, cl int) {
	b.t, b.br, b.conn, b.release = t, br, conn, nil
	b.prefix, b.off, b.remaining, b.chunkLeft, b.total, b.eof, b.err = b.prefix[:0], 0, cl, 0, 0, false, nil
}

// Read implements io.Reader.
func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.off < len(b.prefix) {
		n := copy(p, b.prefix[b.off:])
		b.off += n
		return n, nil
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.release != nil {
		// Streaming: an idle bound per read, not one for the whole body.
		b.conn.SetReadDeadline(time.Now().Add(b.t.timeout))
	}
	n, err := b.read(p)
	b.total += n
	if b.t.maxBody > 0 && b.total > b.t.maxBody {
		n -= b.total - b.t.maxBody
		b.total = b.t.maxBody
		err = errStreamTooLarge
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = timeoutOr(err)
		return n, b.err
	}
	return n, err
}

func (b *upstreamBody) read(p []byte) (int, error) {
	switch {
	case b.remaining >= 0:
		if b.remaining == 0 {
			return 0, io.EOF
		}
		if len(p) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := b.br.Read(p)
		b.remaining -= n
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if b.remaining == 0 && err == nil {
			err = io.EOF
		}
		return n, err
	case b.remaining == -2:
		return b.br.Read(p)
	}
	if b.chunkLeft == 0 {
		size, err := readChunkSize(b.br)
		if err != nil {
			return 0, err
		}
		if size == 0 {
			// Trailer fields are dropped (the proxy never forwards them).
			for {
				line, err := b.br.ReadSlice('\n')
				if err != nil {
					return 0, fmt.Errorf("chunked trailer: %w", err)
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return 0, io.EOF
				}
			}
		}
		b.chunkLeft = size
	}
	if len(p) > b.chunkLeft {
		p = p[:b.chunkLeft]
	}
	n, err := b.br.Read(p)
	b.chunkLeft -= n
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	if b.chunkLeft == 0 && err == nil {
		// ReadByte, not io.ReadFull: a slice handed to an interface would
		// escape, one allocation per chunk.
		cr, err1 := b.br.ReadByte()
		lf, err2 := b.br.ReadByte()
		switch {
		case err1 != nil || err2 != nil:
			err = io.ErrUnexpectedEOF
		case cr != '\r' || lf != '\n':
			err = errChunkCRLF
		}
	}
	return n, err
}

// readChunkSize reads "HEX[;ext]\r\n".
func readChunkSize(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("chunk size line: %w", err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, fmt.Errorf("invalid chunk size %q", line)
	}
	size := 0
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("invalid chunk size %q", line)
		}
		size = size<<4 | int(d)
	}
	return size, nil
}

// Close implements io.Closer; the server calls it once the body is written
// (or could not be). The connection is pooled only after a body read to
// its end.
func (b *upstreamBody) Close() error {
	t := b.t
	if t == nil {
		return nil // closed already
	}
	if b.release != nil {
		b.release(b.eof && b.err == nil)
		b.release = nil
	}
	b.t, b.br, b.conn = nil, nil, nil
	if cap(b.prefix) > keepBodyBuffer {
		b.prefix = nil
	}
	t.bodies.Put(b)
	return nil
}
