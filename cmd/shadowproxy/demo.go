package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/demo"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "proxy `address` (loopback)")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "admin `address` (loopback)")
	rps := fs.Int("rps", 40, "simulated user requests per second sent to the proxy (0: none)")
	failAfter := fs.Duration("fail-v2-after", 2*time.Minute, "make v2's checkout answer 500 after this long, to watch the rollout roll it back (0: never, and the rollout completes)")
	hold := fs.Duration("hold", demo.DefaultPacing.Hold, "how long the checkout rollout holds each step before promoting")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until interrupted)")
	printConfig := fs.Bool("print-config", false, "print the demo configuration and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: shadowproxy demo [flags]\n\nStarts three JSON backends on loopback (v1 stable, v1-twin, v2 candidate), the proxy\nin front of them with a built-in configuration, and light simulated traffic.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	for _, addr := range []string{*listen, *adminListen} {
		if !isLoopback(addr) {
			fmt.Fprintf(stderr, "shadowproxy demo: %s is not a loopback address; the demo only listens on this machine\n", addr)
			return exitUsage
		}
	}
	bs, err := demo.StartBackends()
	if err != nil {
		fmt.Fprintf(stderr, "shadowproxy demo: %v\n", err)
		return exitNo
	}
	defer bs.Close()
	if *hold <= 0 {
		fmt.Fprintf(stderr, "shadowproxy demo: -hold must be positive\n")
		return exitUsage
	}
	text := demo.ConfigYAMLPaced(bs, *listen, *adminListen, demo.Pacing{Hold: *hold})
	if *printConfig {
		fmt.Fprint(stdout, text)
		return exitOK
	}
	cfg, err := config.Load("demo.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		fmt.Fprintf(stderr, "shadowproxy demo: built-in configuration invalid (a bug):\n%v\n", err)
		return exitNo
	}
	a, err := app.New(cfg, app.Options{Version: version})
	if err != nil {
		fmt.Fprintf(stderr, "shadowproxy demo: %v\n", err)
		return exitNo
	}
	if err := a.Start(); err != nil {
		fmt.Fprintf(stderr, "shadowproxy demo: %v (is another demo running? try -listen 127.0.0.1:18080 -admin-listen 127.0.0.1:19901)\n", err)
		return exitNo
	}
	proxyURL, adminURL := "http://"+a.ProxyAddr(), "http://"+a.AdminAddr()
	canaryUser, stableUser := demo.CheckoutUsers()
	fmt.Fprintf(stdout, `
shadowproxy demo is running.

  proxy      %[1]s
  admin      %[2]s   (dashboard, /metrics, /api/v1/...)
  backends   v1 %[3]s   v1-twin %[4]s   v2 %[5]s

Dark launch (/api/ served by v1, mirrored to v2, v1-twin cancels the noise):
  curl -s %[1]s/api/users/u5
  curl -s %[2]s/api/v1/routes          # match rate, top differing fields, learnt noise
  curl -s '%[2]s/api/v1/diffs?route=api&limit=3'
  curl -s %[2]s/metrics | grep -E 'shadowproxy_(shadow_requests|comparisons)_total'

Canary (/checkout/ sends %[7]d%% of users to v2, sticky by X-User-ID):
  curl -si -H 'X-User-ID: %[8]s' %[1]s/checkout/cart   # lands on v2
  curl -si -H 'X-User-ID: %[9]s' %[1]s/checkout/cart   # stays on v1
  curl -si -H 'X-Internal: true' %[1]s/checkout/cart   # internal cohort: always v2

Rollout (/checkout/ walks v2 10%% -> 25%% -> 50%% -> 100%%, holding %[10]s at each step):
  curl -s %[2]s/api/v1/rollouts
  curl -s -X POST -H 'X-Shadowproxy-Admin: 1' %[2]s/api/v1/rollouts/checkout/pause      # or resume, promote, rollback
%[11]s
Simulated users send about %[6]d requests/s. Open %[2]s/#checkout for the rollout,
%[2]s/#api for the dark launch. Ctrl-C stops.
`, proxyURL, adminURL, bs.V1.URL, bs.Twin.URL, bs.V2.URL, *rps, demo.CheckoutPercent, canaryUser, stableUser, *hold, storyLine(*hold, *failAfter))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *rps > 0 {
		go func() {
			if _, err := demo.Traffic(ctx, proxyURL, *rps, 0); err != nil {
				a.Logger().Error("demo traffic", zap.Error(err))
			}
		}()
	}
	if *failAfter > 0 {
		time.AfterFunc(*failAfter, func() {
			a.Logger().Warn("demo: v2's checkout now answers 500; watch the rollout roll it back (dashboard: #checkout)")
			bs.V2.SetFailing(true)
		})
	}
	if *duration > 0 {
		go func() {
			time.Sleep(*duration)
			a.Logger().Info("demo duration elapsed")
			cancel()
		}()
		select {
		case <-ctx.Done():
		case err := <-a.Errors():
			fmt.Fprintf(stderr, "shadowproxy demo: %v\n", err)
			return exitNo
		}
		cancel()
		if err := a.Shutdown(context.Background()); err != nil {
			return exitNo
		}
		return exitOK
	}
	return serveUntilSignal(a)
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// storyLine tells when the rollout will promote and when v2 breaks, so a
// newcomer knows what to watch and when.
func storyLine(hold, failAfter time.Duration) string {
	done := 3 * hold
	if failAfter <= 0 || failAfter >= done {
		return fmt.Sprintf("  Timeline: promotions about every %s; 100%% after about %s.\n", hold, done)
	}
	return fmt.Sprintf("  Timeline: promotions about every %s; at %s v2's checkout starts failing and the\n"+
		"  guardrail rolls the canary back to 0%% within seconds (the Rollout panel says why).\n", hold, failAfter)
}
