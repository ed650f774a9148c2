package listeners

import (
	"fmt"
	"net"
)

// TCP is a Listener for plain MQTT over TCP.
type TCP struct {
	ln net.Listener
}

// ListenTCP listens on addr (host:port; port 0 picks a free port).
func ListenTCP(addr string) (*TCP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		// net.OpError already reads "listen tcp <addr>: <cause>".
		return nil, err
	}
	return &TCP{ln: ln}, nil
}

// Accept waits for the next connection. Nagle's algorithm is turned off on
// it: MQTT's packets are small and each one is worth sending at once.
func (t *TCP) Accept() (net.Conn, error) {
	conn, err := t.ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept tcp %s: %w", t.ln.Addr(), err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return conn, nil
}

// Close stops listening; a blocked Accept returns.
func (t *TCP) Close() error { return t.ln.Close() }

// Addr is the address listened on, with the port chosen when it was 0.
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Protocol returns "tcp".
func (t *TCP) Protocol() string { return "tcp" }
