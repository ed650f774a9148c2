package packets

import (
	"errors"
	"fmt"
	"io"
)

// MaxRemainingLength is the largest Remaining Length a four-byte variable
// length integer can carry, 268,435,455 bytes (MQTT 3.1.1 section 2.2.3).
const MaxRemainingLength = 268_435_455

// fixedHeader is the first part of every control packet: type, flags and the
// length of the rest of the packet.
type fixedHeader struct {
	typ       Type
	flags     byte // low nibble of the first byte
	remaining int  // Remaining Length: variable header plus payload
}

// Flag bits of the fixed header's low nibble (section 2.2.2).
const (
	flagDup    = 0x08 // PUBLISH DUP
	flagQoS    = 0x06 // PUBLISH QoS, two bits
	flagRetain = 0x01 // PUBLISH RETAIN
	// flagsRequest is the fixed 0010 of PUBREL, SUBSCRIBE and UNSUBSCRIBE
	// [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1].
	flagsRequest = 0x02
)

func (h fixedHeader) dup() bool    { return h.flags&flagDup != 0 }
func (h fixedHeader) qos() byte    { return (h.flags & flagQoS) >> 1 }
func (h fixedHeader) retain() bool { return h.flags&flagRetain != 0 }

// String names the packet type for error messages.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", byte(t))
}

var typeNames = [...]string{
	TypeConnect:     "CONNECT",
	TypeConnack:     "CONNACK",
	TypePublish:     "PUBLISH",
	TypePuback:      "PUBACK",
	TypePubrec:      "PUBREC",
	TypePubrel:      "PUBREL",
	TypePubcomp:     "PUBCOMP",
	TypeSubscribe:   "SUBSCRIBE",
	TypeSuback:      "SUBACK",
	TypeUnsubscribe: "UNSUBSCRIBE",
	TypeUnsuback:    "UNSUBACK",
	TypePingreq:     "PINGREQ",
	TypePingresp:    "PINGRESP",
	TypeDisconnect:  "DISCONNECT",
	TypeAuth:        "AUTH",
}

// checkFlags enforces the fixed header flag bits of Table 2.2: PUBREL,
// SUBSCRIBE and UNSUBSCRIBE carry 0010, PUBLISH carries DUP/QoS/RETAIN with
// QoS 3 forbidden, every other type carries 0000 [MQTT-2.2.2-1],
// [MQTT-2.2.2-2].
func checkFlags(t Type, flags byte) error {
	switch t {
	case 0, 15:
		return fmt.Errorf("%w: packet type %d is reserved", ErrMalformed, byte(t))
	case TypePublish:
		if (flags&flagQoS)>>1 == 3 {
			return fmt.Errorf("%w: PUBLISH QoS must not be 3 [MQTT-3.3.1-4]", ErrMalformed)
		}
	case TypePubrel, TypeSubscribe, TypeUnsubscribe:
		// [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
		if flags != flagsRequest {
			return fmt.Errorf("%w: %s flags must be 0010, got %04b", ErrMalformed, t, flags)
		}
	default:
		if flags != 0 {
			return fmt.Errorf("%w: %s flags must be 0000, got %04b", ErrMalformed, t, flags)
		}
	}
	return nil
}

// checkFlags5 is checkFlags for MQTT 5.0, whose Table 2-2 ([MQTT-2.1.3-1])
// adds AUTH, type 15 with flags 0000, reserved in 3.1.1. It is a function
// of its own so that the 3.1.1 path stays as it was.
func checkFlags5(t Type, flags byte) error {
	if t != TypeAuth {
		return checkFlags(t, flags)
	}
	if flags != 0 {
		return fmt.Errorf("%w: %s flags must be 0000, got %04b [MQTT-2.1.3-1]", ErrMalformed, t, flags)
	}
	return nil
}

// readFixedHeader reads and checks a fixed header. A clean end of stream
// before the first byte is returned as io.EOF itself; an end inside the
// header is io.ErrUnexpectedEOF.
func readFixedHeader(br io.ByteReader, v5 bool) (fixedHeader, error) {
	first, err := br.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fixedHeader{}, io.EOF
		}
		return fixedHeader{}, fmt.Errorf("reading fixed header: %w", err)
	}
	h := fixedHeader{typ: Type(first >> 4), flags: first & 0x0F}
	if v5 {
		err = checkFlags5(h.typ, h.flags)
	} else {
		err = checkFlags(h.typ, h.flags)
	}
	if err != nil {
		return h, err
	}
	h.remaining, err = readRemainingLength(br)
	if err != nil {
		return h, fmt.Errorf("reading %s remaining length: %w", h.typ, err)
	}
	return h, nil
}

// readRemainingLength decodes the variable length integer of section 2.2.3:
// at most four bytes, so a continuation bit on the fourth byte is malformed.
func readRemainingLength(br io.ByteReader) (int, error) {
	var n, shift int
	for i := 0; i < 4; i++ {
		b, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		n |= int(b&0x7F) << shift
		if b&0x80 == 0 {
			return n, nil
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed)
}

// appendRemainingLength appends n as a variable length integer. n must be
// within 0..MaxRemainingLength.
func appendRemainingLength(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7F)
		n >>= 7
		if n == 0 {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}
