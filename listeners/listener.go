// Package listeners yields the byte streams MQTT is spoken over: each
// Listener accepts connections and hands them on as plain net.Conn, so the
// server never knows whether a client came over TCP, TLS or WebSocket, or
// behind a PROXY protocol header (tcp.go, tls.go, websocket.go, proxy.go;
// TLS and PROXY wrap another Listener). It knows nothing of MQTT.
package listeners

import "net"

// Listener is a source of client connections. Accept, Close and Addr behave
// as net.Listener's: after Close, Accept returns an error wrapping
// net.ErrClosed.
type Listener interface {
	net.Listener
	// Protocol names the transport for logs and metrics: "tcp", "tls",
	// "ws" or "wss", with "proxy+" before it behind a PROXY header.
	Protocol() string
}
