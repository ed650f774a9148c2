package server

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/bridgemq/server/listeners"
)

// clientAuthModes maps -tls-client-auth's values to crypto/tls's.
var clientAuthModes = map[string]tls.ClientAuthType{
	"none":     tls.NoClientCert,
	"optional": tls.VerifyClientCertIfGiven,
	"require":  tls.RequireAndVerifyClientCert,
}

func setClientAuth(dst *tls.ClientAuthType, v string) error {
	var mode string
	if err := setEnum(&mode, v, "none", "optional", "require"); err != nil {
		return err
	}
	*dst = clientAuthModes[mode]
	return nil
}

// tlsFiles is the TLS listener's files as the listeners package takes them.
func (c *Config) tlsFiles() listeners.TLSFiles {
	return listeners.TLSFiles{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA, ClientAuth: c.TLSClientAuth}
}

// validateTLS checks the TLS flags together and loads the files once, so
// that a certificate that cannot be served stops the start with its flag
// named rather than failing the first handshake.
func (c *Config) validateTLS() error {
	if c.TLSClientAuth != tls.NoClientCert && c.TLSClientCA == "" {
		return errors.New("-tls-client-auth: optional and require need -tls-client-ca")
	}
	if c.TLSClientCA != "" && c.TLSClientAuth == tls.NoClientCert {
		return errors.New("-tls-client-ca: not used with -tls-client-auth none; set optional or require")
	}
	if c.TLSIdentityAsUsername && c.TLSClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("-tls-identity-as-username: needs -tls-client-auth require (a client without a certificate would have no username)")
	}
	if c.TLSIdentityAsUsername && c.TLSListen == "" {
		return errors.New("-tls-identity-as-username: needs -tls-listen")
	}
	if c.TLSIdentityAsUsername && c.WSSListen != "" {
		// The identity is read from the -tls-listen connection's
		// certificate; a wss connection is a WebSocket over an HTTP
		// server's TLS, whose certificate the session cannot reach, and
		// would be judged by its CONNECT's username and password instead.
		return errors.New("-tls-identity-as-username: not supported with -wss-listen")
	}
	if c.TLSListen == "" && c.WSSListen == "" {
		return nil
	}
	flag, addr := "-tls-listen", c.TLSListen
	if addr == "" {
		flag, addr = "-wss-listen", c.WSSListen
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return fmt.Errorf("%s: needs -tls-cert and -tls-key", flag)
	}
	if err := c.checkPorts(); err != nil {
		return err
	}
	if _, err := c.tlsFiles().Load(); err != nil {
		var fe *listeners.FileError
		if errors.As(err, &fe) {
			return fmt.Errorf("-tls-%s: %w", fe.File, err)
		}
		return fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return nil
}

// checkPorts refuses a TLS or secure WebSocket listener on a port another
// listener uses.
func (c *Config) checkPorts() error {
	others := []struct{ flag, addr string }{
		{"-listen", c.Listen}, {"-http", c.HTTP}, {"-ws-listen", c.WSListen},
	}
	for _, l := range []struct{ flag, addr string }{{"-tls-listen", c.TLSListen}, {"-wss-listen", c.WSSListen}} {
		if l.addr == "" {
			continue
		}
		for _, o := range others {
			if o.addr != "" && samePort(o.addr, l.addr) {
				return fmt.Errorf("%s: %q uses the same port as %s %q", l.flag, l.addr, o.flag, o.addr)
			}
		}
		others = append(others, l)
	}
	return nil
}
