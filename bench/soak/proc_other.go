//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

var errNoProc = errors.New("not available without /proc; the admin /metrics values are used")

func processRSS(int) (float64, error) { return 0, errNoProc }

func processFDs(int) (float64, error) { return 0, errNoProc }

func dieWithParent(*exec.Cmd) {}
