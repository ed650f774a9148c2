package listeners

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/bridgemq/server/internal/tlstest"
)

func TestParseTrusted(t *testing.T) {
	tests := []struct {
		in      string
		want    []netip.Prefix
		wantErr bool
	}{
		{"10.0.0.0/8", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"10.1.2.3/8, 192.168.1.7", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}, false},
		{"::1,fd00::/8", []netip.Prefix{netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fd00::/8")}, false},
		{"10.0.0.0/33", nil, true},
		{"lb.example", nil, true},
		{"10.0.0.0/8,,127.0.0.1", nil, true},
		{"10.0.0.0/8,", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTrusted(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseTrusted(%q) = %v, %v", tt.in, got, err)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseTrusted(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// What a connection reads first, by where it comes from and whether it
// sends a PROXY header, over TCP and TLS.
func TestProxy_HeaderPolicy(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	cert, key := ca.Server(t, "server").Write(t, t.TempDir(), "server")
	certs, err := NewCertificates(TLSFiles{CertFile: cert, KeyFile: key}, 0, quiet)
	if err != nil {
		t.Fatal(err)
	}
	client := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 4242}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name       string
		trusted    []netip.Prefix
		header     byte // PROXY protocol version, 0 = none
		wantErr    error
		wantRemote string // "" = the socket's peer
	}{
		{"trusted, v1", loopback, 1, nil, client.String()},
		{"trusted, v2", loopback, 2, nil, client.String()},
		{"trusted, no header", loopback, 0, ErrProxyHeaderMissing, ""},
		{"untrusted, v1", elsewhere, 1, ErrProxyHeaderUntrusted, ""},
		{"untrusted, v2", elsewhere, 2, ErrProxyHeaderUntrusted, ""},
		{"untrusted, no header", elsewhere, 0, nil, ""},
	}
	for _, overTLS := range []bool{false, true} {
		for _, tt := range tests {
			name := "tcp/" + tt.name
			if overTLS {
				name = "tls/" + tt.name
			}
			t.Run(name, func(t *testing.T) {
				tcp, err := ListenTCP("127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				var ln Listener
				ln, err = NewProxy(tcp, tt.trusted, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				wantProto := "proxy+tcp"
				if overTLS {
					ln, wantProto = NewTLS(ln, certs), "proxy+tls"
				}
				defer ln.Close()
				if ln.Protocol() != wantProto {
					t.Errorf("Protocol() = %q, want %q", ln.Protocol(), wantProto)
				}
				raw, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				if tt.header != 0 {
					h := proxyproto.HeaderProxyFromAddrs(tt.header, client, ln.Addr())
					if _, err := h.WriteTo(raw); err != nil {
						t.Fatal(err)
					}
				}
				var c net.Conn = raw
				if overTLS {
					c = tls.Client(raw, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
				}
				go func() { _, _ = c.Write([]byte("\x10\x0c")) }()

				server, err := ln.Accept()
				if err != nil {
					t.Fatalf("accept: %v", err)
				}
				defer server.Close()
				if got := PeerAddr(server).String(); got != raw.LocalAddr().String() {
					t.Errorf("PeerAddr = %s, want the socket's peer %s", got, raw.LocalAddr())
				}
				_ = server.SetReadDeadline(time.Now().Add(3 * time.Second))
				buf := make([]byte, 2)
				_, err = io.ReadFull(server, buf)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("first read: %v, want %v", err, tt.wantErr)
					}
					return
				}
				if err != nil || string(buf) != "\x10\x0c" {
					t.Fatalf("first read %q, %v", buf, err)
				}
				want := tt.wantRemote
				if want == "" {
					want = raw.LocalAddr().String()
				}
				if got := server.RemoteAddr().String(); got != want {
					t.Errorf("RemoteAddr = %s, want %s", got, want)
				}
			})
		}
	}
}

// A trusted connection that sends nothing is given up after the header
// timeout, not held open.
func TestProxy_HeaderTimeout(t *testing.T) {
	tcp, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewProxy(tcp, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	start := time.Now()
	_, err = server.Read(make([]byte, 1))
	if !errors.Is(err, ErrProxyHeaderMissing) {
		t.Fatalf("read: %v, want ErrProxyHeaderMissing", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("gave up after %s, want about 200ms", d)
	}
	if _, err := NewProxy(tcp, nil, time.Second); err == nil {
		t.Error("NewProxy with no trusted network succeeded")
	}
}
