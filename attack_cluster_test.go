package main

// Hostile tests of Redis Cluster mode (the sharded bus, bridge/redis_shardbus.go):
// what an operator or a client can do to a six-node cluster deployment.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/server"
)

// TestAttack13_ClusterPrefixWithOpenBraceRefusedAtStart starts a replica on
// a Redis Cluster with a -redis-prefix whose '{' is not closed ("x{", "a}{b").
// A hash tag then runs from the prefix's '{' into the key's own "{tag}", so
// a shard's stream ("x{stream:{7}", tag "stream:{7") and its bus channel
// ("x{bus:{7}", tag "bus:{7") land in different slots. What a user saw
// before: the replica started and answered /readyz, but every QoS 1 or 2
// PUBLISH whose shard's two slots sat on different masters (about two
// thirds of the topics) closed the publisher's connection with "Script
// attempted to access a non local key in a cluster node". Such a prefix
// must be refused at start, naming it.
func TestAttack13_ClusterPrefixWithOpenBraceRefusedAtStart(t *testing.T) {
	c := redistopo.StartCluster(t)
	for _, prefix := range []string{"x{", "a}{b"} {
		cfg := mqtttest.Config(t, "-redis-cluster", strings.Join(c.Addrs(), ","), "-redis-prefix", prefix)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		srv, err := server.New(ctx, cfg, testLogger())
		cancel()
		if err == nil {
			_ = srv.Close()
			t.Errorf("-redis-prefix %q on a Redis Cluster: the replica started; want it refused (its shards' streams and channels are in different slots)", prefix)
			continue
		}
		if !strings.Contains(err.Error(), prefix) {
			t.Errorf("-redis-prefix %q refused with %q, want the error to name the prefix", prefix, err)
		}
	}
	// A balanced tag (every key in one slot, as the README describes) and
	// the default still start.
	for _, prefix := range []string{"{app}:", "mqtt:"} {
		startTopoReplica(t, "node-"+strings.Trim(prefix, "{}:"), "-redis-cluster", strings.Join(c.Addrs(), ","), "-redis-prefix", prefix)
	}
}
