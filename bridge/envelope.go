package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// EnvelopeVersion is the version byte that leads every envelope this code
// writes. Decoding rejects any other version, so that replicas of different
// releases sharing one Redis fail loudly instead of misreading each other.
const EnvelopeVersion byte = 1

// Envelope errors, wrapped with detail by DecodeEnvelope.
var (
	ErrEnvelopeVersion   = errors.New("envelope: unknown version")
	ErrEnvelopeTruncated = errors.New("envelope: truncated")
	ErrEnvelopeMalformed = errors.New("envelope: malformed")
)

// envelopeFixed is the size of the fixed part: version, id, flags, time.
const envelopeFixed = 1 + len(ID{}) + 1 + 8

// Flag bits of the envelope's flags byte.
const (
	flagQoSMask = 0x03
	flagRetain  = 0x04
)

// AppendEnvelope appends the envelope of m to dst and returns the extended
// slice. The layout, all integers big-endian or unsigned varints:
//
//	version(1) id(16) flags(1: qos bits 0-1, retain bit 2) time(8: unix ms, 0 = unset)
//	node(uvarint len + bytes) client id(len + bytes) topic(len + bytes) payload(len + bytes)
//	[stream id(1 byte len + ASCII)]
//
// The stream id is optional and last, so that the Lua script that appends the
// envelope to a Redis stream can add the id Redis assigned to the copy it
// publishes by plain string concatenation.
func AppendEnvelope(dst []byte, m *Message, streamID string) []byte {
	dst = append(dst, EnvelopeVersion)
	dst = append(dst, m.ID[:]...)
	flags := m.QoS & flagQoSMask
	if m.Retain {
		flags |= flagRetain
	}
	dst = append(dst, flags)
	var ms int64
	if !m.Time.IsZero() {
		ms = m.Time.UnixMilli()
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(ms))
	dst = appendString(dst, m.Node)
	dst = appendString(dst, m.ClientID)
	dst = appendString(dst, m.Topic)
	dst = binary.AppendUvarint(dst, uint64(len(m.Payload)))
	dst = append(dst, m.Payload...)
	if streamID != "" {
		dst = append(dst, byte(len(streamID)))
		dst = append(dst, streamID...)
	}
	return dst
}

// EnvelopeSize returns the number of bytes AppendEnvelope writes for m
// without a stream id, so that callers can size a buffer once.
func EnvelopeSize(m *Message) int {
	return envelopeFixed + lenField(len(m.Node)) + lenField(len(m.ClientID)) +
		lenField(len(m.Topic)) + lenField(len(m.Payload))
}

func lenField(n int) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], uint64(n)) + n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeEnvelope parses an envelope into m and returns the stream id it
// carries, "" when none. The strings of m share memory with src (go-redis
// hands payloads over as strings, so this costs nothing); the payload is
// the one copy. It never panics: an unknown version, a truncated record or
// trailing bytes are errors.
func DecodeEnvelope(src string, m *Message) (streamID string, err error) {
	if len(src) == 0 {
		return "", fmt.Errorf("decode envelope: empty: %w", ErrEnvelopeTruncated)
	}
	if src[0] != EnvelopeVersion {
		return "", fmt.Errorf("decode envelope: version %d: %w", src[0], ErrEnvelopeVersion)
	}
	if len(src) < envelopeFixed {
		return "", fmt.Errorf("decode envelope: %d bytes, fixed part needs %d: %w", len(src), envelopeFixed, ErrEnvelopeTruncated)
	}
	p := 1
	copy(m.ID[:], src[p:p+len(ID{})])
	p += len(ID{})
	flags := src[p]
	p++
	if flags&^(flagQoSMask|flagRetain) != 0 || flags&flagQoSMask == 3 {
		return "", fmt.Errorf("decode envelope: flags %#x: %w", flags, ErrEnvelopeMalformed)
	}
	m.QoS = flags & flagQoSMask
	m.Retain = flags&flagRetain != 0
	ms := int64(uint64(src[p])<<56 | uint64(src[p+1])<<48 | uint64(src[p+2])<<40 | uint64(src[p+3])<<32 |
		uint64(src[p+4])<<24 | uint64(src[p+5])<<16 | uint64(src[p+6])<<8 | uint64(src[p+7]))
	p += 8
	if ms == 0 {
		m.Time = time.Time{}
	} else {
		m.Time = time.UnixMilli(ms)
	}
	if m.Node, p, err = readString(src, p, "node"); err != nil {
		return "", err
	}
	if m.ClientID, p, err = readString(src, p, "client id"); err != nil {
		return "", err
	}
	if m.Topic, p, err = readString(src, p, "topic"); err != nil {
		return "", err
	}
	var payload string
	if payload, p, err = readString(src, p, "payload"); err != nil {
		return "", err
	}
	m.Payload = []byte(payload)
	if p == len(src) {
		return "", nil
	}
	n := int(src[p])
	p++
	if n == 0 || len(src)-p != n {
		return "", fmt.Errorf("decode envelope: stream id of %d bytes with %d left: %w", n, len(src)-p, ErrEnvelopeMalformed)
	}
	return src[p:], nil
}

// readString reads a uvarint length and that many bytes at src[p:].
func readString(src string, p int, field string) (string, int, error) {
	var n uint64
	var shift uint
	for i := 0; ; i++ {
		if p >= len(src) {
			return "", p, fmt.Errorf("decode envelope: %s length: %w", field, ErrEnvelopeTruncated)
		}
		if i == binary.MaxVarintLen64 {
			return "", p, fmt.Errorf("decode envelope: %s length overflows: %w", field, ErrEnvelopeMalformed)
		}
		b := src[p]
		p++
		if b == 0 && i > 0 {
			// A trailing zero byte makes a second encoding of the same
			// length; accept only the canonical one.
			return "", p, fmt.Errorf("decode envelope: %s length not minimal: %w", field, ErrEnvelopeMalformed)
		}
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			break
		}
		shift += 7
	}
	if n > uint64(len(src)-p) {
		return "", p, fmt.Errorf("decode envelope: %s of %d bytes, %d left: %w", field, n, len(src)-p, ErrEnvelopeTruncated)
	}
	end := p + int(n)
	return src[p:end], end, nil
}
