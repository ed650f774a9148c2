package packets

import (
	"fmt"
	"unicode/utf8"
)

// scanner walks a packet body field by field and turns every structural
// fault into ErrMalformed: a field running past the end of the body, a string
// that is not well-formed UTF-8, bytes left over at the end. Every decoder
// reads its fields through it, so no field is zero-padded or cut short the
// way a single io.Reader Read would leave it.
type scanner struct {
	b    []byte
	off  int
	typ  Type
	acks *ackBlocks // where acknowledgements come from; nil: new each
}

func (s *scanner) malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, s.typ, fmt.Sprintf(format, args...))
}

// protocol reports an MQTT 5.0 Protocol Error: a well-formed field whose
// value or repetition the specification forbids.
func (s *scanner) protocol(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrProtocol, s.typ, fmt.Sprintf(format, args...))
}

// varint reads a Variable Byte Integer (section 1.5.5): at most four
// bytes, so a continuation bit on the fourth is malformed.
func (s *scanner) varint(field string) (int, error) {
	var n, shift int
	for i := 0; i < 4; i++ {
		b, err := s.byte(field)
		if err != nil {
			return 0, err
		}
		n |= int(b&0x7F) << shift
		if b&0x80 == 0 {
			return n, nil
		}
		shift += 7
	}
	return 0, s.malformed("%s: variable byte integer longer than 4 bytes (section 1.5.5)", field)
}

// byte reads one byte.
func (s *scanner) byte(field string) (byte, error) {
	if s.off >= len(s.b) {
		return 0, s.malformed("%s missing", field)
	}
	v := s.b[s.off]
	s.off++
	return v, nil
}

// uint16 reads a two-byte big-endian integer.
func (s *scanner) uint16(field string) (uint16, error) {
	if len(s.b)-s.off < 2 {
		return 0, s.malformed("%s truncated", field)
	}
	v := uint16(s.b[s.off])<<8 | uint16(s.b[s.off+1])
	s.off += 2
	return v, nil
}

// packetID reads a packet identifier, which must not be 0 [MQTT-2.3.1-1].
func (s *scanner) packetID() (uint16, error) {
	id, err := s.uint16("packet id")
	if err != nil {
		return 0, err
	}
	if id == 0 {
		return 0, s.malformed("packet id must not be 0 [MQTT-2.3.1-1]")
	}
	return id, nil
}

// binary reads a two-byte length and that many bytes (section 1.5.3's
// length-prefixed binary data).
func (s *scanner) binary(field string) ([]byte, error) {
	// The length is read here rather than by s.uint16(field+" length"):
	// that concatenation escapes into the error and cost an allocation for
	// every field of every packet.
	if len(s.b)-s.off < 2 {
		return nil, s.malformed("%s length truncated", field)
	}
	n := int(s.b[s.off])<<8 | int(s.b[s.off+1])
	s.off += 2
	if len(s.b)-s.off < n {
		return nil, s.malformed("%s length %d exceeds the %d bytes left", field, n, len(s.b)-s.off)
	}
	v := s.b[s.off : s.off+n]
	s.off += n
	return v, nil
}

// str reads a length-prefixed UTF-8 string and checks its encoding
// [MQTT-1.5.3-1], [MQTT-1.5.3-2].
func (s *scanner) str(field string) ([]byte, error) {
	v, err := s.binary(field)
	if err != nil {
		return nil, err
	}
	if err := checkUTF8(v); err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.typ, field, err)
	}
	return v, nil
}

// filter reads one topic filter of a SUBSCRIBE or UNSUBSCRIBE. An empty
// filter is refused here [MQTT-4.7.3-1]; the wildcard rules belong to the
// topics package.
func (s *scanner) filter() (string, error) {
	f, err := s.str("topic filter")
	if err != nil {
		return "", err
	}
	if len(f) == 0 {
		return "", s.malformed("empty topic filter [MQTT-4.7.3-1]")
	}
	return string(f), nil
}

// remaining reports how many bytes are left.
func (s *scanner) remaining() int { return len(s.b) - s.off }

// end fails when bytes are left after the last field.
func (s *scanner) end() error {
	if s.off != len(s.b) {
		return s.malformed("%d trailing bytes", len(s.b)-s.off)
	}
	return nil
}

// checkUTF8 accepts well-formed UTF-8 without U+0000 [MQTT-1.5.3-1],
// [MQTT-1.5.3-2]. Noncharacters such as U+FFFF are accepted, as a receiver
// must not reject them [MQTT-1.5.3-3]. Go's decoder already refuses the
// surrogate range U+D800..U+DFFF and overlong forms.
func checkUTF8(b []byte) error {
	for i, c := range b {
		if c == 0 {
			return fmt.Errorf("%w: string contains U+0000 [MQTT-1.5.3-2]", ErrMalformed)
		}
		if c >= utf8.RuneSelf {
			if !utf8.Valid(b[i:]) {
				return fmt.Errorf("%w: string is not well-formed UTF-8 [MQTT-1.5.3-1]", ErrMalformed)
			}
			for _, c := range b[i:] {
				if c == 0 {
					return fmt.Errorf("%w: string contains U+0000 [MQTT-1.5.3-2]", ErrMalformed)
				}
			}
			return nil
		}
	}
	return nil
}
