// Package child starts and stops the server processes of the pure-Go
// benchmark harnesses (bench/shadowcmp, bench/holcmp): each is the
// harness's own executable run with a role flag, pinned to the server CPU
// with GOMAXPROCS=1 while the load generator stays on another, and reports
// its loopback listen addresses through a file. It also reads a child's CPU
// time and peak RSS from /proc. Linux only, like the harnesses.
package child

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// cpuMask is a Linux cpu_set_t large enough for 1024 CPUs.
type cpuMask [16]uint64

func maskOf(cpu int) cpuMask {
	var m cpuMask
	m[cpu/64] |= 1 << (uint(cpu) % 64)
	return m
}

// setAffinity pins thread (or process) tid; 0 is the calling thread.
func setAffinity(tid int, m cpuMask) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m)))
	if errno != 0 {
		return errno
	}
	return nil
}

// pinProcess pins every thread of this process to cpu. Threads created
// later inherit the mask of the thread that creates them.
func pinProcess(cpu int) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := setAffinity(tid, maskOf(cpu)); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

// Pinning says where the load generator and the servers run; both are -1
// when the machine has fewer than two CPUs.
type Pinning struct{ Load, Server int }

// PinLoad pins this process (the load generator) to CPU 0 with
// GOMAXPROCS=1 and returns a Pinning that puts the children on CPU 1; on a
// machine with fewer than two CPUs it pins nothing.
func PinLoad() (Pinning, error) {
	if runtime.NumCPU() < 2 {
		return Pinning{Load: -1, Server: -1}, nil
	}
	p := Pinning{Load: 0, Server: 1}
	if err := pinProcess(p.Load); err != nil {
		return p, fmt.Errorf("pin the load generator: %w", err)
	}
	runtime.GOMAXPROCS(1)
	return p, nil
}

// String describes the pinning.
func (p Pinning) String() string {
	if p.Server < 0 {
		return "none (fewer than 2 CPUs)"
	}
	return fmt.Sprintf("load generator on CPU %d, proxies and backends on CPU %d (GOMAXPROCS=1)", p.Load, p.Server)
}

// startPinned starts cmd with its CPU affinity set to cpu (inherited from
// the forking thread, which is pinned for the duration of the fork and then
// put back on the load CPU). cpu < 0 starts it unpinned.
func startPinned(cmd *exec.Cmd, p Pinning) error {
	if p.Server < 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setAffinity(0, maskOf(p.Server)); err != nil {
		return err
	}
	err := cmd.Start()
	if rerr := setAffinity(0, maskOf(p.Load)); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// Child is a server process started by the driver.
type Child struct {
	name string
	cmd  *exec.Cmd
	// Addr is what the child wrote to its address file, one per line.
	Addr   []string
	log    *os.File
	exited chan struct{} // closed once the process has been reaped
}

// Start runs this executable with args plus -addr-file FILE, pinned to the
// server CPU with GOMAXPROCS=1 and env added to its environment, its output
// in dir/name.log, and waits up to 15 s for it to write its listen
// addresses (one per line, see WriteAddrs) to FILE in dir.
func Start(dir, name string, p Pinning, env []string, args ...string) (*Child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addrFile := dir + "/" + name + ".addr"
	os.Remove(addrFile)
	logf, err := os.Create(dir + "/" + name + ".log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append(args, "-addr-file", addrFile)...)
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Whatever ends the driver (a panic, SIGINT, os.Exit) ends the child too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := startPinned(cmd, p); err != nil {
		logf.Close()
		return nil, err
	}
	c := &Child{name: name, cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && strings.HasSuffix(string(b), "\n") {
			c.Addr = strings.Fields(string(b))
			break
		}
		select {
		case <-c.exited:
			logf.Close()
			tail, _ := os.ReadFile(dir + "/" + name + ".log")
			return nil, fmt.Errorf("%s exited before listening:\n%s", name, tailLines(string(tail), 10))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("%s did not listen within 15s", name)
		}
	}
	return c, nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child.
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to 10 s for the process to exit, then kills
// it.
func (c *Child) Stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.log.Close()
}

// CPUTime is utime+stime of pid (clock ticks are 100 Hz on Linux).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// PeakRSS is VmHWM of pid in KiB.
func PeakRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// WriteAddrs writes the listen addresses, one per line, for the driver
// (atomically: the driver reads the file as soon as it exists).
func WriteAddrs(file string, addrs ...string) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
