package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// A member (clean session) holding unacknowledged and queued QoS 1
// messages of its group is on a replica that is SIGKILLed; another member
// is connected on the survivor. The dead member's share (8 sent
// unacknowledged, 92 never sent), acknowledged to the publisher, must
// reach the surviving member (section 4.8.2: a QoS 1 message whose
// member's session ends goes to another member): the survivor that reaps
// the dead replica moves what its members owed (<p>shareowed:<node>) to
// the group's hand-off list. Before that record, ~100 of 200 were lost.
func TestAttack10_ShareMemberReplicaKilled_MessagesReachSurvivor(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 1, InProcess: true, Args: []string{"-node-ttl", "2s", "-max-inflight", "8"}})
	b := c.Servers[0]
	topic := unique(t, "t")
	filter := "$share/" + unique(t, "g") + "/" + topic
	got := make(chan shareDelivery, 8192)
	shareMember5(t, b.Addr(), filter, 1, got)
	pub, _ := connect5(t, b.Addr(), unique(t, "pub"), 30)
	for round := 1; round <= rounds; round++ {
		a := mqtttest.StartProcess(t, c.Redis.URL(), fmt.Sprintf("node-a%d", round), "-max-inflight", "8")
		m := mqtttest.Dial(t, a.Addr())
		m.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "m"), KeepAlive: 30})
		m.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1})
		// b must know a's member: until then it claims a's share too. (a,
		// a process, learns of b's member at its first refresh: a share
		// that a claims beyond its own only adds to what the kill tests.)
		waitFor(t, waitTimeout, "b to know a's member", func() bool { return b.Stats()["bridge_shared_remote_members"] == 1 })
		const n = 200
		base := round * 1000
		publishRange(pub, topic, base, base+n)
		unacked, _ := readUnacked(t, m, 8)
		a.Kill(t)
		seen := map[string]int{}
		deadline := time.After(10 * time.Second)
	collect:
		for {
			select {
			case d := <-got:
				seen[d.payload]++
			case <-deadline:
				break collect
			}
		}
		lost := 0
		var lostIDs []string
		for i := base; i < base+n; i++ {
			if seen[fmt.Sprint(i)] == 0 {
				lost++
				lostIDs = append(lostIDs, fmt.Sprint(i))
			}
		}
		if lost > 0 {
			t.Errorf("round %d: unacked on the killed replica %v; lost %d of %d acknowledged QoS 1 messages: %v", round, unacked, lost, n, lostIDs)
		}
	}
}
