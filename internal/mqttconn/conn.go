// Package mqttconn is the one raw MQTT client connection of the project's
// tools: the load tool (examples/bench), which measures speed, and the
// fault tests' devices (internal/loadgen), which reconnect and re-send. It
// speaks 3.1.1 or 5.0 through the project's own codec, buffers reads and
// writes, and returns errors rather than failing a test: a device must
// survive a broken connection. Tests that check the server packet by packet
// use internal/mqtttest.Client instead, which writes every packet at once
// and fails the test on anything unexpected.
package mqttconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/bridgemq/server/packets"
)

// DefaultBufferSize is the read and write buffer of a connection unless
// Options says otherwise: large enough that a burst of small PUBLISHes
// goes out in one write.
const DefaultBufferSize = 64 << 10

// maxSubscribeBatch is the number of filters sent in one SUBSCRIBE packet.
const maxSubscribeBatch = 100

var (
	// ErrRefused: the CONNACK did not accept the connection.
	ErrRefused = errors.New("connection refused by the broker")
	// ErrUnexpected: the broker sent a packet the exchange did not expect.
	ErrUnexpected = errors.New("unexpected packet")
	// ErrSubscribeRefused: a SUBACK refused a filter.
	ErrSubscribeRefused = errors.New("subscription refused")
)

// Options are what a connection changes from the defaults.
type Options struct {
	Version   packets.Version // 0 = 3.1.1
	KeepAlive uint16          // seconds, sent in CONNECT; 0 = none [MQTT-3.1.2-10]
	BufSize   int             // read and write buffers; 0 = DefaultBufferSize
	Local     net.Addr        // source address for Dial; nil = the kernel's choice
}

// Conn is one MQTT client connection. Reading (ReadPacket) and writing
// (Queue*, Flush, Send) may run on two goroutines, each on its own side.
type Conn struct {
	// NC is the socket, for deadlines and for closing it without DISCONNECT.
	NC  net.Conn
	br  *bufio.Reader
	r   *packets.Reader
	w   *bufio.Writer
	buf []byte // scratch for encoding

	keepAlive uint16
	version   packets.Version // the wire format: 3.1.1 or 5.0
	// receiveMax is a 5.0 server's Receive Maximum (CONNACK), 0 when it
	// stated none.
	receiveMax int
}

// New wraps an open socket; nothing is sent until Connect.
func New(nc net.Conn, o Options) *Conn {
	size := o.BufSize
	if size <= 0 {
		size = DefaultBufferSize
	}
	br := bufio.NewReaderSize(nc, size)
	c := &Conn{
		NC: nc,
		br: br,
		// NewReader keeps br as it is, already buffered, so br.Buffered()
		// tells how much is waiting behind the packet just decoded.
		r:         packets.NewReader(br, 0),
		w:         bufio.NewWriterSize(nc, size),
		keepAlive: o.KeepAlive,
		version:   o.Version,
	}
	if c.version == 0 {
		c.version = packets.Version311
	}
	return c
}

// Dial opens a TCP connection to addr (Nagle off) and completes the
// CONNECT / CONNACK exchange within timeout; a refusing CONNACK is an
// error wrapping ErrRefused.
func Dial(addr, clientID string, clean bool, timeout time.Duration, o Options) (*Conn, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Timeout: timeout, LocalAddr: o.Local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := New(nc, o)
	if _, err := c.Connect(clientID, clean, deadline); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connecting %s to %s: %w", clientID, addr, err)
	}
	return c, nil
}

// Connect sends CONNECT and waits for the CONNACK [MQTT-3.1.4-5] until
// deadline. It returns the CONNACK, and an error wrapping ErrRefused with
// it when the return code is not 0.
func (c *Conn) Connect(clientID string, clean bool, deadline time.Time) (*packets.Connack, error) {
	if err := c.NC.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting deadline: %w", err)
	}
	err := c.Send(&packets.Connect{ProtocolVersion: c.version, CleanSession: clean, ClientID: clientID, KeepAlive: c.keepAlive})
	if err != nil {
		return nil, err
	}
	// A 5.0 server answers, and sends everything after, in 5.0.
	c.r.SetVersion(c.version)
	p, err := c.r.ReadPacket()
	if err != nil {
		return nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	ack, ok := p.(*packets.Connack)
	if !ok {
		return nil, fmt.Errorf("%w: %T instead of CONNACK", ErrUnexpected, p)
	}
	if ack.ReturnCode != packets.Accepted {
		return ack, fmt.Errorf("%w: CONNACK return code 0x%02x", ErrRefused, byte(ack.ReturnCode))
	}
	if ack.Properties != nil && ack.Properties.ReceiveMaximum != nil {
		c.receiveMax = int(*ack.Properties.ReceiveMaximum)
	}
	return ack, c.NC.SetDeadline(time.Time{})
}

// Version is the connection's wire format.
func (c *Conn) Version() packets.Version { return c.version }

// ReceiveMaximum is a 5.0 server's Receive Maximum, 0 when it stated none:
// no more QoS 1/2 PUBLISHes may await their acknowledgement [MQTT-3.3.4-7].
func (c *Conn) ReceiveMaximum() int { return c.receiveMax }

// Subscribe sends the filters in SUBSCRIBE packets of up to 100, all
// pipelined, waits for every SUBACK until deadline and returns the codes in
// the filters' order. A refused filter is an error wrapping
// ErrSubscribeRefused [MQTT-3.9.3-2]. PUBLISHes arriving first (a resumed
// session's queue) are dropped.
func (c *Conn) Subscribe(filters []string, qos byte, deadline time.Time) ([]packets.ReasonCode, error) {
	if err := c.NC.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting deadline: %w", err)
	}
	first := map[uint16]int{} // packet id → index of its first filter
	for i, id := 0, uint16(1); i < len(filters); i, id = i+maxSubscribeBatch, id+1 {
		sub := &packets.Subscribe{PacketID: id}
		for _, f := range filters[i:min(i+maxSubscribeBatch, len(filters))] {
			sub.Subscriptions = append(sub.Subscriptions, packets.Subscription{Filter: f, QoS: qos})
		}
		if err := c.Queue(sub); err != nil {
			return nil, err
		}
		first[id] = i
	}
	if err := c.w.Flush(); err != nil {
		return nil, fmt.Errorf("sending SUBSCRIBE: %w", err)
	}
	codes := make([]packets.ReasonCode, len(filters))
	for len(first) > 0 {
		p, err := c.r.ReadPacket()
		if err != nil {
			return nil, fmt.Errorf("reading SUBACK: %w", err)
		}
		ack, ok := p.(*packets.Suback)
		if !ok {
			if _, isPub := p.(*packets.Publish); isPub {
				continue
			}
			return nil, fmt.Errorf("%w: %T instead of SUBACK", ErrUnexpected, p)
		}
		at, ok := first[ack.PacketID]
		if !ok {
			return nil, fmt.Errorf("%w: SUBACK for packet id %d, not sent [MQTT-3.8.4-2]", ErrUnexpected, ack.PacketID)
		}
		delete(first, ack.PacketID)
		copy(codes[at:], ack.ReturnCodes)
		for _, rc := range ack.ReturnCodes {
			if rc >= packets.SubackFailure { // 0x80, and 5.0's other refusals above it
				return codes, fmt.Errorf("%w: SUBACK %d return code 0x%02x [MQTT-3.9.3-2]", ErrSubscribeRefused, ack.PacketID, byte(rc))
			}
		}
	}
	return codes, c.NC.SetDeadline(time.Time{})
}

// ReadPacket returns the next packet under whatever read deadline is set.
func (c *Conn) ReadPacket() (packets.Packet, error) { return c.r.ReadPacket() }

// InputBuffered reports how many bytes already read wait behind the packet
// just decoded: a reader that acknowledges flushes when none do.
func (c *Conn) InputBuffered() int { return c.br.Buffered() }

// Queue encodes p into the write buffer.
func (c *Conn) Queue(p packets.Packet) error {
	var err error
	c.buf, err = packets.AppendVersion(c.buf[:0], p, c.version)
	if err != nil {
		return fmt.Errorf("encoding %T: %w", p, err)
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("writing %T: %w", p, err)
	}
	return nil
}

// QueuePublish encodes a PUBLISH into the write buffer through the codec's
// fast path.
func (c *Conn) QueuePublish(p *packets.Publish) error {
	if c.version == packets.Version5 {
		c.buf = packets.AppendPublish5(c.buf[:0], p)
	} else {
		c.buf = packets.AppendPublish(c.buf[:0], p)
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("writing PUBLISH: %w", err)
	}
	return nil
}

// QueueAck appends a two-byte-id acknowledgement (PUBACK, PUBREC, PUBREL,
// PUBCOMP) without going through an interface value.
func (c *Conn) QueueAck(t packets.Type, id uint16) error {
	var flags byte
	if t == packets.TypePubrel {
		flags = 0x02 // [MQTT-3.6.1-1]
	}
	c.buf = append(c.buf[:0], byte(t)<<4|flags, 2, byte(id>>8), byte(id))
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("writing %s: %w", t, err)
	}
	return nil
}

// Buffered reports how many bytes wait in the write buffer.
func (c *Conn) Buffered() int { return c.w.Buffered() }

// Flush writes whatever is buffered.
func (c *Conn) Flush() error {
	if c.w.Buffered() == 0 {
		return nil
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	return nil
}

// Send encodes p and flushes it.
func (c *Conn) Send(p packets.Packet) error {
	if err := c.Queue(p); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending %T: %w", p, err)
	}
	return nil
}

// Stopped reports whether a read error is the end the reader's own side
// caused (its read deadline, a close) or the broker closing between
// packets, rather than a failure.
func Stopped(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

// StopReading makes a goroutine blocked in ReadPacket return at once.
func (c *Conn) StopReading() { _ = c.NC.SetReadDeadline(time.Now()) }

// Close sends DISCONNECT [MQTT-3.14.4-1], within a second, and closes the
// socket.
func (c *Conn) Close() {
	_ = c.NC.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.Send(&packets.Disconnect{})
	_ = c.NC.Close()
}
