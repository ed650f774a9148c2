package packets

import (
	"errors"
	"fmt"
	"io"
)

// retainedBodyLimit is the largest body buffer a Reader keeps between
// packets. Bigger bodies get a buffer of their own that is dropped after the
// packet, so one large PUBLISH does not pin its size to the connection for
// the rest of its life.
const retainedBodyLimit = 64 << 10

// Reader reads MQTT control packets from a stream.
//
// It reads the fixed header itself and refuses a packet whose Remaining
// Length (the size of the body after the fixed header) exceeds the limit
// given to NewReader before reading or allocating any of the body. Bodies
// are read into a buffer the Reader reuses; decoded packets never alias it.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br      inbuf
	max     int
	version Version
	accept5 bool
	buf     []byte
	gate    func(t Type, remaining int) error
	acks    ackBlocks // last: the fields above are read for every packet
}

// NewReader returns a Reader over r that accepts packets whose Remaining
// Length, the body after the fixed header, is at most maxPacketSize bytes.
// A maxPacketSize of 0 or less, or above MaxRemainingLength, means
// MaxRemainingLength, the protocol's own limit.
//
// MQTT 5.0's Maximum Packet Size counts the whole packet, fixed header
// included (section 3.1.2.11.4), where this limit counts the Remaining
// Length only: a server announcing N in CONNACK can pass N here and refuses
// nothing within its announcement; the packets of N+2 to N+5 bytes that get
// through are the session's to refuse with 0x95.
func NewReader(r io.Reader, maxPacketSize int) *Reader {
	if maxPacketSize <= 0 || maxPacketSize > MaxRemainingLength {
		maxPacketSize = MaxRemainingLength
	}
	return &Reader{br: inbuf{src: r}, max: maxPacketSize}
}

// SetVersion tells the Reader which protocol level the peer speaks, once its
// CONNECT has been accepted. Levels 3 (MQTT 3.1) and 4 (MQTT 3.1.1) share one
// wire format; level 5 selects the MQTT 5.0 format (properties, Reason
// Codes, AUTH) for every later packet; any other level makes ReadPacket fail
// with ErrUnsupportedProtocol. Before SetVersion is called the Reader
// decodes the 3.1/3.1.1 format, and a CONNECT of any supported level.
func (r *Reader) SetVersion(v Version) { r.version = v }

// AcceptVersion5 makes the Reader decode a CONNECT of level 5 (and, after
// SetVersion(Version5), the 5.0 format). Without it a level 5 CONNECT is
// reported as ErrUnsupportedProtocol beside its *Connect, as it was before
// this codec spoke 5.0, so a server that does not serve 5.0 yet answers it
// with CONNACK 0x01. A Reader set to Version5 accepts a 5.0 CONNECT anyway.
func (r *Reader) AcceptVersion5(accept bool) { r.accept5 = accept }

// SetGate makes ReadPacket call gate with the type and Remaining Length of
// every packet once its body is read, before it is decoded; an error from
// gate is returned by ReadPacket and the packet is dropped. A server uses
// it to stop reading a client (and so, through TCP flow control, the
// client's sending) until it has room for what the packet carries. The
// gate comes after the body, not before: a client that announces a body
// and does not send it would otherwise hold room it never uses, while
// what the body costs until then is what the client sent (large bodies
// grow as their bytes arrive). nil removes the gate.
func (r *Reader) SetGate(gate func(t Type, remaining int) error) { r.gate = gate }

// ReadPacket reads and decodes the next control packet.
//
// At a clean end of stream between packets it returns io.EOF itself; a stream
// that ends inside a packet yields an error wrapping io.ErrUnexpectedEOF.
// Protocol violations wrap ErrMalformed, ErrProtocol (5.0 only) or
// ErrPacketTooLarge, whose Reason Codes (CodeOf) are those of the CONNACK or
// DISCONNECT a 5.0 server closes the connection with. A CONNECT
// with an unknown protocol name or level returns both a *Connect (with only
// ProtocolName and ProtocolVersion set) and an error wrapping
// ErrUnsupportedProtocol; so does a 5.0 CONNECT that fails after its
// protocol level, beside its own error, so that the server can answer with
// a 5.0 CONNACK carrying CodeOf(err).
//
// Every type is decoded, including those only a server sends (CONNACK,
// SUBACK, UNSUBACK, PINGRESP), so the Reader also serves clients; refusing
// them from a client is the session's job.
func (r *Reader) ReadPacket() (Packet, error) {
	switch r.version {
	case 0, Version31, Version311, Version5:
	default:
		return nil, fmt.Errorf("%w: protocol level %d is not decoded", ErrUnsupportedProtocol, r.version)
	}
	h, err := readFixedHeader(&r.br, r.version == Version5)
	if err != nil {
		return nil, err
	}
	if h.remaining > r.max {
		return nil, fmt.Errorf("%w: %s remaining length %d exceeds the limit of %d bytes",
			ErrPacketTooLarge, h.typ, h.remaining, r.max)
	}
	body, owned, err := r.readBody(h)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading %s body of %d bytes: %w", h.typ, h.remaining, err)
	}
	if r.gate != nil {
		if err := r.gate(h.typ, h.remaining); err != nil {
			return nil, fmt.Errorf("after %s body of %d bytes: %w", h.typ, h.remaining, err)
		}
	}
	if r.version == Version5 {
		return decode5(h, body, owned, &r.acks)
	}
	return decode(h, body, owned, r.accept5, &r.acks)
}

// Await returns once bytes of the next packet are waiting to be decoded:
// at once when some are buffered, otherwise after one read from the
// stream. Its errors are those ReadPacket returns when the stream ends or
// fails before a packet: io.EOF at a clean end, the read's error wrapped
// otherwise.
//
// A server calls it before ReadPacket so that a connection waiting for
// its client blocks a few calls deep, not inside the decoder: the
// goroutine of an idle connection then fits in the smallest stack Go
// gives (2 KB instead of 4 KB). It costs no read that ReadPacket would
// not have made.
//
// After Release, the read lands in a few bytes on the stack and the input
// buffer is made only once they have arrived, so a connection waiting
// holds none.
func (r *Reader) Await() error {
	if r.br.r < r.br.w {
		return nil
	}
	var err error
	if r.br.buf == nil {
		err = r.br.fillFirst()
	} else {
		err = r.br.fill()
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("reading fixed header: %w", err)
	}
	return nil
}

// Release drops the Reader's input buffer when it holds nothing and is
// the small one, for a connection about to wait long: after CONNECT, or
// after a PINGREQ, which a client sends only when it has had nothing else
// to send. The next Await or ReadPacket makes a new one.
func (r *Reader) Release() {
	if r.br.r == r.br.w && len(r.br.buf) <= smallInput {
		r.br.buf, r.br.r, r.br.w = nil, 0, 0
	}
}

// readBody reads the body h announces. owned reports that the slice is not
// the Reader's reusable buffer, so the decoder may hand parts of it to the
// caller without copying.
func (r *Reader) readBody(h fixedHeader) (body []byte, owned bool, err error) {
	switch {
	case h.remaining > retainedBodyLimit:
		body, err = r.readGrowing(make([]byte, 0, retainedBodyLimit), h.remaining)
		return body, true, err
	case h.typ == TypeConnect:
		// A connection sends one CONNECT: do not keep a buffer sized for it.
		body, owned = make([]byte, h.remaining), true
	default:
		body = r.body(h.remaining)
	}
	_, err = io.ReadFull(&r.br, body)
	return body, owned, err
}

// readGrowing reads a large body into buf, growing it as bytes arrive, so
// that a peer announcing a large packet and sending little costs memory in
// proportion to what it sent, not to what it announced.
func (r *Reader) readGrowing(buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), n))
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(&r.br, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// body returns a slice of n ≤ retainedBodyLimit bytes to read a packet body
// into, the Reader's reusable buffer.
func (r *Reader) body(n int) []byte {
	if n <= cap(r.buf) {
		return r.buf[:n]
	}
	size := 512
	for size < n {
		size *= 2
	}
	r.buf = make([]byte, min(size, retainedBodyLimit))
	return r.buf[:n]
}

// decode turns a body into a Packet. Every type is decoded here, field by
// field through a scanner; PUBLISH, the hot packet, has a path of its own
// that can hand out a view of an owned body instead of a copy.
func decode(h fixedHeader, body []byte, owned, accept5 bool, acks *ackBlocks) (Packet, error) {
	if h.typ == TypePublish {
		p, err := decodePublish(h, body, owned)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	// Field by field: a composite literal here was built in one stack slot
	// and copied to another, which showed in profiles of small packets.
	var s scanner
	s.b, s.typ, s.acks = body, h.typ, acks
	switch h.typ {
	case TypeConnect:
		return decodeConnect(&s, accept5)
	case TypeConnack:
		return decodeConnack(&s)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp, TypeUnsuback:
		return decodeIDPacket(&s)
	case TypeSubscribe:
		return decodeSubscribe(&s, false)
	case TypeSuback:
		return decodeSuback(&s)
	case TypeUnsubscribe:
		return decodeUnsubscribe(&s, false)
	case TypePingreq, TypePingresp, TypeDisconnect:
		return decodeEmpty(&s)
	}
	// checkFlags refuses types 0 and 15 before the body is read.
	return nil, s.malformed("reserved packet type")
}
