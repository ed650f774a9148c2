package main

// The deployments the conformance tests run against, built with
// internal/mqtttest: one in-process node, in-process replicas sharing a
// fresh redis-server, and those replicas behind HAProxy.

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/server"
)

// testServer is one replica started in-process through server's exported
// API (mqtttest.Server).
type testServer = mqtttest.Server

// endpoint is where a test's clients connect: a replica, or a load balancer
// in front of several.
type endpoint interface {
	Addr() string // host:port
	URL() string  // as a Paho broker URL
}

// proxyFront is a load balancer's frontend address as an endpoint.
type proxyFront string

// Addr is the frontend's host:port.
func (p proxyFront) Addr() string { return string(p) }

// URL is the frontend as a Paho broker URL.
func (p proxyFront) URL() string { return "tcp://" + string(p) }

func init() {
	// go-redis's own retry lines would flood the output of Redis fault tests.
	server.SetRedisLogger(testLogger())
}

// testConfig is the configuration of a test replica (mqtttest.Config).
func testConfig(t testing.TB, args ...string) *server.Config {
	t.Helper()
	return mqtttest.Config(t, args...)
}

// testLogger is quiet unless MQTT_TEST_LOG is set (mqtttest.Logger).
func testLogger() *slog.Logger { return mqtttest.Logger() }

// startServer starts an in-process replica with the given flags (with
// -redis-url, on that Redis), and stops it at cleanup.
func startServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	return mqtttest.StartServer(t, testLogger(), args...)
}

// startRedisReplica starts one in-process replica on the Redis at url.
func startRedisReplica(t testing.TB, url, node string, args ...string) *testServer {
	t.Helper()
	return mqtttest.StartServer(t, testLogger().With("node", node), append([]string{"-redis-url", url, "-node-id", node}, args...)...)
}

// deployment is what a conformance test runs against: one or more replicas
// that must behave as one broker.
type deployment struct {
	name    string
	servers []*testServer
	// front, when set, is a load balancer every client goes through, so
	// that a test's connections land on different replicas.
	front endpoint
	// redis, when set, is the replicas' Redis, for a test that reads the
	// records the bridge keeps there.
	redis *redistest.Server
}

// pub and sub pick where a test's publishers and subscribers connect, so
// that with two replicas every message crosses the bridge.
func (d *deployment) pub() endpoint {
	if d.front != nil {
		return d.front
	}
	return d.servers[0]
}

func (d *deployment) sub() endpoint {
	if d.front != nil {
		return d.front
	}
	return d.servers[len(d.servers)-1]
}

// subServer is the replica sub() connects to, for a test that reads its
// counters; a deployment behind a load balancer has no such replica.
func (d *deployment) subServer(t testing.TB) *testServer {
	t.Helper()
	if d.front != nil {
		t.Fatalf("deployment %s: clients go through a load balancer, not to one replica", d.name)
	}
	return d.servers[len(d.servers)-1]
}

// startBehindHAProxy starts a fresh redis-server, n in-process replicas on
// it (ha-0, ha-1, ...) and HAProxy in front of them (mode tcp, round robin,
// /readyz checks), and waits until every replica is in the proxy's
// rotation.
func startBehindHAProxy(t testing.TB, n int, args ...string) *deployment {
	t.Helper()
	var nodes []string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf("ha-%d", i))
	}
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Nodes: nodes, InProcess: true, HAProxy: true, Args: args})
	return &deployment{name: fmt.Sprintf("haproxy-%d-replicas", n), servers: c.Servers, front: proxyFront(c.Proxy.Addr()), redis: c.Redis}
}

// startReplicas starts a fresh redis-server and n in-process replicas
// (node-0, node-1, ...) sharing it.
func startReplicas(t testing.TB, n int, args ...string) *deployment {
	t.Helper()
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: n, InProcess: true, Args: args})
	return &deployment{name: fmt.Sprintf("redis-%d-replicas", n), servers: c.Servers, redis: c.Redis}
}

// deployments lists the ways the broker is run in conformance tests: a single
// node on the in-process bridge, and two replicas on Redis.
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

// forEachDeployment runs f once per deployment as a subtest.
func forEachDeployment(t *testing.T, f func(t *testing.T, d *deployment), args ...string) {
	for _, dep := range deployments {
		t.Run(dep.name, func(t *testing.T) {
			f(t, dep.start(t, args...))
		})
	}
}
