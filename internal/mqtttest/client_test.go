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
