package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
)

// edgeSettings are the snapshot's request id and access log settings.
type edgeSettings struct {
	reqIDHeader string // "" when request ids are disabled
	access      *accessLog
	// upgradeAllow holds upgrades.allow, lower case.
	upgradeAllow [][]byte
}

func newEdgeSettings(cfg *config.Config, log *zap.Logger) *edgeSettings {
	e := &edgeSettings{}
	for _, p := range cfg.Upgrades.Allow {
		e.upgradeAllow = append(e.upgradeAllow, []byte(strings.ToLower(p)))
	}
	if !cfg.RequestID.Disabled {
		// Normalized once here, so the request path can look it up with
		// fasthttp's normalizing switched off.
		e.reqIDHeader = string(fasthttp.AppendNormalizedHeaderKey(nil, cfg.RequestID.Header))
	}
	if cfg.AccessLog.Enabled {
		al := &accessLog{log: log.Named("access"), fields: map[string]bool{}, redact: map[string]bool{}}
		sample := float64(*cfg.AccessLog.Sample)
		al.threshold = uint32(math.Min(sample, 1) * math.MaxUint32)
		al.all = sample >= 1
		for _, f := range cfg.AccessLog.Fields {
			al.fields[f] = true
		}
		for _, q := range append(append([]string(nil), config.DefaultRedactQuery...), cfg.AccessLog.RedactQuery...) {
			al.redact[strings.ToLower(q)] = true
		}
		e.access = al
	}
	return e
}

// requestIDs generates ids that are unique across instances (a random
// per-process prefix) and cheap (a counter, no allocation).
type requestIDs struct {
	prefix  [8]byte
	counter atomic.Uint64
}

func newRequestIDs() *requestIDs {
	g := &requestIDs{}
	var b [4]byte
	rand.Read(b[:])
	hex.Encode(g.prefix[:], b[:])
	g.counter.Store(mrand.Uint64() >> 16)
	return g
}

// append writes "<8 hex>-<16 hex>" to dst.
func (g *requestIDs) append(dst []byte) []byte {
	dst = append(dst, g.prefix[:]...)
	dst = append(dst, '-')
	n := g.counter.Add(1)
	var buf [16]byte
	for i := 15; i >= 0; i-- {
		buf[i] = "0123456789abcdef"[n&0xf]
		n >>= 4
	}
	return append(dst, buf[:]...)
}

// validRequestID accepts what a client or an earlier proxy may
// reasonably send, and nothing that could break a log line or a header.
func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > 200 {
		return false
	}
	for _, c := range id {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.:+=/@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ensureRequestID keeps a valid client id or replaces it with a new one,
// and returns it (copied into sc, valid until sc is reused).
//
// header is in fasthttp's normalized form (newEdgeSettings).
func (s *Server) ensureRequestID(ctx *fasthttp.RequestCtx, header string, sc *headerScratch) []byte {
	h := &ctx.Request.Header
	wasOff := h.DisableNormalizing()
	defer func() {
		if !wasOff {
			h.EnableNormalizing()
		}
	}()
	all := h.PeekAll(header)
	if len(all) == 1 && validRequestID(all[0]) {
		sc.reqID = append(sc.reqID[:0], all[0]...)
		return sc.reqID
	}
	// Two ids would let the upstream and the proxy's logs disagree about
	// which request this was: a new one replaces them all.
	if len(all) > 1 {
		h.Del(header)
	}
	sc.reqID = s.ids.append(sc.reqID[:0])
	h.SetBytesV(header, sc.reqID)
	return sc.reqID
}

// accessLog writes sampled request lines. Authorization, Cookie and other
// headers are never logged; redacted query parameters show "REDACTED".
type accessLog struct {
	log       *zap.Logger
	threshold uint32
	all       bool
	fields    map[string]bool
	redact    map[string]bool
}

// accessEntry is what the request path knows when the answer is sent.
type accessEntry struct {
	route, upstream string
	split           string
	status          int
	bytes           int
	duration        time.Duration
	requestID       []byte
}

// sampled decides cheaply whether a line is written; 5xx always is.
func (al *accessLog) sampled(status int) bool {
	return al.all || status >= 500 || mrand.Uint32() < al.threshold
}

func (al *accessLog) write(ctx *fasthttp.RequestCtx, e accessEntry) {
	fs := make([]zap.Field, 0, len(al.fields))
	add := func(name string, f zap.Field) {
		if al.fields[name] {
			fs = append(fs, f)
		}
	}
	add("method", zap.ByteString("method", ctx.Method()))
	add("path", zap.String("path", al.redactedURI(ctx.Request.Header.RequestURI())))
	add("route", zap.String("route", e.route))
	add("upstream", zap.String("upstream", e.upstream))
	add("status", zap.Int("status", e.status))
	add("bytes", zap.Int("bytes", e.bytes))
	add("duration", zap.Duration("duration_ms", e.duration))
	if e.split != "" {
		add("split", zap.String("split", e.split))
	}
	if len(e.requestID) > 0 {
		add("request_id", zap.ByteString("request_id", e.requestID))
	}
	add("client", zap.String("client", ctx.RemoteIP().String()))
	al.log.Info("request", fs...)
}

// redactedURI replaces the values of redacted query parameters.
func (al *accessLog) redactedURI(uri []byte) string {
	path, query, ok := strings.Cut(string(uri), "?")
	if !ok {
		return path
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if hasValue && al.redact[strings.ToLower(name)] {
			parts[i] = name + "=REDACTED"
		}
	}
	return path + "?" + strings.Join(parts, "&")
}

// upgradeAllowed reports whether every protocol the Upgrade fields offer is
// in upgrades.allow. All of them must be: the upstream picks one, and a
// single h2c among them would let it switch to a protocol the proxy cannot
// follow.
func (e *edgeSettings) upgradeAllowed(values [][]byte) bool {
	n := 0
	for _, v := range values {
		for len(v) > 0 {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 {
				continue
			}
			if i := bytes.IndexByte(tok, '/'); i >= 0 {
				tok = tok[:i]
			}
			ok := false
			for _, a := range e.upgradeAllow {
				if bytes.EqualFold(tok, a) {
					ok = true
					break
				}
			}
			if !ok {
				return false
			}
			n++
		}
	}
	return n > 0
}
