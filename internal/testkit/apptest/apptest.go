// Package apptest starts the whole program (an app.App, and the demo's
// backends when a test wants them) on loopback ports for the tests of other
// packages, and stops it when the test ends.
//
// It is separate from testkit because it imports app: app's own tests use
// testkit, and could not import a package that imports app.
package apptest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/demo"
)

// Running is a started App with the base URLs of its two listeners.
type Running struct {
	App      *app.App
	ProxyURL string // http://127.0.0.1:port of the proxy listener
	AdminURL string // http://127.0.0.1:port of the admin listener
}

// Load compiles yamlText (named name in messages; no environment) and fails
// the test, printing the text, if it does not load.
func Load(t testing.TB, name, yamlText string) *config.Config {
	t.Helper()
	cfg, err := config.Load(name, []byte(yamlText), NoEnv)
	if err != nil {
		t.Fatalf("%s does not load:\n%v\n%s", name, err, yamlText)
	}
	return cfg
}

// NoEnv is an environment with no variables, so that a test's configuration
// never depends on the machine's.
func NoEnv(string) (string, bool) { return "", false }

// Start loads yamlText, starts an App with opts (a no-op logger when
// opts.Logger is nil) and shuts it down when the test ends.
func Start(t testing.TB, yamlText string, opts app.Options) *Running {
	t.Helper()
	cfg := Load(t, "test.yaml", yamlText)
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	a, err := app.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return &Running{App: a, ProxyURL: "http://" + a.ProxyAddr(), AdminURL: "http://" + a.AdminAddr()}
}

// DemoBackends starts the demo's backends on loopback ports until the test
// ends; demo.ConfigYAML(bs, "127.0.0.1:0", "127.0.0.1:0") is their
// configuration.
func DemoBackends(t testing.TB) *demo.Backends {
	t.Helper()
	bs, err := demo.StartBackends()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bs.Close)
	return bs
}
