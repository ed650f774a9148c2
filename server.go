package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/session"
)

// Server accepts MQTT connections and runs a session for each.
type Server struct {
	cfg    *Config
	env    *session.Env
	log    *slog.Logger
	bridge bridge.Bridge

	draining atomic.Bool
	mu       sync.Mutex
	sessions map[*session.Session]struct{}
	wg       sync.WaitGroup

	metricsOnce sync.Once
	metrics     http.Handler

	ready chan struct{} // closed once the listeners are bound
	addr  net.Addr
	http  net.Addr
}

// NewServer wires a server from its configuration, bridge and authorizer.
func NewServer(cfg *Config, b bridge.Bridge, auth session.Authorizer, log *slog.Logger) *Server {
	return &Server{
		cfg:    cfg,
		log:    log,
		bridge: b,
		env: &session.Env{
			Bridge: b,
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
			},
		},
		sessions: make(map[*session.Session]struct{}),
		ready:    make(chan struct{}),
	}
}

// Run listens and serves until ctx is cancelled, then drains: it stops
// accepting, fails readiness, closes every connection and waits for the
// sessions to end, up to the drain timeout.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", s.cfg.Listen, err)
	}
	s.addr = ln.Addr()
	var httpSrv *http.Server
	if s.cfg.HTTP != "" {
		hln, err := net.Listen("tcp", s.cfg.HTTP)
		switch {
		case err != nil && s.cfg.HTTPDefault:
			// Only the default was in the way: MQTT matters more than the
			// health endpoint nobody asked for.
			s.log.Warn("health and metrics endpoint not served: default -http port unavailable", "http", s.cfg.HTTP, "err", err)
		case err != nil:
			_ = ln.Close()
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
	s.log.Info("listening", "mqtt", s.addr.String(), "http", addrString(s.http), "node", s.cfg.NodeID)
	close(s.ready)

	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		s.acceptLoop(ctx, ln)
	}()
	<-ctx.Done()
	s.log.Info("draining", "connections", s.env.Stats.Connections.Load())
	s.draining.Store(true)
	_ = ln.Close()
	<-acceptDone
	s.drain()
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}
	if err := s.bridge.Close(); err != nil {
		return fmt.Errorf("close bridge: %w", err)
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

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener) {
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
				s.log.Warn("accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			s.log.Error("accept", "err", err)
			return
		}
		delay = 0
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		if max := s.cfg.MaxConnections; max > 0 && s.env.Stats.Connections.Load() >= int64(max) {
			s.log.Warn("connection refused: -max-connections reached", "remote", conn.RemoteAddr().String(), "max", max)
			_ = conn.Close()
			continue
		}
		sess := session.New(conn, s.env)
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
		if err := s.bridge.Ready(ctx); err != nil {
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
