package redistopo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// clusterNodes is the node count: three masters, each with one replica.
const clusterNodes = 6

// Cluster is a six-node Redis Cluster (three masters, three replicas) owned
// by a test.
type Cluster struct {
	nodes []*process
}

// StartCluster runs six cluster-enabled redis-server nodes on free ports,
// joins them with `redis-cli --cluster create --cluster-replicas 1`, and
// waits until every node reports cluster_state:ok; t.Cleanup stops them.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	serverBin := lookPath(t, "redis-server")
	cliBin := lookPath(t, "redis-cli")
	dir := t.TempDir()

	c := &Cluster{}
	t.Cleanup(c.Stop)
	for i := 0; i < clusterNodes; i++ {
		// Each node needs a client port and a cluster bus port; the bus port
		// is chosen too, rather than left at port+10000, which may be taken.
		p, err := startProcess(serverBin, dir, "node"+strconv.Itoa(i), 1, func(port int, extra []int) []string {
			return append(serverArgs(port, dir),
				"--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(extra[0]),
				"--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(port)+".conf"),
				"--cluster-node-timeout", "2000",
			)
		})
		if err != nil {
			t.Fatalf("redistopo: %v", err)
		}
		c.nodes = append(c.nodes, p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cliBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistopo: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.nodes {
		if err := waitClusterOK(n); err != nil {
			t.Fatalf("redistopo: %v", err)
		}
	}
	return c
}

// waitClusterOK waits until node reports cluster_state:ok, knows all six
// nodes, and lists each master's replica in its shard, so that a client's
// first CLUSTER SLOTS or CLUSTER SHARDS gets the whole map, replicas
// included.
func waitClusterOK(node *process) error {
	c := redis.NewClient(&redis.Options{Addr: node.addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(node, func(ctx context.Context) error {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("cluster info: %w", err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("cluster_state not ok yet")
		}
		if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(clusterNodes)) {
			return fmt.Errorf("node does not know all %d nodes yet", clusterNodes)
		}
		// Each master with its replica, as CLUSTER SHARDS (what the tests
		// read) groups them: a node may flag a replica in CLUSTER NODES
		// before it lists it under its master (CI, once: a shard with no
		// replica right after start).
		shards, err := c.ClusterShards(ctx).Result()
		if err != nil {
			return fmt.Errorf("cluster shards: %w", err)
		}
		whole := 0
		for _, sh := range shards {
			roles := map[string]int{}
			for _, n := range sh.Nodes {
				roles[n.Role]++
			}
			if len(sh.Slots) > 0 && roles["master"] == 1 && roles["replica"] == 1 {
				whole++
			}
		}
		if whole != clusterNodes/2 {
			return fmt.Errorf("node sees %d shards with slots, a master and a replica, want %d", whole, clusterNodes/2)
		}
		return nil
	})
}

// Addrs returns every node's host:port, masters and replicas, for
// -redis-cluster and redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr
	}
	return addrs
}

// Stop kills every node. A second Stop is harmless.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		n.stop()
	}
}

// Kill sends SIGKILL to the node listening on addr and waits until it has
// exited, so that its replica is promoted after the cluster node timeout
// (2s). It reports false when no node has that address.
func (c *Cluster) Kill(addr string) bool {
	for _, n := range c.nodes {
		if n.addr == addr {
			n.stop()
			return true
		}
	}
	return false
}

// Pause stops the node at addr with SIGSTOP: it keeps its connections but
// reads nothing, so a replica falls behind its master. It reports false
// when no node has that address.
func (c *Cluster) Pause(addr string) bool { return c.Signal(addr, syscall.SIGSTOP) }

// Resume continues a paused node with SIGCONT.
func (c *Cluster) Resume(addr string) bool { return c.Signal(addr, syscall.SIGCONT) }

// Signal sends sig to the node listening on addr (SIGSTOP pauses it as a
// stalled host would, SIGCONT resumes it). It reports false when no node
// has that address or it has exited.
func (c *Cluster) Signal(addr string, sig os.Signal) bool {
	for _, n := range c.nodes {
		if n.addr == addr {
			return n.cmd.Process.Signal(sig) == nil
		}
	}
	return false
}
