package main

// The broker on every Redis topology a replica can be pointed at: a single
// server through redis://, a Unix socket through unix://, TLS through
// rediss://, an ACL user with a password and a database number, Sentinel
// and Cluster. On each, two replicas must behave as one broker: the same
// cross-replica checks run on every topology (checkCrossReplica), and each
// topology adds what is particular to it (keys in the right database, keys
// spread over the cluster's masters under EMQX's names).

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/packets"
)

// topoReplica is a replica as the topology tests reach it: in-process
// (*testServer) or a child process (*mqtttest.Process).
type topoReplica interface{ URL() string }

// topoAddr is a replica's MQTT host:port.
func topoAddr(r topoReplica) string { return strings.TrimPrefix(r.URL(), "tcp://") }

// startTopoReplica starts an in-process replica named node whose Redis is
// given by redisFlags (-redis-url, -redis-sentinel-*, -redis-cluster), the
// way main does: Config.RedisClient, then the Redis bridge.
func startTopoReplica(t testing.TB, node string, redisFlags ...string) *testServer {
	t.Helper()
	args := append(slices.Clone(redisFlags), "-node-id", node)
	return mqtttest.StartServer(t, testLogger().With("node", node), args...)
}

// startTopoPair starts replicas node-a and node-b on the same Redis flags.
func startTopoPair(t testing.TB, redisFlags ...string) (a, b *testServer) {
	t.Helper()
	return startTopoReplica(t, "node-a", redisFlags...), startTopoReplica(t, "node-b", redisFlags...)
}

// topoIDs names the client ids a cross-replica run used, so that a topology
// test can look for their records in Redis afterwards.
type topoIDs struct {
	persistent string // clean=false session, left offline at the end
	takeover   string // connected on B at the end
}

// checkCrossReplica runs the cross-replica checks with a on one side and b
// on the other; each is a subtest.
func checkCrossReplica(t *testing.T, a, b topoReplica) topoIDs {
	ids := topoIDs{persistent: unique(t, "persist"), takeover: unique(t, "takeover")}
	t.Run("FanOutQoS1ExactAndWildcard_MQTT_3_3_5_1", func(t *testing.T) { checkFanOut(t, a, b) })
	t.Run("RetainedFromOtherReplica_MQTT_3_3_1_6", func(t *testing.T) { checkRetained(t, a, b) })
	t.Run("PersistentSessionResumedOnOtherReplica_MQTT_3_1_2_5", func(t *testing.T) { checkPersistent(t, a, b, ids.persistent) })
	t.Run("TakeoverAcrossReplicas_MQTT_3_1_4_2", func(t *testing.T) { checkTakeover(t, a, b, ids.takeover) })
	return ids
}

// checkFanOut: a QoS 1 PUBLISH on a reaches a subscriber on b through an
// exact filter (Redis SUBSCRIBE) and a wildcard filter (PSUBSCRIBE), at
// QoS 1, once each [MQTT-3.3.5-1]; a topic neither filter matches does not
// arrive [MQTT-4.7.1-2].
func checkFanOut(t *testing.T, a, b topoReplica) {
	base := unique(t, "fan")
	col := newCollector()
	sub, _ := connectPaho(t, pahoOptsAt(topoAddr(b), unique(t, "sub"), true))
	for _, f := range []string{base + "/exact", base + "/wild/+/#"} {
		if code := subscribe(t, sub, f, 1, col); code != 1 {
			t.Fatalf("SUBACK for %q: 0x%02x, want granted QoS 1", f, code)
		}
	}
	pub, _ := connectPaho(t, pahoOptsAt(topoAddr(a), unique(t, "pub"), true))
	sent := map[string]string{base + "/exact": "exact", base + "/wild/x/y/z": "wild"}
	publish(t, pub, base+"/other", 1, false, "no subscriber")
	publish(t, pub, base+"/exact", 1, false, "exact")
	publish(t, pub, base+"/wild/x/y/z", 1, false, "wild")
	for range len(sent) {
		m := col.next(t)
		want, ok := sent[m.Topic()]
		if !ok || string(m.Payload()) != want || m.Qos() != 1 {
			t.Fatalf("got %q on %q at QoS %d; want one of %v at QoS 1", m.Payload(), m.Topic(), m.Qos(), sent)
		}
		delete(sent, m.Topic())
	}
	col.quiet(t)
}

// checkRetained: a retained message published on a is sent, with RETAIN set,
// to new subscribers on b, through an exact and a wildcard filter
// [MQTT-3.3.1-6] [MQTT-3.3.1-8].
func checkRetained(t *testing.T, a, b topoReplica) {
	base := unique(t, "ret")
	pub, _ := connectPaho(t, pahoOptsAt(topoAddr(a), unique(t, "pub"), true))
	publish(t, pub, base+"/r1", 1, true, "kept")
	for _, f := range []string{base + "/r1", base + "/+", base + "/#"} {
		col := newCollector()
		sub, _ := connectPaho(t, pahoOptsAt(topoAddr(b), unique(t, "sub"), true))
		subscribe(t, sub, f, 1, col)
		m := col.next(t)
		if m.Topic() != base+"/r1" || string(m.Payload()) != "kept" || !m.Retained() || m.Qos() != 1 {
			t.Fatalf("filter %q: got %q on %q retained=%v qos=%d; want \"kept\" on %q retained at QoS 1",
				f, m.Payload(), m.Topic(), m.Retained(), m.Qos(), base+"/r1")
		}
		col.quiet(t)
		sub.Disconnect(50)
	}
}

// checkPersistent: a clean=false session subscribed on a, then offline,
// keeps the QoS 1 messages published on b meanwhile [MQTT-3.1.2-5]; resumed
// on b it finds its session [MQTT-3.2.2-2] and receives them, in order
// [MQTT-4.6.0-6], each once.
func checkPersistent(t *testing.T, a, b topoReplica, id string) {
	base := unique(t, "q")
	c := mqtttest.Dial(t, topoAddr(a))
	c.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 30})
	if codes := c.Subscribe(1, packets.Subscription{Filter: base + "/#", QoS: 1}); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK codes %v, want [1]", codes)
	}
	c.Send(&packets.Disconnect{})
	c.ExpectClosed(waitTimeout) // the server closes after DISCONNECT [MQTT-3.14.4-1]

	pub := mqtttest.Dial(t, topoAddr(b))
	pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
	want := []string{"m1", "m2", "m3"}
	for i, p := range want {
		pub.PublishQoS1(uint16(i+1), base+"/x", p)
	}

	r := mqtttest.Dial(t, topoAddr(b))
	if ack := r.MustConnect(&packets.Connect{ClientID: id, CleanSession: false, KeepAlive: 30}); !ack.SessionPresent {
		t.Fatal("CONNACK session present = false on the other replica, want true [MQTT-3.2.2-2]")
	}
	pub.PublishQoS1(10, base+"/x", "fence")
	got := r.PublishesUntil("fence")
	var payloads []string
	for _, p := range got {
		payloads = append(payloads, string(p.Payload))
		if p.QoS != 1 || p.Topic != base+"/x" {
			t.Errorf("queued message %q on %q at QoS %d, want %q at QoS 1", p.Payload, p.Topic, p.QoS, base+"/x")
		}
	}
	if !slices.Equal(payloads, want) {
		t.Fatalf("resumed session received %q, want %q", payloads, want)
	}
	r.Send(&packets.Disconnect{})
}

// checkTakeover: a CONNECT on b with a client id connected on a closes the
// connection on a [MQTT-3.1.4-2], and the new connection works.
func checkTakeover(t *testing.T, a, b topoReplica, id string) {
	old := mqtttest.Dial(t, topoAddr(a))
	old.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
	cur := mqtttest.Dial(t, topoAddr(b))
	cur.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
	old.ExpectClosed(waitTimeout)
	if codes := cur.Subscribe(1, packets.Subscription{Filter: unique(t, "after"), QoS: 1}); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("new connection SUBACK codes %v, want [1]", codes)
	}
}

// TestTopology_SingleRedisURL runs the cross-replica checks on one Redis
// reached through redis://host:port.
func TestTopology_SingleRedisURL(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startTopoPair(t, "-redis-url", rs.URL())
	checkCrossReplica(t, a, b)
}

// TestTopology_UnixSocket runs the cross-replica checks on a Redis that
// listens on a Unix socket only, reached through unix:///path.
func TestTopology_UnixSocket(t *testing.T) {
	u := redistopo.StartUnix(t)
	a, b := startTopoPair(t, "-redis-url", u.URL())
	checkCrossReplica(t, a, b)
}

// TestTopology_TLS runs the cross-replica checks on a Redis that speaks TLS
// only, with a certificate from a CA made by the test. go-redis checks a
// rediss:// server against the system roots, so the two replicas trust it in
// the two ways an operator can: replica A (in-process) with
// ?skip_verify=true in the URL, replica B (a child process) with the CA in
// SSL_CERT_FILE and full verification. A third process with neither must
// refuse to start, naming the certificate problem.
func TestTopology_TLS(t *testing.T) {
	s := redistopo.StartTLS(t)
	a := startTopoReplica(t, "node-a", "-redis-url", s.URL()+"?skip_verify=true")
	t.Setenv("SSL_CERT_FILE", s.CAFile()) // read by the child process's crypto/x509
	b := mqtttest.StartProcess(t, s.URL(), "node-b")
	checkCrossReplica(t, a, b)

	t.Run("UntrustedCertificateRefusesToStart", func(t *testing.T) {
		t.Setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
		out, code := runReplicaBinary(t, "-redis-url", s.URL())
		if code == 0 {
			t.Fatalf("server with an untrusted Redis certificate exited 0; output:\n%s", out)
		}
		if !strings.Contains(out, "certificate") {
			t.Errorf("output does not name the certificate problem:\n%s", out)
		}
	})
}

// TestTopology_UserPasswordDB runs the cross-replica checks as an ACL user
// with a password, in database 3 (redis://user:pass@host:port/3), while the
// default user has another password; the replicas' keys must land in
// database 3 and nowhere else.
func TestTopology_UserPasswordDB(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.Do(ctx, "ACL", "SETUSER", "broker", "on", ">br0ker-pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	if err := admin.ConfigSet(ctx, "requirepass", "admin-pw").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}
	url := fmt.Sprintf("redis://broker:br0ker-pw@%s/3", rs.Addr())
	a, b := startTopoPair(t, "-redis-url", url)
	ids := checkCrossReplica(t, a, b)

	inspect := func(db int) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr(), Username: "broker", Password: "br0ker-pw", DB: db})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	db3, db0 := inspect(3), inspect(0)
	for _, key := range []string{"mqtt:client:" + ids.persistent, "mqtt:sub:" + ids.persistent, "mqtt:client:" + ids.takeover} {
		if n, err := db3.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s in db 3 = %d, %v; want 1", key, n, err)
		}
	}
	if n, err := db0.DBSize(ctx).Result(); err != nil || n != 0 {
		keys, _ := db0.Keys(ctx, "*").Result()
		t.Errorf("db 0 holds %d keys (%v, err %v), want none: the replicas must use db 3 only", n, keys, err)
	}
	if node, err := db3.HGet(ctx, "mqtt:client:"+ids.takeover, "node").Result(); err != nil || node != "node-b" {
		t.Errorf("HGET mqtt:client:%s node = %q, %v; want \"node-b\" (where the takeover connected)", ids.takeover, node, err)
	}
}

// TestTopology_WrongPasswordRefusesToStart: a replica whose Redis refuses its
// credentials (or does not answer at all) exits non-zero with one line that
// names -redis-url and does not print the password.
func TestTopology_WrongPasswordRefusesToStart(t *testing.T) {
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.Do(ctx, "ACL", "SETUSER", "broker", "on", ">right-pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	if err := admin.ConfigSet(ctx, "requirepass", "right-pw").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}
	closedPort, err := mqtttest.FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, userinfo, addr string }{
		{"requirepass", ":Wr0ngSecret", rs.Addr()},
		{"ACL user", "broker:Wr0ngSecret", rs.Addr()},
		{"no password", "", rs.Addr()},
		{"nothing listening", ":Wr0ngSecret", fmt.Sprintf("127.0.0.1:%d", closedPort)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := "redis://" + tc.addr
			if tc.userinfo != "" {
				url = "redis://" + tc.userinfo + "@" + tc.addr
			}
			out, code := runReplicaBinary(t, "-redis-url", url)
			if code == 0 {
				t.Fatalf("exit status 0, want non-zero; output:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "-redis-url") {
				t.Errorf("output is not one line naming -redis-url:\n%s", out)
			}
			if strings.Contains(out, "Wr0ngSecret") {
				t.Errorf("output shows the password:\n%s", out)
			}
		})
	}
}

// runReplicaBinary runs the server binary with args on free loopback ports
// and no HTTP listener, expecting it to exit by itself within 20s; it returns
// the combined output and the exit status.
func runReplicaBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin := mqtttest.Binary(t, ".")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-listen", "127.0.0.1:0", "-http", "", "-node-id", "refused"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("server %v still running after 20s; output:\n%s", args, out)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run server: %v", err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// TestTopology_Sentinel runs the cross-replica checks through Sentinel
// (-redis-sentinel-master, -redis-sentinel-addrs).
func TestTopology_Sentinel(t *testing.T) {
	s := redistopo.StartSentinel(t)
	a, b := startTopoPair(t, "-redis-sentinel-master", s.MasterName(),
		"-redis-sentinel-addrs", strings.Join(s.SentinelAddrs(), ","))
	ids := checkCrossReplica(t, a, b)

	m := redis.NewClient(&redis.Options{Addr: s.MasterAddr()})
	t.Cleanup(func() { _ = m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := m.Exists(ctx, "mqtt:client:"+ids.takeover).Result(); err != nil || n != 1 {
		t.Errorf("EXISTS mqtt:client:%s on the master = %d, %v; want 1", ids.takeover, n, err)
	}
}

// TestTopology_Cluster runs the cross-replica checks on a six-node Redis
// Cluster (-redis-cluster), then checks that the keys keep EMQX's names (no
// hash tags) and are spread over the masters: clients whose records hash to
// each master's slots connect, and every master holds mqtt:client:* keys.
func TestTopology_Cluster(t *testing.T) {
	c := redistopo.StartCluster(t)
	a, b := startTopoPair(t, "-redis-cluster", strings.Join(c.Addrs(), ","))
	ids := checkCrossReplica(t, a, b)

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	t.Run("EMQXKeyNames", func(t *testing.T) {
		h, err := cc.HGetAll(ctx, "mqtt:client:"+ids.takeover).Result()
		if err != nil {
			t.Fatalf("HGETALL mqtt:client:%s: %v", ids.takeover, err)
		}
		for _, f := range []string{"state", "online_at", "node"} {
			if h[f] == "" {
				t.Errorf("mqtt:client:%s has no %q field: %v", ids.takeover, f, h)
			}
		}
		if h["node"] != "node-b" {
			t.Errorf("mqtt:client:%s = %v, want node node-b (where the takeover connected)", ids.takeover, h)
		}
		subs, err := cc.HGetAll(ctx, "mqtt:sub:"+ids.persistent).Result()
		if err != nil || len(subs) != 1 {
			t.Errorf("HGETALL mqtt:sub:%s = %v, %v; want the one filter of the persistent session", ids.persistent, subs, err)
		}
		for f, q := range subs {
			if q != "1" {
				t.Errorf("mqtt:sub:%s %q = %q, want QoS \"1\"", ids.persistent, f, q)
			}
		}
	})

	t.Run("ClientRecordsSpreadOverMasters", func(t *testing.T) {
		masterOf := clusterMasterOf(t, ctx, cc)
		masters := map[string]bool{}
		for _, addr := range masterOf {
			masters[addr] = true
		}
		owners := map[string]string{} // master → client id
		for i := 0; len(owners) < len(masters) && i < 200; i++ {
			id := fmt.Sprintf("%s-%d", unique(t, "spread"), i)
			owner := masterOf[slotOf(t, ctx, cc, "mqtt:client:"+id)]
			if owners[owner] != "" {
				continue
			}
			owners[owner] = id
			r := mqtttest.Dial(t, topoAddr([]topoReplica{a, b}[len(owners)%2]))
			r.MustConnect(&packets.Connect{ClientID: id, CleanSession: true, KeepAlive: 30})
		}
		for _, id := range owners {
			if state, err := cc.HGet(ctx, "mqtt:client:"+id, "state").Result(); err != nil || state != "1" {
				t.Errorf("HGET mqtt:client:%s state = %q, %v; want \"1\" (connected)", id, state, err)
			}
		}
		var mu sync.Mutex // ForEachMaster calls back concurrently
		var holding []string
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			keys, err := m.Keys(ctx, "mqtt:client:*").Result()
			if err != nil {
				return fmt.Errorf("KEYS on %s: %w", m.Options().Addr, err)
			}
			if len(keys) > 0 {
				mu.Lock()
				holding = append(holding, m.Options().Addr)
				mu.Unlock()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(holding) != len(masters) {
			t.Fatalf("mqtt:client:* keys on masters %v, want on all %d", holding, len(masters))
		}
	})
}

// clusterMasterOf maps each hash slot to the address of the master serving
// it, from CLUSTER SHARDS.
func clusterMasterOf(t *testing.T, ctx context.Context, cc *redis.ClusterClient) map[int64]string {
	t.Helper()
	shards, err := cc.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	bySlot := make(map[int64]string, 16384)
	for _, sh := range shards {
		var master string
		for _, n := range sh.Nodes {
			if n.Role == "master" {
				master = net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			}
		}
		if master == "" {
			t.Fatalf("CLUSTER SHARDS: shard %+v has no master", sh)
		}
		for _, r := range sh.Slots {
			for i := r.Start; i <= r.End; i++ {
				bySlot[i] = master
			}
		}
	}
	if len(bySlot) != 16384 {
		t.Fatalf("CLUSTER SHARDS covers %d slots, want 16384", len(bySlot))
	}
	return bySlot
}

// slotOf asks the cluster which hash slot key belongs to.
func slotOf(t *testing.T, ctx context.Context, cc *redis.ClusterClient, key string) int64 {
	t.Helper()
	n, err := cc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	return n
}
