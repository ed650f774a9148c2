package listeners

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
)

// Errors a connection's first Read returns when its PROXY protocol header
// is missing or not allowed; the server then closes it.
var (
	// ErrProxyHeaderMissing: a connection from a trusted network did not
	// start with a PROXY header.
	ErrProxyHeaderMissing = proxyproto.ErrNoProxyProtocol
	// ErrProxyHeaderUntrusted: a connection from elsewhere sent one.
	ErrProxyHeaderUntrusted = proxyproto.ErrSuperfluousProxyHeader
)

// Proxy is a Listener whose connections from the load balancers' networks
// start with a PROXY protocol header (v1 or v2) naming the client, whose
// address RemoteAddr then returns. A connection from those networks without
// the header, or from anywhere else with one, fails its first Read. The
// header is read on that first Read, under the connection's read deadline
// (the server's connect timeout) and at most headerTimeout, never in Accept.
type Proxy struct {
	inner Listener
	ln    *proxyproto.Listener
}

// ParseTrusted parses a comma-separated list of CIDRs (a bare address is
// one host) into prefixes.
func ParseTrusted(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, fmt.Errorf("%q: empty network in the list", list)
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an IP address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// NewProxy reads PROXY headers on inner's connections from trusted.
func NewProxy(inner Listener, trusted []netip.Prefix, headerTimeout time.Duration) (*Proxy, error) {
	if len(trusted) == 0 {
		return nil, errors.New("proxy protocol: no trusted network")
	}
	ranges := make([]string, len(trusted))
	for i, p := range trusted {
		ranges[i] = p.String()
	}
	policy, err := proxyproto.PolicyFromRanges(ranges, proxyproto.REQUIRE, proxyproto.REJECT)
	if err != nil {
		return nil, fmt.Errorf("proxy protocol: %w", err)
	}
	return &Proxy{inner: inner, ln: &proxyproto.Listener{
		Listener:          inner,
		ConnPolicy:        policy,
		ReadHeaderTimeout: headerTimeout,
	}}, nil
}

// Accept waits for the next connection; its header is read on first Read.
func (p *Proxy) Accept() (net.Conn, error) {
	conn, err := p.ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept proxy: %w", err)
	}
	return conn, nil
}

// Close stops listening; a blocked Accept returns.
func (p *Proxy) Close() error { return p.inner.Close() }

// Addr is the address listened on.
func (p *Proxy) Addr() net.Addr { return p.inner.Addr() }

// Protocol returns "proxy+" and the inner listener's protocol.
func (p *Proxy) Protocol() string { return "proxy+" + p.inner.Protocol() }

// PeerAddr is the address of the socket's peer, the load balancer for a
// PROXY protocol connection, found without reading from the connection:
// RemoteAddr on such a connection waits for its header.
func PeerAddr(conn net.Conn) net.Addr {
	for {
		switch c := conn.(type) {
		case *tls.Conn:
			conn = c.NetConn()
		case *proxyproto.Conn:
			conn = c.Raw()
		default:
			return conn.RemoteAddr()
		}
	}
}
