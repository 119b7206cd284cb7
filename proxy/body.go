package proxy

import (
	"errors"
	"io"
	"net"

	"github.com/valyala/fasthttp"
)

// The server runs with fasthttp's StreamRequestBody: it reads no more than
// a few KiB of a body before the handler runs. bufferOrStream then decides,
// before routing: a body of at most limits.buffer_body is read whole (and
// everything downstream sees an ordinary buffered request, as before
// streaming existed); a longer one, or a chunked one that turns out longer,
// is forwarded as a stream with bounded memory and never mirrored.

// errBodyLimit ends a streamed request body past max_request_body.
var errBodyLimit = errors.New("request body exceeds max_request_body")

// clientBody is a streamed request body on its way to the upstream: the
// part read while deciding, then the rest from the client connection. It
// remembers a client-side failure (a cut or slow upload, or one past the
// limit) so that the failed upstream request is answered and counted as the
// client's fault, not the upstream's.
type clientBody struct {
	prefix []byte
	src    io.Reader
	n      int64
	limit  int64
	err    error
}

func (c *clientBody) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.src.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		c.err = errBodyLimit
		return n, c.err
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// clientFault maps what went wrong reading a client's body to the answer.
func clientFault(err error) (int, string, string) {
	var ne net.Error
	switch {
	case errors.Is(err, errBodyLimit):
		return fasthttp.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the configured limit"
	case errors.As(err, &ne) && ne.Timeout():
		return fasthttp.StatusRequestTimeout, "timeout", "request not received in time"
	}
	return fasthttp.StatusBadRequest, "malformed", "request body incomplete or malformed"
}

// bufferOrStream reads a body of at most buffer_body into the request, or
// turns the request into a stream (streamed=true). code != 0 refuses the
// request (the body is over the limit, or the client failed to send it).
func (s *Server) bufferOrStream(ctx *fasthttp.RequestCtx, sc *headerScratch) (streamed bool, code int, reason, why string) {
	req := &ctx.Request
	if !req.IsBodyStream() {
		return false, 0, "", ""
	}
	cl := req.Header.ContentLength()
	if s.maxRequestBody > 0 && int64(cl) > s.maxRequestBody {
		return false, fasthttp.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the configured limit"
	}
	src := req.BodyStream()
	if cl > s.bufferBody {
		req.SetBodyStream(&clientBody{src: src, limit: s.maxRequestBody}, cl)
		return true, 0, "", ""
	}
	// Up to buffer_body (+1 to tell a longer chunked body from one that
	// fits), into a scratch buffer that grows once and is reused.
	want := s.bufferBody + 1
	if cl >= 0 {
		want = cl
	}
	buf := sc.body[:0]
	for len(buf) < want {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := src.Read(buf[len(buf):min(cap(buf), want)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			sc.body = buf
			c, r, w := clientFault(err)
			return false, c, r, w
		}
	}
	sc.body = buf
	if cl >= 0 && len(buf) < cl {
		return false, fasthttp.StatusBadRequest, "malformed", "request body shorter than its Content-Length"
	}
	if len(buf) <= s.bufferBody {
		req.SetBody(buf)
		return false, 0, "", ""
	}
	// A chunked body longer than buffer_body: what was read goes first.
	prefix := append([]byte(nil), buf...)
	req.SetBodyStream(&clientBody{prefix: prefix, src: src, n: int64(len(prefix)), limit: s.maxRequestBody}, -1)
	return true, 0, "", ""
}
