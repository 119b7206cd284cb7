package main

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

// pinning says where the load generator and the servers run; both are -1
// when the machine has fewer than two CPUs.
type pinning struct{ load, server int }

// startPinned starts cmd with its CPU affinity set to cpu (inherited from
// the forking thread, which is pinned for the duration of the fork and then
// put back on the load CPU). cpu < 0 starts it unpinned.
func startPinned(cmd *exec.Cmd, p pinning) error {
	if p.server < 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setAffinity(0, maskOf(p.server)); err != nil {
		return err
	}
	err := cmd.Start()
	if rerr := setAffinity(0, maskOf(p.load)); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// child is a server process started by the driver.
type child struct {
	name   string
	cmd    *exec.Cmd
	addr   []string
	log    *os.File
	exited chan struct{} // closed once the process has been reaped
}

// startChild runs this executable with args, pinned to the server CPU, and
// waits for it to write its listen addresses (one per line) to a file.
func startChild(dir, name string, p pinning, env []string, args ...string) (*child, error) {
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
	c := &child{name: name, cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && strings.HasSuffix(string(b), "\n") {
			c.addr = strings.Fields(string(b))
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
			c.stop()
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

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// signal sends sig to the child.
func (c *child) signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// stop sends SIGTERM, waits up to 10 s for the process to exit, then kills
// it.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.log.Close()
}

// cpuTime is utime+stime of pid (clock ticks are 100 Hz on Linux).
func cpuTime(pid int) (time.Duration, error) {
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

// peakRSS is VmHWM of pid in KiB.
func peakRSS(pid int) int64 {
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
