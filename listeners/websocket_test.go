package listeners

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func listenWS(t *testing.T, o WebSocketOptions) *WebSocket {
	t.Helper()
	if o.ReadLimit == 0 {
		o.ReadLimit = 1 << 20
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	ln, err := ListenWebSocket("127.0.0.1:0", o)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialWS opens a WebSocket to ln with the given subprotocols and returns
// it as a net.Conn over binary messages.
func dialWS(t *testing.T, url string, client *http.Client, subprotocols ...string) (net.Conn, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols, HTTPClient: client})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("dial %s: status %d", url, resp.StatusCode)
	}
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return nc, c
}

// acceptOne returns the next connection ln accepts, within 5 seconds.
func acceptOne(t *testing.T, ln Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5s")
		return nil
	}
}

// A WebSocket connection carries bytes both ways like TCP, reports the
// client's address, and a blocked Accept ends with net.ErrClosed on Close.
func TestWebSocket_Contract(t *testing.T) {
	for _, sub := range WebSocketSubprotocols {
		t.Run(sub, func(t *testing.T) {
			ln := listenWS(t, WebSocketOptions{})
			if got := ln.Protocol(); got != "ws" {
				t.Errorf("Protocol() = %q, want ws", got)
			}
			if portOf(t, ln.Addr()) == "0" {
				t.Errorf("Addr() = %v: port 0 was not resolved", ln.Addr())
			}
			client, ws := dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, nil, sub)
			if got := ws.Subprotocol(); got != sub {
				t.Errorf("negotiated subprotocol %q, want %q", got, sub)
			}
			server := acceptOne(t, ln)
			// The library's client hides its socket; the server side must
			// still see a loopback TCP address, not a placeholder.
			if ra, ok := server.RemoteAddr().(*net.TCPAddr); !ok || !ra.IP.IsLoopback() || ra.Port == 0 {
				t.Errorf("RemoteAddr() = %#v, want the client's loopback TCP address", server.RemoteAddr())
			}
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
			// A connection already handed on outlives the listener.
			roundTrip(t, client, server, "\xc0\x00")
		})
	}
}

// The server side's RemoteAddr is exactly the client socket's address.
func TestWebSocket_RemoteAddrIsClient(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{})
	var local net.Addr
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			local = c.LocalAddr()
		}
		return c, err
	}}}
	dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, client, "mqtt")
	server := acceptOne(t, ln)
	if server.RemoteAddr().String() != local.String() {
		t.Errorf("RemoteAddr() = %v, want the client's %v", server.RemoteAddr(), local)
	}
}

// Requests the listener refuses get an HTTP error that says why, and are
// never handed to Accept.
func TestWebSocket_RefusedRequests(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{})
	base := "http://" + ln.Addr().String()
	upgrade := func(protocols ...string) http.Header {
		h := http.Header{}
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", "websocket")
		h.Set("Sec-WebSocket-Version", "13")
		h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		for _, p := range protocols {
			h.Add("Sec-WebSocket-Protocol", p)
		}
		return h
	}
	tests := []struct {
		name     string
		method   string
		path     string
		header   http.Header
		status   int
		bodyHas  string
		accepted bool
	}{
		{"wrong path", "GET", "/", upgrade("mqtt"), http.StatusNotFound, "404", false},
		{"path with a suffix", "GET", "/mqtt/x", upgrade("mqtt"), http.StatusNotFound, "404", false},
		{"no subprotocol", "GET", WebSocketPath, upgrade(), http.StatusBadRequest, `needs subprotocol mqtt or mqttv3.1`, false},
		{"wrong subprotocol", "GET", WebSocketPath, upgrade("chat, stomp"), http.StatusBadRequest, `offered: "chat, stomp"`, false},
		{"subprotocol case differs", "GET", WebSocketPath, upgrade("MQTT"), http.StatusBadRequest, "needs subprotocol", false},
		{"plain GET, no upgrade", "GET", WebSocketPath, http.Header{}, http.StatusUpgradeRequired, "Upgrade", false},
		{"POST", "POST", WebSocketPath, upgrade("mqtt"), http.StatusMethodNotAllowed, "GET", false},
		{"mqtt among others", "GET", WebSocketPath, upgrade("chat", "mqtt"), http.StatusSwitchingProtocols, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tt.header
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			if tt.accepted {
				// A 101's body is the WebSocket itself: nothing to read.
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
				}
				if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
					t.Errorf("negotiated %q, want mqtt", got)
				}
				acceptOne(t, ln)
				return
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tt.status)
			}
			if !strings.Contains(string(body), tt.bodyHas) {
				t.Errorf("body %q does not contain %q", body, tt.bodyHas)
			}
		})
	}
}

// A message larger than the read limit closes the connection (status
// 1009) after no more than the limit has been read: the bytes past it
// never reach the reader.
func TestWebSocket_MessageOverReadLimitCloses(t *testing.T) {
	const limit = 64
	tests := []struct {
		name string
		send func(ctx context.Context, c *websocket.Conn) error
	}{
		{"one frame", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageBinary, bytes.Repeat([]byte{0x30}, limit+1))
		}},
		{"fragmented message", func(ctx context.Context, c *websocket.Conn) error {
			w, err := c.Writer(ctx, websocket.MessageBinary)
			if err != nil {
				return err
			}
			for range 4 {
				if _, err := w.Write(bytes.Repeat([]byte{0x30}, limit/2)); err != nil {
					return err
				}
			}
			return w.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listenWS(t, WebSocketOptions{ReadLimit: limit})
			_, ws := dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, nil, "mqtt")
			server := acceptOne(t, ln)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// A message exactly at the limit passes.
			if err := ws.Write(ctx, websocket.MessageBinary, bytes.Repeat([]byte{0x10}, limit)); err != nil {
				t.Fatalf("write: %v", err)
			}
			_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, limit)
			if _, err := io.ReadFull(server, buf); err != nil {
				t.Fatalf("message at the limit: %v", err)
			}
			go func() { _ = tt.send(ctx, ws) }()
			got, err := io.ReadAll(server)
			if err == nil || !errors.Is(err, websocket.ErrMessageTooBig) {
				t.Fatalf("read over the limit: %v, want ErrMessageTooBig", err)
			}
			// The library reads one byte past the limit to tell a message
			// of exactly the limit from a longer one.
			if len(got) > limit+1 {
				t.Errorf("%d bytes of the oversized message were read, limit %d", len(got), limit)
			}
			// The client is told why: the server closed with 1009.
			_, _, rerr := ws.Read(ctx)
			if st := websocket.CloseStatus(rerr); st != websocket.StatusMessageTooBig {
				t.Errorf("client sees %v (status %v), want close status 1009", rerr, st)
			}
		})
	}
}

// A text message is not MQTT: the connection is closed.
func TestWebSocket_TextMessageCloses(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{})
	_, ws := dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, nil, "mqtt")
	server := acceptOne(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatalf("write: %v", err)
	}
	// The client reads meanwhile, so that it answers the close handshake.
	clientErr := make(chan error, 1)
	go func() {
		_, _, err := ws.Read(ctx)
		clientErr <- err
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 16)); err == nil {
		t.Fatal("a text message was read as MQTT bytes")
	}
	if err := <-clientErr; websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Errorf("client sees %v, want close status 1003", err)
	}
}

// A TCP connection that never completes an upgrade is closed after the
// handshake timeout, and never reaches Accept.
func TestWebSocket_HandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		send string
	}{
		{"sends nothing", ""},
		{"half a request", "GET /mqtt HTTP/1.1\r\nHost: x\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listenWS(t, WebSocketOptions{HandshakeTimeout: timeout})
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after 5s, handshake timeout %s", timeout)
			}
			if waited := time.Since(start); waited < timeout/2 {
				t.Errorf("closed after %s, before the handshake timeout %s", waited, timeout)
			}
		})
	}
}

// A read still waiting at its deadline fails with os.ErrDeadlineExceeded,
// as over TCP, so the session can tell a keep-alive timeout.
func TestWebSocket_ReadDeadlineIsTimeout(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{})
	dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, nil, "mqtt")
	server := acceptOne(t, ln)
	_ = server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := server.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

// Bad options are refused with a message naming the option.
func TestListenWebSocket_BadOptions(t *testing.T) {
	for _, o := range []WebSocketOptions{{ReadLimit: 0}, {ReadLimit: 10, HandshakeTimeout: -time.Second}} {
		ln, err := ListenWebSocket("127.0.0.1:0", o)
		if err == nil {
			ln.Close()
			t.Fatalf("ListenWebSocket(%+v) succeeded", o)
		}
		if !strings.Contains(err.Error(), "websocket") {
			t.Errorf("error %q does not say what it is about", err)
		}
	}
	if _, err := ListenWebSocket("localhost", WebSocketOptions{ReadLimit: 10}); err == nil || !strings.Contains(err.Error(), "localhost") {
		t.Errorf("bad address: %v, want an error naming it", err)
	}
}

// With a TLS configuration the listener serves wss:// on top of the TLS
// handshake, over any net.Listener.
func TestWebSocket_TLS(t *testing.T) {
	cert, pool := selfSigned(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewWebSocket(raw, WebSocketOptions{ReadLimit: 1 << 10, HandshakeTimeout: 5 * time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Protocol() != "wss" {
		t.Errorf("Protocol() = %q, want wss", ln.Protocol())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, _ := dialWS(t, "wss://"+ln.Addr().String()+WebSocketPath, client, "mqtt")
	server := acceptOne(t, ln)
	roundTrip(t, c, server, "\x10\x0c")
	roundTrip(t, server, c, "\x20\x02\x00\x00")
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "websocket test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Close returns at once and ends a blocked Read even when the client never
// answers the close handshake, as closing a TCP connection does.
func TestWebSocket_CloseDoesNotWaitForClient(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{})
	dialWS(t, "ws://"+ln.Addr().String()+WebSocketPath, nil, "mqtt") // never reads
	server := acceptOne(t, ln)
	readErr := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		readErr <- err
	}()
	start := time.Now()
	_ = server.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s", d)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("Read after Close succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still blocked 2s after Close")
	}
}

// Over a PROXY protocol listener the WebSocket listener says so in its
// Protocol, as the TLS one does.
func TestWebSocket_ProtocolOverProxy(t *testing.T) {
	for _, tt := range []struct {
		tls  bool
		want string
	}{{false, "proxy+ws"}, {true, "proxy+wss"}} {
		tcp, err := ListenTCP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p, err := NewProxy(tcp, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		o := WebSocketOptions{ReadLimit: 1 << 10}
		if tt.tls {
			cert, _ := selfSigned(t)
			o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		w, err := NewWebSocket(p, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Protocol(); got != tt.want {
			t.Errorf("Protocol = %q, want %q", got, tt.want)
		}
		_ = w.Close()
	}
}

// flakyListener fails its first Accept with a temporary error wrapped in
// context, as the listeners here wrap theirs, then waits until closed.
type flakyListener struct {
	net.Listener
	calls  chan struct{}
	closed chan struct{}
	first  bool
}

type temporaryError struct{}

func (temporaryError) Error() string   { return "too many open files" }
func (temporaryError) Timeout() bool   { return false }
func (temporaryError) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls <- struct{}{}
	if !l.first {
		l.first = true
		return nil, fmt.Errorf("accept tcp: %w", temporaryError{})
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *flakyListener) Close() error { close(l.closed); return l.Listener.Close() }

// A temporary Accept error wrapped with context does not stop the HTTP
// server: it accepts again, as it would on a bare TCP listener.
func TestWebSocket_TemporaryAcceptErrorIsRetried(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: tcp, calls: make(chan struct{}, 4), closed: make(chan struct{})}
	w, err := NewWebSocket(fl, WebSocketOptions{ReadLimit: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 2 {
		select {
		case <-fl.calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("Accept called %d times, want the server to retry after a temporary error", i)
		}
	}
}

// A client that stops in the middle of a frame announced as huge must not
// keep its socket once the server closes the WebSocket: the library's
// close handshake would read out the rest of that frame with no deadline.
// The socket is closed within closeHandshakeGrace.
func TestWebSocket_CloseMidFrameClosesSocket(t *testing.T) {
	ln := listenWS(t, WebSocketOptions{ReadLimit: 1 << 10})
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + WebSocketPath + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	server := acceptOne(t, ln)
	// A binary frame announced at 2^40 bytes, masked with a zero key,
	// then 1,200 bytes of it and nothing more.
	frame := []byte{0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	frame = append(frame, make([]byte, 1200)...)
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(server, 2048)); err == nil {
		t.Fatal("a frame over the read limit was read whole")
	}
	_ = server.Close()
	_ = c.SetReadDeadline(time.Now().Add(closeHandshakeGrace + 3*time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("socket still open %v after the server closed the WebSocket", closeHandshakeGrace+3*time.Second)
	}
}
