package redistopo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLS is a redis-server that accepts only TLS connections (its plain TCP
// port is off), with a certificate for 127.0.0.1 signed by a CA made for the
// test, owned by a test.
type TLS struct {
	proc   *process
	caFile string
	pool   *x509.CertPool
}

// CertFiles are the PEM files of a test CA and a server certificate it
// signed.
type CertFiles struct {
	CA   string // the CA certificate, for clients to trust
	Cert string // the server certificate, valid for 127.0.0.1 and localhost
	Key  string // the server's private key
}

// StartTLS makes a CA and a server certificate in the test's temporary
// directory, runs redis-server with --port 0 and --tls-port on a free port
// (clients are not asked for certificates), waits until it answers PING over
// TLS, and stops it at cleanup. A redis-server built without TLS fails the
// test, or skips it unless CI is "true".
func StartTLS(t testing.TB) *TLS {
	t.Helper()
	bin := lookPath(t, "redis-server")
	dir := t.TempDir()
	files, err := WriteCerts(dir)
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	pool, err := loadPool(files.CA)
	if err != nil {
		t.Fatalf("redistopo: %v", err)
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatalf("redistopo: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		args := append(serverArgs(0, dir),
			"--tls-port", strconv.Itoa(ports[0]),
			"--tls-cert-file", files.Cert,
			"--tls-key-file", files.Key,
			"--tls-ca-cert-file", files.CA,
			"--tls-auth-clients", "no",
		)
		opts := &redis.Options{Addr: addr, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
		p, err := launchChecked(bin, filepath.Join(dir, "tls-"+strconv.Itoa(ports[0])+".log"), addr, args, opts)
		if err == nil {
			s := &TLS{proc: p, caFile: files.CA, pool: pool}
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	if os.Getenv("CI") != "true" {
		t.Skipf("redistopo: no TLS redis-server (is it built with TLS support?): %v", lastErr)
	}
	t.Fatalf("redistopo: TLS redis-server: %v", lastErr)
	return nil
}

// Addr returns the TLS port's host:port.
func (s *TLS) Addr() string { return s.proc.addr }

// URL returns the server as a rediss:// URL for -redis-url. go-redis checks
// the certificate against the system roots, so a client must either trust
// CAFile (SSL_CERT_FILE) or add ?skip_verify=true.
func (s *TLS) URL() string { return "rediss://" + s.proc.addr }

// CAFile returns the PEM file of the CA that signed the server certificate.
func (s *TLS) CAFile() string { return s.caFile }

// CertPool returns a pool holding only the test CA.
func (s *TLS) CertPool() *x509.CertPool { return s.pool }

// Stop kills the server. A second Stop is harmless.
func (s *TLS) Stop() { s.proc.stop() }

// WriteCerts creates, in dir, a self-signed ECDSA P-256 CA (ca.pem) and a
// server certificate for 127.0.0.1 and localhost signed by it (server.pem,
// server-key.pem), each valid for a day.
func WriteCerts(dir string) (CertFiles, error) {
	files := CertFiles{
		CA:   filepath.Join(dir, "ca.pem"),
		Cert: filepath.Join(dir, "server.pem"),
		Key:  filepath.Join(dir, "server-key.pem"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistopo test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return files, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, fmt.Errorf("CA certificate: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("server key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return files, fmt.Errorf("server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return files, fmt.Errorf("server key: %w", err)
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{
		{files.CA, "CERTIFICATE", caDER},
		{files.Cert, "CERTIFICATE", srvDER},
		{files.Key, "PRIVATE KEY", keyDER},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return files, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return files, nil
}

// loadPool reads a PEM CA file into a fresh pool.
func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read CA %s: no certificate", caFile)
	}
	return pool, nil
}
