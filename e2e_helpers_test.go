package main

// Helpers shared by the end-to-end tests (e2e_*_test.go): Paho clients and
// unique names per test. The raw client speaking the project's own codec,
// for what a library hides (DUP flags, packet ids, malformed input), is
// mqtttest.Client.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = mqtttest.WaitTimeout

// quietWindow is how long a test waits, after a fence message has arrived, for
// a message that must not arrive.
const quietWindow = 300 * time.Millisecond

var uniqueSeq atomic.Int64

// unique returns a name no other test in this process uses, for client ids
// and topics.
func unique(t testing.TB, kind string) string {
	name := strings.NewReplacer("/", "-", " ", "_", "#", "", "+", "").Replace(t.Name())
	return fmt.Sprintf("e2e-%s-%s-%d", kind, name, uniqueSeq.Add(1))
}

// pahoOpts are the options of a Paho client of the e2e tests: one broker, no
// auto-reconnect, MQTT 3.1.1, bounded timeouts.
func pahoOpts(ts endpoint, clientID string, clean bool) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(ts.URL()).
		SetClientID(clientID).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetConnectTimeout(waitTimeout).
		SetWriteTimeout(waitTimeout).
		SetKeepAlive(30 * time.Second)
}

// connectPaho connects a client with opts and disconnects it at cleanup. It
// returns the client and the CONNACK's session-present flag.
func connectPaho(t testing.TB, opts *mqtt.ClientOptions) (mqtt.Client, bool) {
	t.Helper()
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("paho connect %s: no CONNACK within %s", opts.ClientID, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("paho connect %s: %v", opts.ClientID, err)
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// collector gathers the messages a Paho client receives.
type collector chan mqtt.Message

func newCollector() collector { return make(collector, 4096) }

func (c collector) handler(_ mqtt.Client, m mqtt.Message) { c <- m }

// next returns the next message or fails the test after waitTimeout.
func (c collector) next(t testing.TB) mqtt.Message {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %s", waitTimeout)
		return nil
	}
}

// until collects messages up to and including the first one on fenceTopic
// and returns those before it.
func (c collector) until(t testing.TB, fenceTopic string) []mqtt.Message {
	t.Helper()
	var got []mqtt.Message
	for {
		m := c.next(t)
		if m.Topic() == fenceTopic {
			return got
		}
		got = append(got, m)
	}
}

// quiet fails the test if a message arrives within quietWindow.
func (c collector) quiet(t testing.TB) {
	t.Helper()
	select {
	case m := <-c:
		t.Fatalf("unexpected message on %q: %q (retained=%v, qos=%d)", m.Topic(), m.Payload(), m.Retained(), m.Qos())
	case <-time.After(quietWindow):
	}
}

// subscribe subscribes c to filter at qos, delivering into col, and returns
// the SUBACK return code.
func subscribe(t testing.TB, c mqtt.Client, filter string, qos byte, col collector) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, col.handler)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("subscribe %q: no SUBACK within %s", filter, waitTimeout)
	}
	if err := tok.Error(); err != nil && !strings.Contains(err.Error(), "128") {
		t.Fatalf("subscribe %q: %v", filter, err)
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// publish publishes and waits for the publication's acknowledgement.
func publish(t testing.TB, c mqtt.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("publish %q qos %d: not acknowledged within %s", topic, qos, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %q qos %d: %v", topic, qos, err)
	}
}

// needMosquittoClients returns the path of a mosquitto client program. When
// it is missing the test fails on CI (CI=true) and is skipped elsewhere.
func needMosquittoClients(t testing.TB, name string) string {
	t.Helper()
	return needProgram(t, name, "mosquitto-clients")
}

// needProgram returns the path of program name, which Debian package pkg
// installs. When it is missing the test fails on CI (CI=true) and is
// skipped elsewhere.
func needProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not installed (apt-get install %s): %v", name, pkg, err)
	}
	t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	return ""
}

// waitFor polls cond every 20 ms until it holds, and fails the test naming
// what was awaited if it does not within d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitShareViews waits until every replica among servers that holds shared
// subscription members knows of all the others' (a test's deployment has one
// group): until then a replica claims the messages the others' members are
// preferred for, and a test that counts each member's share sees them skewed.
func waitShareViews(t testing.TB, servers ...*testServer) {
	t.Helper()
	waitFor(t, waitTimeout, "each replica to know the other replicas' shared subscription members", func() bool {
		own := make([]int64, len(servers))
		var total int64
		for i, s := range servers {
			own[i] = s.Stats()["bridge_shared_members"]
			total += own[i]
		}
		for i, s := range servers {
			if own[i] > 0 && s.Stats()["bridge_shared_remote_members"] != total-own[i] {
				return false
			}
		}
		return true
	})
}

// waitReaped waits until a surviving replica has reaped node: the last step
// of a reap removes it from the mqtt:nodes set and deletes mqtt:node:<node>,
// after its clients were marked offline and their wills published. A node
// is reaped once its liveness key has expired (-node-ttl) and a survivor's
// next check runs, so within d = -node-ttl plus a check interval or two.
func waitReaped(t testing.TB, rdb redis.UniversalClient, node string, d time.Duration) {
	t.Helper()
	waitFor(t, d, "replica "+node+" to be reaped", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		member, err1 := rdb.SIsMember(ctx, "mqtt:nodes", node).Result()
		n, err2 := rdb.Exists(ctx, "mqtt:node:"+node).Result()
		return err1 == nil && err2 == nil && !member && n == 0
	})
}
