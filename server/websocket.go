package server

import (
	"crypto/tls"
	"fmt"

	"github.com/bridgemq/server/listeners"
)

// fixedHeaderMax is the largest MQTT fixed header: one byte of type and
// flags and a Remaining Length of up to four bytes (MQTT 3.1.1 section 2.2).
const fixedHeaderMax = 5

// listenWebSocket opens the -ws-listen listener, or with certs the
// -wss-listen one. One WebSocket message holds at most a packet of
// -max-packet-size with its fixed header (MQTT.js and Paho send one packet
// per message); a client that opens the HTTP connection and never upgrades
// is closed after -connect-timeout, as one that upgrades and sends no
// CONNECT is by its session. With -proxy-protocol the PROXY header comes
// first, before TLS and HTTP, as on the other listeners; the HTTP server
// reads it in the connection's own goroutine, never in its accept loop.
func (s *Server) listenWebSocket(certs *listeners.Certificates) (listeners.Listener, error) {
	flag, addr, name := "-ws-listen", s.cfg.WSListen, "ws"
	var tlsConfig *tls.Config
	if certs != nil {
		flag, addr, name = "-wss-listen", s.cfg.WSSListen, "wss"
		tlsConfig = certs.ServerConfig()
	}
	tcp, err := listeners.ListenTCP(addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	inner, err := s.withProxy(tcp, flag)
	if err != nil {
		return nil, err
	}
	ln, err := listeners.NewWebSocket(inner, listeners.WebSocketOptions{
		ReadLimit:        int64(s.cfg.MaxPacketSize) + fixedHeaderMax,
		HandshakeTimeout: s.cfg.ConnectTimeout,
		TLS:              tlsConfig,
		Log:              s.log.With("listener", name),
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return ln, nil
}
