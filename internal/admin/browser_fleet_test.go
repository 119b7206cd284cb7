//go:build browser

package admin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/shadowproxy/shadowproxy/config"
	"github.com/shadowproxy/shadowproxy/internal/app"
	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
)

// TestBrowserFleet: two members on a real etcd. The dashboard names the
// leader, its Fleet switch shows the requests of both members added up, and
// it says so when etcd goes away.
func TestBrowserFleet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := fleettest.StartEtcd(t)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bl)
	defer backend.Close()

	var admins, proxies []string
	for _, name := range []string{"a", "b"} {
		al, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		adminAddr := al.Addr().String()
		al.Close()
		text := fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: %s
admin: {token: %s}
upstreams:
  - {name: stable, url: http://%s}
  - {name: canary, url: http://%s}
routes:
  - name: shop
    upstream: stable
    split: {key: "header:X-User-ID", to: canary, percent: 0}
    rollout: {steps: [{percent: 10, hold: 1h}, {percent: 100}], promote_when: [{metric: error_rate_5xx, below: 1%%}]}
fleet:
  name: %s
  advertise: http://%s
  lease_ttl: 2s
  state_dir: %s
  etcd: {endpoints: [%s], prefix: /sp/browser, dial_timeout: 2s}
`, adminAddr, browserToken, bl.Addr(), bl.Addr(), name, adminAddr, filepath.Join(t.TempDir(), name), e.Endpoint())
		cfg, err := config.Load("fleet.yaml", []byte(text), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		a, err := app.New(cfg, app.Options{Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		defer a.Shutdown(context.Background())
		admins = append(admins, "http://"+a.AdminAddr())
		proxies = append(proxies, "http://"+a.ProxyAddr())
	}
	// 30 requests through a, 70 through b: the fleet view must say 100.
	for i, n := range []int{30, 70} {
		for j := range n {
			req, _ := http.NewRequest("GET", proxies[i]+"/x", nil)
			req.Header.Set("X-User-ID", "u"+strconv.Itoa(j))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}

	b := newBrowser(t, ctx)
	defer b.close()
	b.do("loading member a's dashboard", chromedp.Navigate(admins[0]+"/#shop"))
	b.poll("the fleet bar naming a leader with etcd up", `(() => {
		const f = document.getElementById('fleet');
		const info = document.getElementById('fleet-info').textContent;
		return !f.hidden && /leader [ab]/.test(info) && document.getElementById('fleet-etcd').textContent === 'up' ? [info] : null;
	})()`)
	b.poll("switching to fleet numbers", `(() => {
		const s = document.getElementById('scope');
		s.value = 'fleet';
		s.dispatchEvent(new Event('change'));
		return ['ok'];
	})()`)
	got := b.poll("fleet requests", `(() => {
		const p = document.getElementById('fleet-panel');
		const r = document.getElementById('fleet-requests');
		return p && !p.hidden && r && r.textContent === '100' ? [r.textContent] : null;
	})()`)
	t.Logf("fleet requests shown: %s", got[0])
	b.shot("dashboard-fleet.png")

	e.Stop()
	b.poll("etcd down shown", `(() => {
		const s = document.getElementById('fleet-etcd');
		return s && s.textContent === 'down' && document.getElementById('fleet').className === 'error' ? ['ok'] : null;
	})()`)
	b.shot("dashboard-fleet-etcd-down.png")
	b.checkConsole()
}
