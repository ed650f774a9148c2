// Package listeners yields the byte streams MQTT is spoken over: each
// Listener accepts connections and hands them on as plain net.Conn, so the
// server never knows whether a client came over TCP or, later, TLS,
// WebSocket or behind a PROXY protocol header. It knows nothing of MQTT.
package listeners

import "net"

// Listener is a source of client connections. Accept, Close and Addr behave
// as net.Listener's: after Close, Accept returns an error wrapping
// net.ErrClosed.
type Listener interface {
	net.Listener
	// Protocol names the transport for logs and metrics: "tcp" today,
	// "tls", "ws" or "proxy+tcp" as they are added.
	Protocol() string
}
