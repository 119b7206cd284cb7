package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any goroutine outlives the tests: mirror
// workers, comparison workers, request goroutines and raw test servers must
// all have ended by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(processWide(), fasthttpJanitors()...)...)
}

// processWide lists the goroutines that exist once per process by design
// and never end. IgnoreAnyFunction, not IgnoreTopFunction: the top of their
// stacks is time.Sleep, which must not be ignored in general.
func processWide() []goleak.Option {
	return []goleak.Option{
		// fasthttp starts this on the first request any fasthttp.Server
		// serves (serverDateOnce.Do(updateServerDate)) to refresh the cached
		// Date header every second; it is shared by every server in the
		// process and has no stop.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	}
}

// fasthttpJanitors are per-instance fasthttp goroutines that have no stop
// hook and end by themselves after a fixed sleep, so at the end of the
// package they may still be asleep although nothing leaked:
//   - a Server's idle-worker cleaner sleeps MaxIdleWorkerDuration (10s) and
//     only then notices that Shutdown stopped the pool;
//   - a HostClient's idle-connection cleaner sleeps until its oldest idle
//     connection expires (max_idle_conn_duration, 60s by default) before it
//     notices that the pool is empty and ends;
//   - the DNS cache cleaner of the TCPDialer an upstream with a host name
//     (not an address) dials through ticks every second until its cached
//     entries expire, a minute after the last dial;
//
// The fault tests (faults_test.go) do not ignore the second: they use a 1s
// max_idle_conn_duration and wait for the cleaners to end, so a pool that is
// never closed still shows up as a leak there.
func fasthttpJanitors() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
	}
}
