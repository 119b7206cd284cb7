// Command benchctl is the small toolbox bench/compare.sh uses so that the
// script needs nothing but bash, taskset and the tools under test:
//
//	benchctl ports N                 print N free loopback TCP ports
//	benchctl wait ADDR [TIMEOUT]     wait until ADDR accepts TCP connections
//	benchctl get ADDR PATH           GET http://ADDR/PATH on a fresh connection, print the body
//	benchctl metric ADDR NAME LABEL  sum a Prometheus counter's samples whose labels contain LABEL
//	benchctl report IN OUT           turn the raw key=value records into Markdown tables
//
// Everything it dials is the loopback address it is given; ports always
// bind 127.0.0.1.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/shadowproxy/shadowproxy/bench/internal/scrape"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "ports":
		err = cmdPorts(args)
	case "wait":
		err = cmdWait(args)
	case "get":
		err = cmdGet(args)
	case "metric":
		err = cmdMetric(args)
	case "report":
		err = cmdReport(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchctl %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchctl ports N | wait ADDR [TIMEOUT] | get ADDR PATH | metric ADDR NAME LABEL | report IN OUT")
	os.Exit(2)
}

// cmdPorts binds N listeners on 127.0.0.1:0 at once (so the ports differ),
// prints their ports and closes them. Another process could take one in the
// short window before the caller binds it; the caller's readiness check then
// fails loudly rather than measuring the wrong server.
func cmdPorts(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 100 {
		return fmt.Errorf("N must be 1..100")
	}
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

func cmdWait(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("want ADDR [TIMEOUT]")
	}
	if err := scrape.CheckLoopback(args[0]); err != nil {
		return err
	}
	timeout := 10 * time.Second
	if len(args) == 2 {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return err
		}
		timeout = d
	}
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %v", args[0], timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdGet(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want ADDR PATH")
	}
	b, err := scrape.Get(args[0], args[1])
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}

// cmdMetric prints the sum of the samples of metric NAME (text exposition
// format, from http://ADDR/metrics) whose label set contains LABEL, e.g.
// outcome="dropped". An empty LABEL sums every sample.
func cmdMetric(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("want ADDR NAME LABEL")
	}
	sum, err := scrape.MetricSum(args[0], args[1], args[2])
	if err != nil {
		return err
	}
	fmt.Println(strconv.FormatFloat(sum, 'f', -1, 64))
	return nil
}
