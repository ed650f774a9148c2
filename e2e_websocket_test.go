package main

// MQTT over WebSocket (-ws-listen): Paho's ws:// client on one replica and
// across two, the packet limit applied to WebSocket messages, refused
// handshakes, and the connection limits every listener shares.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
	"github.com/bridgemq/server/server"
)

// wsFront is a replica's WebSocket URL as an endpoint.
type wsFront string

// Addr is the listener's host:port.
func (w wsFront) Addr() string {
	return strings.TrimSuffix(strings.TrimPrefix(string(w), "ws://"), "/mqtt")
}

// URL is the ws:// URL Paho connects to.
func (w wsFront) URL() string { return string(w) }

func wsEndpoint(t testing.TB, s *testServer) wsFront {
	t.Helper()
	u := s.WSURL()
	if u == "" {
		t.Fatal("replica has no WebSocket listener")
	}
	return wsFront(u)
}

// A Paho client over ws:// subscribes and receives what clients publish
// over WebSocket and over TCP on the same replica.
func TestWebSocket_PahoSubscribeReceive(t *testing.T) {
	s := startServer(t, "-ws-listen", "127.0.0.1:0")
	topic := unique(t, "topic")
	sub, _ := connectPaho(t, pahoOpts(wsEndpoint(t, s), unique(t, "sub"), true))
	col := newCollector()
	if rc := subscribe(t, sub, topic+"/#", 1, col); rc != 1 {
		t.Fatalf("SUBACK %d, want 1", rc)
	}
	wsPub, _ := connectPaho(t, pahoOpts(wsEndpoint(t, s), unique(t, "wspub"), true))
	tcpPub, _ := connectPaho(t, pahoOpts(s, unique(t, "tcppub"), true))
	publish(t, wsPub, topic+"/ws", 1, false, "over websocket")
	publish(t, tcpPub, topic+"/tcp", 1, false, "over tcp")
	for _, want := range []struct{ topic, payload string }{{topic + "/ws", "over websocket"}, {topic + "/tcp", "over tcp"}} {
		m := col.next(t)
		if m.Topic() != want.topic || string(m.Payload()) != want.payload || m.Qos() != 1 {
			t.Fatalf("got %q %q qos %d, want %q %q qos 1", m.Topic(), m.Payload(), m.Qos(), want.topic, want.payload)
		}
	}
	// And the other way: a TCP subscriber gets a WebSocket client's message.
	tcpCol := newCollector()
	subscribe(t, tcpPub, topic+"/back", 0, tcpCol)
	publish(t, wsPub, topic+"/back", 0, false, "ws to tcp")
	if m := tcpCol.next(t); string(m.Payload()) != "ws to tcp" {
		t.Fatalf("TCP subscriber got %q", m.Payload())
	}
}

// Two replicas on one Redis: a WebSocket subscriber on one receives what a
// WebSocket publisher sends on the other.
func TestWebSocket_AcrossReplicas(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{InProcess: true, Replicas: 2, Args: []string{"-ws-listen", "127.0.0.1:0"}})
	topic := unique(t, "topic")
	sub, _ := connectPaho(t, pahoOpts(wsEndpoint(t, c.Servers[0]), unique(t, "sub"), true))
	col := newCollector()
	subscribe(t, sub, topic, 1, col)
	pub, _ := connectPaho(t, pahoOpts(wsEndpoint(t, c.Servers[1]), unique(t, "pub"), true))
	// SUBACK means the subscription is in Redis: the next publish on any
	// replica reaches it (as the TCP cluster tests rely on too).
	publish(t, pub, topic, 1, false, "across replicas")
	m := col.next(t)
	if m.Topic() != topic || string(m.Payload()) != "across replicas" || m.Qos() != 1 {
		t.Fatalf("got %q %q qos %d, want %q %q qos 1", m.Topic(), m.Payload(), m.Qos(), topic, "across replicas")
	}
	col.quiet(t)
}

// readClose reads from the raw WebSocket until it ends and returns the
// error it ended with, failing the test if it is still open after d.
func readClose(t *testing.T, ws *websocket.Conn, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatalf("WebSocket still open after %s", d)
		}
		return err
	}
}

// A WebSocket message larger than -max-packet-size plus the fixed header
// closes the connection with status 1009; one packet of exactly the
// limit passes.
func TestWebSocket_MessageOverPacketLimitCloses(t *testing.T) {
	const limit = 1024
	s := startServer(t, "-ws-listen", "127.0.0.1:0", "-max-packet-size", "1KiB")
	c, ws := mqtttest.DialWebSocket(t, s.WSURL())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "big"), CleanSession: true})

	// A PUBLISH whose Remaining Length is exactly the limit (0x80 0x08):
	// 2 bytes of topic length, the topic, the payload.
	topic := "t"
	pub := packetstest.Packet(0x30, packetstest.Str(topic), bytes.Repeat([]byte{'x'}, limit-2-len(topic)))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageBinary, pub); err != nil {
		t.Fatalf("write packet at the limit: %v", err)
	}
	if !c.Alive(waitTimeout) {
		t.Fatal("a packet of exactly -max-packet-size closed the connection")
	}
	// Two such packets in one message: each is within -max-packet-size, so
	// only the WebSocket read limit (one packet and its fixed header) can
	// refuse the message.
	if err := ws.Write(ctx, websocket.MessageBinary, append(append([]byte{}, pub...), pub...)); err != nil {
		t.Fatalf("write oversized message: %v", err)
	}
	err := readClose(t, ws, waitTimeout)
	if st := websocket.CloseStatus(err); st != websocket.StatusMessageTooBig {
		t.Fatalf("connection ended with %v (status %v), want close status 1009", err, st)
	}
}

// Requests the WebSocket listener cannot serve get an HTTP error: another
// path 404, a handshake without the mqtt subprotocol 400 naming it.
func TestWebSocket_RefusedHandshakes(t *testing.T) {
	s := startServer(t, "-ws-listen", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tests := []struct {
		name, path   string
		subprotocols []string
		status       int
	}{
		{"wrong path", "/ws", []string{"mqtt"}, http.StatusNotFound},
		{"root path", "/", []string{"mqtt"}, http.StatusNotFound},
		{"wrong subprotocol", "/mqtt", []string{"wamp"}, http.StatusBadRequest},
		{"no subprotocol", "/mqtt", nil, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, resp, err := websocket.Dial(ctx, "ws://"+s.WSAddr()+tt.path, &websocket.DialOptions{Subprotocols: tt.subprotocols})
			if err == nil {
				ws.CloseNow()
				t.Fatalf("handshake accepted (subprotocol %q)", ws.Subprotocol())
			}
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("dial: %v (response %+v), want HTTP %d", err, resp, tt.status)
			}
		})
	}
	// The reason is spelled out for a person reading the response.
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.WSAddr()+"/mqtt", nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "wamp"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "needs subprotocol mqtt") {
		t.Errorf("400 body %q does not say which subprotocol is needed", body)
	}
}

// -connect-timeout applies to WebSocket: a client that opens the TCP
// connection and never upgrades, and one that upgrades and never sends
// CONNECT, are both closed after it.
func TestWebSocket_ConnectTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	s := startServer(t, "-ws-listen", "127.0.0.1:0", "-connect-timeout", timeout.String())
	t.Run("never upgrades", func(t *testing.T) {
		conn, err := net.Dial("tcp", s.WSAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err = io.Copy(io.Discard, conn)
		if mqtttest.IsTimeout(err) {
			t.Fatalf("connection still open after %s", waitTimeout)
		}
		if d := time.Since(start); d < timeout/2 {
			t.Errorf("closed after %s, before -connect-timeout %s", d, timeout)
		}
	})
	t.Run("upgrades, never sends CONNECT", func(t *testing.T) {
		_, ws := mqtttest.DialWebSocket(t, s.WSURL())
		start := time.Now()
		err := readClose(t, ws, waitTimeout)
		if d := time.Since(start); d < timeout/2 {
			t.Errorf("closed after %s (%v), before -connect-timeout %s", d, err, timeout)
		}
	})
}

// -max-connections counts WebSocket and TCP connections together: with one
// TCP client connected and a limit of one, a WebSocket client is closed
// without a CONNACK.
func TestWebSocket_MaxConnections(t *testing.T) {
	s := startServer(t, "-ws-listen", "127.0.0.1:0", "-max-connections", "1")
	first := mqtttest.Dial(t, s.Addr())
	first.MustConnect(&packets.Connect{ClientID: unique(t, "first"), CleanSession: true})
	c, ws := mqtttest.DialWebSocket(t, s.WSURL())
	c.Send(&packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 4, ClientID: unique(t, "second"), CleanSession: true})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("WebSocket over -max-connections still open after %s", waitTimeout)
			}
			break
		}
		t.Fatalf("WebSocket over -max-connections got a %v message % x", typ, msg)
	}
	if !first.Alive(waitTimeout) {
		t.Fatal("the first connection was closed")
	}
	// Once the first leaves, a WebSocket client is let in.
	first.Send(&packets.Disconnect{})
	waitFor(t, waitTimeout, "a WebSocket client accepted after the first left", func() bool {
		d, _ := mqtttest.DialWebSocket(t, s.WSURL())
		d.Send(&packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 4, ClientID: unique(t, "third"), CleanSession: true})
		p, err := d.Read(time.Second)
		ack, ok := p.(*packets.Connack)
		return err == nil && ok && ack.ReturnCode == 0
	})
}

// A -ws-listen address that cannot be bound stops Run with an error naming
// the flag, and releases the -listen port it had already bound.
func TestWebSocket_ListenError(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpAddr := free.Addr().String()
	free.Close()
	cfg := mqtttest.Config(t, "-listen", tcpAddr, "-ws-listen", held.Addr().String())
	srv, err := server.New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err = srv.Run(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "-ws-listen "+held.Addr().String()+": ") {
		t.Fatalf("Run: %v, want an error starting with -ws-listen and the address", err)
	}
	again, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		t.Fatalf("-listen port still held after the failed start: %v", err)
	}
	again.Close()
}

// A WebSocket client silent for 1.5 × its keep-alive is disconnected, as
// over TCP [MQTT-3.1.2-24].
func TestWebSocket_KeepAliveExpires_MQTT_3_1_2_24(t *testing.T) {
	s := startServer(t, "-ws-listen", "127.0.0.1:0")
	c, ws := mqtttest.DialWebSocket(t, s.WSURL())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "silent"), CleanSession: true, KeepAlive: 1})
	start := time.Now()
	readClose(t, ws, waitTimeout)
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Errorf("closed after %s, want about 1.5s", d)
	}
}

// A WebSocket refused at -max-connections is closed without waiting for
// its client to answer the close handshake: a client that never reads does
// not hold up the accept loop, and the next refused client learns at once.
func TestWebSocket_RefusalDoesNotWaitForSilentClient(t *testing.T) {
	s := startServer(t, "-ws-listen", "127.0.0.1:0", "-max-connections", "1")
	first := mqtttest.Dial(t, s.Addr())
	first.MustConnect(&packets.Connect{ClientID: unique(t, "first"), CleanSession: true})
	for range 3 {
		mqtttest.DialWebSocket(t, s.WSURL()) // never reads
	}
	_, ws := mqtttest.DialWebSocket(t, s.WSURL())
	start := time.Now()
	readClose(t, ws, waitTimeout)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused after %s: the accept loop waited for silent clients", d)
	}
}
