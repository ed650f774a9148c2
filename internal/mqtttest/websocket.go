package mqtttest

import (
	"context"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"github.com/bridgemq/server/packets"
)

// WSURL is the replica's MQTT over WebSocket URL (ws://host:port/mqtt), for
// Paho and MQTT.js; "" when it was started without -ws-listen.
func (s *Server) WSURL() string {
	a := s.srv.ListenerAddr("ws")
	if a == nil {
		return ""
	}
	return "ws://" + a.String() + "/mqtt"
}

// WSAddr is the host:port of the replica's WebSocket listener; "" when it
// was started without -ws-listen.
func (s *Server) WSAddr() string {
	a := s.srv.ListenerAddr("ws")
	if a == nil {
		return ""
	}
	return a.String()
}

// DialWebSocket opens a raw MQTT connection over WebSocket to url
// (ws://host:port/mqtt) with subprotocol mqtt and closes it at cleanup. The
// returned Client's Conn carries the MQTT bytes as binary messages; WS is
// the WebSocket itself, for tests that send frames of their own.
func DialWebSocket(t testing.TB, url string) (*Client, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatalf("websocket dial %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || ws.Subprotocol() != "mqtt" {
		t.Fatalf("websocket dial %s: status %d, subprotocol %q", url, resp.StatusCode, ws.Subprotocol())
	}
	conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return &Client{t: t, Conn: conn, r: packets.NewReader(conn, 0)}, ws
}
