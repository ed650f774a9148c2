package main

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// latencyProbe publishes a steady QoS 0 stream of timestamps on one
// connection and measures publish→receive on another.
type latencyProbe struct {
	mu   sync.Mutex
	lat  []time.Duration
	stop chan struct{}
	wg   sync.WaitGroup
}

func startLatencyProbe(t *testing.T, pubAddr, subAddr string, every time.Duration) *latencyProbe {
	t.Helper()
	s := mqtttest.Dial(t, subAddr)
	s.MustConnect(&packets.Connect{ClientID: unique(t, "probe-sub"), CleanSession: true})
	if got := s.Subscribe(1, packets.Subscription{Filter: "probe/#", QoS: 0}); got[0] != 0 {
		t.Fatalf("probe SUBACK %v", got)
	}
	p := mqtttest.Dial(t, pubAddr)
	p.MustConnect(&packets.Connect{ClientID: unique(t, "probe-pub"), CleanSession: true, KeepAlive: 0})
	pr := &latencyProbe{stop: make(chan struct{})}
	pr.wg.Go(func() {
		for {
			pk, err := s.Read(30 * time.Second)
			if err != nil {
				return
			}
			if m, ok := pk.(*packets.Publish); ok && len(m.Payload) == 8 {
				sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Payload)))
				pr.mu.Lock()
				pr.lat = append(pr.lat, time.Since(sent))
				pr.mu.Unlock()
			}
		}
	})
	pr.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-pr.stop:
				return
			case <-tick.C:
			}
			b, _ := packets.Append(nil, &packets.Publish{Topic: "probe/t", Payload: binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))})
			_ = p.Conn.SetWriteDeadline(time.Now().Add(waitTimeout))
			if _, err := p.Conn.Write(b); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		pr.halt()
		_ = s.Conn.Close()
		pr.wg.Wait()
	})
	return pr
}

func (pr *latencyProbe) halt() {
	select {
	case <-pr.stop:
	default:
		close(pr.stop)
	}
}

// count returns how many probe messages have arrived.
func (pr *latencyProbe) count() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return len(pr.lat)
}

// waitFor waits until n more messages than now have arrived.
func (pr *latencyProbe) waitFor(t *testing.T, n int) {
	t.Helper()
	target := pr.count() + n
	deadline := time.Now().Add(waitTimeout)
	for pr.count() < target {
		if time.Now().After(deadline) {
			t.Fatalf("probe: %d messages, want %d", pr.count(), target)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// percentiles returns p50, p99 and the maximum.
func (pr *latencyProbe) percentiles() (p50, p99, top time.Duration, n int) {
	pr.mu.Lock()
	l := slices.Clone(pr.lat)
	pr.mu.Unlock()
	slices.Sort(l)
	if len(l) == 0 {
		return 0, 0, 0, 0
	}
	return l[len(l)/2], l[len(l)*99/100], l[len(l)-1], len(l)
}

// TestAbuse_ManySubscriptionsDoNotStallOthers: one client subscribes to
// 20,000 filters in one SUBSCRIBE, disconnects, resumes its persistent
// session (which routes them again) and disconnects again, while another
// pair of clients on the same replica exchanges 200 msg/s. Before the fix a
// replica stopped every delivery for 57 s while releasing 20,000 filters;
// now the stream's p99 stays under 50 ms ("Bounded under abuse" item 1)
// [MQTT-3.8.4-1] [MQTT-3.1.2-4].
func TestAbuse_ManySubscriptionsDoNotStallOthers(t *testing.T) {
	const n = 20_000
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		host := d.subServer(t) // the heavy client shares the probe's subscriber replica
		probe := startLatencyProbe(t, d.pub().Addr(), host.Addr(), 5*time.Millisecond)
		probe.waitFor(t, 20)

		subs := make([]packets.Subscription, n)
		for i := range subs {
			f := fmt.Sprintf("heavy/%d/state", i)
			if i%10 == 0 {
				f = fmt.Sprintf("heavy/%d/+/x", i)
			}
			subs[i] = packets.Subscription{Filter: f, QoS: 1}
		}
		id := unique(t, "heavy")
		start := time.Now()
		h := mqtttest.Dial(t, host.Addr())
		h.MustConnect(&packets.Connect{ClientID: id, CleanSession: false})
		h.Send(&packets.Subscribe{PacketID: 1, Subscriptions: subs})
		ack := mqtttest.Expect[*packets.Suback](h)
		if len(ack.ReturnCodes) != n || slices.ContainsFunc(ack.ReturnCodes, func(c packets.ReasonCode) bool { return c != packets.GrantedQoS1 }) {
			t.Fatalf("SUBACK: %d codes, some not granted", len(ack.ReturnCodes))
		}
		subscribed := time.Since(start)
		h.Send(&packets.Disconnect{})
		h.ExpectClosed(waitTimeout)

		// Resume: CONNACK only once the 20,000 filters are routed again.
		start = time.Now()
		h = mqtttest.Dial(t, host.Addr())
		if ack := h.MustConnect(&packets.Connect{ClientID: id, CleanSession: false}); !ack.SessionPresent {
			t.Fatal("session not resumed [MQTT-3.2.2-2]")
		}
		resumed := time.Since(start)
		h.Send(&packets.Disconnect{})
		h.ExpectClosed(waitTimeout)
		// A clean CONNECT discards it [MQTT-3.1.2-6]: the release happens
		// while the probe runs, then the probe sees more traffic.
		h = mqtttest.Dial(t, host.Addr())
		h.MustConnect(&packets.Connect{ClientID: id, CleanSession: true})
		h.Send(&packets.Disconnect{})
		h.ExpectClosed(waitTimeout)
		waitFilters(t, host, 1) // released: only the probe's probe/# left
		probe.waitFor(t, 20)
		probe.halt()

		p50, p99, top, got := probe.percentiles()
		t.Logf("%s: %d filters subscribed in %v, resumed in %v; probe %d msgs p50 %v p99 %v max %v",
			d.name, n, subscribed.Round(time.Millisecond), resumed.Round(time.Millisecond), got, p50, p99, top)
		if p99 > 50*time.Millisecond {
			if raceEnabled {
				// Measured 20-27 ms alone under -race, ~100 ms beside other
				// packages' tests on 2 cores; the bound is enforced by
				// test.sh's run without the race detector.
				t.Logf("p99 %v over 50 ms under the race detector: not enforced here", p99)
				return
			}
			t.Fatalf("deliveries to others: p99 %v over 50 ms (max %v)", p99, top)
		}
	}, "-max-subscriptions-per-client", "0")
}

// TestAbuse_LongWildcardFilters: the two 30,000-byte filters of "Bounded
// under abuse" item 2 (with the length limit allowing them) are granted in
// well under a second while others' deliveries go on; before, they stalled
// every delivery on the replica for 4.5 s.
func TestAbuse_LongWildcardFilters(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		host := d.sub()
		probe := startLatencyProbe(t, d.pub().Addr(), host.Addr(), 5*time.Millisecond)
		probe.waitFor(t, 20)
		h := mqtttest.Dial(t, host.Addr())
		h.MustConnect(&packets.Connect{ClientID: unique(t, "long"), CleanSession: true})
		start := time.Now()
		got := h.Subscribe(1,
			packets.Subscription{Filter: "L/+/" + strings.Repeat("a", 30000), QoS: 0},
			packets.Subscription{Filter: "L/+/" + strings.Repeat("b", 30000), QoS: 0})
		took := time.Since(start)
		if !slices.Equal(got, []packets.ReasonCode{packets.GrantedQoS0, packets.GrantedQoS0}) {
			t.Fatalf("SUBACK %v, want [0 0]", got)
		}
		probe.waitFor(t, 20)
		probe.halt()
		p50, p99, top, n := probe.percentiles()
		t.Logf("%s: two 30,000-byte filters granted in %v; probe %d msgs p50 %v p99 %v max %v", d.name, took, n, p50, p99, top)
		if took > 500*time.Millisecond {
			t.Fatalf("SUBACK took %v", took)
		}
		if p99 > 50*time.Millisecond {
			if raceEnabled {
				t.Logf("p99 %v over 50 ms under the race detector: not enforced here", p99)
				return
			}
			t.Fatalf("deliveries to others: p99 %v over 50 ms (max %v)", p99, top)
		}
	}, "-max-topic-length", "65535", "-max-topic-levels", "128")
}

// waitFilters waits until ts's bridge holds at most n distinct filters.
func waitFilters(t *testing.T, ts *testServer, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for ts.Stats()["bridge_subscription_filters"] > n {
		if time.Now().After(deadline) {
			t.Fatalf("bridge still holds %d filters, want at most %d", ts.Stats()["bridge_subscription_filters"], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Clients that announce a large PUBLISH and never send its body hold no
// part of -max-inflight-bytes (issue 8): nine connections with keep-alive
// 0 each announce a PUBLISH of 1,000,000 bytes and send 10 of them (nine
// of those used to take the whole 8 MiB for as long as they stayed, and
// every other publisher of the node waited behind them); meanwhile
// another client's 50 QoS 1 publishes are each acknowledged and delivered.
func TestAbuse_AnnouncedPublishBodiesHoldNoBudget(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for i := range 9 {
			c := mqtttest.Dial(t, d.pub().Addr())
			c.MustConnect(&packets.Connect{ClientID: unique(t, fmt.Sprintf("slow-%d", i)), CleanSession: true})
			// PUBLISH QoS 0, Remaining Length 1,000,000 (varint c0 84 3d),
			// of which only the topic and 5 bytes of payload are sent.
			c.Write(packetstest.Cat(packetstest.RemainingLength([]byte{0x30}, 1_000_000),
				packetstest.Str("s/x"), 1, 2, 3, 4, 5))
		}
		topic := unique(t, "live")
		sub := mqtttest.Dial(t, d.sub().Addr())
		sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 30})
		sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
		pub := mqtttest.Dial(t, d.pub().Addr())
		pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 30})
		start := time.Now()
		for i := range 50 {
			pub.PublishQoS1(uint16(i+1), topic, fmt.Sprint(i)) // fails the test after mqtttest.WaitTimeout
		}
		for i := range 50 {
			p := mqtttest.Expect[*packets.Publish](sub)
			sub.Send(&packets.Puback{PacketID: p.PacketID})
			if string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("delivery %d is %q", i, p.Payload)
			}
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("50 QoS 1 publishes took %s beside nine unfinished PUBLISH bodies", took)
		}
	})
}
