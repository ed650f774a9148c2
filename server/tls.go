package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/bridgemq/server/listeners"
)

// certPoll is how often the TLS files' modification times are checked.
const certPoll = 2 * time.Second

// openCertificates loads -tls-cert and -tls-key (and the client CA) for
// the TLS and secure WebSocket listeners, following their files; the
// caller closes it. flag names the listener that needs them.
func (s *Server) openCertificates(flag, addr string) (*listeners.Certificates, error) {
	certs, err := listeners.NewCertificates(s.cfg.tlsFiles(), certPoll, s.log.With("listener", "tls"))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return certs, nil
}

// listenTLS opens the -tls-listen listener with certs.
func (s *Server) listenTLS(certs *listeners.Certificates) (listeners.Listener, error) {
	tcp, err := listeners.ListenTCP(s.cfg.TLSListen)
	if err != nil {
		return nil, fmt.Errorf("-tls-listen %s: %w", s.cfg.TLSListen, err)
	}
	// PROXY header first, then TLS: HAProxy's TLS passthrough with
	// send-proxy-v2 writes the header before the client's ClientHello.
	inner, err := s.withProxy(tcp, "-tls-listen")
	if err != nil {
		return nil, err
	}
	return listeners.NewTLS(inner, certs), nil
}

// reloadCertificates re-reads the TLS certificate, key and client CA files.
// Connections stay up; new handshakes use the new files. On error the files
// in force stay and the error says why.
func (s *Server) reloadCertificates() error {
	certs := s.certs.Load()
	if certs == nil {
		return nil
	}
	return certs.Reload()
}

// certificateIdentity is the session's Identity on a TLS listener with
// -tls-identity-as-username (Mosquitto's use_identity_as_username): the
// verified client certificate's Common Name is the username. The
// handshake is over by then: the session has read the CONNECT through it.
func certificateIdentity(conn net.Conn) (string, error) {
	if cc, ok := conn.(*countingConn); ok {
		conn = cc.Conn
	}
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return "", errors.New("-tls-identity-as-username: not a TLS connection")
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", errors.New("-tls-identity-as-username: no verified client certificate")
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	if cn == "" {
		return "", errors.New("-tls-identity-as-username: client certificate has no Common Name")
	}
	return cn, nil
}
