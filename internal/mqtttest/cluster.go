package mqtttest

import (
	"fmt"
	"testing"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/redistest"
)

// ClusterOptions describe a cluster of replicas on one fresh redis-server.
type ClusterOptions struct {
	// InProcess runs the replicas in the test's process (Cluster.Servers)
	// instead of as child processes of the built binary (Cluster.Replicas);
	// only a process can be SIGKILLed or paused.
	InProcess bool
	// Nodes are the replicas' -node-id values, one replica each; when
	// empty, Replicas replicas are named node-0, node-1, ...
	Nodes    []string
	Replicas int
	// Args are extra flags for every replica (StartProcess already gives
	// -node-ttl 2s, which a flag here overrides).
	Args []string
	// HAProxy puts an HAProxy (mode tcp, round robin, /readyz checks) in
	// front of the replicas and waits until each is in its rotation.
	HAProxy bool
}

// Cluster is a redis-server, replicas on it and, if asked, an HAProxy in
// front of them; all stop at the test's cleanup.
type Cluster struct {
	Redis    *redistest.Server    // the replicas' Redis, fresh for the test
	Replicas []*Process           // child processes, unless InProcess
	Servers  []*Server            // in-process replicas, with InProcess
	Proxy    *haproxytest.HAProxy // nil without ClusterOptions.HAProxy
}

// StartCluster starts a cluster as o describes.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	nodes := o.Nodes
	if len(nodes) == 0 {
		for i := range o.Replicas {
			nodes = append(nodes, fmt.Sprintf("node-%d", i))
		}
	}
	if len(nodes) == 0 {
		t.Fatal("StartCluster: no replicas asked for")
	}
	c := &Cluster{Redis: redistest.Start(t)}
	var backends []haproxytest.Backend
	for _, node := range nodes {
		if o.InProcess {
			args := []string{"-redis-url", c.Redis.URL(), "-node-id", node}
			if o.HAProxy {
				args = append(args, "-http", "127.0.0.1:0") // for its /readyz checks
			}
			s := StartServer(t, Logger().With("node", node), append(args, o.Args...)...)
			c.Servers = append(c.Servers, s)
			backends = append(backends, haproxytest.Backend{MQTT: s.Addr(), HTTP: s.HTTPAddr()})
			continue
		}
		p := StartProcess(t, c.Redis.URL(), node, o.Args...)
		c.Replicas = append(c.Replicas, p)
		backends = append(backends, p.Backend())
	}
	if o.HAProxy {
		c.Proxy = haproxytest.Start(t, backends)
		for i := range backends {
			c.Proxy.WaitServer(t, i, true)
		}
	}
	return c
}
