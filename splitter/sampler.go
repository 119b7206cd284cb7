package splitter

import (
	"math/rand/v2"
	"net"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Sampler decides whether a request is mirrored to shadows. With a key, the
// choice is Bucket(salt, key) < rate, so a user is consistently shadowed or
// not (their session can be compared end to end); without one, or when a
// request has no key, it is random per request. Use a salt of its own (for
// example the route name + ":shadow") so the shadowed users are independent
// of the canary users. Safe for concurrent use; the rate can change at run
// time.
type Sampler struct {
	key    KeySource
	tp     *TrustedProxies
	digest xxhash.Digest
	rate   atomic.Uint32
}

// NewSampler returns a Sampler at rate bp (clamped to 100%). key nil samples
// every request at random.
func NewSampler(key *KeySource, salt string, bp cfgtypes.BasisPoints, tp *TrustedProxies) *Sampler {
	s := &Sampler{tp: tp, digest: saltedDigest(salt)}
	if key != nil {
		s.key = *key
	}
	s.SetPercent(bp)
	return s
}

// Sample reports whether req should be mirrored. It does not allocate.
func (s *Sampler) Sample(req *fasthttp.Request, peer net.IP) bool {
	rate := s.rate.Load()
	switch {
	case rate == 0:
		return false
	case rate >= NumBuckets:
		return true
	}
	if !s.key.IsZero() {
		var buf [64]byte
		if k, ok := s.key.Extract(req, peer, s.tp, buf[:0]); ok {
			return bucketOf(&s.digest, k) < rate
		}
	}
	return rand.Uint32N(NumBuckets) < rate
}

// SetPercent changes the sampling rate; values above 100% are clamped.
func (s *Sampler) SetPercent(bp cfgtypes.BasisPoints) {
	s.rate.Store(uint32(min(bp, cfgtypes.MaxBasisPoints)))
}

// Percent returns the sampling rate.
func (s *Sampler) Percent() cfgtypes.BasisPoints { return cfgtypes.BasisPoints(s.rate.Load()) }
