package server

import (
	"fmt"

	"github.com/bridgemq/server/listeners"
)

// fixedHeaderMax is the largest MQTT fixed header: one byte of type and
// flags and a Remaining Length of up to four bytes (MQTT 3.1.1 section 2.2).
const fixedHeaderMax = 5

// listenWebSocket opens the -ws-listen listener. One WebSocket message
// holds at most a packet of -max-packet-size with its fixed header (MQTT.js
// and Paho send one packet per message); a client that opens the HTTP
// connection and never upgrades is closed after -connect-timeout, as one
// that upgrades and sends no CONNECT is by its session.
func (s *Server) listenWebSocket() (listeners.Listener, error) {
	ln, err := listeners.ListenWebSocket(s.cfg.WSListen, listeners.WebSocketOptions{
		ReadLimit:        int64(s.cfg.MaxPacketSize) + fixedHeaderMax,
		HandshakeTimeout: s.cfg.ConnectTimeout,
		Log:              s.log.With("listener", "ws"),
	})
	if err != nil {
		return nil, fmt.Errorf("-ws-listen %s: %w", s.cfg.WSListen, err)
	}
	return ln, nil
}
