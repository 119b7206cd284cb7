package diff

import (
	"bytes"
	"slices"
	"strings"
	"sync"
)

// NoiseField is one learnt (path, kind) of a NoiseTracker snapshot.
type NoiseField struct {
	Path string `json:"path"`
	Kind Kind   `json:"kind"`
	// Bytes marks whole-body noise of bodies compared as bytes (an HTML
	// page with a nonce); it never covers JSON differences.
	Bytes bool `json:"bytes,omitempty"`
	// Disagreements and Observations are counted over the noise window.
	Disagreements uint64  `json:"disagreements"`
	Observations  uint64  `json:"observations"`
	Rate          float64 `json:"rate"`
	// Noisy: past learning, with a disagreement in the window, so the
	// comparative rule may explain candidate differences with it.
	Noisy bool `json:"noisy"`
}

// windowBuckets splits a noise window into this many buckets; counts expire
// a bucket at a time, so evidence older than the window is gone entirely.
const windowBuckets = 10

// window counts, over the last `size` observations, how many had each key.
type window struct {
	per     uint32 // observations per bucket
	obs     [windowBuckets]uint32
	cur     int
	keys    map[string]*[windowBuckets]uint32
	maxKeys int
	dropped uint64
	total   uint64 // every observation ever (learning is judged on it)
}

func newWindow(size, maxKeys int) *window {
	return &window{per: uint32(max(1, size/windowBuckets)), keys: map[string]*[windowBuckets]uint32{}, maxKeys: maxKeys}
}

// observe counts one observation carrying the given distinct keys.
func (w *window) observe(keys []string) {
	if w.obs[w.cur] >= w.per {
		w.cur = (w.cur + 1) % windowBuckets
		w.obs[w.cur] = 0
		for k, c := range w.keys {
			c[w.cur] = 0
			if *c == [windowBuckets]uint32{} {
				delete(w.keys, k)
			}
		}
	}
	w.obs[w.cur]++
	w.total++
	for _, k := range keys {
		c := w.keys[k]
		if c == nil {
			if len(w.keys) >= w.maxKeys {
				w.dropped++
				continue
			}
			c = new([windowBuckets]uint32)
			w.keys[k] = c
		}
		c[w.cur]++
	}
}

func (w *window) n() uint64 {
	var n uint64
	for _, o := range w.obs {
		n += uint64(o)
	}
	return n
}

// count and rate take the key as bytes so that lookups do not allocate.
func (w *window) count(k []byte) uint64 {
	c := w.keys[string(k)]
	if c == nil {
		return 0
	}
	var n uint64
	for _, v := range c {
		n += uint64(v)
	}
	return n
}

func (w *window) rate(k []byte) float64 {
	n := w.n()
	if n == 0 {
		return 0
	}
	return float64(w.count(k)) / float64(n)
}

// A key is one byte of kind, one byte of body mode ('b' for bytes, 'j'
// otherwise) and the path.
func appendKey(dst []byte, k Kind, bytesBody bool, path []byte) []byte {
	mode := byte('j')
	if bytesBody {
		mode = 'b'
	}
	dst = append(dst, byte(k), mode)
	return append(dst, path...)
}

func splitKey(k string) (Kind, bool, string) { return Kind(k[0]), k[1] == 'b', k[2:] }

// structural kinds make a node noisy as a whole: its presence or type
// varies, so what is below it may vary too.
var structural = [...]Kind{Added, Removed, TypeChanged}

// Observation is what one primary-vs-secondary comparison says about one
// request: every difference, uncapped, by exact path and kind. It is nil
// when the comparison teaches nothing (an upstream failed, or the status
// codes differ: an error page differs from a real answer everywhere).
type Observation struct {
	exact map[string]struct{} // appendKey of exact paths
	norm  []string            // distinct appendKey of normalized paths
}

// collector is the Filter used on primary-vs-secondary: it records every
// difference and drops it, so the 100-difference cap never loses one.
type collector struct {
	obs  *Observation
	seen map[string]struct{}
	buf  []byte
}

func (c *collector) Noise(k *Key) bool {
	c.buf = appendKey(c.buf[:0], k.Kind, k.Bytes, k.Path)
	c.obs.exact[string(c.buf)] = struct{}{}
	c.buf = appendKey(c.buf[:0], k.Kind, k.Bytes, k.Norm)
	if _, ok := c.seen[string(c.buf)]; !ok {
		s := string(c.buf)
		c.seen[s] = struct{}{}
		c.obs.norm = append(c.obs.norm, s)
	}
	return true
}

// ObserveSecondary compares the primary with the secondary (an instance of
// the primary's version) for noise learning. It returns nil when the
// comparison teaches nothing.
func ObserveSecondary(primary, secondary *Capture, rules *Rules) *Observation {
	o := &Observation{exact: map[string]struct{}{}}
	col := &collector{obs: o, seen: map[string]struct{}{}}
	r := CompareFiltered(primary, secondary, rules, col)
	if r.Outcome == Uncomparable || (primary != nil && secondary != nil && primary.Status != secondary.Status) {
		return nil
	}
	return o
}

// NoiseTracker learns, for one endpoint, which differences are noise and
// judges primary-vs-candidate comparisons with it (see Judge). It keeps
// two kinds of windows over the last noise.window observations:
//
//   - noise: per (normalized path, kind), how often the primary and the
//     secondary disagreed;
//   - candidate: per shadow target and (normalized path, kind), how often
//     the primary and that target differed.
//
// Kinds never borrow each other's noise: a timestamp whose value varies
// does not hide the same field changing type or disappearing. Whole-body
// noise of bodies compared as bytes is its own kind of evidence and never
// covers JSON differences.
//
// At most max_paths keys are tracked per window; further ones are counted
// in Dropped. NoiseTracker is safe for concurrent use.
type NoiseTracker struct {
	minObs    uint64
	absolute  float64
	relative  float64
	winSize   int
	maxPaths  int
	always    []noisePattern
	never     []noisePattern
	secondary bool

	mu      sync.RWMutex
	noise   *window
	skipped uint64
	cand    map[string]*window // by target
}

type noisePattern struct {
	lit string // "header/Etag", "body": compared case-insensitively
	pat Pattern
}

func (p *noisePattern) match(path []byte) bool {
	if p.lit != "" {
		return strings.EqualFold(p.lit, b2s(path))
	}
	return p.pat.Match(b2s(path))
}

func compileNoisePatterns(list []string) []noisePattern {
	var out []noisePattern
	for _, s := range list {
		if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "**") {
			out = append(out, noisePattern{pat: MustParsePattern(s).subtree()})
			continue
		}
		out = append(out, noisePattern{lit: s})
	}
	return out
}

// NewNoiseTracker returns a tracker using the noise settings of r (defaults
// when r is nil). Without a secondary in r, nothing is learnt and only
// always_noise applies.
func NewNoiseTracker(r *Rules) *NoiseTracker {
	spec := Spec{}
	if r != nil {
		spec = r.spec
	}
	spec.ApplyDefaults()
	t := &NoiseTracker{
		minObs:    uint64(spec.Noise.MinObservations),
		absolute:  float64(spec.Noise.Threshold),
		relative:  float64(spec.Noise.Relative),
		winSize:   spec.Noise.Window,
		maxPaths:  spec.Noise.MaxPaths,
		always:    compileNoisePatterns(spec.AlwaysNoise),
		never:     compileNoisePatterns(spec.NeverNoise),
		secondary: spec.Secondary != "",
	}
	t.resetLocked()
	return t
}

func (t *NoiseTracker) resetLocked() {
	t.noise = newWindow(t.winSize, t.maxPaths)
	t.cand = map[string]*window{}
	t.skipped = 0
}

// Reset forgets everything learnt: the endpoint is learning again.
func (t *NoiseTracker) Reset() {
	t.mu.Lock()
	t.resetLocked()
	t.mu.Unlock()
}

// Observe counts one primary-vs-secondary observation; nil (a comparison
// that teaches nothing) is counted as skipped.
func (t *NoiseTracker) Observe(o *Observation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o == nil {
		t.skipped++
		return
	}
	t.noise.observe(o.norm)
}

// Learning reports whether verdicts are still withheld: the route has a
// secondary and this endpoint has not yet seen min_observations of it.
func (t *NoiseTracker) Learning() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.learningLocked()
}

func (t *NoiseTracker) learningLocked() bool { return t.secondary && t.noise.total < t.minObs }

// Judgement is a judged primary-vs-candidate comparison.
type Judgement struct {
	// Result is noise-filtered; its outcome is Learning while the endpoint
	// is learning.
	Result Result
	// Raw lists the distinct normalized paths that differed before noise
	// was filtered (ignored paths excluded), for raw-versus-filtered field
	// counts.
	Raw []string
}

// Judge compares the primary with a candidate (target) and decides which
// differences are noise. A difference at path P of kind K is noise when:
//
//  1. P matches never_noise: never noise; else if it matches always_noise:
//     always noise;
//  2. per request, when the secondary answered the same request (sec not
//     nil): the secondary also differed from the primary at P with kind K,
//     or differed structurally (added, removed, type) at an ancestor of P;
//  3. otherwise comparatively, once the endpoint has learnt: the noise rate
//     rn of (P, K) over the window is above zero and explains the
//     candidate's own difference rate rc for (P, K):
//     rc <= rn + noise.threshold  or  rc <= rn × (1 + noise.relative).
//     A node that is structurally noisy also explains its descendants the
//     same way (with its structural rate as rn).
//
// So a field noisy in 6% of requests still reports a candidate that differs
// on it always (rc 100% is not explained by rn 6%), and rule 2 reports it in
// the ~94% of requests where the secondary agreed with the primary.
func (t *NoiseTracker) Judge(target string, primary, shadow *Capture, rules *Rules, sec *Observation) Judgement {
	f := &judge{t: t, sec: sec, seen: map[string]struct{}{}}
	t.mu.RLock()
	f.cand = t.cand[target]
	f.learnt = !t.learningLocked() && t.secondary
	res := CompareFiltered(primary, shadow, rules, f)
	learning := t.learningLocked()
	t.mu.RUnlock()

	j := Judgement{Result: res}
	for _, k := range f.keys {
		_, _, p := splitKey(k)
		if !slices.Contains(j.Raw, p) {
			j.Raw = append(j.Raw, p)
		}
	}
	if len(res.Differences) > 0 && res.Differences[0].Path == StatusPath {
		// The status is never offered to the filter: never noise.
		j.Raw = append(j.Raw, StatusPath)
	}
	// Candidate rates only serve the comparative rule, which needs a
	// secondary to learn from.
	if t.secondary && res.Outcome != Uncomparable && primary != nil && shadow != nil && primary.Status == shadow.Status {
		t.mu.Lock()
		w := t.cand[target]
		if w == nil {
			w = newWindow(t.winSize, t.maxPaths)
			t.cand[target] = w
		}
		w.observe(f.keys)
		t.mu.Unlock()
	}
	if learning && res.Outcome != Uncomparable {
		j.Result.Outcome = Learning
	}
	return j
}

// judge is the Filter of one primary-vs-candidate comparison.
type judge struct {
	t      *NoiseTracker
	sec    *Observation
	cand   *window
	learnt bool
	buf    []byte
	seen   map[string]struct{}
	keys   []string // distinct normalized keys seen, noise or not
}

func (f *judge) Noise(k *Key) bool {
	f.buf = appendKey(f.buf[:0], k.Kind, k.Bytes, k.Norm)
	if _, ok := f.seen[string(f.buf)]; !ok {
		s := string(f.buf)
		f.seen[s] = struct{}{}
		f.keys = append(f.keys, s)
	}
	t := f.t
	for i := range t.never {
		if t.never[i].match(k.Path) {
			return false
		}
	}
	for i := range t.always {
		if t.always[i].match(k.Path) {
			return true
		}
	}
	if f.sec != nil && f.perRequest(k) {
		return true
	}
	return f.learnt && f.comparative(k)
}

// perRequest applies rule 2 of Judge.
func (f *judge) perRequest(k *Key) bool {
	f.buf = appendKey(f.buf[:0], k.Kind, k.Bytes, k.Path)
	if _, ok := f.sec.exact[string(f.buf)]; ok {
		return true
	}
	if k.Bytes || len(k.Path) == 0 || k.Path[0] != '/' {
		return false
	}
	for p := parentOf(k.Path); p != nil; p = parentOf(p) {
		for _, sk := range structural {
			f.buf = appendKey(f.buf[:0], sk, false, p)
			if _, ok := f.sec.exact[string(f.buf)]; ok {
				return true
			}
		}
	}
	return false
}

// comparative applies rule 3 of Judge.
func (f *judge) comparative(k *Key) bool {
	t := f.t
	f.buf = appendKey(f.buf[:0], k.Kind, k.Bytes, k.Norm)
	rn := t.noise.rate(f.buf)
	var rc float64
	if f.cand != nil {
		// The current comparison is not yet counted; count it in, so
		// the very first difference of a key has a rate too.
		n := f.cand.n() + 1
		rc = float64(f.cand.count(f.buf)+1) / float64(n)
	} else {
		rc = 1
	}
	if t.explains(rn, rc) {
		return true
	}
	if k.Bytes || len(k.Norm) == 0 || k.Norm[0] != '/' {
		return false
	}
	for p := parentOf(k.Norm); p != nil; p = parentOf(p) {
		for _, sk := range structural {
			f.buf = appendKey(f.buf[:0], sk, false, p)
			if rn := t.noise.rate(f.buf); t.explains(rn, rc) {
				return true
			}
		}
	}
	return false
}

// explains is the comparative rule: noise at rate rn explains candidate
// differences at rate rc when rn > 0 and rc is within the absolute
// threshold of rn or within the relative one.
func (t *NoiseTracker) explains(rn, rc float64) bool {
	return rn > 0 && (rc <= rn+t.absolute || rc <= rn*(1+t.relative))
}

// parentOf returns the JSON Pointer parent of path, or nil at the top.
func parentOf(path []byte) []byte {
	i := bytes.LastIndexByte(path, '/')
	if i <= 0 {
		return nil
	}
	return path[:i]
}

// Fields lists the learnt keys, noisiest first.
func (t *NoiseTracker) Fields() []NoiseField {
	t.mu.RLock()
	n := t.noise.n()
	learnt := !t.learningLocked()
	out := make([]NoiseField, 0, len(t.noise.keys))
	for k := range t.noise.keys {
		kind, bytesBody, p := splitKey(k)
		dis := t.noise.count([]byte(k))
		f := NoiseField{Path: p, Kind: kind, Bytes: bytesBody, Disagreements: dis, Observations: n, Noisy: learnt && dis > 0}
		if n > 0 {
			f.Rate = float64(dis) / float64(n)
		}
		out = append(out, f)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b NoiseField) int {
		switch {
		case a.Rate > b.Rate:
			return -1
		case a.Rate < b.Rate:
			return 1
		}
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
	return out
}

// NoisyCount is the number of keys currently noisy, for the
// shadowproxy_noise_fields{route} gauge.
func (t *NoiseTracker) NoisyCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.learningLocked() {
		return 0
	}
	return len(t.noise.keys)
}

// Observations returns how many primary-vs-secondary results were counted
// (since start or the last reset) and how many were skipped.
func (t *NoiseTracker) Observations() (counted, skipped uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.noise.total, t.skipped
}

// Dropped counts keys that could not be tracked because max_paths keys
// already were.
func (t *NoiseTracker) Dropped() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	d := t.noise.dropped
	for _, w := range t.cand {
		d += w.dropped
	}
	return d
}
