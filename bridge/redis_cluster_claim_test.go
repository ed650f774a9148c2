package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistopo"
	"github.com/redis/go-redis/v9"
)

// newClusterNode is a replica on the Redis Cluster c, every node of the
// test sharing prefix.
func newClusterNode(t testing.TB, c *redistopo.Cluster, node, prefix string) *testNode {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Protocol: 2})
	t.Cleanup(func() { _ = cc.Close() })
	return startTestNode(t, RedisOptions{
		Client: cc,
		NodeID: node,
		Prefix: prefix,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// A persistent session that leaves one replica and is claimed on another
// while the first still stores it: in Redis Cluster the client record and
// the session hash live on different masters, so a claim that read both at
// once could see the client already offline and the session hash from
// before its cursor was stored, and replay what the session had received
// and acknowledged. The resumed session must get nothing from before it
// left: each message was delivered, and the state stored says acknowledged
// [MQTT-4.4.0-1] (only unacknowledged messages are sent again).
func TestRedis_ClusterClaimRacingDetachReplaysNothingAcknowledged_MQTT_4_4_0_1(t *testing.T) {
	c := redistopo.StartCluster(t)
	prefix := "claimrace:"
	a := newClusterNode(t, c, "a", prefix)
	b := newClusterNode(t, c, "b", prefix)
	// Two passes with the same client ids: the second runs on the first's
	// sessions, records and streams.
	const rounds = 50
	for n := range 2 * rounds {
		i := n % rounds
		id := fmt.Sprintf("race-%d", i)
		topic := fmt.Sprintf("race/%d", i%7)
		s1 := &sink{}
		attach(t, b, id, s1, false)
		subscribe(t, b, id, topic, 1)
		publish(t, b, rmsg(topic, 1, fmt.Sprintf("m%d", n)))
		s1.WaitFor(t, 1)
		detached := make(chan error, 1)
		go func() { detached <- b.Detach(context.Background(), id, s1, &StoredSession{}) }()
		// The claim starts at a different point of the detach each round.
		time.Sleep(time.Duration(i%20) * 100 * time.Microsecond)
		s2 := &sink{}
		st := attach(t, a, id, s2, false)
		if err := <-detached; err != nil {
			t.Fatalf("round %d: Detach on b: %v", n, err)
		}
		if st == nil {
			t.Fatalf("round %d: persistent session not found on a", n)
		}
		if q := queuedPayloads(st); len(q) != 0 {
			t.Fatalf("round %d: the session resumed on a was replayed %v, acknowledged on b before it left", n, q)
		}
		detach(t, a, id, s2, nil)
	}
}
