package listeners

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
)

// TLS is a Listener for MQTT over TLS. Accept does not wait for the
// handshake: it runs on the connection's first Read, under the read
// deadline the server sets for CONNECT, so a client that stalls in the
// handshake is closed by the connect timeout like one that stalls before
// CONNECT, and never holds up Accept.
type TLS struct {
	inner  Listener
	config *tls.Config
}

// NewTLS serves TLS on the connections inner accepts (a TCP listener, or
// one that first reads a PROXY protocol header), with the configuration
// certs keeps current. Closing the TLS listener closes inner.
func NewTLS(inner Listener, certs *Certificates) *TLS {
	return &TLS{inner: inner, config: certs.ServerConfig()}
}

// ListenTLS listens on addr (host:port; port 0 picks a free port) and
// serves TLS with certs.
func ListenTLS(addr string, certs *Certificates) (*TLS, error) {
	ln, err := ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	return NewTLS(ln, certs), nil
}

// Accept waits for the next connection and returns it as a *tls.Conn whose
// handshake has not yet run.
func (t *TLS) Accept() (net.Conn, error) {
	conn, err := t.inner.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept tls: %w", err)
	}
	return tls.Server(conn, t.config), nil
}

// Close stops listening; a blocked Accept returns.
func (t *TLS) Close() error { return t.inner.Close() }

// Addr is the address listened on.
func (t *TLS) Addr() net.Addr { return t.inner.Addr() }

// Protocol returns "tls", or "proxy+tls" over a PROXY protocol listener.
func (t *TLS) Protocol() string {
	return strings.TrimSuffix(t.inner.Protocol(), "tcp") + "tls"
}
