package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// pipeClient is the client end of a served session over net.Pipe.
type pipeClient struct {
	conn net.Conn
	r    *packets.Reader
	done chan struct{} // closed when Serve has returned
}

// servePipe serves a session on one end of a pipe, its limit on packet size
// maxPacket, and returns the other end.
func servePipe(t *testing.T, maxPacket int) *pipeClient {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	env := &Env{
		Broker: broker.NewMemory(broker.MemoryOptions{}),
		Auth:   AllowAll{},
		Stats:  &Stats{},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{MaxPacketSize: maxPacket, MaxInflight: 10, MaxQueued: 10, WriteTimeout: time.Second, ConnectTimeout: 5 * time.Second},
	}
	c := &pipeClient{conn: client, r: packets.NewReader(client, 0), done: make(chan struct{})}
	go New(server, env).Serve(context.Background(), func() { close(c.done) })
	return c
}

// write sends raw bytes without waiting for the session to read them all:
// it may close the connection half way, which is what the tests expect.
func (c *pipeClient) write(raw []byte) {
	go func() { _, _ = c.conn.Write(raw) }()
}

// replies reads until the session closes the connection and returns what
// it sent meanwhile; it fails the test if the connection stays open.
func (c *pipeClient) replies(t *testing.T) []packets.Packet {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []packets.Packet
	for {
		p, err := c.r.ReadPacket()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
				break
			}
			t.Fatalf("connection still open (%v) after %v", err, got)
		}
		got = append(got, p)
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	return got
}

func (c *pipeClient) connect(t *testing.T) {
	t.Helper()
	raw, _ := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: "c", KeepAlive: 30})
	c.write(raw)
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := c.r.ReadPacket()
	if ack, ok := p.(*packets.Connack); err != nil || !ok || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNACK: %#v, %v", p, err)
	}
}

// serverOnly reports whether a valid packet of type typ is one only a
// server sends, which a client must not [MQTT-4.8.0-1].
func serverOnly(typ packets.Type) bool {
	switch typ {
	case packets.TypeConnack, packets.TypeSuback, packets.TypeUnsuback, packets.TypePingresp:
		return true
	}
	return false
}

// TestServe_CatalogueAfterConnect_MalformedClosesWithoutReply_MQTT_4_8_0_1:
// every packet of the catalogue that is malformed or too large, a packet
// only a server sends, and a second CONNECT [MQTT-3.1.0-2] each close the
// connection without an answer.
func TestServe_CatalogueAfterConnect_MalformedClosesWithoutReply_MQTT_4_8_0_1(t *testing.T) {
	for _, tc := range packetstest.All() {
		closes := tc.Err == packets.ErrMalformed || tc.Err == packets.ErrPacketTooLarge ||
			(tc.Err == nil && (serverOnly(tc.Type()) || tc.Type() == packets.TypeConnect))
		if !closes || tc.Version != 0 {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			limit := tc.Max
			if limit == 0 {
				limit = packetstest.MaxPacket
			}
			c := servePipe(t, limit)
			c.connect(t)
			c.write(tc.Raw)
			if got := c.replies(t); len(got) != 0 {
				t.Fatalf("answered with %#v", got)
			}
		})
	}
}

// TestServe_CatalogueFirstPacket_MQTT_3_1_2_2: a malformed 3.1.1 CONNECT
// closes the connection without a CONNACK; a CONNECT of a protocol this
// server does not speak gets CONNACK 0x01 and then the close
// [MQTT-3.1.2-2]; a malformed 5.0 CONNECT, or one that is a protocol error,
// gets a 5.0 CONNACK with the error's Reason Code (0x81, 0x82) and then
// the close [MQTT-4.13.1-1].
func TestServe_CatalogueFirstPacket_MQTT_3_1_2_2(t *testing.T) {
	for _, tc := range packetstest.All() {
		if tc.Type() != packets.TypeConnect || tc.Err == nil || tc.Err == io.ErrUnexpectedEOF {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			c := servePipe(t, packetstest.MaxPacket)
			c.write(tc.Raw)
			if w, ok := tc.Want.(*packets.Connect); ok && tc.Err == packets.ErrUnsupportedProtocol && w.ProtocolVersion == packets.Version5 {
				// Unsupported for a Reader that does not accept 5.0; the
				// session does, and accepts this valid 5.0 CONNECT.
				c.r.SetVersion(packets.Version5)
				_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				p, err := c.r.ReadPacket()
				if ack, ok := p.(*packets.Connack); err != nil || !ok || ack.ReturnCode != packets.Success {
					t.Fatalf("CONNACK: %#v, %v; want 5.0 CONNACK 0x00", p, err)
				}
				return
			}
			if tc.Version == packets.Version5 {
				c.r.SetVersion(packets.Version5)
				got := c.replies(t)
				want, _ := packets.CodeOf(tc.Err)
				if len(got) != 1 || got[0].(*packets.Connack).ReturnCode != want {
					t.Fatalf("answered with %#v, want 5.0 CONNACK 0x%02x only", got, want)
				}
				return
			}
			got := c.replies(t)
			if tc.Err == packets.ErrUnsupportedProtocol {
				if len(got) != 1 || got[0].(*packets.Connack).ReturnCode != packets.RefusedProtocolVersion {
					t.Fatalf("answered with %#v, want CONNACK 0x01 only", got)
				}
				return
			}
			if len(got) != 0 {
				t.Fatalf("answered with %#v", got)
			}
		})
	}
}
