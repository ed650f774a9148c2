package main

// End-to-end tests of users and ACL kept in Redis (-auth-redis), changed
// with the user subcommand while replicas run.

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// userCmd runs the user subcommand against the Redis at url and fails the
// test unless it succeeds.
func userCmd(t *testing.T, url string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := runUser(append(args, "-redis-url", url), func(string) string { return "" }, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("user %v: exit %d: %s", args, code, errOut.String())
	}
	return out.String()
}

// connectAs opens a connection to addr as user and returns it with the
// CONNACK's code.
func connectAs(t *testing.T, addr, user, password string) (*mqtttest.Client, packets.ReasonCode) {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	ack := c.Connect(&packets.Connect{ClientID: unique(t, user), CleanSession: true, KeepAlive: 60,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(password)})
	return c, ack.ReturnCode
}

// withinASecond retries try until it reports true and fails the test if
// that took more than a second from since.
func withinASecond(t *testing.T, since time.Time, what string, try func() bool) {
	t.Helper()
	for !try() {
		if time.Since(since) > waitTimeout {
			t.Fatalf("%s: not after %s", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(since); d > time.Second {
		t.Fatalf("%s after %s, want within a second", what, d)
	}
}

// Users added, changed and removed with the user subcommand while two
// replicas run apply on both within a second, with no restart; a connected
// client's next packet is judged by its new rules.
func TestAuthRedis_UserChangesApplyOnEveryReplicaWithinASecond(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-auth-redis", "-allow-anonymous=false"}})
	url := c.Redis.URL()
	a, b := c.Servers[0].Addr(), c.Servers[1].Addr()
	userCmd(t, url, "add", "root", "-superuser", "-password", "root-pw")

	// Refused first, so that both replicas have read (and may cache) the
	// user's absence.
	for _, addr := range []string{a, b} {
		if _, code := connectAs(t, addr, "erin", "pw1"); code != packets.RefusedBadUsernamePassword {
			t.Fatalf("%s before add: CONNACK 0x%02x, want 0x04", addr, code)
		}
	}
	start := time.Now()
	userCmd(t, url, "add", "erin", "-password", "pw1")
	var erin *mqtttest.Client
	for _, addr := range []string{a, b} {
		withinASecond(t, start, "added user accepted on "+addr, func() bool {
			conn, code := connectAs(t, addr, "erin", "pw1")
			erin = conn
			return code == packets.Accepted
		})
	}

	// erin, connected to b, has no rules yet: its SUBSCRIBEs are refused
	// until a rule is granted, then granted on the same connection.
	if codes := erin.Subscribe(1, packets.Subscription{Filter: "s/#", QoS: 1}); codes[0] != packets.SubackFailure {
		t.Fatalf("SUBACK %v before any rule, want [0x80]", codes)
	}
	start = time.Now()
	userCmd(t, url, "acl", "erin", "s/#", "subscribe")
	userCmd(t, url, "acl", "erin", "f/#", "subscribe")
	withinASecond(t, start, "granted rule applies to the next SUBSCRIBE", func() bool {
		return erin.Subscribe(2, packets.Subscription{Filter: "s/#", QoS: 1})[0] == packets.GrantedQoS1
	})
	if codes := erin.Subscribe(3, packets.Subscription{Filter: "f/#", QoS: 1}); codes[0] != packets.GrantedQoS1 {
		t.Fatalf("SUBACK %v for f/#, want [1]", codes)
	}
	if out := userCmd(t, url, "acl", "erin"); out != "subscribe\tf/#\nsubscribe\ts/#\n" {
		t.Errorf("acl listing %q", out)
	}

	root, code := connectAs(t, a, "root", "root-pw")
	if code != packets.Accepted {
		t.Fatalf("root: CONNACK 0x%02x", code)
	}
	root.Send(&packets.Publish{Topic: "s/x", Payload: []byte("allowed")})
	root.Send(&packets.Publish{Topic: "f/x", Payload: []byte("fence-1")})
	if got := erin.PublishesUntil("fence-1"); len(got) != 1 || string(got[0].Payload) != "allowed" {
		t.Fatalf("before the rule is removed erin got %v, want [allowed]", describePublishes(got))
	}

	// The rule removed: deliveries through the subscription erin holds
	// stop with the next message.
	userCmd(t, url, "acl", "erin", "s/#", "none")
	start = time.Now()
	withinASecond(t, start, "removed rule applies to the next SUBSCRIBE", func() bool {
		return erin.Subscribe(4, packets.Subscription{Filter: "s/#", QoS: 1})[0] == packets.SubackFailure
	})
	root.Send(&packets.Publish{Topic: "s/x", Payload: []byte("denied")})
	root.Send(&packets.Publish{Topic: "f/x", Payload: []byte("fence-2")})
	if got := erin.PublishesUntil("fence-2"); len(got) != 0 {
		t.Fatalf("after the rule was removed erin got %v", describePublishes(got))
	}

	// The user removed: refused on both replicas; the open connection
	// stays but may do nothing more.
	start = time.Now()
	userCmd(t, url, "del", "erin")
	for _, addr := range []string{a, b} {
		withinASecond(t, start, "removed user refused on "+addr, func() bool {
			_, code := connectAs(t, addr, "erin", "pw1")
			return code == packets.RefusedBadUsernamePassword
		})
	}
	if codes := erin.Subscribe(5, packets.Subscription{Filter: "f/#", QoS: 1}); codes[0] != packets.SubackFailure {
		t.Fatalf("removed user's SUBACK %v, want [0x80]", codes)
	}
	if !erin.Alive(waitTimeout) {
		t.Fatal("the removed user's connection was closed")
	}
}

// With Redis unreachable a CONNECT is answered 0x03 (server unavailable),
// the replica keeps running, and it admits users again once Redis is back.
func TestAuthRedis_RedisDown_Connack0x03(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 1, InProcess: true, Args: []string{"-auth-redis"}})
	url, addr := c.Redis.URL(), c.Servers[0].Addr()
	userCmd(t, url, "add", "frank", "-password", "pw")
	c.Redis.Stop()
	if _, code := connectAs(t, addr, "frank", "pw"); code != packets.RefusedServerUnavailable {
		t.Fatalf("Redis down: CONNACK 0x%02x, want 0x03", code)
	}
	c.Redis.Restart(t)
	deadline := time.Now().Add(waitTimeout)
	for {
		var out, errOut bytes.Buffer
		// The restarted Redis may have lost the user: add it again.
		_ = runUser([]string{"add", "frank", "-password", "pw", "-redis-url", url}, func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
		if _, code := connectAs(t, addr, "frank", "pw"); code == packets.Accepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not admitted within %s of Redis coming back", waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUserCommand_UsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no redis", []string{"add", "x", "-password", "p"}, "no Redis: -redis-url, -redis-sentinel-master or -redis-cluster"},
		{"two topologies", []string{"add", "x", "-redis-url", "redis://127.0.0.1:1", "-redis-cluster", "127.0.0.1:2"}, "-redis-cluster: cannot be combined with -redis-url"},
		{"bad cluster seeds", []string{"del", "x", "-redis-cluster", "nohost"}, "-redis-cluster:"},
		{"sentinel without addrs", []string{"del", "x", "-redis-sentinel-master", "m"}, "-redis-sentinel-master: needs -redis-sentinel-addrs"},
		{"no name", []string{"add", "-redis-url", "redis://127.0.0.1:1"}, "need a command and a user name"},
		{"unknown command", []string{"rename", "x", "y", "-redis-url", "redis://127.0.0.1:1"}, "unknown command"},
		{"bad url", []string{"del", "x", "-redis-url", "http://x"}, "-redis-url:"},
		{"no password", []string{"add", "x", "-redis-url", "redis://127.0.0.1:1"}, "no -password"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := runUser(tt.args, func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tt.want)
			}
		})
	}
}

// The user subcommand reaches a Redis Cluster as the replicas do, by its
// seed nodes (-redis-cluster, or MQTT_REDIS_CLUSTER): a user it adds logs
// in on both replicas within a second, its rule applies across them, and
// its removal refuses it on both. Each of its commands touches one key, so
// the user's record and rules may live on different masters.
func TestAuthRedis_UserCommandOnRedisCluster(t *testing.T) {
	c, _, a, b := startShardedPair(t, "-auth-redis", "-allow-anonymous=false")
	seeds := strings.Join(c.Addrs(), ",")
	user := func(env bool, args ...string) {
		t.Helper()
		getenv := func(string) string { return "" }
		if env {
			getenv = func(k string) string {
				if k == "MQTT_REDIS_CLUSTER" {
					return seeds
				}
				return ""
			}
		} else {
			args = append(args, "-redis-cluster", seeds)
		}
		var out, errOut bytes.Buffer
		if code := runUser(args, getenv, strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("user %v: exit %d: %s", args, code, errOut.String())
		}
	}
	addrs := []string{a.Addr(), b.Addr()}
	start := time.Now()
	user(false, "add", "gina", "-password", "pw")
	clients := make([]*mqtttest.Client, 2)
	for i, addr := range addrs {
		withinASecond(t, start, "added user accepted on "+addr, func() bool {
			conn, code := connectAs(t, addr, "gina", "pw")
			clients[i] = conn
			return code == packets.Accepted
		})
	}
	user(true, "acl", "gina", "g/#", "all")
	start = time.Now()
	for i, addr := range addrs {
		withinASecond(t, start, "granted rule applies on "+addr, func() bool {
			return clients[i].Subscribe(1, packets.Subscription{Filter: "g/#", QoS: 1})[0] == packets.GrantedQoS1
		})
	}
	clients[1].Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: "g/x", Payload: []byte("across")})
	if got := clients[0].PublishesUntil("across"); len(got) != 0 {
		t.Fatalf("got %v before the message", describePublishes(got))
	}
	start = time.Now()
	user(false, "del", "gina")
	for _, addr := range addrs {
		withinASecond(t, start, "removed user refused on "+addr, func() bool {
			_, code := connectAs(t, addr, "gina", "pw")
			return code == packets.RefusedBadUsernamePassword
		})
	}
}
