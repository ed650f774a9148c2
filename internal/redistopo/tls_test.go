package redistopo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestStartTLS_VerifiesAgainstTestCA checks the TLS server the way a replica
// reaches it: a client trusting only the test CA completes the handshake and
// round-trips a key; one trusting nothing refuses the certificate; a plain
// TCP client is not answered.
func TestStartTLS_VerifiesAgainstTestCA(t *testing.T) {
	s := StartTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	opts, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", s.URL(), err)
	}
	if opts.TLSConfig == nil || opts.TLSConfig.ServerName != "127.0.0.1" {
		t.Fatalf("ParseURL(%q) TLS config %+v, want ServerName 127.0.0.1", s.URL(), opts.TLSConfig)
	}
	opts.TLSConfig.RootCAs = s.CertPool()
	trusted := redis.NewClient(opts)
	defer trusted.Close()
	if err := trusted.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over TLS trusting the CA: %v", err)
	}
	if got, err := trusted.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET over TLS = %q, %v; want v", got, err)
	}

	cases := []struct {
		name    string
		opts    *redis.Options
		wantErr string
	}{
		{"untrusted CA", &redis.Options{Addr: s.Addr(), TLSConfig: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"}}, "certificate"},
		{"wrong name", &redis.Options{Addr: s.Addr(), TLSConfig: &tls.Config{RootCAs: s.CertPool(), ServerName: "redis.example"}}, "certificate"},
		{"plain TCP", &redis.Options{Addr: s.Addr(), ReadTimeout: 500 * time.Millisecond}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.MaxRetries = -1
			c := redis.NewClient(tc.opts)
			defer c.Close()
			err := c.Ping(ctx).Err()
			if err == nil {
				t.Fatal("PING succeeded, want an error")
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("PING error %q, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// TestWriteCerts_ChainVerifies checks the generated files: the server
// certificate chains to the CA for 127.0.0.1 and localhost, not for other
// names, and the key matches the certificate.
func TestWriteCerts_ChainVerifies(t *testing.T) {
	files, err := WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatalf("key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool, err := loadPool(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"127.0.0.1", true}, {"localhost", true}, {"127.0.0.2", false}, {"example.com", false}} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.name})
		if (err == nil) != tc.ok {
			t.Errorf("verify for %q: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
