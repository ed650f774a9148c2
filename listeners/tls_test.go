package listeners

import (
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/tlstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Each unusable file is reported as a FileError naming that file, so that
// the server can name its flag.
func TestTLSFiles_Load_Errors(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "server").Write(t, dir, "server")
	_, otherKey := ca.Server(t, "other").Write(t, dir, "other")
	empty := filepath.Join(dir, "empty.pem")
	tlstest.WriteFile(t, empty, []byte("not PEM\n"))
	tests := []struct {
		name    string
		files   TLSFiles
		file    string // FileError.File
		wantErr error
	}{
		{"cert missing", TLSFiles{CertFile: filepath.Join(dir, "none.pem"), KeyFile: key}, "cert", fs.ErrNotExist},
		{"cert not PEM", TLSFiles{CertFile: empty, KeyFile: key}, "cert", nil},
		{"cert file holds a key", TLSFiles{CertFile: key, KeyFile: key}, "cert", nil},
		{"key missing", TLSFiles{CertFile: cert, KeyFile: filepath.Join(dir, "none.key")}, "key", fs.ErrNotExist},
		{"key file holds a certificate", TLSFiles{CertFile: cert, KeyFile: cert}, "key", nil},
		{"key of another certificate", TLSFiles{CertFile: cert, KeyFile: otherKey}, "key", ErrKeyMismatch},
		{"client auth without CA", TLSFiles{CertFile: cert, KeyFile: key, ClientAuth: tls.RequireAndVerifyClientCert}, "client-ca", nil},
		{"client CA missing", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: filepath.Join(dir, "none"), ClientAuth: tls.VerifyClientCertIfGiven}, "client-ca", fs.ErrNotExist},
		{"client CA not PEM", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: empty, ClientAuth: tls.RequireAndVerifyClientCert}, "client-ca", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.files.Load()
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("Load() = %v, want a *FileError", err)
			}
			if fe.File != tt.file {
				t.Errorf("FileError.File = %q, want %q (%v)", fe.File, tt.file, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Load() = %v, want errors.Is %v", err, tt.wantErr)
			}
		})
	}
	cfg, err := TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca.File, ClientAuth: tls.RequireAndVerifyClientCert}.Load()
	if err != nil {
		t.Fatalf("good files: %v", err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
}

// tlsServer starts a TLS listener on files that answers every connection
// with what it read first, and returns its address.
func tlsServer(t *testing.T, files TLSFiles, poll time.Duration) (string, *Certificates) {
	t.Helper()
	certs, err := NewCertificates(files, poll, quiet)
	if err != nil {
		t.Fatalf("certificates: %v", err)
	}
	t.Cleanup(certs.Close)
	ln, err := ListenTLS("127.0.0.1:0", certs)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	if ln.Protocol() != "tls" {
		t.Errorf("Protocol() = %q, want tls", ln.Protocol())
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	return ln.Addr().String(), certs
}

// dialTLS connects, echoes four bytes and returns the server's leaf
// certificate's Common Name.
func dialTLS(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// Client certificates: none, optional and required, each with and without
// a certificate, and with one from a CA the server does not trust.
func TestTLS_ClientAuth(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	other := tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "server").Write(t, dir, "server")
	good := ca.Client(t, "alice").TLS(t)
	stranger := other.Client(t, "mallory").TLS(t)
	tests := []struct {
		name   string
		auth   tls.ClientAuthType
		client *tls.Certificate
		ok     bool
	}{
		{"none, no certificate", tls.NoClientCert, nil, true},
		{"optional, no certificate", tls.VerifyClientCertIfGiven, nil, true},
		{"optional, trusted certificate", tls.VerifyClientCertIfGiven, &good, true},
		{"optional, untrusted certificate", tls.VerifyClientCertIfGiven, &stranger, false},
		{"require, no certificate", tls.RequireAndVerifyClientCert, nil, false},
		{"require, trusted certificate", tls.RequireAndVerifyClientCert, &good, true},
		{"require, untrusted certificate", tls.RequireAndVerifyClientCert, &stranger, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := TLSFiles{CertFile: cert, KeyFile: key, ClientAuth: tt.auth}
			if tt.auth != tls.NoClientCert {
				files.ClientCAFile = ca.File
			}
			addr, _ := tlsServer(t, files, 0)
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
			if tt.client != nil {
				// Sent whatever CAs the server names (Certificates would
				// send only one that a named CA signed).
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tt.client, nil }
			}
			_, err := dialTLS(addr, cfg)
			if tt.ok && err != nil {
				t.Fatalf("connection refused: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("connection accepted, want it refused")
			}
		})
	}
}

// TLS below 1.2 is refused.
func TestTLS_RefusesBelowTLS12(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	cert, key := ca.Server(t, "server").Write(t, t.TempDir(), "server")
	addr, _ := tlsServer(t, TLSFiles{CertFile: cert, KeyFile: key}, 0)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: v, MaxVersion: v}
		if _, err := dialTLS(addr, cfg); err == nil {
			t.Errorf("TLS version %x accepted", v)
		}
	}
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12}
	if _, err := dialTLS(addr, cfg); err != nil {
		t.Errorf("TLS 1.2 refused: %v", err)
	}
}

// Reload and polling: new files are served to new handshakes while an
// established connection goes on; bad new files keep the old certificate.
func TestCertificates_Reload(t *testing.T) {
	tests := []struct {
		name   string
		poll   time.Duration
		reload bool // call Reload rather than wait for the poll
	}{
		{"Reload", 0, true},
		{"poll", 50 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := tlstest.NewCA(t, "test CA")
			dir := t.TempDir()
			cert, key := ca.Server(t, "first").Write(t, dir, "server")
			addr, certs := tlsServer(t, TLSFiles{CertFile: cert, KeyFile: key}, tt.poll)
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
			reloadAndWait := func(want string) {
				t.Helper()
				if tt.reload {
					_ = certs.Reload()
				}
				deadline := time.Now().Add(3 * time.Second)
				for {
					cn, err := dialTLS(addr, cfg)
					if err == nil && cn == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("served %q (%v), want %q", cn, err, want)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			reloadAndWait("first")

			// An established connection survives the reload.
			held, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if err := held.Handshake(); err != nil {
				t.Fatal(err)
			}
			second := ca.Server(t, "second")
			tlstest.WriteFile(t, key, second.KeyPEM)
			tlstest.WriteFile(t, cert, second.CertPEM)
			reloadAndWait("second")
			_ = held.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := held.Write([]byte("pong")); err != nil {
				t.Fatalf("held connection: %v", err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(held, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("held connection read %q, %v", buf, err)
			}

			// A key that does not match keeps "second".
			tlstest.WriteFile(t, key, ca.Server(t, "third").KeyPEM)
			if tt.reload {
				if err := certs.Reload(); !errors.Is(err, ErrKeyMismatch) {
					t.Errorf("Reload() = %v, want ErrKeyMismatch", err)
				}
			} else {
				time.Sleep(5 * tt.poll)
			}
			if cn, err := dialTLS(addr, cfg); err != nil || cn != "second" {
				t.Fatalf("after a bad reload served %q (%v), want second", cn, err)
			}
		})
	}
}
