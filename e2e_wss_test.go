package main

// Secure WebSocket (-wss-listen) with the TLS listener's certificates, and
// the PROXY protocol (-proxy-protocol) in front of -ws-listen and
// -wss-listen: headers by hand, a trusted source that stalls before its
// header, and a real HAProxy with send-proxy-v2.

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/pires/go-proxyproto"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// A Paho client over wss://, trusting only the test CA, subscribes and
// receives what a TCP client publishes; after the certificate files are
// replaced and reloaded, a new wss:// handshake gets the new certificate.
func TestWebSocket_SecurePahoWithTestCA(t *testing.T) {
	f := newTLSFiles(t, "first")
	srv := mqtttest.StartServer(t, mqtttest.Logger(), "-wss-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key)
	addr := srv.ListenerAddr("wss")
	if addr == "" {
		t.Fatal("no wss listener")
	}
	cfg := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1"}
	sub, err := tryPaho(t, wssPahoOpts(addr, unique(t, "wss"), cfg))
	if err != nil {
		t.Fatalf("paho over wss://: %v", err)
	}
	topic := unique(t, "topic")
	if qos, got := subscribeChan(t, sub, topic); qos != 1 {
		t.Fatalf("SUBACK %d, want 1", qos)
	} else {
		pub, _ := connectPaho(t, pahoOpts(srv, unique(t, "tcp"), true))
		publishQoS1(t, pub, topic, "over wss")
		expectPayload(t, got, "over wss")
	}

	// A client that does not trust the test CA is refused in the handshake.
	if _, err := tryPaho(t, wssPahoOpts(addr, unique(t, "untrusted"), &tls.Config{ServerName: "127.0.0.1"})); err == nil {
		t.Error("a client without the test CA connected")
	}

	f.replace(t, "second")
	if err := srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("wss handshake after reload: %v", err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("after reload the wss listener serves %q, want %q", cn, "second")
	}
	// The subscriber connected before the reload is still served.
	pub, _ := connectPaho(t, pahoOpts(srv, unique(t, "tcp2"), true))
	_, got := subscribeChan(t, sub, topic+"/2")
	publishQoS1(t, pub, topic+"/2", "after reload")
	expectPayload(t, got, "after reload")
}

// wssPahoOpts are tlsPahoOpts for a wss:// broker.
func wssPahoOpts(addr, clientID string, cfg *tls.Config) *mqtt.ClientOptions {
	opts := tlsPahoOpts(addr, clientID, cfg)
	opts.Servers = nil
	return opts.AddBroker("wss://" + addr + "/mqtt")
}

// dialWebSocketWithHeader opens a WebSocket (wss when cfg is set) to addr
// on a TCP connection that first sends a PROXY header of version claiming
// src (version 0: no header), and returns it as an MQTT byte stream.
func dialWebSocketWithHeader(t *testing.T, addr string, version byte, src net.Addr, cfg *tls.Config) (net.Conn, error) {
	t.Helper()
	scheme := "ws"
	if cfg != nil {
		scheme = "wss"
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err != nil || version == 0 {
				return raw, err
			}
			dst, _ := net.ResolveTCPAddr("tcp", a)
			if _, err := proxyproto.HeaderProxyFromAddrs(version, src, dst).WriteTo(raw); err != nil {
				raw.Close()
				return nil, err
			}
			return raw, nil
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, scheme+"://"+addr+"/mqtt", &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"mqtt"}})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// A header from a trusted load balancer, v1 or v2, in front of ws and of
// wss: the session's remote address is the client's. A trusted source that
// connects and sends nothing holds up no other connection.
func TestProxy_WebSocketHeaderGivesClientAddress(t *testing.T) {
	f := newTLSFiles(t, "server")
	var logs logBuffer
	srv := mqtttest.StartServer(t, logs.logger(), "-proxy-protocol", "127.0.0.0/8",
		"-ws-listen", "127.0.0.1:0", "-wss-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key)
	wsAddr, wssAddr := srv.ListenerAddr("proxy+ws"), srv.ListenerAddr("proxy+wss")
	if wsAddr == "" || wssAddr == "" {
		t.Fatalf("listeners: proxy+ws %q, proxy+wss %q", wsAddr, wssAddr)
	}
	// Silent trusted connections: their headers are awaited in their own
	// goroutines, up to the connect timeout, not in the accept loop.
	for _, a := range []string{wsAddr, wssAddr} {
		silent, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { silent.Close() })
	}
	tlsCfg := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1"}
	for i, tt := range []struct {
		name    string
		version byte
		addr    string
		cfg     *tls.Config
	}{
		{"v1 ws", 1, wsAddr, nil}, {"v2 ws", 2, wsAddr, nil}, {"v1 wss", 1, wssAddr, tlsCfg}, {"v2 wss", 2, wssAddr, tlsCfg},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 41000 + i}
			start := time.Now()
			c, err := dialWebSocketWithHeader(t, tt.addr, tt.version, src, tt.cfg)
			if err != nil {
				t.Fatalf("websocket behind a PROXY header: %v", err)
			}
			id := unique(t, "c")
			ack, err := connectRaw(c, id)
			if err != nil || ack == nil || ack.ReturnCode != packets.Accepted {
				t.Fatalf("CONNECT: %+v, %v", ack, err)
			}
			// The default connect timeout is 10s: a client queued behind the
			// silent one would wait that long.
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("connecting took %s: held up by the silent connection", d)
			}
			waitConnectedFrom(t, &logs, id, src.String())
		})
	}
	// A trusted source without a header and an untrusted one with a header
	// get no WebSocket.
	if _, err := dialWebSocketWithHeader(t, wsAddr, 0, nil, nil); err == nil {
		t.Error("ws from a trusted source without a PROXY header: upgraded, want the connection closed")
	}
}

// An untrusted source that sends a PROXY header before its WebSocket
// handshake is closed; without one it is a direct client.
func TestProxy_WebSocketUntrustedHeaderIsClosed(t *testing.T) {
	srv := mqtttest.StartServer(t, mqtttest.Logger(), "-proxy-protocol", "10.0.0.0/8", "-ws-listen", "127.0.0.1:0")
	addr := srv.ListenerAddr("proxy+ws")
	src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 4242}
	for _, v := range []byte{1, 2} {
		if _, err := dialWebSocketWithHeader(t, addr, v, src, nil); err == nil {
			t.Errorf("v%d header from an untrusted source: upgraded, want the connection closed", v)
		}
	}
	c, err := dialWebSocketWithHeader(t, addr, 0, nil, nil)
	if err != nil {
		t.Fatalf("direct ws client: %v", err)
	}
	if ack, err := connectRaw(c, unique(t, "direct")); err != nil || ack.ReturnCode != packets.Accepted {
		t.Fatalf("direct client: %+v, %v", ack, err)
	}
}

// Behind a real HAProxy with send-proxy-v2 in TCP mode in front of the
// WebSocket listener: the server sees the WebSocket client's own address.
func TestProxy_WebSocketBehindHAProxySendProxyV2(t *testing.T) {
	var logs logBuffer
	srv := mqtttest.StartServer(t, logs.logger(), "-http", "127.0.0.1:0", "-proxy-protocol", "127.0.0.1/32", "-ws-listen", "127.0.0.1:0")
	lb := haproxytest.Start(t, []haproxytest.Backend{{MQTT: srv.ListenerAddr("proxy+ws"), HTTP: srv.HTTPAddr(), SendProxyV2: true}})
	lb.WaitServer(t, 0, true)
	var local net.Addr
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err == nil {
			local = c.LocalAddr()
		}
		return c, err
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+lb.Addr()+"/mqtt", &websocket.DialOptions{HTTPClient: client, Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatalf("websocket through HAProxy: %v", err)
	}
	defer ws.CloseNow()
	id := unique(t, "c")
	ack, err := connectRaw(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), id)
	if err != nil || ack == nil || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNECT through HAProxy: %+v, %v", ack, err)
	}
	waitConnectedFrom(t, &logs, id, local.String())
}
