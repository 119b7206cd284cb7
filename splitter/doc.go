// Package splitter decides, per request, whether a route's primary traffic
// goes to its stable upstream, its canary, or a cohort's upstream; and it is
// the sampling primitive shadow mirroring reuses (Sampler). It does no I/O: it
// reads a *fasthttp.Request and the peer address and returns a small value,
// without allocating, so it can sit on the primary path.
//
// # Configuration
//
// A route's split section (Spec) looks like this:
//
//	split:
//	  key: header:X-User-ID   # header:NAME | cookie:NAME | query:NAME | ip (required)
//	  salt: api-v2            # default: the route name
//	  to: canary              # the canary upstream (required)
//	  percent: 5              # 0..100, two decimals at most: 12.25, 0.5%
//	  on_missing: stable      # stable (default) | random
//	  force_header: X-Shadowproxy-Upstream    # off by default
//	  response_header: X-Shadowproxy-Upstream # off by default
//	  cohorts:                # checked in order before the percentage; first match wins
//	    - name: internal
//	      when: {header: {X-Internal: "true"}}
//	      to: canary          # default: the split's "to"
//	    - name: beta          # several conditions in one "when" are ANDed
//	      when: {header_in: {X-Plan: [beta, staff]}, query_regex: {v: "^2\\."}}
//	    - name: synthetic
//	      when: {key_in: [smoke-test-1, smoke-test-2]}
//
// Conditions: header, cookie, query (name: exact value); header_in,
// cookie_in, query_in (name: [values]); header_regex, cookie_regex,
// query_regex (name: RE2 regex, unanchored); key_in ([keys], compared with
// the split key). A condition on an absent or empty field is false. A cohort
// may send to the stable upstream too, to keep a group out of the canary.
//
// on_missing says what happens to a request without a key (absent or empty):
// "stable" sends it to the stable upstream; "random" sends it to the canary
// with probability percent, decided per request, so anonymous traffic is
// represented in the canary at the price of stickiness.
//
// force_header: a request whose header value is exactly one of the route's
// upstream names (Splitter.Targets) goes there, even while halted. Anyone who
// can send the header can choose, so enable it only behind an edge that strips
// it from outside traffic. response_header: the proxy sets it to the name of
// the upstream that served the response.
//
// # The bucket: a public contract
//
// A key's bucket is
//
//	bucket = XXH64(salt + ":" + key, seed 0) mod 10000
//
// where salt + ":" + key is the byte concatenation (UTF-8 as received; no
// normalisation, no trimming beyond what Extract documents), XXH64 is the
// 64-bit xxHash (https://github.com/Cyan4973/xxHash) read as an unsigned
// integer, and mod is on that unsigned value. A key is in the canary when
// bucket < percent in basis points (5% is 500, 12.25% is 1225); 0% puts nobody
// in, 100% everybody. Worked example, salt "api-v2", key "user-42":
//
//	XXH64("api-v2:user-42") = 17157458795751962486 (0xee1b89dee1327776)
//	bucket = 17157458795751962486 mod 10000 = 2486
//
// so user-42 is in the canary from 24.87% up and not at 24.86%. Any system
// (a feature-flag service, a log pipeline, a SQL query) computing the same
// formula gets the same assignment; testdata/buckets.golden pins 1,000 such
// vectors so the formula cannot drift.
//
// Consequences the rollout relies on: the same key gets the same decision on
// every instance and after every restart (sticky); raising the percentage
// only adds keys to the canary and lowering it only removes them (monotonic);
// different salts assign independently, so routes with their own salts (the
// default) do not put the same users in every canary, while routes that share
// a salt deliberately agree.
//
// # The ip key
//
// With key: ip the key is the client address in canonical text (dotted quad
// for IPv4, including IPv4-mapped IPv6; RFC 5952 compressed lower-case IPv6;
// no port, no zone), chosen by ClientAddr:
//
//   - no trusted proxies, or the socket peer is not inside one of them: the
//     peer's address. X-Forwarded-For is ignored, because a client can write
//     anything there.
//   - the peer is trusted: X-Forwarded-For (every header line, in order, as one
//     comma-separated list) is walked from right to left; entries inside
//     trusted networks are skipped, and the first untrusted entry is the
//     client. Entries left of it were written by the client and are never
//     read. If all entries are trusted, the leftmost is used; if there is no
//     X-Forwarded-For, the peer. An entry that is not an address ends the walk
//     with no key (on_missing applies), as does an X-Forwarded-For announced
//     as a trailer.
//
// # Run-time changes
//
// The rollout controller changes a compiled Splitter with SetPercent and
// SetHalted; both are atomics, and Decide takes no lock. Halting sends
// everything to stable (a rollback) while keeping the percentage, so resuming
// restores the same users' assignment.
//
// # Metrics
//
// Reason values are a fixed set ("forced", "halted", "cohort",
// "missing_key", "percent") so the proxy can use them as label values of
// shadowproxy_split_decisions_total{route,upstream,reason}.
package splitter
