package main

// End-to-end tests of the $SYS topics (-sys-interval): Mosquitto's names,
// this replica's figures, retained, never matched by '#', under the ACL.

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// readUntil reads PUBLISHes on c until done says so, and fails the test
// when that has not happened within waitTimeout ($SYS messages keep
// coming, so a read timeout alone would never end it).
func readUntil(t *testing.T, c *mqtttest.Client, done func(p *packets.Publish) bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", waitTimeout)
		}
		switch p := c.Next().(type) {
		case *packets.Publish:
			if p.QoS == 1 {
				c.Send(&packets.Puback{PacketID: p.PacketID})
			}
			if done(p) {
				return
			}
		default:
			t.Fatalf("got %T, want PUBLISH", p)
		}
	}
}

func dialConnected(t *testing.T, addr, kind string) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: unique(t, kind), CleanSession: true, KeepAlive: 60})
	return c
}

// Every figure under Mosquitto's name, checked against known traffic: 3
// clients, 2 subscriptions, 5 PUBLISH received from clients, retained on
// subscribe, and '#' never receives them [MQTT-4.7.2-1].
func TestSYS_BrokerTopics_CountKnownTraffic(t *testing.T) {
	srv := startServer(t, "-sys-interval", "100ms")
	sys := dialConnected(t, srv.Addr(), "sys")
	all := dialConnected(t, srv.Addr(), "all")
	pub := dialConnected(t, srv.Addr(), "pub")
	if codes := sys.Subscribe(1, packets.Subscription{Filter: "$SYS/broker/#"}); codes[0] != packets.GrantedQoS0 {
		t.Fatalf("SUBACK %v", codes)
	}
	if codes := all.Subscribe(1, packets.Subscription{Filter: "#"}); codes[0] != packets.GrantedQoS0 {
		t.Fatalf("SUBACK %v", codes)
	}
	for i := range 5 {
		pub.Send(&packets.Publish{Topic: "t/x", Payload: fmt.Appendf(nil, "m%d", i)})
	}
	// A client cannot publish on $SYS: accepted and dropped.
	pub.PublishQoS1(1, "$SYS/broker/uptime", "spoofed")

	want := map[string]func(string) bool{
		"$SYS/broker/version":                 func(v string) bool { return strings.HasPrefix(v, "bridgemq ") },
		"$SYS/broker/uptime":                  regexp.MustCompile(`^[0-9]+ seconds$`).MatchString,
		"$SYS/broker/clients/connected":       func(v string) bool { return v == "3" },
		"$SYS/broker/messages/received":       func(v string) bool { return v == "6" }, // 5 + the dropped $SYS one
		"$SYS/broker/messages/sent":           atLeast(5),
		"$SYS/broker/bytes/received":          atLeast(100),
		"$SYS/broker/bytes/sent":              atLeast(50),
		"$SYS/broker/subscriptions/count":     func(v string) bool { return v == "2" },
		"$SYS/broker/retained messages/count": func(v string) bool { return v == "0" },
	}
	ok := map[string]string{}
	readUntil(t, sys, func(p *packets.Publish) bool {
		if string(p.Payload) == "spoofed" {
			t.Fatalf("a client's PUBLISH on %s was delivered", p.Topic)
		}
		check, known := want[p.Topic]
		if !known {
			t.Fatalf("unexpected $SYS topic %q = %q", p.Topic, p.Payload)
		}
		if check(string(p.Payload)) {
			ok[p.Topic] = string(p.Payload)
		}
		return len(ok) == len(want)
	})

	// '#' got the five messages and nothing of $SYS, across several rounds.
	pub.Send(&packets.Publish{Topic: "t/x", Payload: []byte("fence")})
	got := all.PublishesUntil("fence")
	for _, p := range got {
		if strings.HasPrefix(p.Topic, "$") {
			t.Fatalf("'#' received %s [MQTT-4.7.2-1]", p.Topic)
		}
	}
	if len(got) != 5 {
		t.Fatalf("'#' received %d messages before the fence, want 5", len(got))
	}

	// A late subscriber gets the figures at once, retained.
	late := dialConnected(t, srv.Addr(), "late")
	late.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$SYS/broker/version"}}})
	mqtttest.Expect[*packets.Suback](late)
	if p := mqtttest.Expect[*packets.Publish](late); !p.Retain || p.Topic != "$SYS/broker/version" {
		t.Fatalf("late subscriber got %s retain=%v, want the retained version", p.Topic, p.Retain)
	}
}

func atLeast(n int64) func(string) bool {
	return func(v string) bool {
		got, err := strconv.ParseInt(v, 10, 64)
		return err == nil && got >= n
	}
}

// The ACL applies to $SYS as to any topic: a filter it does not cover is
// refused, and reading is filtered per message.
func TestSYS_ACLApplies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	writeFile(t, path, "topic read $SYS/broker/clients/#\ntopic deny $SYS/broker/clients/secret\n")
	srv := startServer(t, "-sys-interval", "100ms", "-acl-file", path)
	c := dialConnected(t, srv.Addr(), "sys")
	codes := c.Subscribe(1, packets.Subscription{Filter: "$SYS/broker/#"}, packets.Subscription{Filter: "$SYS/broker/clients/#"})
	if codes[0] != packets.SubackFailure || codes[1] != packets.GrantedQoS0 {
		t.Fatalf("SUBACK %v, want [0x80 0]", codes)
	}
	rounds := 0
	readUntil(t, c, func(p *packets.Publish) bool {
		if p.Topic != "$SYS/broker/clients/connected" {
			t.Fatalf("received %s, which the ACL does not let this client read", p.Topic)
		}
		rounds++
		return rounds == 3
	})
}

// With replicas, each publishes its own figures to its own clients only:
// a client on B sees B's connection count, whatever A holds.
func TestSYS_EachReplicaItsOwnFigures(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-sys-interval", "100ms"}})
	a, b := c.Servers[0].Addr(), c.Servers[1].Addr()
	for range 3 {
		dialConnected(t, a, "idle")
	}
	sysA, sysB := dialConnected(t, a, "sysA"), dialConnected(t, b, "sysB")
	for _, s := range []*mqtttest.Client{sysA, sysB} {
		if codes := s.Subscribe(1, packets.Subscription{Filter: "$SYS/broker/clients/connected"}); codes[0] != packets.GrantedQoS0 {
			t.Fatalf("SUBACK %v", codes)
		}
	}
	for _, r := range []struct {
		c    *mqtttest.Client
		want string
	}{{sysA, "4"}, {sysB, "1"}} {
		seen := 0
		readUntil(t, r.c, func(p *packets.Publish) bool {
			// The first (retained) value may predate the last connects.
			if seen++; seen >= 3 && string(p.Payload) != r.want {
				t.Fatalf("clients/connected = %q, want %q", p.Payload, r.want)
			}
			return seen == 5
		})
	}
}

// With Redis every replica also publishes the cluster's totals, summed
// from each replica's figures: 2 clients on A and 1 on B make 3.
func TestSYS_ClusterTotals(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-sys-interval", "100ms"}})
	a, b := c.Servers[0].Addr(), c.Servers[1].Addr()
	dialConnected(t, a, "idle")
	dialConnected(t, a, "idle")
	sys := dialConnected(t, b, "sys")
	if codes := sys.Subscribe(1, packets.Subscription{Filter: "$SYS/cluster/#"}); codes[0] != packets.GrantedQoS0 {
		t.Fatalf("SUBACK %v", codes)
	}
	got := map[string]string{}
	readUntil(t, sys, func(p *packets.Publish) bool {
		got[p.Topic] = string(p.Payload)
		return got["$SYS/cluster/clients/connected"] == "3" && got["$SYS/cluster/nodes"] == "2" && got["$SYS/cluster/subscriptions/count"] == "1"
	})
}
