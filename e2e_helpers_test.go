package main

// Helpers shared by the end-to-end tests (e2e_*_test.go): Paho clients, a raw
// TCP client speaking the project's own codec for what a library hides
// (DUP flags, packet ids, malformed input), and unique names per test.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bridgemq/server/packets"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = 5 * time.Second

// quietWindow is how long a test waits, after a fence message has arrived, for
// a message that must not arrive.
const quietWindow = 300 * time.Millisecond

var uniqueSeq atomic.Int64

// unique returns a name no other test in this process uses, for client ids
// and topics.
func unique(t testing.TB, kind string) string {
	name := strings.NewReplacer("/", "-", " ", "_", "#", "", "+", "").Replace(t.Name())
	return fmt.Sprintf("e2e-%s-%s-%d", kind, name, uniqueSeq.Add(1))
}

// pahoOpts are the options of a Paho client of the e2e tests: one broker, no
// auto-reconnect, MQTT 3.1.1, bounded timeouts.
func pahoOpts(ts *testServer, clientID string, clean bool) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(ts.URL()).
		SetClientID(clientID).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetConnectTimeout(waitTimeout).
		SetWriteTimeout(waitTimeout).
		SetKeepAlive(30 * time.Second)
}

// connectPaho connects a client with opts and disconnects it at cleanup. It
// returns the client and the CONNACK's session-present flag.
func connectPaho(t testing.TB, opts *mqtt.ClientOptions) (mqtt.Client, bool) {
	t.Helper()
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("paho connect %s: no CONNACK within %s", opts.ClientID, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("paho connect %s: %v", opts.ClientID, err)
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

// collector gathers the messages a Paho client receives.
type collector chan mqtt.Message

func newCollector() collector { return make(collector, 4096) }

func (c collector) handler(_ mqtt.Client, m mqtt.Message) { c <- m }

// next returns the next message or fails the test after waitTimeout.
func (c collector) next(t testing.TB) mqtt.Message {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %s", waitTimeout)
		return nil
	}
}

// until collects messages up to and including the first one on fenceTopic
// and returns those before it.
func (c collector) until(t testing.TB, fenceTopic string) []mqtt.Message {
	t.Helper()
	var got []mqtt.Message
	for {
		m := c.next(t)
		if m.Topic() == fenceTopic {
			return got
		}
		got = append(got, m)
	}
}

// quiet fails the test if a message arrives within quietWindow.
func (c collector) quiet(t testing.TB) {
	t.Helper()
	select {
	case m := <-c:
		t.Fatalf("unexpected message on %q: %q (retained=%v, qos=%d)", m.Topic(), m.Payload(), m.Retained(), m.Qos())
	case <-time.After(quietWindow):
	}
}

// subscribe subscribes c to filter at qos, delivering into col, and returns
// the SUBACK return code.
func subscribe(t testing.TB, c mqtt.Client, filter string, qos byte, col collector) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, col.handler)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("subscribe %q: no SUBACK within %s", filter, waitTimeout)
	}
	if err := tok.Error(); err != nil && !strings.Contains(err.Error(), "128") {
		t.Fatalf("subscribe %q: %v", filter, err)
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

// publish publishes and waits for the publication's acknowledgement.
func publish(t testing.TB, c mqtt.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("publish %q qos %d: not acknowledged within %s", topic, qos, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %q qos %d: %v", topic, qos, err)
	}
}

// rawClient is a TCP connection that speaks MQTT through the project's codec
// with nothing done automatically: no acks, no pings, no retries.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *packets.Reader
}

// dialRaw opens a raw connection to addr and closes it at cleanup.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, r: packets.NewReader(conn, 0)}
}

// send encodes and writes p.
func (c *rawClient) send(p packets.Packet) {
	c.t.Helper()
	b, err := packets.Append(nil, p)
	if err != nil {
		c.t.Fatalf("encode %T: %v", p, err)
	}
	c.write(b)
}

// write writes raw bytes.
func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write %d bytes: %v", len(b), err)
	}
}

// read returns the next packet, or an error on timeout or close.
func (c *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	return c.r.ReadPacket()
}

// next returns the next packet or fails the test.
func (c *rawClient) next() packets.Packet {
	c.t.Helper()
	p, err := c.read(waitTimeout)
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// expect reads the next packet and fails unless it is a T.
func expect[T packets.Packet](c *rawClient) T {
	c.t.Helper()
	p := c.next()
	v, ok := p.(T)
	if !ok {
		var want T
		c.t.Fatalf("got %T %+v, want %T", p, p, want)
	}
	return v
}

// connect sends a 3.1.1 CONNECT and returns the CONNACK.
func (c *rawClient) connect(p *packets.Connect) *packets.Connack {
	c.t.Helper()
	if p.ProtocolVersion == 0 {
		p.ProtocolVersion = packets.Version311
	}
	c.send(p)
	return expect[*packets.Connack](c)
}

// mustConnect connects and fails unless the CONNACK accepts.
func (c *rawClient) mustConnect(p *packets.Connect) *packets.Connack {
	c.t.Helper()
	ack := c.connect(p)
	if ack.ReturnCode != packets.Accepted {
		c.t.Fatalf("CONNACK return code 0x%02x, want 0x00", ack.ReturnCode)
	}
	return ack
}

// subscribe sends a SUBSCRIBE and returns the SUBACK's codes.
func (c *rawClient) subscribe(id uint16, subs ...packets.Subscription) []packets.ReasonCode {
	c.t.Helper()
	c.send(&packets.Subscribe{PacketID: id, Subscriptions: subs})
	ack := expect[*packets.Suback](c)
	if ack.PacketID != id {
		c.t.Fatalf("SUBACK packet id %d, want %d [MQTT-3.8.4-2]", ack.PacketID, id)
	}
	return ack.ReturnCodes
}

// publishQoS1 publishes at QoS 1 and waits for the PUBACK.
func (c *rawClient) publishQoS1(id uint16, topic, payload string) {
	c.t.Helper()
	c.send(&packets.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: []byte(payload)})
	if ack := expect[*packets.Puback](c); ack.PacketID != id {
		c.t.Fatalf("PUBACK packet id %d, want %d", ack.PacketID, id)
	}
}

// publishesUntil reads PUBLISH packets, completing each QoS 1 and 2 flow as
// a client does, until one with payload fence arrives, and returns those
// before it. PUBRELs may interleave with later PUBLISHes.
func (c *rawClient) publishesUntil(fence string) []*packets.Publish {
	c.t.Helper()
	var got []*packets.Publish
	for {
		switch p := c.next().(type) {
		case *packets.Publish:
			switch p.QoS {
			case 1:
				c.send(&packets.Puback{PacketID: p.PacketID})
			case 2:
				c.send(&packets.Pubrec{PacketID: p.PacketID})
			}
			if string(p.Payload) == fence {
				return got
			}
			got = append(got, p)
		case *packets.Pubrel:
			c.send(&packets.Pubcomp{PacketID: p.PacketID})
		default:
			c.t.Fatalf("got %T %+v, want PUBLISH or PUBREL", p, p)
		}
	}
}

// expectClosed reads until the server closes the connection and fails if it
// has not within d. It returns how long the close took and the packets read
// before it.
func (c *rawClient) expectClosed(d time.Duration) (time.Duration, []packets.Packet) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	_ = c.conn.SetReadDeadline(deadline)
	var got []packets.Packet
	for {
		p, err := c.r.ReadPacket()
		if err == nil {
			got = append(got, p)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %s (read %d packets: %v)", d, len(got), describe(got))
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

// expectSilent fails if the server closes the connection or sends anything
// within d.
func (c *rawClient) expectSilent(d time.Duration) {
	c.t.Helper()
	p, err := c.read(d)
	if err == nil {
		c.t.Fatalf("unexpected %T %+v", p, p)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("connection closed: %v", err)
	}
}

func describe(ps []packets.Packet) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%T%+v", p, p)
	}
	return strings.Join(parts, ", ")
}

// rawConnect builds a CONNECT by hand, for fields the encoder will not get
// wrong on purpose: any protocol name, level and flags byte.
func rawConnect(name string, level, flags byte, keepAlive uint16, clientID string) []byte {
	var body []byte
	body = append(body, byte(len(name)>>8), byte(len(name)))
	body = append(body, name...)
	body = append(body, level, flags, byte(keepAlive>>8), byte(keepAlive))
	body = append(body, byte(len(clientID)>>8), byte(len(clientID)))
	body = append(body, clientID...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// needMosquittoClients returns the path of a mosquitto client program. When
// it is missing the test fails on CI (CI=true) and is skipped elsewhere.
func needMosquittoClients(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not installed (apt-get install mosquitto-clients): %v", name, err)
	}
	t.Skipf("%s not installed (apt-get install mosquitto-clients)", name)
	return ""
}
