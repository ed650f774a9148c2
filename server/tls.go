package server

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/bridgemq/server/listeners"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/session"
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

// identity makes a verified client certificate's Common Name the username
// of a TLS connection (-tls-identity-as-username, Mosquitto's
// use_identity_as_username). The session reads the username from CONNECT,
// so the connection hands it a CONNECT rewritten to carry the Common Name
// and, as its password, a random secret that never leaves the process;
// the Authorizer accepts that secret and asks nothing more, since the
// certificate has been verified.
type identity struct {
	secret []byte
}

func newIdentity() (*identity, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("-tls-identity-as-username: secret: %w", err)
	}
	return &identity{secret: secret}, nil
}

// wrap returns conn rewriting its CONNECT when conn is TLS, else conn.
func (id *identity) wrap(conn net.Conn, maxPacket int) net.Conn {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return conn
	}
	return &identityConn{Conn: tc, id: id, maxPacket: maxPacket}
}

// identityAuth is an Authorizer that accepts a CONNECT identityConn
// rewrote and hands every other question to the Authorizer it wraps.
type identityAuth struct {
	session.Authorizer
	id *identity
}

// Authenticate accepts the rewritten CONNECT's secret.
func (a identityAuth) Authenticate(usernameFlag bool, username string, passwordFlag bool, password []byte) packets.ReasonCode {
	if usernameFlag && passwordFlag && subtle.ConstantTimeCompare(password, a.id.secret) == 1 {
		return packets.Accepted
	}
	return a.Authorizer.Authenticate(usernameFlag, username, passwordFlag, password)
}

// identityConn is a TLS connection whose first packet, CONNECT, is read
// whole on the first Read and handed on with the certificate's Common Name
// as its username. The session's connect deadline covers the handshake and
// this read, as it would its own.
type identityConn struct {
	*tls.Conn
	id        *identity
	maxPacket int
	started   bool
	connect   []byte // the rewritten CONNECT not yet read
}

// Read returns the rewritten CONNECT, then the connection's bytes.
func (c *identityConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		frame, err := c.rewriteConnect()
		if err != nil {
			return 0, err
		}
		c.connect = frame
	}
	if len(c.connect) > 0 {
		n := copy(p, c.connect)
		c.connect = c.connect[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// rewriteConnect completes the handshake, reads the first packet and, when
// it is a CONNECT, returns it re-encoded with the identity; any other
// first packet is returned as it came, for the session to refuse.
func (c *identityConn) rewriteConnect() ([]byte, error) {
	if err := c.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	st := c.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil, errors.New("-tls-identity-as-username: no verified client certificate")
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	if cn == "" {
		return nil, errors.New("-tls-identity-as-username: client certificate has no Common Name")
	}
	frame, err := readFrame(c.Conn, c.maxPacket)
	if err != nil {
		return nil, err
	}
	p, err := packets.NewReader(bytes.NewReader(frame), c.maxPacket).ReadPacket()
	connect, ok := p.(*packets.Connect)
	if err != nil || !ok {
		return frame, nil
	}
	connect.UsernameFlag, connect.Username = true, cn
	connect.PasswordFlag, connect.Password = true, c.id.secret
	out, err := packets.Append(nil, connect)
	if err != nil {
		return nil, fmt.Errorf("CONNECT with identity %q: %w", cn, err)
	}
	return out, nil
}

// readFrame reads one MQTT packet whole, fixed header included, without
// reading past it.
func readFrame(r io.Reader, maxPacket int) ([]byte, error) {
	frame := make([]byte, 1, 5)
	if _, err := io.ReadFull(r, frame); err != nil {
		return nil, fmt.Errorf("reading CONNECT: %w", err)
	}
	remaining, mult := 0, 1
	for i := 0; ; i++ {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("reading CONNECT: %w", err)
		}
		frame = append(frame, b[0])
		remaining += int(b[0]&0x7f) * mult
		if b[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, fmt.Errorf("reading CONNECT: %w: remaining length over 4 bytes", packets.ErrMalformed)
		}
		mult *= 128
	}
	if maxPacket > 0 && remaining > maxPacket {
		return nil, fmt.Errorf("reading CONNECT: %w: %d bytes over -max-packet-size %d", packets.ErrPacketTooLarge, remaining, maxPacket)
	}
	body := make([]byte, len(frame)+remaining)
	copy(body, frame)
	if _, err := io.ReadFull(r, body[len(frame):]); err != nil {
		return nil, fmt.Errorf("reading CONNECT: %w", err)
	}
	return body, nil
}
