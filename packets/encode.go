package packets

import (
	"errors"
	"fmt"
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
		return appendConnect(dst, p)
	case *Subscribe:
		if p == nil {
			break
		}
		return appendSubscribe(dst, p)
	case *Suback:
		if p == nil {
			break
		}
		return appendSuback(dst, p)
	case *Unsubscribe:
		if p == nil {
			break
		}
		return appendUnsubscribe(dst, p)
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

func appendConnect(dst []byte, p *Connect) ([]byte, error) {
	name := p.ProtocolName
	if name == "" {
		name = ProtocolNameMQTT
		if p.ProtocolVersion == Version31 {
			name = ProtocolNameMQIsdp
		}
	}
	username := p.UsernameFlag || p.Username != ""
	password := p.PasswordFlag || len(p.Password) > 0
	if password && !username {
		return dst, fmt.Errorf("encoding CONNECT: %w: password without user name [MQTT-3.1.2-22]", ErrMalformed)
	}
	var flags byte
	if p.CleanSession {
		flags |= connectCleanSession
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(p.ClientID)
	err := errors.Join(checkLen(TypeConnect, "protocol name", name), checkLen(TypeConnect, "client identifier", p.ClientID))
	if w := p.Will; w != nil {
		if w.QoS > 2 {
			return dst, fmt.Errorf("encoding CONNECT: %w: will QoS %d [MQTT-3.1.2-14]", ErrMalformed, w.QoS)
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
	dst = append(dst, byte(p.ProtocolVersion), flags, byte(p.KeepAlive>>8), byte(p.KeepAlive))
	dst = appendString(dst, p.ClientID)
	if w := p.Will; w != nil {
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

func appendSubscribe(dst []byte, p *Subscribe) ([]byte, error) {
	if p.PacketID == 0 {
		return dst, fmt.Errorf("encoding SUBSCRIBE: %w: packet id 0 [MQTT-2.3.1-1]", ErrMalformed)
	}
	if len(p.Subscriptions) == 0 {
		return dst, fmt.Errorf("encoding SUBSCRIBE: %w: no topic filter [MQTT-3.8.3-3]", ErrMalformed)
	}
	n := 2
	for _, s := range p.Subscriptions {
		if err := checkLen(TypeSubscribe, "topic filter", s.Filter); err != nil {
			return dst, err
		}
		if s.QoS > 2 {
			return dst, fmt.Errorf("encoding SUBSCRIBE: %w: requested QoS %d [MQTT-3-8.3-4]", ErrMalformed, s.QoS)
		}
		n += 3 + len(s.Filter)
	}
	dst, err := appendHeader(dst, TypeSubscribe, flagsRequest, n)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	for _, s := range p.Subscriptions {
		dst = append(appendString(dst, s.Filter), s.QoS)
	}
	return dst, nil
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

func appendUnsubscribe(dst []byte, p *Unsubscribe) ([]byte, error) {
	if p.PacketID == 0 {
		return dst, fmt.Errorf("encoding UNSUBSCRIBE: %w: packet id 0 [MQTT-2.3.1-1]", ErrMalformed)
	}
	if len(p.Filters) == 0 {
		return dst, fmt.Errorf("encoding UNSUBSCRIBE: %w: no topic filter [MQTT-3.10.3-2]", ErrMalformed)
	}
	n := 2
	for _, f := range p.Filters {
		if err := checkLen(TypeUnsubscribe, "topic filter", f); err != nil {
			return dst, err
		}
		n += 2 + len(f)
	}
	dst, err := appendHeader(dst, TypeUnsubscribe, flagsRequest, n)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}
