package mqttconn

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// fakeBroker accepts one connection and answers with serve, reading the
// client's packets in the wire format of version.
func fakeBroker(t *testing.T, version packets.Version, serve func(c net.Conn, r *packets.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := packets.NewReader(c, 0)
		r.SetVersion(version)
		serve(c, r)
	}()
	return ln.Addr().String()
}

func write(c net.Conn, v packets.Version, p packets.Packet) {
	b, err := packets.AppendVersion(nil, p, v)
	if err != nil {
		panic(err)
	}
	_, _ = c.Write(b)
}

func TestDial_ConnackDecides(t *testing.T) {
	rm := uint16(7)
	for _, tc := range []struct {
		name       string
		version    packets.Version
		ack        *packets.Connack
		wantErr    error
		receiveMax int
	}{
		{"accepted 3.1.1", packets.Version311, &packets.Connack{}, nil, 0},
		{"refused 3.1.1 MQTT_3_2_2_5", packets.Version311, &packets.Connack{ReturnCode: 0x05}, ErrRefused, 0},
		{"accepted 5.0 with Receive Maximum MQTT_3_3_4_7", packets.Version5,
			&packets.Connack{Properties: &packets.Properties{ReceiveMaximum: &rm}}, nil, 7},
		{"refused 5.0", packets.Version5, &packets.Connack{ReturnCode: 0x87}, ErrRefused, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan *packets.Connect, 1)
			addr := fakeBroker(t, tc.version, func(c net.Conn, r *packets.Reader) {
				p, err := r.ReadPacket()
				if err != nil {
					close(got)
					return
				}
				got <- p.(*packets.Connect)
				write(c, tc.version, tc.ack)
				_, _ = r.ReadPacket() // until the client closes
			})
			c, err := Dial(addr, "dev-1", true, 2*time.Second, Options{Version: tc.version, KeepAlive: 30})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Dial error %v, want %v", err, tc.wantErr)
			}
			connect := <-got
			if connect == nil || connect.ClientID != "dev-1" || !connect.CleanSession || connect.KeepAlive != 30 || connect.ProtocolVersion != tc.version {
				t.Fatalf("broker got CONNECT %+v", connect)
			}
			if err != nil {
				return
			}
			defer c.Close()
			if c.ReceiveMaximum() != tc.receiveMax || c.Version() != tc.version {
				t.Fatalf("ReceiveMaximum %d, Version %d; want %d, %d", c.ReceiveMaximum(), c.Version(), tc.receiveMax, tc.version)
			}
		})
	}
}

// TestSubscribe_BatchesAndCodes: 250 filters go in three SUBSCRIBE
// packets (each SUBACK grants a different QoS); the codes come back in the
// filters' order whatever the order of the SUBACKs, a PUBLISH before them is skipped, and a refused filter is an
// error [MQTT-3.9.3-2].
func TestSubscribe_BatchesAndCodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refuse  int // index of a filter the broker refuses, -1 for none
		wantErr error
	}{
		{"all granted", -1, nil},
		{"one refused", 120, ErrSubscribeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			filters := make([]string, 250)
			for i := range filters {
				filters[i] = "f/" + strings.Repeat("x", i%7) + "/" + string(rune('a'+i%26))
			}
			addr := fakeBroker(t, packets.Version311, func(c net.Conn, r *packets.Reader) {
				_, _ = r.ReadPacket() // CONNECT
				write(c, packets.Version311, &packets.Connack{})
				var subs []*packets.Subscribe
				for range 3 {
					p, err := r.ReadPacket()
					if err != nil {
						return
					}
					subs = append(subs, p.(*packets.Subscribe))
				}
				write(c, packets.Version311, &packets.Publish{Topic: "queued", Payload: []byte("x")})
				starts := []int{0, 100, 200}
				for i := len(subs) - 1; i >= 0; i-- { // answered in reverse
					s := subs[i]
					codes := make([]packets.ReasonCode, len(s.Subscriptions))
					for j := range codes {
						codes[j] = packets.ReasonCode(i) // batch i grants QoS i
						if starts[i]+j == tc.refuse {
							codes[j] = packets.SubackFailure
						}
					}
					write(c, packets.Version311, &packets.Suback{PacketID: s.PacketID, ReturnCodes: codes})
				}
				_, _ = r.ReadPacket()
			})
			c, err := Dial(addr, "sub", true, 2*time.Second, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			codes, err := c.Subscribe(filters, 1, time.Now().Add(2*time.Second))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Subscribe error %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(codes) != len(filters) {
				t.Fatalf("%d codes for %d filters", len(codes), len(filters))
			}
			for i, rc := range codes {
				if want := packets.ReasonCode(i / 100); rc != want {
					t.Fatalf("code %d is 0x%02x, want 0x%02x", i, byte(rc), byte(want))
				}
			}
		})
	}
}

// TestQueue_WhatTheBrokerReads: PUBLISH through the fast path, every
// acknowledgement, PUBREL with its reserved flags [MQTT-3.6.1-1], and
// DISCONNECT on Close, decoded by the project's reader, in 3.1.1 and 5.0.
func TestQueue_WhatTheBrokerReads(t *testing.T) {
	for _, v := range []packets.Version{packets.Version311, packets.Version5} {
		t.Run(v.String(), func(t *testing.T) {
			got := make(chan []packets.Packet, 1)
			addr := fakeBroker(t, v, func(c net.Conn, r *packets.Reader) {
				_, _ = r.ReadPacket()
				write(c, v, &packets.Connack{})
				var ps []packets.Packet
				for {
					p, err := r.ReadPacket()
					if err != nil {
						got <- ps
						return
					}
					ps = append(ps, p)
				}
			})
			c, err := Dial(addr, "pub", true, 2*time.Second, Options{Version: v})
			if err != nil {
				t.Fatal(err)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(c.QueuePublish(&packets.Publish{QoS: 1, PacketID: 9, Topic: "a/b", Payload: []byte("hello")}))
			for _, typ := range []packets.Type{packets.TypePuback, packets.TypePubrec, packets.TypePubrel, packets.TypePubcomp} {
				must(c.QueueAck(typ, 300))
			}
			if c.Buffered() == 0 {
				t.Fatal("nothing buffered before Flush")
			}
			must(c.Flush())
			c.Close()
			ps := <-got
			want := []string{"*packets.Publish", "*packets.Puback", "*packets.Pubrec", "*packets.Pubrel", "*packets.Pubcomp", "*packets.Disconnect"}
			if len(ps) != len(want) {
				t.Fatalf("broker read %d packets %v, want %v", len(ps), ps, want)
			}
			pub := ps[0].(*packets.Publish)
			if pub.QoS != 1 || pub.PacketID != 9 || pub.Topic != "a/b" || string(pub.Payload) != "hello" {
				t.Fatalf("PUBLISH %+v", pub)
			}
			if rel := ps[3].(*packets.Pubrel); rel.PacketID != 300 {
				t.Fatalf("PUBREL %+v", rel)
			}
		})
	}
}

// TestStopped tells the tool's own ends of reading from failures.
func TestStopped(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := New(a, Options{})
	c.StopReading()
	_, err := c.ReadPacket()
	if !Stopped(err) {
		t.Fatalf("after StopReading: %v, want a stop", err)
	}
	if Stopped(errors.New("malformed")) {
		t.Fatal("an ordinary error counted as a stop")
	}
}
