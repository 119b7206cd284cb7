package splitter

import (
	"github.com/cespare/xxhash/v2"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// NumBuckets is the number of buckets a key hashes into: one per basis point,
// so a percentage with two decimal places maps onto whole buckets and 0.01%
// is the smallest step a rollout can take.
const NumBuckets = uint32(cfgtypes.MaxBasisPoints)

// Bucket returns the bucket, 0 to NumBuckets-1, of key under salt:
//
//	XXH64(seed 0) of the bytes salt + ":" + key, as an unsigned 64-bit integer, modulo 10000
//
// This is a public contract shared with systems outside the proxy (feature
// flag services, log pipelines), pinned by testdata/buckets.golden; it must
// never change. It does not allocate.
func Bucket(salt string, key []byte) uint32 {
	return uint32(Hash64(salt, key) % uint64(NumBuckets))
}

// saltedDigest returns an xxhash state that has already consumed salt + ":",
// so a Splitter can copy it per request instead of rehashing the salt.
func saltedDigest(salt string) xxhash.Digest {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(salt)
	_, _ = d.WriteString(":")
	return d
}

// bucketOf finishes a copy of a salted digest with key. The digest is taken
// by pointer only to avoid copying it twice; it is not modified.
func bucketOf(salted *xxhash.Digest, key []byte) uint32 {
	d := *salted
	_, _ = d.Write(key)
	return uint32(d.Sum64() % uint64(NumBuckets))
}

// Hash64 returns the full 64-bit hash behind Bucket, XXH64(salt + ":" + key),
// for tools that want to print or cross-check it.
func Hash64(salt string, key []byte) uint64 {
	// One-shot hashing of the concatenation on the stack is several times
	// faster than streaming through a Digest; long inputs stream instead of
	// allocating.
	var buf [128]byte
	if len(salt)+1+len(key) <= len(buf) {
		b := append(append(append(buf[:0], salt...), ':'), key...)
		return xxhash.Sum64(b)
	}
	d := saltedDigest(salt)
	_, _ = d.Write(key)
	return d.Sum64()
}
