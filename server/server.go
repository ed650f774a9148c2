// Package server is the MQTT server: its configuration (flags and MQTT_*
// environment variables), the listeners and accept loop, a session per
// connection, graceful drain, the health and readiness endpoints and the
// Prometheus metrics. The main package only parses the configuration and
// runs a Server; tests and other programs embed one the same way.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/listeners"
	"github.com/bridgemq/server/session"
)

// Server accepts MQTT connections and runs a session for each.
type Server struct {
	cfg    *Config
	env    *session.Env
	log    *slog.Logger
	broker *broker.Broker // the node's core, over the in-memory or the Redis store
	// auth is the authorizer the sessions ask, which Reload swaps; nil
	// for a server built without one (tests).
	auth *liveAuth
	// sys is on when the $SYS topics are published (-sys-interval).
	sys bool
	// bytesIn and bytesOut count every connection's bytes, for $SYS.
	bytesIn, bytesOut atomic.Int64
	// sysCluster shares the $SYS figures through Redis; nil without one.
	sysCluster *sysCluster
	// closers release what New opened beside the bridge (Redis clients).
	closers []func() error

	draining atomic.Bool
	mu       sync.Mutex
	sessions map[*session.Session]struct{}
	wg       sync.WaitGroup

	// refusals limits the log lines of refused connections and packets.
	refusals *refusalLimiter

	metricsOnce sync.Once
	metrics     http.Handler
	hist        histograms

	ready chan struct{} // closed once the listeners are bound
	addr  net.Addr
	addrs map[string]net.Addr // by Protocol, once ready

	certs atomic.Pointer[listeners.Certificates] // -tls-listen's, once Run opened it
	http  net.Addr

	closeOnce sync.Once
	closeErr  error
}

// ConfigError is an error in the configuration that New found: a file a
// flag names cannot be read, or a replica with this -node-id is alive.
// Its message names the flag; a program exits with a usage status on it.
type ConfigError struct{ Err error }

// Error returns the wrapped error's message, which names the flag.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *ConfigError) Unwrap() error { return e.Err }

// New builds a server from cfg: it loads the password and ACL files and
// starts the bridge, in-process or, when a Redis is configured, the Redis
// one (Redis must answer now; ctx bounds that start-up). Errors in the
// configuration are a *ConfigError. Run serves; Close releases the bridge
// of a server that is never run.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Server, error) {
	authz, err := loadAuth(cfg)
	if err != nil {
		return nil, &ConfigError{err}
	}
	h := newHistograms(cfg.NodeID)
	if !cfg.usesRedis() {
		h.redisPublish = nil // no Redis round trip to show
	}
	// The authorizer comes first: the bridge asks it about the wills it
	// publishes for other replicas' connections from its start.
	live := newLiveAuth(authz)
	var closers []func() error
	if cfg.AuthRedis {
		ru, closeRU, err := newRedisAuth(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		live, closers = newLiveAuth(ru), append(closers, closeRU)
	}
	b, err := newBridge(ctx, cfg, log, h.redisPublish, live)
	if err != nil {
		for _, c := range closers {
			_ = c()
		}
	}
	if errors.Is(err, bridge.ErrNodeIDInUse) {
		return nil, &ConfigError{fmt.Errorf("-node-id %s: %w", cfg.NodeID, err)}
	}
	if err != nil {
		return nil, err
	}
	s := newServer(cfg, b, live, log)
	s.auth = live
	s.closers = closers
	s.hist = h
	if cfg.SysInterval > 0 {
		s.sys = true
		rdb, err := cfg.RedisClient()
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		if rdb != nil {
			s.sysCluster = &sysCluster{rdb: rdb, prefix: cfg.RedisPrefix, node: cfg.NodeID, ttl: 3 * max(cfg.SysInterval, time.Second)}
			s.closers = append(s.closers, rdb.Close)
		}
	}
	s.env.AckLatency = h.publishAck
	return s, nil
}

// newServer wires a server from its configuration, bridge and authorizer.
func newServer(cfg *Config, b *broker.Broker, auth session.Authorizer, log *slog.Logger) *Server {
	refusals := newRefusalLimiter(log.Handler(), refusalWindow, refusalBurst, refusalGlobalBurst, refusalMaxKeys)
	// Every line of the server and its sessions names the replica.
	log = slog.New(&refusalHandler{inner: log.Handler(), lim: refusals}).With("node", cfg.NodeID)
	return &Server{
		cfg:      cfg,
		log:      log,
		broker:   b,
		refusals: refusals,
		env: &session.Env{
			Broker: b,
			Auth:   auth,
			Stats:  &session.Stats{},
			Log:    log,
			// Bytes in flight to the bridge, for every connection together.
			Inflight: session.NewByteLimiter(cfg.MaxInflightBytes),
			Config: session.Config{
				NodeID:           cfg.NodeID,
				MaxPacketSize:    cfg.MaxPacketSize,
				ConnectTimeout:   cfg.ConnectTimeout,
				MaxInflight:      cfg.MaxInflight,
				MaxQueued:        cfg.MaxQueuedMessages,
				MaxQueuedBytes:   cfg.MaxQueuedBytes,
				WriteTimeout:     30 * time.Second,
				ClientIDPattern:  cfg.ClientIDPattern,
				MaxSubscriptions: cfg.MaxSubscriptions,
				MaxTopicLength:   cfg.MaxTopicLength,
				MaxTopicLevels:   cfg.MaxTopicLevels,
				SessionExpiry:    cfg.SessionExpiry,

				// MQTT 5.0 only.
				TopicAliasMaximum: cfg.TopicAliasMaximum,
				ServerKeepAlive:   time.Duration(cfg.ServerKeepAlive) * time.Second,
				ServerReference:   cfg.ServerReference,
			},
		},
		sessions: make(map[*session.Session]struct{}),
		ready:    make(chan struct{}),
	}
}

// Ready is closed once Run has bound its listeners: Addr and HTTPAddr are
// then set.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the MQTT listener's address (-listen); nil before Ready.
func (s *Server) Addr() net.Addr { return s.addr }

// ListenerAddr is the address of the first listener whose Protocol is
// protocol ("tcp", "tls", "ws", "wss", each prefixed "proxy+" under
// -proxy-protocol); nil before Ready and when there is none.
func (s *Server) ListenerAddr(protocol string) net.Addr {
	select {
	case <-s.ready:
		return s.addrs[protocol]
	default:
		return nil
	}
}

// HTTPAddr is the health and metrics listener's address (-http); nil
// before Ready and when that endpoint is off or could not be bound.
func (s *Server) HTTPAddr() net.Addr { return s.http }

// NodeID is this replica's name in Redis and in metrics (-node-id).
func (s *Server) NodeID() string { return s.cfg.NodeID }

// ClientConnected reports whether a connection of clientID is attached to
// this server now (for an embedder, or a test that must know a client's
// DISCONNECT has been handled before it connects again: MQTT orders nothing
// across two connections).
func (s *Server) ClientConnected(clientID string) bool { return s.broker.Connected(clientID) }

// Stats returns the server's counters and gauges by name, as /metrics
// exposes them without the "mqtt_" prefix: the sessions' counters, and the
// bridge's under "bridge_".
func (s *Server) Stats() map[string]int64 {
	out := s.env.Stats.Snapshot()
	for k, v := range s.broker.Stats() {
		out["bridge_"+k] = v
	}
	return out
}

// Close releases the bridge. Run does it on its way out, so Close is only
// needed for a server that is never run; calling both is harmless.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, c := range s.closers {
			if err := c(); err != nil {
				s.closeErr = errors.Join(s.closeErr, fmt.Errorf("close: %w", err))
			}
		}
		if err := s.broker.Close(); err != nil {
			s.closeErr = errors.Join(s.closeErr, fmt.Errorf("close bridge: %w", err))
		}
	})
	return s.closeErr
}

// Run listens on -listen (and -tls-listen, -ws-listen and -wss-listen
// when set) and serves until ctx is
// cancelled, then drains: it stops accepting, fails readiness, closes every
// connection and waits for the sessions to end, up to the drain timeout.
func (s *Server) Run(ctx context.Context) error {
	tcp, err := listeners.ListenTCP(s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", s.cfg.Listen, err)
	}
	ln, err := s.withProxy(tcp, "-listen")
	if err != nil {
		return err
	}
	lns := []listeners.Listener{ln}
	closeAll := func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}
	var certs *listeners.Certificates
	if s.cfg.TLSListen != "" || s.cfg.WSSListen != "" {
		flag, addr := "-tls-listen", s.cfg.TLSListen
		if addr == "" {
			flag, addr = "-wss-listen", s.cfg.WSSListen
		}
		if certs, err = s.openCertificates(flag, addr); err != nil {
			closeAll()
			return err
		}
		defer certs.Close()
		s.certs.Store(certs)
	}
	if s.cfg.TLSListen != "" {
		tln, err := s.listenTLS(certs)
		if err != nil {
			closeAll()
			return err
		}
		lns = append(lns, tln)
	}
	if s.cfg.WSListen != "" {
		ws, err := s.listenWebSocket(nil)
		if err != nil {
			closeAll()
			return err
		}
		lns = append(lns, ws)
	}
	if s.cfg.WSSListen != "" {
		wss, err := s.listenWebSocket(certs)
		if err != nil {
			closeAll()
			return err
		}
		lns = append(lns, wss)
	}
	return s.Serve(ctx, lns...)
}

// Serve is Run on listeners the caller opened: it accepts MQTT connections
// from every one of lns (Addr is the first one's address) until ctx is
// cancelled, then drains as Run does. It closes lns.
func (s *Server) Serve(ctx context.Context, lns ...listeners.Listener) error {
	if len(lns) == 0 {
		return errors.New("serve: no listener")
	}
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	s.addr = lns[0].Addr()
	s.addrs = make(map[string]net.Addr, len(lns))
	for _, ln := range lns {
		if _, ok := s.addrs[ln.Protocol()]; !ok {
			s.addrs[ln.Protocol()] = ln.Addr()
		}
	}
	var httpSrv *http.Server
	if s.cfg.HTTP != "" {
		hln, err := net.Listen("tcp", s.cfg.HTTP)
		switch {
		case err != nil && s.cfg.HTTPDefault:
			// Only the default was in the way: MQTT matters more than the
			// health endpoint nobody asked for.
			s.log.Warn("health and metrics endpoint not served: default -http port unavailable", "http", s.cfg.HTTP, "err", err)
		case err != nil:
			closeAll()
			return fmt.Errorf("-http %s: %w", s.cfg.HTTP, err)
		default:
			s.http = hln.Addr()
			httpSrv = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
			go func() {
				if err := httpSrv.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					s.log.Error("http server", "err", err)
				}
			}()
		}
	}
	for _, ln := range lns {
		s.log.Info("listening", "mqtt", ln.Addr().String(), "protocol", ln.Protocol(), "http", addrString(s.http))
	}
	close(s.ready)

	rctx, stopRefusals := context.WithCancel(context.Background())
	var background sync.WaitGroup
	background.Go(func() { s.refusals.run(rctx) })
	if s.sys {
		background.Go(func() { s.runSys(ctx) })
	}
	var accepting sync.WaitGroup
	for _, ln := range lns {
		accepting.Go(func() { s.acceptLoop(ctx, ln) })
	}
	<-ctx.Done()
	s.log.Info("draining", "connections", s.env.Stats.Connections.Load())
	s.draining.Store(true)
	closeAll()
	accepting.Wait()
	s.drain()
	stopRefusals() // and log what the drain's refusals left out
	background.Wait()
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}
	if err := s.Close(); err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// listenerName is the "listener" of a listener's log lines: tcp, tls, ws
// or wss, whether or not PROXY headers come first.
func listenerName(ln listeners.Listener) string {
	return strings.TrimPrefix(ln.Protocol(), "proxy+")
}

// acceptLoop starts a session for each connection ln accepts, until ln is
// closed by the drain. Its sessions log with the listener's name.
func (s *Server) acceptLoop(ctx context.Context, ln listeners.Listener) {
	env := *s.env
	env.Log = s.log.With("listener", listenerName(ln))
	if s.cfg.TLSIdentityAsUsername && strings.HasSuffix(ln.Protocol(), "tls") {
		env.Identity = certificateIdentity
	}
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "protocol", ln.Protocol(), "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			s.log.Error("accept", "protocol", ln.Protocol(), "err", err)
			return
		}
		delay = 0
		if max := s.cfg.MaxConnections; max > 0 && s.env.Stats.Connections.Load() >= int64(max) {
			env.Log.Warn("connection refused: -max-connections reached", "remote", listeners.PeerAddr(conn).String(), "max", max)
			_ = conn.Close()
			continue
		}
		if s.sys {
			conn = &countingConn{Conn: conn, in: &s.bytesIn, out: &s.bytesOut}
		}
		sess := session.New(conn, &env)
		s.mu.Lock()
		s.sessions[sess] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go sess.Serve(ctx, func() {
			s.mu.Lock()
			delete(s.sessions, sess)
			s.mu.Unlock()
			s.wg.Done()
		})
	}
}

// drain closes every connection and waits for the sessions to store their
// state, up to the drain timeout.
func (s *Server) drain() {
	s.mu.Lock()
	all := make([]*session.Session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.Shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn("drain timeout: sessions still ending", "timeout", s.cfg.DrainTimeout)
	}
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.broker.Ready(ctx); err != nil {
			http.Error(w, "bridge not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
