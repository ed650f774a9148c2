package main

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

// ioBufferSize is the read and write buffer of every connection: large
// enough that a burst of small PUBLISHes goes out in one write.
const ioBufferSize = 64 << 10

// maxSubscribeBatch is the number of filters sent in one SUBSCRIBE packet.
const maxSubscribeBatch = 100

var (
	errRefused       = errors.New("connection refused by the broker")
	errUnexpected    = errors.New("unexpected packet")
	errSubscribeFail = errors.New("subscription refused")
)

// conn is one MQTT client connection over raw TCP, speaking through the
// project's own codec.
type conn struct {
	nc  net.Conn
	br  *bufio.Reader
	r   *packets.Reader
	w   *bufio.Writer
	buf []byte // scratch for encoding
	// keepAlive is the CONNECT's keep-alive in seconds; the tool never
	// pings, so only idle connections held shorter than it set one.
	keepAlive uint16
	version   packets.Version // the wire format: 3.1.1 or 5.0
	// receiveMax is a 5.0 server's Receive Maximum (CONNACK), 0 when it
	// stated none: no more QoS 1/2 PUBLISHes may await their
	// acknowledgement [MQTT-3.3.4-7].
	receiveMax int
}

// dialOptions are what an idle connection changes from dial's defaults.
type dialOptions struct {
	version   packets.Version // 0 = 3.1.1
	keepAlive uint16          // seconds, sent in CONNECT; 0 = none
	bufSize   int             // read and write buffers; 0 = ioBufferSize
	local     net.Addr        // source address; nil = the kernel's choice
}

// dialWith opens a TCP connection to addr and completes the MQTT CONNECT /
// CONNACK exchange within timeout.
func dialWith(addr, clientID string, clean bool, timeout time.Duration, o dialOptions) (*conn, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Timeout: timeout, LocalAddr: o.local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	size := o.bufSize
	if size <= 0 {
		size = ioBufferSize
	}
	br := bufio.NewReaderSize(nc, size)
	c := &conn{
		nc: nc,
		br: br,
		// NewReader keeps br as it is, already buffered, so br.Buffered()
		// tells how much is waiting behind the packet just decoded.
		r:         packets.NewReader(br, 0),
		w:         bufio.NewWriterSize(nc, size),
		keepAlive: o.keepAlive,
		version:   o.version,
	}
	if c.version == 0 {
		c.version = packets.Version311
	}
	if err := c.connect(clientID, clean, deadline); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connecting %s to %s: %w", clientID, addr, err)
	}
	return c, nil
}

// connect sends CONNECT and waits for CONNACK [MQTT-3.1.4-5]. Keep alive is
// c.keepAlive, 0 but for idle connections: the tool's connections may stay
// silent as long as they like [MQTT-3.1.2-10].
func (c *conn) connect(clientID string, clean bool, deadline time.Time) error {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	err := c.send(&packets.Connect{ProtocolVersion: c.version, CleanSession: clean, ClientID: clientID, KeepAlive: c.keepAlive})
	if err != nil {
		return err
	}
	// A 5.0 server answers, and sends everything after, in 5.0.
	c.r.SetVersion(c.version)
	p, err := c.r.ReadPacket()
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	ack, ok := p.(*packets.Connack)
	if !ok {
		return fmt.Errorf("%w: %T instead of CONNACK", errUnexpected, p)
	}
	if ack.ReturnCode != packets.Accepted {
		return fmt.Errorf("%w: CONNACK return code %d", errRefused, ack.ReturnCode)
	}
	if ack.Properties != nil && ack.Properties.ReceiveMaximum != nil {
		c.receiveMax = int(*ack.Properties.ReceiveMaximum)
	}
	return c.nc.SetDeadline(time.Time{})
}

// subscribe sends the filters in SUBSCRIBE packets of maxSubscribeBatch,
// all pipelined, then waits for every SUBACK.
func (c *conn) subscribe(filters []string, qos byte, deadline time.Time) error {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("setting deadline: %w", err)
	}
	pending := map[uint16]bool{}
	for i, id := 0, uint16(1); i < len(filters); i, id = i+maxSubscribeBatch, id+1 {
		sub := &packets.Subscribe{PacketID: id}
		for _, f := range filters[i:min(i+maxSubscribeBatch, len(filters))] {
			sub.Subscriptions = append(sub.Subscriptions, packets.Subscription{Filter: f, QoS: qos})
		}
		if err := c.queue(sub); err != nil {
			return err
		}
		pending[id] = true
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending SUBSCRIBE: %w", err)
	}
	for len(pending) > 0 {
		p, err := c.r.ReadPacket()
		if err != nil {
			return fmt.Errorf("reading SUBACK: %w", err)
		}
		ack, ok := p.(*packets.Suback)
		if !ok {
			// A persistent session may deliver queued messages before the
			// SUBACK; they are from an earlier run and are dropped.
			if _, isPub := p.(*packets.Publish); isPub {
				continue
			}
			return fmt.Errorf("%w: %T instead of SUBACK", errUnexpected, p)
		}
		for _, rc := range ack.ReturnCodes {
			if rc >= packets.SubackFailure { // 0x80, and 5.0's other refusals above it
				return fmt.Errorf("%w: SUBACK %d return code 0x80 [MQTT-3.9.3-2]", errSubscribeFail, ack.PacketID)
			}
		}
		delete(pending, ack.PacketID)
	}
	return c.nc.SetDeadline(time.Time{})
}

// queue encodes p into the write buffer.
func (c *conn) queue(p packets.Packet) error {
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

// send encodes p and flushes it.
func (c *conn) send(p packets.Packet) error {
	if err := c.queue(p); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending %T: %w", p, err)
	}
	return nil
}

// queueAck appends a two-byte-id acknowledgement (PUBACK, PUBREC, PUBREL,
// PUBCOMP) without going through an interface value.
func (c *conn) queueAck(t packets.Type, id uint16) error {
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

// stoppedReading reports whether a read error is the end the tool itself
// caused (its read deadline, a close) or the broker closing between packets,
// rather than a failure.
func stoppedReading(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

// stopReading makes a goroutine blocked reading c return at once.
func (c *conn) stopReading() { _ = c.nc.SetReadDeadline(time.Now()) }

// close sends DISCONNECT [MQTT-3.14.4-1] and closes the socket.
func (c *conn) close() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.send(&packets.Disconnect{})
	_ = c.nc.Close()
}
