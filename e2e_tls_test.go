package main

// End-to-end tests of the TLS listener (-tls-listen): Paho and Debian's
// mosquitto clients against a test CA made in the test, client
// certificates, the certificate's Common Name as username, certificate
// reload without dropping connections, and the connect timeout on a
// handshake that stalls.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/tlstest"
)

// tlsFiles is a test CA and the server certificate files it signed.
type tlsFiles struct {
	ca        *tlstest.CA
	cert, key string
}

// newTLSFiles makes a CA and a server certificate with Common Name cn.
func newTLSFiles(t *testing.T, cn string) *tlsFiles {
	t.Helper()
	ca := tlstest.NewCA(t, "test CA")
	cert, key := ca.Server(t, cn).Write(t, t.TempDir(), "server")
	return &tlsFiles{ca: ca, cert: cert, key: key}
}

// replace writes a new server certificate with Common Name cn over the
// files, key first.
func (f *tlsFiles) replace(t *testing.T, cn string) {
	t.Helper()
	p := f.ca.Server(t, cn)
	tlstest.WriteFile(t, f.key, p.KeyPEM)
	tlstest.WriteFile(t, f.cert, p.CertPEM)
}

// startTLSServer starts a replica with a TLS listener on f and returns it
// with the listener's address.
func startTLSServer(t *testing.T, f *tlsFiles, args ...string) (*mqtttest.Server, string) {
	t.Helper()
	srv := mqtttest.StartServer(t, mqtttest.Logger(), append([]string{
		"-tls-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key,
	}, args...)...)
	addr := srv.ListenerAddr("tls")
	if addr == "" {
		t.Fatal("no TLS listener")
	}
	return srv, addr
}

// tlsPahoOpts are pahoOpts for an ssl:// broker.
func tlsPahoOpts(addr, clientID string, cfg *tls.Config) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(clientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetConnectTimeout(waitTimeout).
		SetWriteTimeout(waitTimeout).
		SetTLSConfig(cfg)
}

// tryPaho connects and returns the client, or the reason it could not.
func tryPaho(t *testing.T, opts *mqtt.ClientOptions) (mqtt.Client, error) {
	t.Helper()
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		return nil, errors.New("no CONNACK in time")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

// subscribeChan subscribes c to filter at QoS 1 and returns the granted
// QoS (0x80 refused) and the payloads that arrive.
func subscribeChan(t *testing.T, c mqtt.Client, filter string) (byte, <-chan string) {
	t.Helper()
	got := make(chan string, 16)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter], got
}

func expectPayload(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case p := <-got:
		if p != want {
			t.Fatalf("received %q, want %q", p, want)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("%q not received within %s", want, waitTimeout)
	}
}

func publishQoS1(t *testing.T, c mqtt.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// servedCommonName opens a TLS connection and returns the server
// certificate's Common Name.
func servedCommonName(addr string, ca *tlstest.CA) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// A Paho client that trusts the test CA publishes and subscribes over TLS,
// and a message crosses from the plain TCP listener to it.
func TestTLS_PahoPublishSubscribe(t *testing.T) {
	f := newTLSFiles(t, "server")
	srv, addr := startTLSServer(t, f)
	cfg := &tls.Config{RootCAs: f.ca.Pool()}
	sub, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "sub"), cfg))
	if err != nil {
		t.Fatalf("TLS connect: %v", err)
	}
	topic := unique(t, "t")
	q, got := subscribeChan(t, sub, topic)
	if q != 1 {
		t.Fatalf("SUBACK %#x, want 1", q)
	}
	pub, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "pub"), cfg))
	if err != nil {
		t.Fatalf("TLS connect: %v", err)
	}
	publishQoS1(t, pub, topic, "over TLS")
	expectPayload(t, got, "over TLS")

	plain, err := tryPaho(t, pahoOpts(srv, unique(t, "plain"), true))
	if err != nil {
		t.Fatalf("plain TCP connect: %v", err)
	}
	publishQoS1(t, plain, topic, "from TCP")
	expectPayload(t, got, "from TCP")

	// A client that does not trust the CA refuses the server.
	if _, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "x"), &tls.Config{RootCAs: tlstest.NewCA(t, "other").Pool()})); err == nil {
		t.Fatal("client without the CA connected")
	}
}

// Debian's mosquitto_sub and mosquitto_pub with --cafile: QoS 1 round trip
// over TLS; with another CA, mosquitto_pub fails.
func TestTLS_MosquittoClientsWithCAFile(t *testing.T) {
	subPath := needMosquittoClients(t, "mosquitto_sub")
	pubPath := needMosquittoClients(t, "mosquitto_pub")
	f := newTLSFiles(t, "server")
	_, addr := startTLSServer(t, f)
	host, port, _ := net.SplitHostPort(addr)
	base := []string{"-h", host, "-p", port, "-V", "mqttv311", "--cafile", f.ca.File}
	topic := unique(t, "t")

	var out bytes.Buffer
	sub := exec.Command(subPath, append(base, "-i", unique(t, "sub"), "-t", topic, "-q", "1", "-C", "1")...)
	sub.Stdout, sub.Stderr = &out, &out
	if err := sub.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sub.Wait() }()
	defer func() { _ = sub.Process.Kill() }()
	// mosquitto_sub gives no sign of having subscribed: publish until it
	// has received one message and exited.
	deadline := time.After(15 * time.Second)
	for done := false; !done; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msg, err := exec.CommandContext(ctx, pubPath, append(base, "-i", unique(t, "pub"), "-t", topic, "-q", "1", "-m", "hello over TLS")...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("mosquitto_pub --cafile: %v\n%s", err, msg)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
			}
			done = true
		case <-deadline:
			t.Fatalf("mosquitto_sub received nothing within 15s:\n%s", out.String())
		case <-time.After(300 * time.Millisecond):
		}
	}
	if got := strings.TrimSpace(out.String()); got != "hello over TLS" {
		t.Errorf("mosquitto_sub printed %q", got)
	}

	other := tlstest.NewCA(t, "other")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := append([]string{"-h", host, "-p", port, "-V", "mqttv311", "--cafile", other.File}, "-t", topic, "-m", "x")
	if msg, err := exec.CommandContext(ctx, pubPath, bad...).CombinedOutput(); err == nil {
		t.Errorf("mosquitto_pub with another CA succeeded:\n%s", msg)
	}
}

// Client certificates: optional and required, with a trusted, an
// untrusted and no certificate.
func TestTLS_ClientCertificates(t *testing.T) {
	f := newTLSFiles(t, "server")
	alice := f.ca.Client(t, "alice").TLS(t)
	mallory := tlstest.NewCA(t, "other").Client(t, "mallory").TLS(t)
	tests := []struct {
		mode   string
		client *tls.Certificate
		ok     bool
	}{
		{"optional", nil, true},
		{"optional", &alice, true},
		{"optional", &mallory, false},
		{"require", nil, false},
		{"require", &alice, true},
		{"require", &mallory, false},
	}
	servers := map[string]string{}
	for _, mode := range []string{"optional", "require"} {
		_, servers[mode] = startTLSServer(t, f, "-tls-client-auth", mode, "-tls-client-ca", f.ca.File)
	}
	for _, tt := range tests {
		name := "none"
		if tt.client != nil {
			name = tt.client.Leaf.Subject.CommonName
		}
		t.Run(tt.mode+"/"+name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: f.ca.Pool()}
			if tt.client != nil {
				// Sent whichever CAs the server names.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tt.client, nil }
			}
			_, err := tryPaho(t, tlsPahoOpts(servers[tt.mode], unique(t, "c"), cfg))
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("connected, want refused")
			}
		})
	}
}

// -tls-identity-as-username: the certificate's Common Name is the username
// the ACL judges; the CONNECT's username is ignored, and a client with no
// username at all is not anonymous.
func TestTLS_IdentityAsUsername_ACL(t *testing.T) {
	f := newTLSFiles(t, "server")
	acl := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite alice/#\n\nuser mallory\ntopic readwrite mallory/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, addr := startTLSServer(t, f, "-tls-client-auth", "require", "-tls-client-ca", f.ca.File,
		"-tls-identity-as-username", "-acl-file", acl, "-allow-anonymous=false")
	alice := f.ca.Client(t, "alice").TLS(t)
	cfg := &tls.Config{RootCAs: f.ca.Pool(), Certificates: []tls.Certificate{alice}}

	for _, who := range []struct{ name, user string }{{"no username", ""}, {"another username", "mallory"}} {
		t.Run(who.name, func(t *testing.T) {
			opts := tlsPahoOpts(addr, unique(t, "c"), cfg)
			if who.user != "" {
				opts.SetUsername(who.user).SetPassword("wrong")
			}
			c, err := tryPaho(t, opts)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if q, _ := subscribeChan(t, c, "alice/"+unique(t, "t")); q != 1 {
				t.Fatalf("SUBACK for alice/... %#x, want 1: the username is not the certificate's", q)
			}
			if q, _ := subscribeChan(t, c, "mallory/#"); q != 0x80 {
				t.Errorf("SUBACK for mallory/# %#x, want 0x80: the CONNECT's username was used", q)
			}
		})
	}

	// Anonymous clients are refused on the plain listener: the TLS
	// listener's acceptance came from the certificate.
	if _, err := tryPaho(t, pahoOpts(srv, unique(t, "anon"), true)); err == nil {
		t.Error("anonymous TCP client connected with -allow-anonymous=false")
	}
}

// New certificates are served to new connections after a reload, the
// connections already open go on, and bad new files keep the old ones:
// by Server.Reload (what SIGHUP calls) and by the 2s file poll.
func TestTLS_CertificateReload_KeepsConnections(t *testing.T) {
	for _, how := range []string{"Reload", "poll"} {
		t.Run(how, func(t *testing.T) {
			f := newTLSFiles(t, "first")
			srv, addr := startTLSServer(t, f)
			reload := func() {
				if how == "Reload" {
					_ = srv.Reload()
				}
			}
			held, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "held"), &tls.Config{RootCAs: f.ca.Pool()}))
			if err != nil {
				t.Fatal(err)
			}
			topic := unique(t, "t")
			_, got := subscribeChan(t, held, topic)

			f.replace(t, "second")
			reload()
			waitFor(t, 6*time.Second, "certificate \"second\" served", func() bool {
				cn, err := servedCommonName(addr, f.ca)
				return err == nil && cn == "second"
			})
			pub, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "pub"), &tls.Config{RootCAs: f.ca.Pool()}))
			if err != nil {
				t.Fatalf("new connection after reload: %v", err)
			}
			publishQoS1(t, pub, topic, "after reload")
			expectPayload(t, got, "after reload")
			if !held.IsConnectionOpen() {
				t.Fatal("connection dropped by the reload")
			}

			// A key that is not the certificate's: the old pair stays.
			tlstest.WriteFile(t, f.key, f.ca.Server(t, "third").KeyPEM)
			if how == "Reload" {
				if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "does not match") {
					t.Errorf("Reload() = %v, want a mismatch error", err)
				}
			} else {
				time.Sleep(3 * time.Second) // past one poll
			}
			if cn, err := servedCommonName(addr, f.ca); err != nil || cn != "second" {
				t.Fatalf("after a bad new key: served %q (%v), want second", cn, err)
			}
		})
	}
}

// SIGHUP makes a server process re-read its certificate.
func TestTLS_SIGHUPReloadsCertificate(t *testing.T) {
	f := newTLSFiles(t, "first")
	port, err := mqtttest.FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := mqtttest.StartProcess(t, "", "tls-hup", "-tls-listen", addr, "-tls-cert", f.cert, "-tls-key", f.key)
	if cn, err := servedCommonName(addr, f.ca); err != nil || cn != "first" {
		t.Fatalf("served %q (%v), want first", cn, err)
	}
	f.replace(t, "second")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "SIGHUP logged", func() bool { return strings.Contains(p.LogTail(20), "SIGHUP: reloaded") })
	if cn, err := servedCommonName(addr, f.ca); err != nil || cn != "second" {
		t.Fatalf("after SIGHUP served %q (%v), want second", cn, err)
	}
}

// A client that opens a TCP connection to the TLS listener and stalls in
// the handshake is closed by -connect-timeout.
func TestTLS_StalledHandshakeClosedByConnectTimeout(t *testing.T) {
	f := newTLSFiles(t, "server")
	const timeout = 400 * time.Millisecond
	_, addr := startTLSServer(t, f, "-connect-timeout", timeout.String())
	for _, tt := range []struct{ name, send string }{
		{"silent", ""},
		{"half a ClientHello", "\x16\x03\x01\x02\x00\x01"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
			_, err = io.ReadAll(c)
			elapsed := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("still open after %s", elapsed)
			}
			if elapsed < timeout-50*time.Millisecond {
				t.Errorf("closed after %s, before the connect timeout %s", elapsed, timeout)
			}
		})
	}
}

// The limits hold on the TLS listener as on TCP: -max-connections counts
// TLS clients together with TCP ones, and a CONNECT over -max-packet-size
// closes the connection.
func TestTLS_LimitsApply(t *testing.T) {
	f := newTLSFiles(t, "server")
	srv, addr := startTLSServer(t, f, "-max-connections", "1", "-max-packet-size", "64")
	cfg := &tls.Config{RootCAs: f.ca.Pool()}
	if _, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "first"), cfg)); err != nil {
		t.Fatalf("first TLS client: %v", err)
	}
	waitFor(t, 5*time.Second, "one connection counted", func() bool { return srv.Stats()["connections"] == 1 })
	if _, err := tryPaho(t, tlsPahoOpts(addr, unique(t, "second"), cfg)); err == nil {
		t.Error("second TLS client connected past -max-connections 1")
	}
	if _, err := tryPaho(t, pahoOpts(srv, unique(t, "tcp"), true)); err == nil {
		t.Error("TCP client connected past -max-connections 1")
	}

	f2 := newTLSFiles(t, "server")
	_, addr2 := startTLSServer(t, f2, "-max-packet-size", "64")
	c, err := tls.Dial("tcp", addr2, &tls.Config{RootCAs: f2.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ack, err := connectRaw(c, strings.Repeat("x", 100)); err == nil {
		t.Errorf("CONNECT over -max-packet-size answered %+v, want the connection closed", ack)
	}
}
