package mqtttest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// Client is a TCP connection that speaks MQTT through the project's codec
// with nothing done automatically: no acks, no pings, no retries, so a test
// sees DUP flags, packet ids and closes exactly as the server sent them.
// Its methods fail the test on anything unexpected.
type Client struct {
	t testing.TB
	// Conn is the socket, for tests that write raw bytes or close it.
	Conn    net.Conn
	r       *packets.Reader
	version packets.Version // the wire format of Send and Read; 0 is 3.1.1
}

// Dial opens a raw connection to addr and closes it at cleanup.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, WaitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Client{t: t, Conn: conn, r: packets.NewReader(conn, 0)}
}

// Send encodes and writes p.
func (c *Client) Send(p packets.Packet) {
	c.t.Helper()
	b, err := packets.AppendVersion(nil, p, c.version)
	if err != nil {
		c.t.Fatalf("encode %T: %v", p, err)
	}
	c.Write(b)
}

// SetVersion makes the client send and read the wire format of protocol
// level v from now on (Connect does it for its CONNECT's level), for a test
// that writes its CONNECT raw.
func (c *Client) SetVersion(v packets.Version) {
	c.version = v
	c.r.SetVersion(v)
}

// Write writes raw bytes.
func (c *Client) Write(b []byte) {
	c.t.Helper()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(WaitTimeout))
	if _, err := c.Conn.Write(b); err != nil {
		c.t.Fatalf("write %d bytes: %v", len(b), err)
	}
}

// Read returns the next packet, or an error on timeout or close.
func (c *Client) Read(timeout time.Duration) (packets.Packet, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	return c.r.ReadPacket()
}

// ReadPacket returns the next packet under whatever read deadline the
// caller set on Conn.
func (c *Client) ReadPacket() (packets.Packet, error) { return c.r.ReadPacket() }

// Next returns the next packet or fails the test.
func (c *Client) Next() packets.Packet {
	c.t.Helper()
	p, err := c.Read(WaitTimeout)
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// Expect reads the next packet and fails unless it is a T.
func Expect[T packets.Packet](c *Client) T {
	c.t.Helper()
	p := c.Next()
	v, ok := p.(T)
	if !ok {
		var want T
		c.t.Fatalf("got %T %+v, want %T", p, p, want)
	}
	return v
}

// Connect sends a CONNECT (3.1.1 unless p says otherwise) and returns the
// CONNACK.
func (c *Client) Connect(p *packets.Connect) *packets.Connack {
	c.t.Helper()
	if p.ProtocolVersion == 0 {
		p.ProtocolVersion = packets.Version311
	}
	if p.ProtocolVersion == packets.Version5 {
		c.SetVersion(packets.Version5)
	}
	c.Send(p)
	return Expect[*packets.Connack](c)
}

// MustConnect connects and fails unless the CONNACK accepts.
func (c *Client) MustConnect(p *packets.Connect) *packets.Connack {
	c.t.Helper()
	ack := c.Connect(p)
	if ack.ReturnCode != packets.Accepted {
		c.t.Fatalf("CONNACK return code 0x%02x, want 0x00", ack.ReturnCode)
	}
	return ack
}

// Subscribe sends a SUBSCRIBE and returns the SUBACK's codes.
func (c *Client) Subscribe(id uint16, subs ...packets.Subscription) []packets.ReasonCode {
	c.t.Helper()
	c.Send(&packets.Subscribe{PacketID: id, Subscriptions: subs})
	ack := Expect[*packets.Suback](c)
	if ack.PacketID != id {
		c.t.Fatalf("SUBACK packet id %d, want %d [MQTT-3.8.4-2]", ack.PacketID, id)
	}
	return ack.ReturnCodes
}

// PublishQoS1 publishes at QoS 1 and waits for the PUBACK.
func (c *Client) PublishQoS1(id uint16, topic, payload string) {
	c.t.Helper()
	c.Send(&packets.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: []byte(payload)})
	if ack := Expect[*packets.Puback](c); ack.PacketID != id {
		c.t.Fatalf("PUBACK packet id %d, want %d", ack.PacketID, id)
	}
}

// Publish publishes at any QoS and completes the flow: PUBACK for QoS 1,
// PUBREC, PUBREL, PUBCOMP for QoS 2.
func (c *Client) Publish(id uint16, qos byte, topic, payload string, retain bool) {
	c.t.Helper()
	c.Send(&packets.Publish{QoS: qos, PacketID: id, Topic: topic, Payload: []byte(payload), Retain: retain})
	switch qos {
	case 1:
		Expect[*packets.Puback](c)
	case 2:
		Expect[*packets.Pubrec](c)
		c.Send(&packets.Pubrel{PacketID: id})
		Expect[*packets.Pubcomp](c)
	}
}

// PublishesUntil reads PUBLISH packets, completing each QoS 1 and 2 flow as
// a client does, until one with payload fence arrives, and returns those
// before it. PUBRELs may interleave with later PUBLISHes.
func (c *Client) PublishesUntil(fence string) []*packets.Publish {
	c.t.Helper()
	var got []*packets.Publish
	for {
		switch p := c.Next().(type) {
		case *packets.Publish:
			c.ack(p)
			if string(p.Payload) == fence {
				return got
			}
			got = append(got, p)
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: p.PacketID})
		default:
			c.t.Fatalf("got %T %+v, want PUBLISH or PUBREL", p, p)
		}
	}
}

// Drain reads PUBLISHes until none has come for d, acknowledging as a
// client does, and returns them. SUBACK and UNSUBACK are skipped.
func (c *Client) Drain(d time.Duration) []*packets.Publish {
	c.t.Helper()
	var got []*packets.Publish
	for {
		p, err := c.Read(d)
		if err != nil {
			if !IsTimeout(err) {
				c.t.Fatalf("drain: %v", err)
			}
			return got
		}
		switch p := p.(type) {
		case *packets.Publish:
			c.ack(p)
			got = append(got, p)
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Unsuback, *packets.Suback:
		default:
			c.t.Fatalf("drain: got %T", p)
		}
	}
}

// NextPublish reads until a PUBLISH arrives within d and returns it,
// answering as a client does: the PUBLISH is acknowledged (PUBACK, PUBREC),
// a PUBREL gets its PUBCOMP, and the answers to the client's own packets
// (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) are skipped. Any other packet
// is an error.
func (c *Client) NextPublish(d time.Duration) (*packets.Publish, error) {
	deadline := time.Now().Add(d)
	for {
		p, err := c.Read(time.Until(deadline))
		if err != nil {
			return nil, err
		}
		switch p := p.(type) {
		case *packets.Publish:
			c.ack(p)
			return p, nil
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Puback, *packets.Pubrec, *packets.Pubcomp, *packets.Suback, *packets.Unsuback:
		default:
			return nil, fmt.Errorf("got %T %+v, want PUBLISH", p, p)
		}
	}
}

// ack sends the first acknowledgement a received PUBLISH of its QoS needs.
func (c *Client) ack(p *packets.Publish) {
	switch p.QoS {
	case 1:
		c.Send(&packets.Puback{PacketID: p.PacketID})
	case 2:
		c.Send(&packets.Pubrec{PacketID: p.PacketID})
	}
}

// Alive reports whether the server answers a PINGREQ within d (packets
// before the PINGRESP are skipped).
func (c *Client) Alive(d time.Duration) bool {
	deadline := time.Now().Add(d)
	_ = c.Conn.SetWriteDeadline(deadline)
	if _, err := c.Conn.Write(packetstest.Named("pingreq").Raw); err != nil {
		return false
	}
	for {
		_ = c.Conn.SetReadDeadline(deadline)
		p, err := c.r.ReadPacket()
		if err != nil {
			return false
		}
		if _, ok := p.(*packets.Pingresp); ok {
			return true
		}
	}
}

// ExpectClosed reads until the server closes the connection and fails if it
// has not within d. It returns how long the close took and the packets read
// before it.
func (c *Client) ExpectClosed(d time.Duration) (time.Duration, []packets.Packet) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	_ = c.Conn.SetReadDeadline(deadline)
	var got []packets.Packet
	for {
		p, err := c.r.ReadPacket()
		if err == nil {
			got = append(got, p)
			continue
		}
		if IsTimeout(err) {
			c.t.Fatalf("connection still open after %s (read %d packets: %v)", d, len(got), Describe(got))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
			strings.Contains(err.Error(), "connection reset") {
			return time.Since(start), got
		}
		// Anything else the server sent after the violation is not MQTT
		// either; it still has to close.
		c.t.Logf("read after violation: %v", err)
	}
}

// ExpectSilent fails if the server closes the connection or sends anything
// within d.
func (c *Client) ExpectSilent(d time.Duration) {
	c.t.Helper()
	p, err := c.Read(d)
	if err == nil {
		c.t.Fatalf("unexpected %T %+v", p, p)
	}
	if !IsTimeout(err) {
		c.t.Fatalf("connection closed: %v", err)
	}
}

// IsTimeout reports whether err is a network timeout (a read deadline
// passed), as opposed to a close.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Describe lists packets for a failure message.
func Describe(ps []packets.Packet) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%T%+v", p, p)
	}
	return strings.Join(parts, ", ")
}
