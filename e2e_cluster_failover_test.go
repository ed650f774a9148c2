package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistopo"
	"github.com/bridgemq/server/packets"
)

// shardNodes returns the master serving slot and one of its replicas.
func shardNodes(t *testing.T, ctx context.Context, cc *redis.ClusterClient, slot int64) (master, replica string) {
	t.Helper()
	shards, err := cc.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	for _, sh := range shards {
		in := false
		for _, r := range sh.Slots {
			in = in || (r.Start <= slot && slot <= r.End)
		}
		if !in {
			continue
		}
		for _, n := range sh.Nodes {
			addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			if n.Role == "master" {
				master = addr
			} else {
				replica = addr
			}
		}
	}
	if master == "" || replica == "" {
		t.Fatalf("slot %d: master %q, replica %q", slot, master, replica)
	}
	return master, replica
}

// syncedShardNodes is shardNodes, once the replica has finished its first
// sync with the master (a replica that never did does not fail over), and
// a client of the replica, closed at cleanup.
func syncedShardNodes(t *testing.T, ctx context.Context, cc *redis.ClusterClient, slot int64) (master, replica string, rc *redis.Client) {
	t.Helper()
	master, replica = shardNodes(t, ctx, cc, slot)
	rc = redis.NewClient(&redis.Options{Addr: replica, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	for {
		info, err := rc.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return master, replica, rc
		}
		if ctx.Err() != nil {
			t.Fatalf("replica %s never synced with %s: %v", replica, master, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitPromoted waits until the Redis behind rc is a master; with takeover
// it first asks it to take over (CLUSTER FAILOVER TAKEOVER needs no votes)
// on every try.
func waitPromoted(t *testing.T, ctx context.Context, rc *redis.Client, takeover bool) {
	t.Helper()
	for {
		if takeover {
			_ = rc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err()
		}
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never became master: %v %v", rc.Options().Addr, role, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// levelsOnTwoMasters returns a first topic level on the shard of slot 512,
// one on a shard of another master (names from prefixes a and b), and the
// master of slot 512.
func levelsOnTwoMasters(t *testing.T, ctx context.Context, cc *redis.ClusterClient, a, b string) (level, other, master string) {
	t.Helper()
	masterOf := clusterMasterOf(t, ctx, cc)
	level, master = levelOnSlot(t, ctx, cc, a, 512), masterOf[512]
	for _, s := range []int64{5632, 6656, 11776, 12800} {
		if masterOf[s] != master {
			return level, levelOnSlot(t, ctx, cc, b, s), master
		}
	}
	t.Fatal("every shard slot tried is on one master")
	return "", "", ""
}

// probeConnectPublish connects a fresh client to addr and publishes one
// QoS 1 message on topic, waiting at most d for CONNACK and PUBACK.
func probeConnectPublish(addr, clientID, topic string, d time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(d))
	b, _ := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, ClientID: clientID, CleanSession: true, KeepAlive: 30})
	b, _ = packets.Append(b, &packets.Publish{QoS: 1, Topic: topic, PacketID: 1, Payload: []byte("probe")})
	if _, err := conn.Write(b); err != nil {
		return err
	}
	r := packets.NewReader(conn, 0)
	for {
		pk, err := r.ReadPacket()
		if err != nil {
			return err
		}
		switch p := pk.(type) {
		case *packets.Connack:
			if p.ReturnCode != packets.Accepted {
				return fmt.Errorf("CONNACK 0x%02x", p.ReturnCode)
			}
		case *packets.Puback:
			return nil
		}
	}
}

// TestTopology_ClusterFailoverRecoversFast kills (SIGKILL) the Redis Cluster
// master that holds the stream shard of the test's topic and the liveness
// key of node-a, while both replicas take CONNECTs and QoS 1 publishes. Each
// replica must take a CONNECT and a QoS 1 PUBLISH again, and answer /readyz
// 200, within 2s of Redis promoting the master's replica; /readyz must fail
// meanwhile. A will refused during the outage is published once it can be;
// no replica is declared dead because its liveness key was on the dead
// master, so the wills of clients still connected are not published.
func TestTopology_ClusterFailoverRecoversFast(t *testing.T) {
	c := redistopo.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })

	// A first topic level whose stream shard is on the same master as
	// node-a's liveness key.
	aliveMaster, _ := shardNodes(t, ctx, cc, slotOf(t, ctx, cc, "mqtt:alive:node-a"))
	level := ""
	for i := 0; i < 200 && level == ""; i++ {
		l := "fo" + strconv.Itoa(i)
		if m, _ := shardNodes(t, ctx, cc, slotOf(t, ctx, cc, bridge.ClusterStreamKey("mqtt:", l))); m == aliveMaster {
			level = l
		}
	}
	if level == "" {
		t.Fatal("no topic level with its stream shard on node-a's liveness master")
	}
	master, replica := shardNodes(t, ctx, cc, slotOf(t, ctx, cc, bridge.ClusterStreamKey("mqtt:", level)))

	flags := []string{"-redis-cluster", strings.Join(c.Addrs(), ","), "-node-ttl", "2s", "-http", "127.0.0.1:0"}
	reps := map[string]*testServer{
		"node-a": startTopoReplica(t, "node-a", flags...),
		"node-b": startTopoReplica(t, "node-b", flags...),
	}
	for name, ts := range reps {
		if err := probeConnectPublish(ts.Addr(), unique(t, "warm-"+name), level+"/x", waitTimeout); err != nil {
			t.Fatalf("%s before the failover: %v", name, err)
		}
	}
	watcher := mqtttest.Dial(t, reps["node-b"].Addr())
	watcher.MustConnect(&packets.Connect{ClientID: unique(t, "watcher"), CleanSession: true, KeepAlive: 60})
	watcher.Subscribe(1, packets.Subscription{Filter: "wills/#", QoS: 1}, packets.Subscription{Filter: level + "/will", QoS: 1})
	// Clients that stay connected: their wills must not be published.
	var stay []*mqtttest.Client
	for name, ts := range reps {
		cl := mqtttest.Dial(t, ts.Addr())
		cl.MustConnect(&packets.Connect{ClientID: unique(t, "stay-"+name), CleanSession: true, KeepAlive: 60,
			Will: &packets.Will{Topic: "wills/" + name, Payload: []byte(name + " declared dead"), QoS: 1}})
		stay = append(stay, cl)
	}
	// A client whose connection breaks during the outage: its will is due.
	doomed := mqtttest.Dial(t, reps["node-a"].Addr())
	doomed.MustConnect(&packets.Connect{ClientID: unique(t, "doomed"), CleanSession: true, KeepAlive: 60,
		Will: &packets.Will{Topic: level + "/will", Payload: []byte("doomed"), QoS: 1}})

	type progress struct {
		mu         sync.Mutex
		ok         time.Time // first CONNECT+PUBLISH that succeeded after the kill
		ready      time.Time // first /readyz 200 after the kill... reset by a 503
		saw503     bool
		probeFails int
	}
	var promotedAt time.Time
	var promoMu sync.Mutex
	var lastRole string
	prog := map[string]*progress{}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup

	// A replica that never finished its first sync does not fail over; the
	// first sync waits for repl-diskless-sync-delay (5s).
	rc := redis.NewClient(&redis.Options{Addr: replica, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	for synced := false; !synced; {
		info, err := rc.Info(ctx, "replication").Result()
		synced = err == nil && strings.Contains(info, "master_link_status:up")
		if !synced {
			if ctx.Err() != nil {
				t.Fatalf("replica %s never synced with %s: %v", replica, master, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if !c.Kill(master) {
		t.Fatalf("no cluster node at %s", master)
	}
	killedAt := time.Now()
	_ = doomed.Conn.Close()

	wg.Add(1)
	go func() { // Redis's promotion of the replica
		defer wg.Done()
		for pctx.Err() == nil {
			role, err := rc.Do(pctx, "ROLE").Slice()
			promoMu.Lock()
			lastRole = fmt.Sprint(role, err)
			promoMu.Unlock()
			if err == nil && len(role) > 0 && role[0] == "master" {
				promoMu.Lock()
				promotedAt = time.Now()
				promoMu.Unlock()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	for name, ts := range reps {
		p := &progress{}
		prog[name] = p
		wg.Add(2)
		go func() { // CONNECT + QoS 1 PUBLISH, over and over
			defer wg.Done()
			for i := 0; pctx.Err() == nil; i++ {
				err := probeConnectPublish(ts.Addr(), fmt.Sprintf("%s-%d", unique(t, "probe-"+name), i), level+"/x", time.Second)
				p.mu.Lock()
				if err == nil && p.ok.IsZero() {
					p.ok = time.Now()
				} else if err != nil {
					p.ok = time.Time{}
					p.probeFails++
				}
				done := !p.ok.IsZero() && !p.ready.IsZero()
				p.mu.Unlock()
				if done {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		go func() { // the load balancer's view
			defer wg.Done()
			for pctx.Err() == nil {
				code, err := httpStatus(ts.HTTPAddr(), "/readyz")
				p.mu.Lock()
				if err == nil && code == http.StatusOK {
					if p.ready.IsZero() && p.saw503 {
						p.ready = time.Now()
					}
				} else {
					p.saw503 = true
					p.ready = time.Time{}
				}
				p.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	// Wait until both replicas serve again, or 20s.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, p := range prog {
			p.mu.Lock()
			all = all && !p.ok.IsZero() && !p.ready.IsZero()
			p.mu.Unlock()
		}
		promoMu.Lock()
		promoted := !promotedAt.IsZero()
		promoMu.Unlock()
		if all && promoted {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()

	if promotedAt.IsZero() {
		t.Fatalf("Redis did not promote %s within 20s of killing %s; ROLE: %s", replica, master, lastRole)
	}
	t.Logf("killed master %s; replica %s promoted after %s", master, replica, promotedAt.Sub(killedAt).Round(time.Millisecond))
	for name, p := range prog {
		p.mu.Lock()
		if p.ok.IsZero() || p.ready.IsZero() {
			t.Errorf("%s: not serving 20s after the kill (CONNECT+PUBLISH ok: %v, /readyz 200: %v)", name, !p.ok.IsZero(), !p.ready.IsZero())
			p.mu.Unlock()
			continue
		}
		okAfter, readyAfter := p.ok.Sub(promotedAt), p.ready.Sub(promotedAt)
		t.Logf("%s: CONNECT+QoS1 PUBLISH back %s after promotion, /readyz 200 %s after (%d failed probes, /readyz failed meanwhile: %v)",
			name, okAfter.Round(time.Millisecond), readyAfter.Round(time.Millisecond), p.probeFails, p.saw503)
		if okAfter > 2*time.Second {
			t.Errorf("%s: CONNECT+QoS1 PUBLISH back %s after promotion, want within 2s", name, okAfter)
		}
		if readyAfter > 2*time.Second {
			t.Errorf("%s: /readyz 200 again %s after promotion, want within 2s", name, readyAfter)
		}
		if !p.saw503 {
			t.Errorf("%s: /readyz answered 200 throughout the outage", name)
		}
		p.mu.Unlock()
	}

	// Long enough for a survivor to have reaped a replica whose liveness
	// key lapsed on the dead master (TTL 2s, confirmed after TTL/2).
	wills := mqtttest.NewWatcher(watcher).ReadFor(4 * time.Second)
	if n := wills[level+"/will"]; n != 1 {
		t.Errorf("will refused during the outage published %d times, want once [MQTT-3.1.2-8]", n)
	}
	for name := range reps {
		if n := wills["wills/"+name]; n != 0 {
			t.Errorf("will of a client still connected to %s published %d times: %s was declared dead", name, n, name)
		}
	}
	for _, cl := range stay {
		cl.Send(&packets.Pingreq{})
		if _, ok := cl.Next().(*packets.Pingresp); !ok {
			t.Error("a client that stayed connected got something other than PINGRESP")
		}
	}
}
