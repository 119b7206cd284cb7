package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// EtcdConfig says how to reach etcd (config.Etcd, without the import).
type EtcdConfig struct {
	Endpoints          []string
	DialTimeout        time.Duration
	Username, Password string
	CAFile             string
	CertFile, KeyFile  string
}

// NewClient connects to etcd. It does not wait for a connection: a member
// starts (and serves) while etcd is down, and the client reconnects by itself.
func NewClient(c EtcdConfig, log *zap.Logger) (*clientv3.Client, error) {
	if log == nil {
		// clientv3 would build its own logger and print to stderr.
		log = zap.NewNop()
	}
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		Username:    c.Username,
		Password:    c.Password,
		// Keepalives notice a dead etcd within seconds even on an idle
		// connection, so the up gauge and the watch recover promptly.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               log,
		// grpc's default reconnect backoff grows to 2 minutes: after an
		// outage the fleet would resume long after etcd is back. Retrying
		// at most every 2s costs nothing at this scale.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	https := false
	for _, ep := range c.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	// https endpoints without a ca_file are verified against the system
	// roots, never left unverified.
	if https || c.CAFile != "" || c.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("fleet.etcd.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("fleet.etcd.tls.ca_file %s: no PEM certificate found", c.CAFile)
			}
			tc.RootCAs = pool
		}
		if c.CertFile != "" {
			kp, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("fleet.etcd.tls: load client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", c.Endpoints, err)
	}
	return cli, nil
}
