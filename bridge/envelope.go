package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// EnvelopeVersion is the version byte that leads every envelope of a
// message without MQTT 5.0 properties; EnvelopeVersionProperties leads one
// with them (a properties section after the payload). A message without
// properties keeps version 1, so a replica of the previous release, which
// knows only version 1, still reads every 3.1.1 message during a rolling
// upgrade. Decoding rejects any other version, so that replicas of
// different releases sharing one Redis fail loudly instead of misreading
// each other.
const (
	EnvelopeVersion           byte = 1
	EnvelopeVersionProperties byte = 2
)

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
//	[version 2 only: properties(len + bytes, see appendProperties)]
//	[stream id(1 byte len + ASCII)]
//
// The stream id is optional and last, so that the Lua script that appends the
// envelope to a Redis stream can add the id Redis assigned to the copy it
// publishes by plain string concatenation.
func AppendEnvelope(dst []byte, m *Message, streamID string) []byte {
	if m.Properties != nil {
		dst = append(dst, EnvelopeVersionProperties)
	} else {
		dst = append(dst, EnvelopeVersion)
	}
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
	if m.Properties != nil {
		dst = binary.AppendUvarint(dst, uint64(propertiesSize(m.Properties)))
		dst = appendProperties(dst, m.Properties)
	}
	if streamID != "" {
		dst = append(dst, byte(len(streamID)))
		dst = append(dst, streamID...)
	}
	return dst
}

// EnvelopeSize returns the number of bytes AppendEnvelope writes for m
// without a stream id, so that callers can size a buffer once.
func EnvelopeSize(m *Message) int {
	n := envelopeFixed + lenField(len(m.Node)) + lenField(len(m.ClientID)) +
		lenField(len(m.Topic)) + lenField(len(m.Payload))
	if m.Properties != nil {
		n += lenField(propertiesSize(m.Properties))
	}
	return n
}

// Presence bits of the properties section's first byte.
const (
	propPayloadFormat = 0x01
	propExpiry        = 0x02
)

// appendProperties appends the properties section of an envelope:
//
//	presence(1: payload format bit 0, expiry bit 1) [payload format(1)] [expiry(4)]
//	content type(len + bytes) response topic(len + bytes) correlation data(len + bytes)
//	user properties(uvarint count, then name(len + bytes) value(len + bytes) each)
//
// It is also the "props" field of a retained message's hash.
func appendProperties(dst []byte, p *Properties) []byte {
	var presence byte
	if p.PayloadFormat != nil {
		presence |= propPayloadFormat
	}
	if p.MessageExpiry != nil {
		presence |= propExpiry
	}
	dst = append(dst, presence)
	if p.PayloadFormat != nil {
		dst = append(dst, *p.PayloadFormat)
	}
	if p.MessageExpiry != nil {
		dst = binary.BigEndian.AppendUint32(dst, *p.MessageExpiry)
	}
	dst = appendString(dst, p.ContentType)
	dst = appendString(dst, p.ResponseTopic)
	dst = binary.AppendUvarint(dst, uint64(len(p.CorrelationData)))
	dst = append(dst, p.CorrelationData...)
	dst = binary.AppendUvarint(dst, uint64(len(p.UserProperties)))
	for _, u := range p.UserProperties {
		dst = appendString(dst, u.Name)
		dst = appendString(dst, u.Value)
	}
	return dst
}

// propertiesSize is the length appendProperties writes for p.
func propertiesSize(p *Properties) int {
	n := 1
	if p.PayloadFormat != nil {
		n++
	}
	if p.MessageExpiry != nil {
		n += 4
	}
	n += lenField(len(p.ContentType)) + lenField(len(p.ResponseTopic)) + lenField(len(p.CorrelationData))
	n += uvarintLen(uint64(len(p.UserProperties)))
	for _, u := range p.UserProperties {
		n += lenField(len(u.Name)) + lenField(len(u.Value))
	}
	return n
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

// decodeProperties reads a properties section that fills all of src.
func decodeProperties(src string) (*Properties, error) {
	p := &Properties{}
	if len(src) < 1 {
		return nil, fmt.Errorf("decode envelope: properties: %w", ErrEnvelopeTruncated)
	}
	presence := src[0]
	if presence&^(propPayloadFormat|propExpiry) != 0 {
		return nil, fmt.Errorf("decode envelope: properties presence %#x: %w", presence, ErrEnvelopeMalformed)
	}
	i := 1
	if presence&propPayloadFormat != 0 {
		if i >= len(src) {
			return nil, fmt.Errorf("decode envelope: payload format: %w", ErrEnvelopeTruncated)
		}
		v := src[i]
		p.PayloadFormat = &v
		i++
	}
	if presence&propExpiry != 0 {
		if len(src)-i < 4 {
			return nil, fmt.Errorf("decode envelope: message expiry: %w", ErrEnvelopeTruncated)
		}
		v := binary.BigEndian.Uint32([]byte(src[i : i+4]))
		p.MessageExpiry = &v
		i += 4
	}
	var err error
	if p.ContentType, i, err = readString(src, i, "content type"); err != nil {
		return nil, err
	}
	if p.ResponseTopic, i, err = readString(src, i, "response topic"); err != nil {
		return nil, err
	}
	var corr string
	if corr, i, err = readString(src, i, "correlation data"); err != nil {
		return nil, err
	}
	if corr != "" {
		p.CorrelationData = []byte(corr)
	}
	n, i, err := readUvarint(src, i, "user properties", "")
	if err != nil {
		return nil, err
	}
	if n > uint64(len(src)-i)/2 {
		return nil, fmt.Errorf("decode envelope: %d user properties in %d bytes: %w", n, len(src)-i, ErrEnvelopeTruncated)
	}
	if n > 0 {
		p.UserProperties = make([]UserProperty, n)
	}
	for k := range p.UserProperties {
		u := &p.UserProperties[k]
		if u.Name, i, err = readString(src, i, "user property name"); err != nil {
			return nil, err
		}
		if u.Value, i, err = readString(src, i, "user property value"); err != nil {
			return nil, err
		}
	}
	if i != len(src) {
		return nil, fmt.Errorf("decode envelope: %d bytes after the properties: %w", len(src)-i, ErrEnvelopeMalformed)
	}
	return p, nil
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
	version := src[0]
	if version != EnvelopeVersion && version != EnvelopeVersionProperties {
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
	m.Properties = nil
	if version == EnvelopeVersionProperties {
		var props string
		if props, p, err = readString(src, p, "properties"); err != nil {
			return "", err
		}
		if m.Properties, err = decodeProperties(props); err != nil {
			return "", err
		}
	}
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
	// The field's name is joined to " length" only in an error: joined
	// here, it cost an allocation per field of every message decoded.
	n, p, err := readUvarint(src, p, field, " length")
	if err != nil {
		return "", p, err
	}
	if n > uint64(len(src)-p) {
		return "", p, fmt.Errorf("decode envelope: %s of %d bytes, %d left: %w", field, n, len(src)-p, ErrEnvelopeTruncated)
	}
	end := p + int(n)
	return src[p:end], end, nil
}

// readUvarint reads a minimal uvarint at src[p:], the field named field
// followed by suffix in errors.
func readUvarint(src string, p int, field, suffix string) (uint64, int, error) {
	var n uint64
	var shift uint
	for i := 0; ; i++ {
		if p >= len(src) {
			return 0, p, fmt.Errorf("decode envelope: %s%s: %w", field, suffix, ErrEnvelopeTruncated)
		}
		if i == binary.MaxVarintLen64 {
			return 0, p, fmt.Errorf("decode envelope: %s%s overflows: %w", field, suffix, ErrEnvelopeMalformed)
		}
		b := src[p]
		p++
		if b == 0 && i > 0 {
			// A trailing zero byte makes a second encoding of the same
			// length; accept only the canonical one.
			return 0, p, fmt.Errorf("decode envelope: %s%s not minimal: %w", field, suffix, ErrEnvelopeMalformed)
		}
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return n, p, nil
		}
		shift += 7
	}
}
