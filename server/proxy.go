package server

import (
	"fmt"

	"github.com/bridgemq/server/listeners"
)

// withProxy wraps ln so that connections from -proxy-protocol's networks
// must start with a PROXY header; ln as it is when the flag is empty. The
// header is read under the connect timeout, like the CONNECT after it.
func (s *Server) withProxy(ln listeners.Listener, flag string) (listeners.Listener, error) {
	if len(s.cfg.ProxyProtocol) == 0 {
		return ln, nil
	}
	p, err := listeners.NewProxy(ln, s.cfg.ProxyProtocol, s.cfg.ConnectTimeout)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("%s with -proxy-protocol: %w", flag, err)
	}
	return p, nil
}
