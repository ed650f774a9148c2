package main

// End-to-end tests of hostile and broken input: random bytes, silence before
// CONNECT, oversized announcements and malformed packets each close their own
// connection only, quickly and without costing memory.

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// Random bytes never get a session: the connection is closed (at the latest
// after -connect-timeout), nothing but a refusal is ever sent, and the
// server keeps serving.
func TestBadInput_RandomBytes_Closed_MQTT_4_8_0_1(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, 0xe2e))
			b := make([]byte, 1+rng.IntN(512))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			c := mqtttest.Dial(t, d.pub().Addr())
			_, _ = c.Conn.Write(b) // the server may close before reading it all
			_, got := c.ExpectClosed(3 * time.Second)
			for _, p := range got {
				if ack, ok := p.(*packets.Connack); !ok || ack.ReturnCode == packets.Accepted {
					t.Fatalf("seed %d: server sent %s to random bytes", seed, mqtttest.Describe(got))
				}
			}
		}
		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "after"), CleanSession: true, KeepAlive: 30})
	}, "-connect-timeout", "1s")
}

// A client that connects and never sends CONNECT is closed after
// -connect-timeout [MQTT-3.1.0-1 / 4.8], not before.
func TestBadInput_NoConnect_ClosedAfterConnectTimeout(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		tests := []struct {
			name string
			send []byte
		}{
			{"silent", nil},
			{"half a fixed header", packetstest.Named("first_byte_only").Raw},
			{"header announcing a body never sent", packetstest.Named("connect_body_never_sent").Raw},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				if tt.send != nil {
					c.Write(tt.send)
				}
				took, got := c.ExpectClosed(4 * time.Second)
				if len(got) != 0 {
					t.Errorf("got %s", mqtttest.Describe(got))
				}
				if took < 900*time.Millisecond || took > 2500*time.Millisecond {
					t.Errorf("closed after %s, want about -connect-timeout=1s", took)
				}
			})
		}
	}, "-connect-timeout", "1s")
}

// memStats returns the live heap after a collection and the bytes
// allocated so far, freed or not: an allocation of the announced size that
// was dropped again still shows in the second.
func memStats() (heap, total uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.TotalAlloc
}

// A fixed header announcing a 256 MB body is refused from the header: the
// connection closes at once (long before -connect-timeout) and the server's
// heap does not grow by the announced size. Inherently single-process: the
// heap measured is the server's own.
func TestBadInput_256MBAnnounced_RefusedFromFixedHeader(t *testing.T) {
	ts := startServer(t, "-connect-timeout", "10s")
	// Each fixed header announces 268,435,455 bytes, the largest Remaining
	// Length.
	tests := []struct {
		name    string
		connect bool
		header  []byte
	}{
		{"CONNECT", false, packetstest.Named("connect_remaining_length_256MB").Raw},
		{"PUBLISH after CONNECT", true, packetstest.Named("remaining_length_256MB").Raw},
		{"SUBSCRIBE after CONNECT", true, packetstest.Named("subscribe_remaining_length_256MB").Raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heapBefore, totalBefore := memStats()
			var conns []*mqtttest.Client
			for range 4 {
				c := mqtttest.Dial(t, ts.Addr())
				if tt.connect {
					c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
				}
				c.Write(tt.header)
				c.Write(make([]byte, 4096)) // some of the body, so a reader that waits for it has something
				conns = append(conns, c)
			}
			for _, c := range conns {
				if took, _ := c.ExpectClosed(2 * time.Second); took > time.Second {
					t.Errorf("closed after %s, want at once", took)
				}
			}
			heapAfter, totalAfter := memStats()
			if heapAfter > heapBefore && heapAfter-heapBefore > 64<<20 {
				t.Errorf("heap grew by %d MiB after four 256 MB announcements", (heapAfter-heapBefore)>>20)
			}
			if allocated := totalAfter - totalBefore; allocated > 64<<20 {
				t.Errorf("%d MiB allocated while refusing four 256 MB announcements", allocated>>20)
			}
		})
	}
}

// A malformed packet closes that connection only [MQTT-4.8.0-1]: another
// client's subscription keeps delivering.
func TestBadInput_MalformedPacket_ClosesOnlyThatConnection_MQTT_4_8_0_1(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"SUBSCRIBE with flags 0 [MQTT-3.8.1-1]", packetstest.Named("subscribe_flags_0000_MQTT_3_8_1_1").Raw},
		{"SUBSCRIBE with no filter [MQTT-3.8.3-3]", packetstest.Named("subscribe_no_filter_MQTT_3_8_3_3").Raw},
		{"SUBSCRIBE with QoS 3 [MQTT-3.8.3-4]", packetstest.Named("subscribe_qos3_MQTT_3_8_3_4").Raw},
		{"SUBSCRIBE with packet id 0 [MQTT-2.3.1-1]", packetstest.Named("subscribe_id0_MQTT_2_3_1_1").Raw},
		{"UNSUBSCRIBE with flags 0 [MQTT-3.10.1-1]", packetstest.Named("unsubscribe_flags_0000_MQTT_3_10_1_1").Raw},
		{"UNSUBSCRIBE with no filter [MQTT-3.10.3-2]", packetstest.Named("unsubscribe_no_filter_MQTT_3_10_3_2").Raw},
		{"PUBLISH with QoS 3 [MQTT-3.3.1-4]", packetstest.Named("publish_qos3_MQTT_3_3_1_4").Raw},
		{"PUBLISH QoS 0 with DUP [MQTT-3.3.1-2]", packetstest.Named("publish_qos0_dup_MQTT_3_3_1_2").Raw},
		{"PUBLISH QoS 1 with packet id 0 [MQTT-2.3.1-1]", packetstest.Named("publish_qos1_id0_MQTT_2_3_1_1").Raw},
		{"PUBLISH topic longer than the packet", packetstest.Named("publish_topic_length_beyond_body").Raw},
		{"PUBLISH topic with invalid UTF-8 [MQTT-1.5.3-1]", packetstest.Named("publish_topic_bad_utf8_MQTT_1_5_3_1").Raw},
		{"PUBLISH topic with U+0000 [MQTT-1.5.3-2]", packetstest.Named("publish_topic_nul_MQTT_1_5_3_2").Raw},
		{"PUBREL with flags 0 [MQTT-3.6.1-1]", packetstest.Named("pubrel_flags_0000_MQTT_3_6_1_1").Raw},
		{"PINGREQ with a body", packetstest.Named("pingreq_with_body").Raw},
		{"DISCONNECT with flags [MQTT-2.2.2-2]", packetstest.Named("disconnect_flags_MQTT_2_2_2_2").Raw},
		{"CONNACK from a client", packetstest.Named("connack_accepted").Raw},
		{"SUBACK from a client", packetstest.Named("suback_single_failure").Raw},
		{"reserved type 0", packetstest.Named("type0_reserved").Raw},
		{"reserved type 15", packetstest.Named("type15_reserved").Raw},
		{"five-byte remaining length", packetstest.Named("remaining_length_five_bytes").Raw},
	}
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		col := newCollector()
		good, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "good"), true))
		subscribe(t, good, topic, 1, col)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := mqtttest.Dial(t, d.pub().Addr())
				c.MustConnect(&packets.Connect{ClientID: unique(t, "bad"), CleanSession: true, KeepAlive: 30})
				c.Write(tt.b)
				_, got := c.ExpectClosed(waitTimeout)
				for _, p := range got {
					switch p.(type) {
					case *packets.Suback, *packets.Unsuback, *packets.Puback, *packets.Pingresp:
						t.Fatalf("malformed packet answered with %s", mqtttest.Describe(got))
					}
				}
				publish(t, good, topic, 1, false, tt.name)
				if m := col.next(t); string(m.Payload()) != tt.name {
					t.Fatalf("other client got %q, want %q (case %d)", m.Payload(), tt.name, i)
				}
			})
		}
	})
}

// A packet within -max-packet-size is served; one over it is refused from
// its header and closes the connection.
func TestBadInput_MaxPacketSize(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		col := newCollector()
		sub, _ := connectPaho(t, pahoOpts(d.sub(), unique(t, "sub"), true))
		subscribe(t, sub, topic, 1, col)

		c := mqtttest.Dial(t, d.pub().Addr())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
		fits := make([]byte, 1024-2-len(topic)-2) // remaining length exactly 1024
		c.PublishQoS1(1, topic, string(fits))
		if m := col.next(t); len(m.Payload()) != len(fits) {
			t.Fatalf("payload of %d bytes, want %d", len(m.Payload()), len(fits))
		}
		c.Send(&packets.Publish{QoS: 1, PacketID: 2, Topic: topic, Payload: append(fits, 0)})
		_, got := c.ExpectClosed(waitTimeout)
		if len(got) != 0 {
			t.Fatalf("oversized PUBLISH answered with %s", mqtttest.Describe(got))
		}
		col.quiet(t)
	}, "-max-packet-size", "1024")
}
