package packets

import (
	"errors"
	"fmt"
	"strings"
)

// errNilPacket is returned by Append for a nil packet.
var errNilPacket = errors.New("nil packet")

// Append appends the encoding of p to dst and returns the extended slice.
// All fourteen types are encoded, in the MQTT 3.1/3.1.1 format (CONNACK in
// its 3.1.1 two-byte form). A packet that would be malformed on the wire
// (a zero packet id, QoS 3, a string over 65,535 bytes, an empty SUBSCRIBE,
// a body over MaxRemainingLength ...) is refused with an error wrapping
// ErrMalformed, and dst is returned unchanged.
//
// Append does not allocate when dst has room; PUBLISH goes through
// AppendPublish.
//
// The fields MQTT 3.1.1 does not have are left out: Properties, the Reason
// Codes of acknowledgements and DISCONNECT, the subscription options but
// QoS; an AUTH is refused. So a message received over 5.0 reaches a 3.1.1
// subscriber without its properties. Append5 writes the 5.0 format.
//
// A CONNECT is encoded in the 3.1/3.1.1 layout whatever its ProtocolVersion:
// an empty ProtocolName becomes "MQIsdp" for level 3 and "MQTT" otherwise.
// Any other level gives the packet a client of an unsupported level sends,
// which a server refuses with CONNACK 0x01 [MQTT-3.1.2-2]. The user name and
// password are written when their flag is set or their value is non-empty.
func Append(dst []byte, p Packet) ([]byte, error) {
	switch p := p.(type) {
	case *Publish:
		if p == nil {
			break
		}
		if err := checkPublish(p); err != nil {
			return dst, err
		}
		return AppendPublish(dst, p), nil
	case *Puback:
		if p == nil {
			break
		}
		return appendIDPacket(dst, TypePuback, 0, p.PacketID)
	case *Pubrec:
		if p == nil {
			break
		}
		return appendIDPacket(dst, TypePubrec, 0, p.PacketID)
	case *Pubrel:
		if p == nil {
			break
		}
		return appendIDPacket(dst, TypePubrel, flagsRequest, p.PacketID)
	case *Pubcomp:
		if p == nil {
			break
		}
		return appendIDPacket(dst, TypePubcomp, 0, p.PacketID)
	case *Unsuback:
		if p == nil {
			break
		}
		return appendIDPacket(dst, TypeUnsuback, 0, p.PacketID)
	case *Connack:
		if p == nil {
			break
		}
		var sp byte
		if p.SessionPresent {
			sp = 1
		}
		return append(dst, byte(TypeConnack)<<4, 2, sp, byte(p.ReturnCode)), nil
	case *Connect:
		if p == nil {
			break
		}
		return appendConnect(dst, p, false)
	case *Subscribe:
		if p == nil {
			break
		}
		return appendSubscribe(dst, p, false)
	case *Suback:
		if p == nil {
			break
		}
		return appendSuback(dst, p)
	case *Unsubscribe:
		if p == nil {
			break
		}
		return appendUnsubscribe(dst, p, false)
	case *Pingreq:
		return append(dst, byte(TypePingreq)<<4, 0), nil
	case *Pingresp:
		return append(dst, byte(TypePingresp)<<4, 0), nil
	case *Disconnect:
		return append(dst, byte(TypeDisconnect)<<4, 0), nil
	case nil:
	default:
		return dst, fmt.Errorf("encoding %T: unknown packet type", p)
	}
	return dst, fmt.Errorf("encoding %T: %w", p, errNilPacket)
}

// checkPublish enforces on the way out what decodePublish enforces on the
// way in.
func checkPublish(p *Publish) error {
	switch {
	case p.QoS > 2:
		return fmt.Errorf("encoding PUBLISH: %w: QoS %d [MQTT-3.3.1-4]", ErrMalformed, p.QoS)
	case p.QoS == 0 && p.Dup:
		return fmt.Errorf("encoding PUBLISH: %w: DUP set on QoS 0 [MQTT-3.3.1-2]", ErrMalformed)
	case p.QoS > 0 && p.PacketID == 0:
		return fmt.Errorf("encoding PUBLISH: %w: packet id 0 [MQTT-2.3.1-1]", ErrMalformed)
	case len(p.Topic) > 0xFFFF:
		return fmt.Errorf("encoding PUBLISH: %w: topic name of %d bytes", ErrMalformed, len(p.Topic))
	case publishBodyLen(p) > MaxRemainingLength:
		return fmt.Errorf("encoding PUBLISH: %w: body of %d bytes", ErrMalformed, publishBodyLen(p))
	}
	return nil
}

// appendIDPacket encodes the packets whose whole body is a packet id.
func appendIDPacket(dst []byte, t Type, flags byte, id uint16) ([]byte, error) {
	if id == 0 {
		return dst, fmt.Errorf("encoding %s: %w: packet id 0 [MQTT-2.3.1-1]", t, ErrMalformed)
	}
	return append(dst, byte(t)<<4|flags, 2, byte(id>>8), byte(id)), nil
}

// appendHeader appends the fixed header after checking the body length.
func appendHeader(dst []byte, t Type, flags byte, n int) ([]byte, error) {
	if n > MaxRemainingLength {
		return dst, fmt.Errorf("encoding %s: %w: body of %d bytes", t, ErrMalformed, n)
	}
	return appendRemainingLength(append(dst, byte(t)<<4|flags), n), nil
}

// appendString appends a two-byte length and s; callers check len(s) first.
func appendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}

func checkLen[S string | []byte](t Type, field string, s S) error {
	if len(s) > 0xFFFF {
		return fmt.Errorf("encoding %s: %w: %s of %d bytes", t, ErrMalformed, field, len(s))
	}
	return nil
}

// appendConnect encodes a CONNECT in the 3.1/3.1.1 layout or, with v5,
// the 5.0 one (section 3.1), which adds the properties and the will's
// properties and lets a password come without a user name.
func appendConnect(dst []byte, p *Connect, v5 bool) ([]byte, error) {
	name := p.ProtocolName
	if name == "" {
		name = ProtocolNameMQTT
		if p.ProtocolVersion == Version31 && !v5 {
			name = ProtocolNameMQIsdp
		}
	}
	level := byte(p.ProtocolVersion)
	if v5 {
		level = byte(Version5)
	}
	username := p.UsernameFlag || p.Username != ""
	password := p.PasswordFlag || len(p.Password) > 0
	if password && !username && !v5 {
		return dst, fmt.Errorf("encoding CONNECT: %w: password without user name [MQTT-3.1.2-22]", ErrMalformed)
	}
	var flags byte
	if p.CleanSession {
		flags |= connectCleanSession
	}
	np, nw := 0, 0
	var err error
	if v5 {
		if np, err = checkProperties(p.Properties, TypeConnect); err != nil {
			return dst, err
		}
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(p.ClientID)
	if v5 {
		n += varintLen(np) + np
	}
	err = errors.Join(checkLen(TypeConnect, "protocol name", name), checkLen(TypeConnect, "client identifier", p.ClientID))
	if w := p.Will; w != nil {
		if w.QoS > 2 {
			return dst, fmt.Errorf("encoding CONNECT: %w: will QoS %d [MQTT-3.1.2-14]", ErrMalformed, w.QoS)
		}
		if v5 {
			if nw, err = checkProperties(w.Properties, willProperties); err != nil {
				return dst, err
			}
			n += varintLen(nw) + nw
		}
		flags |= connectWill | w.QoS<<3
		if w.Retain {
			flags |= connectWillRetain
		}
		n += 4 + len(w.Topic) + len(w.Payload)
		err = errors.Join(err, checkLen(TypeConnect, "will topic", w.Topic), checkLen(TypeConnect, "will message", w.Payload))
	}
	if username {
		flags |= connectUsername
		n += 2 + len(p.Username)
		err = errors.Join(err, checkLen(TypeConnect, "user name", p.Username))
	}
	if password {
		flags |= connectPassword
		n += 2 + len(p.Password)
		err = errors.Join(err, checkLen(TypeConnect, "password", p.Password))
	}
	if err != nil {
		return dst, err
	}
	dst, err = appendHeader(dst, TypeConnect, 0, n)
	if err != nil {
		return dst, err
	}
	dst = appendString(dst, name)
	dst = append(dst, level, flags, byte(p.KeepAlive>>8), byte(p.KeepAlive))
	if v5 {
		dst = appendProperties(dst, p.Properties, np)
	}
	dst = appendString(dst, p.ClientID)
	if w := p.Will; w != nil {
		if v5 {
			dst = appendProperties(dst, w.Properties, nw)
		}
		dst = appendString(dst, w.Topic)
		dst = appendString(dst, w.Payload)
	}
	if username {
		dst = appendString(dst, p.Username)
	}
	if password {
		dst = appendString(dst, p.Password)
	}
	return dst, nil
}

// appendSubscribe encodes a SUBSCRIBE: with v5, its properties and each
// filter's subscription options (section 3.8.3.1); without, a QoS byte.
func appendSubscribe(dst []byte, p *Subscribe, v5 bool) ([]byte, error) {
	if p.PacketID == 0 {
		return dst, fmt.Errorf("encoding SUBSCRIBE: %w: packet id 0 [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3])", ErrMalformed)
	}
	if len(p.Subscriptions) == 0 {
		return dst, fmt.Errorf("encoding SUBSCRIBE: %w: no topic filter [MQTT-3.8.3-3] (5.0: [MQTT-3.8.3-2])", ErrMalformed)
	}
	np, body, err := requestProperties(p.Properties, TypeSubscribe, v5)
	if err != nil {
		return dst, err
	}
	for _, s := range p.Subscriptions {
		if err := checkLen(TypeSubscribe, "topic filter", s.Filter); err != nil {
			return dst, err
		}
		switch {
		case s.QoS > 2:
			return dst, fmt.Errorf("encoding SUBSCRIBE: %w: requested QoS %d [MQTT-3-8.3-4]", ErrMalformed, s.QoS)
		case !v5:
		case s.Filter == "":
			return dst, fmt.Errorf("encoding SUBSCRIBE: %w: empty topic filter [MQTT-4.7.3-1]", ErrMalformed)
		case s.RetainHandling > 2:
			return dst, fmt.Errorf("encoding SUBSCRIBE: %w: retain handling %d (section 3.8.3.1)", ErrMalformed, s.RetainHandling)
		case s.NoLocal && strings.HasPrefix(s.Filter, sharedPrefix):
			return dst, fmt.Errorf("encoding SUBSCRIBE: %w: No Local on a shared subscription [MQTT-3.8.3-4]", ErrMalformed)
		}
		body += 3 + len(s.Filter)
	}
	dst, err = appendHeader(dst, TypeSubscribe, flagsRequest, body)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	if v5 {
		dst = appendProperties(dst, p.Properties, np)
	}
	for _, s := range p.Subscriptions {
		o := s.QoS
		if v5 {
			o |= s.RetainHandling << 4
			if s.NoLocal {
				o |= optNoLocal
			}
			if s.RetainAsPublished {
				o |= optRetainAsPublished
			}
		}
		dst = append(appendString(dst, s.Filter), o)
	}
	return dst, nil
}

// requestProperties checks a 5.0 request's properties and returns their
// length and the length of the packet id and properties together; 3.1.1
// has none.
func requestProperties(props *Properties, t Type, v5 bool) (n, head int, err error) {
	if !v5 {
		return 0, 2, nil
	}
	if n, err = checkProperties(props, t); err != nil {
		return 0, 0, err
	}
	return n, 2 + varintLen(n) + n, nil
}

func appendSuback(dst []byte, p *Suback) ([]byte, error) {
	if p.PacketID == 0 {
		return dst, fmt.Errorf("encoding SUBACK: %w: packet id 0 [MQTT-2.3.1-1]", ErrMalformed)
	}
	if len(p.ReturnCodes) == 0 {
		return dst, fmt.Errorf("encoding SUBACK: %w: no return code", ErrMalformed)
	}
	for _, c := range p.ReturnCodes {
		if !validSubackCode(c) {
			return dst, fmt.Errorf("encoding SUBACK: %w: reserved return code 0x%02x [MQTT-3.9.3-2]", ErrMalformed, c)
		}
	}
	dst, err := appendHeader(dst, TypeSuback, 0, 2+len(p.ReturnCodes))
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	for _, c := range p.ReturnCodes {
		dst = append(dst, byte(c))
	}
	return dst, nil
}

// appendUnsubscribe encodes an UNSUBSCRIBE, with v5 its properties.
func appendUnsubscribe(dst []byte, p *Unsubscribe, v5 bool) ([]byte, error) {
	if p.PacketID == 0 {
		return dst, fmt.Errorf("encoding UNSUBSCRIBE: %w: packet id 0 [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3])", ErrMalformed)
	}
	if len(p.Filters) == 0 {
		return dst, fmt.Errorf("encoding UNSUBSCRIBE: %w: no topic filter [MQTT-3.10.3-2]", ErrMalformed)
	}
	np, body, err := requestProperties(p.Properties, TypeUnsubscribe, v5)
	if err != nil {
		return dst, err
	}
	for _, f := range p.Filters {
		if err := checkLen(TypeUnsubscribe, "topic filter", f); err != nil {
			return dst, err
		}
		if v5 && f == "" {
			return dst, fmt.Errorf("encoding UNSUBSCRIBE: %w: empty topic filter [MQTT-4.7.3-1]", ErrMalformed)
		}
		body += 2 + len(f)
	}
	dst, err = appendHeader(dst, TypeUnsubscribe, flagsRequest, body)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	if v5 {
		dst = appendProperties(dst, p.Properties, np)
	}
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}
