package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// ATTACK (a hostile review, 2026-11-29): a persistent QoS 2 session with a
// backlog connects on replica A and on replica B at the same moment. One
// connection survives [MQTT-3.1.4-2]; every queued message reaches the
// session once as a new PUBLISH (a re-send carries DUP=1), however the
// takeover falls against the first connection's replay [MQTT-4.3.3-2].
// Before the fix, the backlog came twice in 13 of 18 such races: the
// takeover cut the first connection's cursor while its replay was still
// reading, and the replayed messages went into its stored state above the
// cut. Every round runs on the replicas and Redis of the rounds before.
func TestAttack_TakeoverRaceDuringReplay_QoS2Once_MQTT_4_3_3_2(t *testing.T) {
	rs := redistest.Start(t)
	a := startRedisReplica(t, rs.URL(), "ra")
	b := startRedisReplica(t, rs.URL(), "rb")
	id, topic := unique(t, "race"), unique(t, "race")
	s := mqtttest.Dial(t, a.Addr())
	s.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 60})
	s.Subscribe(1, packets.Subscription{Filter: topic + "/#", QoS: 2})
	s.Send(&packets.Disconnect{})
	s.ExpectClosed(waitTimeout)
	pub := mqtttest.Dial(t, a.Addr())
	pub.MustConnect(&packets.Connect{ClientID: id + "-pub", CleanSession: true, KeepAlive: 60})

	var pid uint16
	for round := range 6 {
		var want []string
		for i := range 20 {
			pid++
			p := fmt.Sprintf("r%d-%d", round, i)
			pub.Publish(pid, 2, topic+"/b", p, false)
			want = append(want, p)
		}
		addrs := []string{a.Addr(), b.Addr()}
		if round%2 == 1 {
			addrs[0], addrs[1] = addrs[1], addrs[0]
		}
		fresh := make([][]string, len(addrs))
		open := make([]bool, len(addrs))
		conns := make([]*mqtttest.Client, len(addrs))
		for j := range addrs {
			conns[j] = mqtttest.Dial(t, addrs[j])
		}
		var wg sync.WaitGroup
		for j, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fresh[j], open[j] = raceCollect(c, id)
			}()
		}
		wg.Wait()
		survivors := 0
		for j, c := range conns {
			if open[j] {
				survivors++
				c.Send(&packets.Disconnect{})
				c.ExpectClosed(waitTimeout)
			}
		}
		if survivors != 1 {
			t.Errorf("round %d: %d connections of %s open after the race, want 1 [MQTT-3.1.4-2]", round, survivors, id)
		}
		col := mqtttest.Dial(t, a.Addr())
		col.MustConnect(&packets.Connect{ClientID: id, KeepAlive: 60})
		var rest []string
		for _, p := range col.Drain(time.Second) {
			if !p.Dup {
				rest = append(rest, string(p.Payload))
			}
		}
		col.Send(&packets.Disconnect{})
		col.ExpectClosed(waitTimeout)

		count := map[string]int{}
		for _, got := range append(append(fresh[0], fresh[1]...), rest...) {
			count[got]++
		}
		for _, p := range want {
			switch n := count[p]; {
			case n == 0:
				t.Errorf("round %d: %s never delivered", round, p)
			case n > 1:
				t.Errorf("round %d: %s delivered %d times as a new PUBLISH [MQTT-4.3.3-2]", round, p, n)
			}
		}
	}
}

// raceCollect connects c as the persistent session id and reads what it
// is sent, answering as a client does, until the server closes it (taken
// over) or nothing has come for 1.5 s. It returns the payloads of the
// PUBLISH packets without DUP, and whether the connection is still open.
// It runs on its own goroutine, so it reports nothing to the test itself:
// the connection's end is a result, not a failure. (Client.NextPublish
// would answer through Client.Send, which fails the test when a write to
// a connection taken over meanwhile fails.)
func raceCollect(c *mqtttest.Client, id string) (fresh []string, open bool) {
	write := func(p packets.Packet) {
		if b, err := packets.Append(nil, p); err == nil {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(waitTimeout))
			_, _ = c.Conn.Write(b)
		}
	}
	write(&packets.Connect{ProtocolVersion: packets.Version311, ClientID: id, KeepAlive: 60})
	for {
		p, err := c.Read(1500 * time.Millisecond)
		if err != nil {
			return fresh, mqtttest.IsTimeout(err)
		}
		switch p := p.(type) {
		case *packets.Publish:
			if !p.Dup {
				fresh = append(fresh, string(p.Payload))
			}
			if p.QoS == 2 {
				write(&packets.Pubrec{PacketID: p.PacketID})
			}
		case *packets.Pubrel:
			write(&packets.Pubcomp{PacketID: p.PacketID})
		}
	}
}
