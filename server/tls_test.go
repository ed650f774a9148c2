package server

import (
	"net"
	"strings"
	"testing"
)

// certificateIdentity names a user only from a verified certificate of a
// TLS connection; any other connection is refused, never anonymous. (The
// TLS cases, with a test CA, are TestTLS_IdentityAsUsername_ACL.)
func TestCertificateIdentity_RefusesConnectionWithoutCertificate(t *testing.T) {
	a, b := net.Pipe()
	defer func() { _ = a.Close(); _ = b.Close() }()
	for _, conn := range []net.Conn{a, &countingConn{Conn: a}} {
		name, err := certificateIdentity(conn)
		if err == nil || name != "" || !strings.Contains(err.Error(), "not a TLS connection") {
			t.Errorf("certificateIdentity(%T) = %q, %v; want a refusal", conn, name, err)
		}
	}
}
