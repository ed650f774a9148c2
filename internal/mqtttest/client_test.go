package mqtttest

import (
	"net"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// fakeBroker accepts one connection on loopback and runs serve on it.
func fakeBroker(t *testing.T, serve func(c net.Conn, r *packets.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, packets.NewReader(c, 0))
	}()
	return ln.Addr().String()
}

func write(c net.Conn, p packets.Packet) {
	b, _ := packets.Append(nil, p)
	_, _ = c.Write(b)
}

// The client's helpers complete the flows they name and see a close as one.
func TestClient_ConnectPublishDrainClose(t *testing.T) {
	addr := fakeBroker(t, func(c net.Conn, r *packets.Reader) {
		if _, err := r.ReadPacket(); err != nil { // CONNECT
			return
		}
		write(c, &packets.Connack{})
		p, err := r.ReadPacket() // PUBLISH QoS 1
		if err != nil {
			return
		}
		write(c, &packets.Puback{PacketID: p.(*packets.Publish).PacketID})
		write(c, &packets.Publish{QoS: 1, PacketID: 9, Topic: "a", Payload: []byte("x")})
		if ack, err := r.ReadPacket(); err != nil || ack.(*packets.Puback).PacketID != 9 {
			return
		}
		if _, err := r.ReadPacket(); err != nil { // PINGREQ from Alive
			return
		}
		write(c, &packets.Pingresp{})
		_, _ = r.ReadPacket() // DISCONNECT; then close
	})
	c := Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: "t", CleanSession: true})
	c.Publish(3, 1, "a", "p", false)
	if got := c.Drain(200 * time.Millisecond); len(got) != 1 || string(got[0].Payload) != "x" {
		t.Fatalf("Drain = %v, want the one PUBLISH", got)
	}
	if !c.Alive(WaitTimeout) {
		t.Fatal("Alive = false, want the PINGRESP seen")
	}
	c.Send(&packets.Disconnect{})
	c.ExpectClosed(WaitTimeout)
}

// NextPublish skips the answers to the client's own packets, completes a
// QoS 2 flow the server releases, acknowledges the PUBLISH it returns, and
// reports any other packet as an error.
func TestClient_NextPublish(t *testing.T) {
	answers := make(chan packets.Packet, 4)
	addr := fakeBroker(t, func(c net.Conn, r *packets.Reader) {
		if _, err := r.ReadPacket(); err != nil { // CONNECT
			return
		}
		write(c, &packets.Connack{})
		write(c, &packets.Suback{PacketID: 1, ReturnCodes: []packets.ReasonCode{1}})
		write(c, &packets.Pubrel{PacketID: 4})
		write(c, &packets.Publish{QoS: 2, PacketID: 5, Topic: "a", Payload: []byte("x")})
		for range 2 {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			answers <- p
		}
		write(c, &packets.Pingresp{})
		_, _ = r.ReadPacket()
	})
	c := Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: "t", CleanSession: true})
	p, err := c.NextPublish(WaitTimeout)
	if err != nil || string(p.Payload) != "x" {
		t.Fatalf("NextPublish = %v, %v; want the PUBLISH x", p, err)
	}
	if a := <-answers; a.(*packets.Pubcomp).PacketID != 4 {
		t.Fatalf("first answer %+v, want PUBCOMP 4", a)
	}
	if a := <-answers; a.(*packets.Pubrec).PacketID != 5 {
		t.Fatalf("second answer %+v, want PUBREC 5", a)
	}
	if p, err := c.NextPublish(WaitTimeout); err == nil {
		t.Fatalf("NextPublish after a PINGRESP = %v, want an error", p)
	}
}
