package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/server"
)

// testServer is one replica started in-process on a free loopback port, or
// (front only) the address of a load balancer in front of replicas.
type testServer struct {
	srv    *server.Server // nil for a load balancer
	node   string
	addr   string
	http   string // "" when the replica serves no HTTP
	cancel context.CancelFunc
	done   chan error
}

// Addr is the replica's MQTT address, host:port.
func (ts *testServer) Addr() string { return ts.addr }

// HTTPAddr is the replica's health and metrics address, host:port.
func (ts *testServer) HTTPAddr() string { return ts.http }

// URL is the replica's address as a Paho broker URL.
func (ts *testServer) URL() string { return "tcp://" + ts.Addr() }

// Stats returns the replica's counters, as /metrics names them without
// "mqtt_" (bridge counters start with "bridge_").
func (ts *testServer) Stats() map[string]int64 { return ts.srv.Stats() }

// Stop drains the replica and waits for Run to return.
func (ts *testServer) Stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("server stopped with error: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("server did not stop within 15s")
	}
}

// testConfig is the configuration of a test replica: loopback, free port,
// no HTTP unless asked, quiet logs unless MQTT_TEST_LOG is set.
func testConfig(t testing.TB, args ...string) *server.Config {
	t.Helper()
	all := append([]string{"-listen", "127.0.0.1:0", "-http", "", "-node-id", "test"}, args...)
	cfg, err := server.ParseConfig(all, func(string) string { return "" })
	if err != nil {
		t.Fatalf("test config %v: %v", all, err)
	}
	return cfg
}

func init() {
	// go-redis's own retry lines would flood the output of Redis fault tests.
	server.SetRedisLogger(testLogger())
}

func testLogger() *slog.Logger {
	if os.Getenv("MQTT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a replica with the given flags on top of testConfig
// (with -redis-url, on that Redis), and stops it at cleanup.
func startServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	return startServerLog(t, testLogger(), args...)
}

// startServerLog is startServer with the replica logging to log.
func startServerLog(t testing.TB, log *slog.Logger, args ...string) *testServer {
	t.Helper()
	cfg := testConfig(t, args...)
	nctx, ncancel := context.WithTimeout(context.Background(), 15*time.Second)
	srv, err := server.New(nctx, cfg, log)
	ncancel()
	if err != nil {
		t.Fatalf("server %v: %v", args, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, node: srv.NodeID(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-ts.done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start within 10s")
	}
	ts.addr = srv.Addr().String()
	if a := srv.HTTPAddr(); a != nil {
		ts.http = a.String()
	}
	t.Cleanup(func() {
		select {
		case <-ts.done:
		default:
			ts.Stop(t)
		}
	})
	return ts
}

// deployment is what a conformance test runs against: one or more replicas
// that must behave as one broker.
type deployment struct {
	name    string
	servers []*testServer
	// front, when set, is a load balancer every client goes through, so
	// that a test's connections land on different replicas.
	front *testServer
}

// pub and sub pick the replicas a test's publishers and subscribers use, so
// that with two replicas every message crosses the bridge.
func (d *deployment) pub() *testServer {
	if d.front != nil {
		return d.front
	}
	return d.servers[0]
}

func (d *deployment) sub() *testServer {
	if d.front != nil {
		return d.front
	}
	return d.servers[len(d.servers)-1]
}

// startBehindHAProxy starts a fresh redis-server, n replicas on it and
// HAProxy in front of them (mode tcp, round robin, /readyz checks).
func startBehindHAProxy(t testing.TB, n int, args ...string) *deployment {
	t.Helper()
	rs := redistest.Start(t)
	d := &deployment{name: fmt.Sprintf("haproxy-%d-replicas", n)}
	var backends []haproxytest.Backend
	for i := range n {
		ts := startRedisReplica(t, rs.URL(), fmt.Sprintf("ha-%d", i), append([]string{"-http", "127.0.0.1:0"}, args...)...)
		d.servers = append(d.servers, ts)
		backends = append(backends, haproxytest.Backend{MQTT: ts.Addr(), HTTP: ts.HTTPAddr()})
	}
	proxy := haproxytest.Start(t, backends)
	for i := range n {
		proxy.WaitServer(t, i, true)
	}
	d.front = &testServer{addr: proxy.Addr()}
	return d
}

// deployments lists the ways the broker is run in conformance tests: a single
// node on the in-process bridge, and (once available) two replicas on Redis.
var deployments = []struct {
	name  string
	start func(t testing.TB, args ...string) *deployment
}{
	{"single", func(t testing.TB, args ...string) *deployment {
		return &deployment{name: "single", servers: []*testServer{startServer(t, args...)}}
	}},
	{"redis-2-replicas", func(t testing.TB, args ...string) *deployment {
		return startReplicas(t, 2, args...)
	}},
}

// startReplicas starts a fresh redis-server and n replicas sharing it.
func startReplicas(t testing.TB, n int, args ...string) *deployment {
	t.Helper()
	rs := redistest.Start(t)
	d := &deployment{name: fmt.Sprintf("redis-%d-replicas", n)}
	for i := 0; i < n; i++ {
		d.servers = append(d.servers, startRedisReplica(t, rs.URL(), fmt.Sprintf("node-%d", i), args...))
	}
	return d
}

// startRedisReplica starts one replica on the Redis at url.
func startRedisReplica(t testing.TB, url, node string, args ...string) *testServer {
	t.Helper()
	return startServerLog(t, testLogger().With("node", node), append([]string{"-redis-url", url, "-node-id", node}, args...)...)
}

// forEachDeployment runs f once per deployment as a subtest.
func forEachDeployment(t *testing.T, f func(t *testing.T, d *deployment), args ...string) {
	for _, dep := range deployments {
		t.Run(dep.name, func(t *testing.T) {
			f(t, dep.start(t, args...))
		})
	}
}
