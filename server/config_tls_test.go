package server

import (
	"bytes"
	"crypto/tls"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bridgemq/server/internal/tlstest"
)

// tlsTestFiles writes a CA, a server certificate and key, and a second
// key that does not match the certificate.
func tlsTestFiles(t *testing.T) (ca, cert, key, otherKey string) {
	t.Helper()
	c := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key = c.Server(t, "server").Write(t, dir, "server")
	_, otherKey = c.Server(t, "other").Write(t, dir, "other")
	return c.File, cert, key, otherKey
}

// Every TLS flag is read from its flag and from its MQTT_* variable.
func TestParseConfig_TLSFlagsFromFlagAndEnv(t *testing.T) {
	ca, cert, key, _ := tlsTestFiles(t)
	values := map[string]string{
		"tls-listen":               "127.0.0.1:8883",
		"tls-cert":                 cert,
		"tls-key":                  key,
		"tls-client-ca":            ca,
		"tls-client-auth":          "require",
		"tls-identity-as-username": "true",
	}
	want := Config{
		TLSListen: "127.0.0.1:8883", TLSCert: cert, TLSKey: key, TLSClientCA: ca,
		TLSClientAuth: tls.RequireAndVerifyClientCert, TLSIdentityAsUsername: true,
	}
	check := func(t *testing.T, c *Config) {
		t.Helper()
		if c.TLSListen != want.TLSListen || c.TLSCert != want.TLSCert || c.TLSKey != want.TLSKey ||
			c.TLSClientCA != want.TLSClientCA || c.TLSClientAuth != want.TLSClientAuth || !c.TLSIdentityAsUsername {
			t.Errorf("got %+v", c)
		}
	}
	var args []string
	vars := map[string]string{}
	for name, v := range values {
		args = append(args, "-"+name+"="+v)
		vars[envName(name)] = v
	}
	check(t, mustParse(t, args, nil))
	check(t, mustParse(t, nil, vars))

	for _, tt := range []struct {
		value string
		want  tls.ClientAuthType
	}{{"none", tls.NoClientCert}, {"optional", tls.VerifyClientCertIfGiven}, {"Require", tls.RequireAndVerifyClientCert}} {
		args := []string{"-tls-listen", ":8883", "-tls-cert", cert, "-tls-key", key, "-tls-client-auth", tt.value}
		if tt.want != tls.NoClientCert {
			args = append(args, "-tls-client-ca", ca)
		}
		if got := mustParse(t, args, nil).TLSClientAuth; got != tt.want {
			t.Errorf("-tls-client-auth %s: got %v, want %v", tt.value, got, tt.want)
		}
	}
	if c := mustParse(t, nil, nil); c.TLSListen != "" || c.TLSClientAuth != tls.NoClientCert || c.TLSIdentityAsUsername {
		t.Errorf("defaults: TLS on: %+v", c)
	}
}

// A TLS configuration that cannot be served stops the start with a
// message naming the flag.
func TestParseConfig_TLSErrors(t *testing.T) {
	ca, cert, key, otherKey := tlsTestFiles(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	on := []string{"-tls-listen", "127.0.0.1:8883"}
	with := func(extra ...string) []string { return append(append([]string{}, on...), extra...) }
	tests := []struct {
		name string
		args []string
		want string // prefix of the error
	}{
		{"listen without cert and key", on, "-tls-listen: needs -tls-cert and -tls-key"},
		{"listen without key", with("-tls-cert", cert), "-tls-listen: needs -tls-cert and -tls-key"},
		{"listen not host:port", []string{"-tls-listen", "8883"}, `-tls-listen: "8883" is not a host:port address`},
		{"listen same port as -listen", []string{"-listen", ":1883", "-tls-listen", "127.0.0.1:1883", "-tls-cert", cert, "-tls-key", key}, `-tls-listen: "127.0.0.1:1883" uses the same port as -listen ":1883"`},
		{"listen same port as -http", []string{"-http", ":8883", "-tls-listen", ":8883", "-tls-cert", cert, "-tls-key", key}, `-tls-listen: ":8883" uses the same port as -http ":8883"`},
		{"cert unreadable", with("-tls-cert", missing, "-tls-key", key), "-tls-cert: cannot read"},
		{"key unreadable", with("-tls-cert", cert, "-tls-key", missing), "-tls-key: cannot read"},
		{"cert holds a key", with("-tls-cert", key, "-tls-key", key), "-tls-cert: cert file " + key + ": no PEM CERTIFICATE block"},
		{"key holds a certificate", with("-tls-cert", cert, "-tls-key", cert), "-tls-key: key file " + cert + ": no PEM PRIVATE KEY block"},
		{"key does not match", with("-tls-cert", cert, "-tls-key", otherKey), "-tls-key: key file " + otherKey + ": private key does not match the certificate"},
		{"client CA not PEM", with("-tls-cert", cert, "-tls-key", key, "-tls-client-auth", "require", "-tls-client-ca", key), "-tls-client-ca: client-ca file " + key + ": no PEM CERTIFICATE block that parses"},
		{"client auth bad value", with("-tls-client-auth", "always"), `-tls-client-auth: "always" is not one of none, optional, require`},
		{"client auth without CA", with("-tls-cert", cert, "-tls-key", key, "-tls-client-auth", "require"), "-tls-client-auth: optional and require need -tls-client-ca"},
		{"client CA with auth none", with("-tls-cert", cert, "-tls-key", key, "-tls-client-ca", ca), "-tls-client-ca: not used with -tls-client-auth none"},
		{"identity without require", with("-tls-cert", cert, "-tls-key", key, "-tls-client-auth", "optional", "-tls-client-ca", ca, "-tls-identity-as-username"), "-tls-identity-as-username: needs -tls-client-auth require"},
		{"identity without listener", []string{"-tls-client-auth", "require", "-tls-client-ca", ca, "-tls-identity-as-username"}, "-tls-identity-as-username: needs -tls-listen"},
		{"identity not a boolean", []string{"-tls-identity-as-username=maybe"}, `-tls-identity-as-username: "maybe" is not a boolean`},
		{"wss without cert and key", []string{"-wss-listen", "127.0.0.1:8084"}, "-wss-listen: needs -tls-cert and -tls-key"},
		{"wss not host:port", []string{"-wss-listen", "8084"}, `-wss-listen: "8084" is not a host:port address`},
		{"wss same port as -listen", []string{"-listen", ":1883", "-wss-listen", "127.0.0.1:1883", "-tls-cert", cert, "-tls-key", key}, `-wss-listen: "127.0.0.1:1883" uses the same port as -listen ":1883"`},
		{"wss same port as -ws-listen", []string{"-ws-listen", ":8083", "-wss-listen", ":8083", "-tls-cert", cert, "-tls-key", key}, `-wss-listen: ":8083" uses the same port as -ws-listen ":8083"`},
		{"wss same port as -tls-listen", []string{"-tls-listen", ":8883", "-wss-listen", "127.0.0.1:8883", "-tls-cert", cert, "-tls-key", key}, `-wss-listen: "127.0.0.1:8883" uses the same port as -tls-listen ":8883"`},
		{"wss key does not match", []string{"-wss-listen", ":8084", "-tls-cert", cert, "-tls-key", otherKey}, "-tls-key: key file " + otherKey + ": private key does not match the certificate"},
		{"identity with wss", with("-tls-cert", cert, "-tls-key", key, "-tls-client-auth", "require", "-tls-client-ca", ca, "-tls-identity-as-username", "-wss-listen", ":8084"), "-tls-identity-as-username: not supported with -wss-listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var help bytes.Buffer
			c, err := parseConfig(tt.args, env(nil), &help)
			if err == nil {
				t.Fatalf("got config %+v, want error %q", c, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %s\nwant %s...", err, tt.want)
			}
		})
	}
}

// -wss-listen is off by default and set by flag or MQTT_WSS_LISTEN, with
// the TLS listener's certificate files; the flag wins over the variable.
func TestParseConfig_WSSListen(t *testing.T) {
	_, cert, key, _ := tlsTestFiles(t)
	if got := mustParse(t, nil, nil).WSSListen; got != "" {
		t.Errorf("default -wss-listen = %q, want off", got)
	}
	files := []string{"-tls-cert", cert, "-tls-key", key}
	if got := mustParse(t, files, map[string]string{"MQTT_WSS_LISTEN": ":8084"}).WSSListen; got != ":8084" {
		t.Errorf("MQTT_WSS_LISTEN=:8084: WSSListen = %q", got)
	}
	if got := mustParse(t, append([]string{"-wss-listen", "127.0.0.1:9443"}, files...), map[string]string{"MQTT_WSS_LISTEN": ":8084"}).WSSListen; got != "127.0.0.1:9443" {
		t.Errorf("flag over MQTT_WSS_LISTEN: WSSListen = %q", got)
	}
	var help bytes.Buffer
	_, err := parseConfig(nil, env(map[string]string{"MQTT_WSS_LISTEN": "wss://h:1/mqtt"}), &help)
	if want := `MQTT_WSS_LISTEN (for -wss-listen): "wss://h:1/mqtt" is not a host:port address`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("bad MQTT_WSS_LISTEN: %v, want %s", err, want)
	}
}

// -proxy-protocol takes CIDRs and single addresses, from the flag or
// MQTT_PROXY_PROTOCOL; anything else names the flag.
func TestParseConfig_ProxyProtocol(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.5/32")}
	if got := mustParse(t, []string{"-proxy-protocol", "10.0.0.0/8,192.168.1.5"}, nil).ProxyProtocol; !reflect.DeepEqual(got, want) {
		t.Errorf("flag: got %v, want %v", got, want)
	}
	if got := mustParse(t, nil, map[string]string{"MQTT_PROXY_PROTOCOL": "10.0.0.0/8, 192.168.1.5"}).ProxyProtocol; !reflect.DeepEqual(got, want) {
		t.Errorf("env: got %v, want %v", got, want)
	}
	if got := mustParse(t, nil, nil).ProxyProtocol; got != nil {
		t.Errorf("default: got %v, want off", got)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-proxy-protocol", "10.0.0.0/33"}, nil, `-proxy-protocol: "10.0.0.0/33" is not a CIDR or an IP address`},
		{[]string{"-proxy-protocol", "haproxy"}, nil, `-proxy-protocol: "haproxy" is not a CIDR or an IP address`},
		{[]string{"-proxy-protocol", "10.0.0.0/8,"}, nil, `-proxy-protocol: "10.0.0.0/8,": empty network in the list`},
		{nil, map[string]string{"MQTT_PROXY_PROTOCOL": "x"}, `MQTT_PROXY_PROTOCOL (for -proxy-protocol): "x" is not a CIDR or an IP address`},
	} {
		var help bytes.Buffer
		_, err := parseConfig(tt.args, env(tt.env), &help)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%v %v: error %v, want %s", tt.args, tt.env, err, tt.want)
		}
	}
}
