package metrics

import "sync/atomic"

// atomicBool is a bool safe to read on the request path while StatusCounters
// is built; only set before the value is shared.
type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) load() bool   { return b.v.Load() }
func (b *atomicBool) store(v bool) { b.v.Store(v) }
