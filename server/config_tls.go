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
	if c.TLSListen == "" {
		if c.TLSIdentityAsUsername {
			return errors.New("-tls-identity-as-username: needs -tls-listen")
		}
		return nil
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return errors.New("-tls-listen: needs -tls-cert and -tls-key")
	}
	if samePort(c.Listen, c.TLSListen) {
		return fmt.Errorf("-tls-listen: %q uses the same port as -listen %q", c.TLSListen, c.Listen)
	}
	if c.HTTP != "" && samePort(c.HTTP, c.TLSListen) {
		return fmt.Errorf("-tls-listen: %q uses the same port as -http %q", c.TLSListen, c.HTTP)
	}
	if _, err := c.tlsFiles().Load(); err != nil {
		var fe *listeners.FileError
		if errors.As(err, &fe) {
			return fmt.Errorf("-tls-%s: %w", fe.File, err)
		}
		return fmt.Errorf("-tls-listen: %w", err)
	}
	return nil
}
