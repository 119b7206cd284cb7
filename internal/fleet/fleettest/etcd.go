// Package fleettest runs a real etcd server in-process for tests: the
// embedded server from etcd's own module, on loopback ports, with its data
// in a test's temporary directory. It can be stopped and restarted on the
// same ports and data, to test a fleet through an etcd outage.
package fleettest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TLS makes the client listener https with the given server key pair;
// with ClientCA set, clients must present a certificate it signed.
type TLS struct {
	CertFile, KeyFile, ClientCA string
}

// Etcd is one embedded etcd server.
type Etcd struct {
	tls          *TLS
	t            testing.TB
	dir          string
	client, peer url.URL
	srv          *embed.Etcd
}

// StartEtcd starts a single-node etcd on two free loopback ports; it is
// stopped when the test ends.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return StartEtcdTLS(t, nil)
}

// StartEtcdTLS is StartEtcd with TLS on the client listener (nil: none).
func StartEtcdTLS(t testing.TB, tls *TLS) *Etcd {
	t.Helper()
	e := &Etcd{t: t, dir: t.TempDir(), client: freeURL(t), peer: freeURL(t), tls: tls}
	if tls != nil {
		e.client.Scheme = "https"
	}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// Endpoint is the client URL.
func (e *Etcd) Endpoint() string { return e.client.String() }

// Start (re)starts the server on its ports and data directory and waits
// until it serves (at most 30s).
func (e *Etcd) Start() {
	e.t.Helper()
	if e.srv != nil {
		return
	}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = e.dir
	cfg.ListenClientUrls = []url.URL{e.client}
	cfg.AdvertiseClientUrls = []url.URL{e.client}
	cfg.ListenPeerUrls = []url.URL{e.peer}
	cfg.AdvertisePeerUrls = []url.URL{e.peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// bcrypt's minimum cost: password checks at the default cost take
	// seconds under the race detector on a busy machine.
	cfg.BcryptCost = 4
	if e.tls != nil {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = e.tls.CertFile, e.tls.KeyFile
		if e.tls.ClientCA != "" {
			cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = e.tls.ClientCA, true
		}
	}
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	// Even at error level the server logs its own listeners closing on
	// every Stop; a test's output should hold the test's findings.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	var (
		srv *embed.Etcd
		err error
	)
	// The ports were free a moment ago; after a Stop the kernel may still
	// hold them for an instant, so retry briefly.
	for attempt := 0; attempt < 50; attempt++ {
		if srv, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("start embedded etcd: %v", err)
	}
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		srv.Close()
		e.t.Fatal("embedded etcd not ready within 30s")
	}
	e.srv = srv
}

// Stop stops the server, keeping its data for Start.
func (e *Etcd) Stop() {
	if e.srv == nil {
		return
	}
	e.srv.Close()
	e.srv = nil
}

// String describes the server for failure messages.
func (e *Etcd) String() string { return fmt.Sprintf("etcd %s (data %s)", e.client.String(), e.dir) }
