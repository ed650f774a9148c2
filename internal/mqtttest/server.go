package mqtttest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/server"
)

// Server is one replica started in-process through server's exported API
// on a free loopback port.
type Server struct {
	srv    *server.Server
	addr   string
	http   string // "" when the replica serves no HTTP
	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
}

// Addr is the replica's MQTT address, host:port.
func (s *Server) Addr() string { return s.addr }

// HTTPAddr is the replica's health and metrics address, host:port; "" when
// it serves none.
func (s *Server) HTTPAddr() string { return s.http }

// URL is the replica's address as a Paho broker URL.
func (s *Server) URL() string { return "tcp://" + s.addr }

// ListenerAddr is the address of the replica's listener for protocol
// ("tcp", "tls"), host:port; "" when it has none.
func (s *Server) ListenerAddr(protocol string) string {
	if a := s.srv.ListenerAddr(protocol); a != nil {
		return a.String()
	}
	return ""
}

// Reload re-reads the replica's password, ACL and TLS files, as SIGHUP does
// to a process.
func (s *Server) Reload() error { return s.srv.Reload() }

// NodeID is the replica's -node-id.
func (s *Server) NodeID() string { return s.srv.NodeID() }

// ClientConnected reports whether a connection of clientID is attached to
// the replica now.
func (s *Server) ClientConnected(clientID string) bool { return s.srv.ClientConnected(clientID) }

// Stats returns the replica's counters, as /metrics names them without
// "mqtt_" (bridge counters start with "bridge_").
func (s *Server) Stats() map[string]int64 { return s.srv.Stats() }

// Stop drains the replica and waits for Run to return. A second Stop (the
// cleanup's, after the test's own) does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("server stopped with error: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
	})
}

// Config is the configuration of a test replica: loopback, free port, no
// HTTP and node id "test" unless args say otherwise.
func Config(t testing.TB, args ...string) *server.Config {
	t.Helper()
	all := append([]string{"-listen", "127.0.0.1:0", "-http", "", "-node-id", "test"}, args...)
	cfg, err := server.ParseConfig(all, func(string) string { return "" })
	if err != nil {
		t.Fatalf("test config %v: %v", all, err)
	}
	return cfg
}

// Logger is the logger of test replicas: quiet, unless MQTT_TEST_LOG is set
// (then debug lines on standard error).
func Logger() *slog.Logger {
	if os.Getenv("MQTT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// StartServer starts a replica with the flags args on top of Config (with
// -redis-url, on that Redis), logging to log, and stops it at cleanup. If
// the test fails, the replica's last log lines at Info and above are
// printed with it, whatever log does with them.
func StartServer(t testing.TB, log *slog.Logger, args ...string) *Server {
	t.Helper()
	cfg := Config(t, args...)
	log = slog.New(slog.NewMultiHandler(log.Handler(), newFailLog(t, cfg.NodeID)))
	nctx, ncancel := context.WithTimeout(context.Background(), 15*time.Second)
	srv, err := server.New(nctx, cfg, log)
	ncancel()
	if err != nil {
		t.Fatalf("server %v: %v", args, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start within 10s")
	}
	s.addr = srv.Addr().String()
	if a := srv.HTTPAddr(); a != nil {
		s.http = a.String()
	}
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.Stop(t)
		}
	})
	return s
}
