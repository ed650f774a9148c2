// Package packetstest is the catalogue of raw MQTT packets the tests of
// every package draw from: each named raw packet, valid or malformed, with
// the packet a packets.Reader decodes from it or the error it returns, so
// "what a malformed SUBSCRIBE looks like" is written down once. It also
// holds the builders the catalogue is written with, for tests that need raw
// bytes of their own (a field the encoder will not get wrong on purpose).
//
// The builders compute lengths independently of package packets, so a test
// built with them does not share a bug with the code it checks.
package packetstest

import (
	"bytes"
	"fmt"

	"github.com/bridgemq/server/packets"
)

// Case is one named raw packet of the catalogue.
type Case struct {
	// Name says what the packet is, and ends with the spec statement id
	// (dots as underscores) of the rule it breaks, when it breaks one.
	Name string
	// Raw is the packet as it travels on the wire, fixed header included.
	Raw []byte
	// Want is the decoded packet; for ErrUnsupportedProtocol, the
	// *packets.Connect a Reader returns beside the error.
	Want packets.Packet
	// Err is the sentinel the Reader's error wraps: packets.ErrMalformed,
	// packets.ErrProtocol, packets.ErrPacketTooLarge,
	// packets.ErrUnsupportedProtocol, io.EOF or io.ErrUnexpectedEOF; nil for
	// a valid packet. The packets sentinels carry the MQTT 5.0 Reason Code
	// a server closes the connection with (packets.CodeOf).
	Err error
	// Max is the Reader's size limit; 0 means MaxPacket.
	Max int
	// Version is passed to Reader.SetVersion before reading when non-zero;
	// the 5.0 cases have packets.Version5, and their Want encodes back
	// with packets.Append5.
	Version packets.Version
	// NonCanonical marks valid raw bytes that packets.Append does not
	// reproduce byte for byte (an overlong remaining length, say).
	NonCanonical bool
}

// MaxPacket is the Reader limit the catalogue runs with unless a case sets
// Max.
const MaxPacket = 1 << 20

// Read decodes c.Raw with a Reader set up as the case says (limit and
// version), as a server reads it from a client.
func (c Case) Read() (packets.Packet, error) {
	limit := c.Max
	if limit == 0 {
		limit = MaxPacket
	}
	r := packets.NewReader(bytes.NewReader(c.Raw), limit)
	if c.Version != 0 {
		r.SetVersion(c.Version)
	}
	return r.ReadPacket()
}

// Type is the packet type in the first byte of c.Raw; 0 for an empty Raw.
func (c Case) Type() packets.Type {
	if len(c.Raw) == 0 {
		return 0
	}
	return packets.Type(c.Raw[0] >> 4)
}

// Named returns the catalogued case called name. It panics on an unknown
// name: a test that refers to a case the catalogue lost must not pass.
func Named(name string) Case {
	for _, c := range All() {
		if c.Name == name {
			return c
		}
	}
	panic(fmt.Sprintf("packetstest: no case named %q", name))
}

// Str returns s as a length-prefixed string (section 1.5.3).
func Str(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// Cat concatenates bytes, ints (as single bytes), strings and byte slices.
func Cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case int:
			if v < 0 || v > 255 {
				panic("packetstest.Cat: int out of byte range")
			}
			b = append(b, byte(v))
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("packetstest.Cat: unsupported part %T", p))
		}
	}
	return b
}

// Packet builds a packet from its first byte (type and flags) and the
// parts of its body, as Cat joins them, computing the Remaining Length.
func Packet(first byte, body ...any) []byte {
	b := Cat(body...)
	return append(RemainingLength([]byte{first}, len(b)), b...)
}

// RemainingLength appends n as the variable length integer of section
// 2.2.3: seven bits a byte, least significant first.
func RemainingLength(dst []byte, n int) []byte {
	for {
		b := byte(n % 128)
		n /= 128
		if n == 0 {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}

// Props returns an MQTT 5.0 property list: the parts, joined as Cat joins
// them, after their length as a Variable Byte Integer (section 2.2.2.1).
// Props() is the empty list, a single 0.
func Props(parts ...any) []byte {
	b := Cat(parts...)
	return append(RemainingLength(nil, len(b)), b...)
}

// Ptr returns a pointer to v, for the optional fields of
// packets.Properties.
func Ptr[T any](v T) *T { return &v }

// U16 returns v as a two-byte big-endian integer (section 1.5.2).
func U16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// U32 returns v as a four-byte big-endian integer (section 1.5.3).
func U32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// ConnectHead is a CONNECT variable header with any protocol name, level
// and connect flags, and keep alive 60.
func ConnectHead(name string, level, flags byte) []byte {
	return Cat(Str(name), level, flags, 0, 60)
}
