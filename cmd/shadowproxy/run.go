package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shadowproxy.yaml", "configuration `file`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy run -config FILE\n\nRuns the proxy. SIGHUP reloads the file; SIGTERM or SIGINT drains and exits.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		return reportLoadError(stderr, "run", *path, err)
	}
	a, err := app.New(cfg, app.Options{ConfigPath: *path, Version: version})
	if err != nil {
		fmt.Fprintf(stderr, "shadowproxy run: %v\n", err)
		return exitNo
	}
	for _, w := range cfg.Warnings() {
		a.Logger().Warn("configuration warning", zap.String("warning", w))
	}
	if err := a.Start(); err != nil {
		fmt.Fprintf(stderr, "shadowproxy run: %v\n", err)
		return exitNo
	}
	return serveUntilSignal(a)
}

// serveUntilSignal reloads on SIGHUP and drains on SIGTERM/SIGINT.
func serveUntilSignal(a *app.App) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-a.Errors():
			if err != nil {
				a.Logger().Error("listener failed", zap.Error(err))
				return exitNo
			}
		case s := <-sigs:
			if s == syscall.SIGHUP {
				a.Reload()
				continue
			}
			a.Logger().Info("signal received", zap.String("signal", s.String()))
			if err := a.Shutdown(context.Background()); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return exitNo
			}
			return exitOK
		}
	}
}

// reportLoadError prints why a configuration did not load and returns the
// exit code: 1 for an invalid file (every error, each with its line and
// field path), 2 for one that cannot be read.
func reportLoadError(stderr io.Writer, cmd, path string, err error) int {
	var errs config.Errors
	if errors.As(err, &errs) && len(errs) > 0 {
		fmt.Fprintf(stderr, "%s: %d error(s)\n%v\n", path, len(errs), err)
		return exitNo
	}
	fmt.Fprintf(stderr, "shadowproxy %s: %v\n", cmd, err)
	return exitUsage
}
