package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// TestNodeID_DuplicateRefused: a replica started with the -node-id of a
// live replica exits with status 2 and a message naming -node-id, after
// waiting at most -node-ttl plus one refresh period. A replica killed and
// started again at once under its own id (a crash-restart loop) starts,
// once its previous run's liveness key has lapsed.
func TestNodeID_DuplicateRefused(t *testing.T) {
	rs := redistest.Start(t)
	startRedisReplica(t, rs.URL(), "twin", "-node-ttl", "1s")

	start := time.Now()
	out, code := runReplicaBinary(t, "-redis-url", rs.URL(), "-node-id", "twin", "-node-ttl", "1s")
	took := time.Since(start)
	t.Logf("duplicate refused after %s with status %d", took.Round(time.Millisecond), code)
	if code != 2 {
		t.Fatalf("exit status %d, want 2 (configuration error); output:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "server: -node-id twin:") {
		t.Errorf("last line %q does not name -node-id twin; output:\n%s", last, out)
	}

	// Crash and restart under the same id: the new run waits for the old
	// liveness key (TTL 2s) to lapse, then starts.
	first := mqtttest.StartProcess(t, rs.URL(), "phoenix")
	first.Kill(t)
	start = time.Now()
	mqtttest.StartProcess(t, rs.URL(), "phoenix")
	t.Logf("restart under the same id ready after %s", time.Since(start).Round(time.Millisecond))
}

// newWillWatcher subscribes to wills/# on addr and counts what arrives.
func newWillWatcher(t *testing.T, addr string) *mqtttest.Watcher {
	return mqtttest.Watch(t, addr, unique(t, "watcher"), "wills/#")
}

// waitOnline polls the client record until it says id is online on node.
func waitOnline(t *testing.T, rdb *redis.Client, id, node string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var h map[string]string
	for time.Now().Before(deadline) {
		h, _ = rdb.HGetAll(context.Background(), "mqtt:client:"+id).Result()
		if h["state"] == "1" && h["node"] == node {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("mqtt:client:%s = %v after %s, want online on %s", id, h, d, node)
}

// TestLiveness_ReRegistersAfterRedisRestartEmpty: Redis restarts empty
// while replica a holds two clients with wills. a registers them again;
// then the same client id on b closes the first connection on a
// [MQTT-3.1.4-2], and a killed afterwards has the other client's will
// published by b, once [MQTT-3.1.2-8].
func TestLiveness_ReRegistersAfterRedisRestartEmpty(t *testing.T) {
	rs := redistest.Start(t)
	a := mqtttest.StartProcess(t, rs.URL(), "node-a")
	b := mqtttest.StartProcess(t, rs.URL(), "node-b")
	watcher := newWillWatcher(t, b.Addr())
	c1, c2 := unique(t, "c1"), unique(t, "c2")
	first := mqtttest.Dial(t, a.Addr())
	first.MustConnect(&packets.Connect{ClientID: c1, CleanSession: true, KeepAlive: 60,
		Will: &packets.Will{Topic: "wills/c1", Payload: []byte("c1 gone"), QoS: 1}})
	other := mqtttest.Dial(t, a.Addr())
	other.MustConnect(&packets.Connect{ClientID: c2, CleanSession: false, KeepAlive: 60,
		Will: &packets.Will{Topic: "wills/c2", Payload: []byte("c2 gone"), QoS: 1}})

	rs.Restart(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	start := time.Now()
	waitOnline(t, rdb, c1, "node-a", 10*time.Second)
	waitOnline(t, rdb, c2, "node-a", 10*time.Second)
	t.Logf("clients registered again %s after the restart", time.Since(start).Round(time.Millisecond))

	second := mqtttest.Dial(t, b.Addr())
	second.MustConnect(&packets.Connect{ClientID: c1, CleanSession: true, KeepAlive: 60})
	first.ExpectClosed(5 * time.Second)
	watcher.WaitTopic(t, "wills/c1", 10*time.Second)

	a.Kill(t)
	watcher.WaitTopic(t, "wills/c2", 15*time.Second)
	got := watcher.ReadFor(3 * time.Second) // more reaper rounds
	if got["wills/c1"] != 1 || got["wills/c2"] != 1 {
		t.Fatalf("wills = %v, want wills/c1 and wills/c2 once each", got)
	}
}

// TestLiveness_PausedReplicaWillOnce: replica a is paused (SIGSTOP) for
// longer than -node-ttl, so b declares it dead and publishes the will of
// its client, which is still connected. When a resumes, it closes that
// connection without publishing the will a second time; a client without
// a will stays connected and is registered again.
func TestLiveness_PausedReplicaWillOnce(t *testing.T) {
	rs := redistest.Start(t)
	a := mqtttest.StartProcess(t, rs.URL(), "node-a")
	b := mqtttest.StartProcess(t, rs.URL(), "node-b")
	watcher := newWillWatcher(t, b.Addr())
	withWill, noWill := unique(t, "will"), unique(t, "nowill")
	cw := mqtttest.Dial(t, a.Addr())
	cw.MustConnect(&packets.Connect{ClientID: withWill, CleanSession: true, KeepAlive: 120,
		Will: &packets.Will{Topic: "wills/paused", Payload: []byte("gone"), QoS: 1}})
	cn := mqtttest.Dial(t, a.Addr())
	cn.MustConnect(&packets.Connect{ClientID: noWill, CleanSession: true, KeepAlive: 120})

	if err := a.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = a.Cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	start := time.Now()
	watcher.WaitTopic(t, "wills/paused", 15*time.Second)
	t.Logf("b published the paused replica's client's will after %s", time.Since(start).Round(time.Millisecond))
	resume()

	took, _ := cw.ExpectClosed(10 * time.Second)
	t.Logf("a closed the connection whose will was published %s after resuming", took.Round(time.Millisecond))
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	waitOnline(t, rdb, noWill, "node-a", 5*time.Second)
	cn.Send(&packets.Pingreq{})
	if _, ok := cn.Next().(*packets.Pingresp); !ok {
		t.Fatal("client without a will: no PINGRESP after a resumed")
	}
	if got := watcher.ReadFor(3 * time.Second); got["wills/paused"] != 1 {
		t.Fatalf("wills = %v, want wills/paused once", got)
	}
}
