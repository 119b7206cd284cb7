package child

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// TempDir makes the harness's work directory. On SIGINT or SIGTERM it is
// removed and the harness exits 130 (the children follow through their
// parent-death signal); cleanup removes it at a normal end.
func TempDir(harness string) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", harness)
	if err != nil {
		return "", nil, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			os.RemoveAll(dir)
			fmt.Fprintf(os.Stderr, "%s: interrupted\n", harness)
			os.Exit(130)
		}
	}()
	return dir, func() {
		signal.Stop(sigs)
		os.RemoveAll(dir)
	}, nil
}

// Server is what a child role serves: bench/internal/backend's servers.
type Server interface {
	Addr() string
	Serve() error
}

// Serve runs servers, writes their addresses to addrFile, and returns at
// SIGTERM or SIGINT (nil) or when one of them fails.
func Serve(addrFile string, servers ...Server) error {
	errc := make(chan error, len(servers))
	addrs := make([]string, 0, len(servers))
	for _, s := range servers {
		addrs = append(addrs, s.Addr())
		go func() { errc <- s.Serve() }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := WriteAddrs(addrFile, addrs...); err != nil {
		return err
	}
	select {
	case <-sigs:
		return nil
	case err := <-errc:
		return err
	}
}

// LoadClient is a keep-alive client to addr with exactly one connection per
// load-generating goroutine (conns of them).
func LoadClient(addr string, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                addr,
		MaxConns:            conns,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        10 * time.Second,
		MaxIdleConnDuration: time.Minute,
		ReadBufferSize:      8 << 10,
		Dial: func(addr string) (net.Conn, error) {
			return net.DialTimeout("tcp", addr, 2*time.Second)
		},
	}
}

// LoadAvg is the first three fields of /proc/loadavg: a hint of how busy
// the shared machine was.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// Uptime is the output of uptime(1), or the load average when it is not
// installed.
func Uptime() string {
	if b, err := exec.Command("uptime").Output(); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "load average " + LoadAvg()
}
