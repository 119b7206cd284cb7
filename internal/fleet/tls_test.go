package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/fleet/fleettest"
)

// writeCert issues a certificate signed by parent (self-signed when nil)
// and writes it and its key as PEM files in dir.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certFile, keyFile
}

// TestClientTLS: etcd over https requiring client certificates. A member
// with the CA and its client key pair works; one trusting the CA but
// without a client certificate, or not trusting the CA, is refused.
func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := writeCert(t, dir, "ca", true, nil, nil)
	_, _, srvCert, srvKey := writeCert(t, dir, "server", false, ca, caKey)
	_, _, cliCert, cliKey := writeCert(t, dir, "client", false, ca, caKey)
	e := fleettest.StartEtcdTLS(t, &fleettest.TLS{CertFile: srvCert, KeyFile: srvKey, ClientCA: caFile})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	try := func(c EtcdConfig) error {
		c.Endpoints, c.DialTimeout = []string{e.Endpoint()}, 2*time.Second
		cli, err := NewClient(c, nil)
		if err != nil {
			return err
		}
		defer cli.Close()
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		_, err = NewStore(cli, "/sp/tls").CompareAndSave(cctx, RouteState{Route: "api", PercentBP: 100, StepStartedAt: time.Now()}, 0)
		return err
	}
	if err := try(EtcdConfig{CAFile: caFile, CertFile: cliCert, KeyFile: cliKey}); err != nil {
		t.Fatalf("with CA and client certificate: %v", err)
	}
	if err := try(EtcdConfig{CAFile: caFile}); err == nil {
		t.Error("accepted without a client certificate")
	}
	if err := try(EtcdConfig{CertFile: cliCert, KeyFile: cliKey}); err == nil {
		t.Error("accepted a server certificate from an untrusted CA")
	}
	if _, err := NewClient(EtcdConfig{Endpoints: []string{e.Endpoint()}, CAFile: filepath.Join(dir, "missing.pem")}, nil); err == nil {
		t.Error("a missing ca_file was accepted")
	}
}
