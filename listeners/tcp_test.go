package listeners

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/tlstest"
)

// Every Listener must carry bytes both ways, report its address and
// protocol, and end a blocked Accept on Close with net.ErrClosed.
func TestListener_Contract(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	cert, key := ca.Server(t, "server").Write(t, t.TempDir(), "server")
	certs, err := NewCertificates(TLSFiles{CertFile: cert, KeyFile: key}, 0, quiet)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		listen   func() (Listener, error)
		protocol string
		dial     func(addr net.Addr) (net.Conn, error)
	}{
		{
			name:     "tcp ipv4 loopback",
			listen:   func() (Listener, error) { return ListenTCP("127.0.0.1:0") },
			protocol: "tcp",
			dial:     func(a net.Addr) (net.Conn, error) { return net.Dial("tcp", a.String()) },
		},
		{
			name:     "tcp any interface",
			listen:   func() (Listener, error) { return ListenTCP(":0") },
			protocol: "tcp",
			dial: func(a net.Addr) (net.Conn, error) {
				return net.Dial("tcp", net.JoinHostPort("127.0.0.1", portOf(t, a)))
			},
		},
		{
			name:     "tls",
			listen:   func() (Listener, error) { return ListenTLS("127.0.0.1:0", certs) },
			protocol: "tls",
			dial: func(a net.Addr) (net.Conn, error) {
				c, err := net.Dial("tcp", a.String())
				if err != nil {
					return nil, err
				}
				return tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}), nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tt.listen()
			if err != nil {
				t.Fatalf("listen: %v", err)
			}
			defer ln.Close()
			if got := ln.Protocol(); got != tt.protocol {
				t.Errorf("Protocol() = %q, want %q", got, tt.protocol)
			}
			if portOf(t, ln.Addr()) == "0" {
				t.Errorf("Addr() = %v: port 0 was not resolved", ln.Addr())
			}
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					t.Errorf("accept: %v", err)
					close(accepted)
					return
				}
				accepted <- c
			}()
			client, err := tt.dial(ln.Addr())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer client.Close()
			server := <-accepted
			if server == nil {
				t.FailNow()
			}
			defer server.Close()
			roundTrip(t, client, server, "\x10\x0c")
			roundTrip(t, server, client, "\x20\x02\x00\x00")

			acceptErr := make(chan error, 1)
			go func() {
				_, err := ln.Accept()
				acceptErr <- err
			}()
			if err := ln.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			select {
			case err := <-acceptErr:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Accept still blocked 5s after Close")
			}
		})
	}
}

// A listen address that cannot be bound is an error; one that is taken
// names the address (net's own message, which the server prefixes with
// the flag).
func TestListenTCP_Errors(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	tests := []struct {
		name, addr string
		namesAddr  bool
	}{
		{"port in use", held.Addr().String(), true},
		{"not host:port", "localhost", true},
		{"port out of range", "127.0.0.1:70000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := ListenTCP(tt.addr)
			if err == nil {
				ln.Close()
				t.Fatalf("ListenTCP(%q) succeeded, want an error", tt.addr)
			}
			if tt.namesAddr && !strings.Contains(err.Error(), tt.addr) {
				t.Errorf("ListenTCP(%q) error %q does not name the address", tt.addr, err)
			}
		})
	}
}

func portOf(t *testing.T, a net.Addr) string {
	t.Helper()
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatalf("address %v: %v", a, err)
	}
	return port
}

// roundTrip writes msg on from and reads it back on to within a second.
func roundTrip(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	// Written from another goroutine: over TLS the first Write runs the
	// handshake, which needs the reader's side going at the same time.
	wrote := make(chan error, 1)
	go func() {
		_, err := from.Write([]byte(msg))
		wrote <- err
	}()
	defer func() {
		if err := <-wrote; err != nil {
			t.Errorf("write: %v", err)
		}
	}()
	_ = to.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(to, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
}
