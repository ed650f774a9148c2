package packets

import (
	"fmt"
)

// AppendVersion appends the encoding of p in the wire format of protocol
// level v: Append5 for Version5, Append for the others.
func AppendVersion(dst []byte, p Packet, v Version) ([]byte, error) {
	if v == Version5 {
		return Append5(dst, p)
	}
	return Append(dst, p)
}

// Append5 appends the MQTT 5.0 encoding of p to dst and returns the extended
// slice. All fifteen types are encoded, with their properties in the
// canonical order (ascending identifier, user properties in their order)
// and the short forms the specification allows: an acknowledgement with
// Reason Code Success and no properties takes a Remaining Length of 2, one
// without properties 3 (section 3.4.2.1); DISCONNECT and AUTH likewise 0
// and 1 (sections 3.14.2.1, 3.15.2.1). A CONNECT is written as level 5
// whatever its ProtocolVersion, with protocol name "MQTT" when empty.
//
// A packet that would be malformed or a protocol error on the wire (what
// the Reader refuses: a property the type may not carry, a zero packet id,
// a Reason Code the type does not define, a string over 65,535 bytes ...)
// is refused with an error wrapping ErrMalformed, and dst is returned
// unchanged.
//
// Append5 does not allocate when dst has room; PUBLISH goes through
// AppendPublish5.
func Append5(dst []byte, p Packet) ([]byte, error) {
	switch p := p.(type) {
	case *Publish:
		if p == nil {
			break
		}
		if err := checkPublish5(p); err != nil {
			return dst, err
		}
		return AppendPublish5(dst, p), nil
	case *Puback:
		if p == nil {
			break
		}
		return appendAck5(dst, TypePuback, 0, p.PacketID, p.ReasonCode, p.Properties)
	case *Pubrec:
		if p == nil {
			break
		}
		return appendAck5(dst, TypePubrec, 0, p.PacketID, p.ReasonCode, p.Properties)
	case *Pubrel:
		if p == nil {
			break
		}
		return appendAck5(dst, TypePubrel, flagsRequest, p.PacketID, p.ReasonCode, p.Properties)
	case *Pubcomp:
		if p == nil {
			break
		}
		return appendAck5(dst, TypePubcomp, 0, p.PacketID, p.ReasonCode, p.Properties)
	case *Connack:
		if p == nil {
			break
		}
		return appendConnack5(dst, p)
	case *Connect:
		if p == nil {
			break
		}
		return appendConnect(dst, p, true)
	case *Subscribe:
		if p == nil {
			break
		}
		return appendSubscribe(dst, p, true)
	case *Suback:
		if p == nil {
			break
		}
		return appendCodes5(dst, TypeSuback, p.PacketID, p.ReturnCodes, p.Properties)
	case *Unsubscribe:
		if p == nil {
			break
		}
		return appendUnsubscribe(dst, p, true)
	case *Unsuback:
		if p == nil {
			break
		}
		return appendCodes5(dst, TypeUnsuback, p.PacketID, p.ReasonCodes, p.Properties)
	case *Pingreq:
		return append(dst, byte(TypePingreq)<<4, 0), nil
	case *Pingresp:
		return append(dst, byte(TypePingresp)<<4, 0), nil
	case *Disconnect:
		if p == nil {
			break
		}
		return appendReasonOnly5(dst, TypeDisconnect, p.ReasonCode, p.Properties)
	case *Auth:
		if p == nil {
			break
		}
		return appendReasonOnly5(dst, TypeAuth, p.ReasonCode, p.Properties)
	case nil:
	default:
		return dst, fmt.Errorf("encoding %T: unknown packet type", p)
	}
	return dst, fmt.Errorf("encoding %T: %w", p, errNilPacket)
}

// checkPublish5 is checkPublish plus the properties.
func checkPublish5(p *Publish) error {
	n, err := checkProperties(p.Properties, TypePublish)
	if err != nil {
		return err
	}
	if err := checkPublish(p); err != nil {
		return err
	}
	if body := publishBodyLen(p) + varintLen(n) + n; body > MaxRemainingLength {
		return fmt.Errorf("encoding PUBLISH: %w: body of %d bytes", ErrMalformed, body)
	}
	return nil
}

// AppendPublish5 is AppendPublish for MQTT 5.0: the same fast path, with
// the properties between the packet id and the payload. It does not
// allocate when dst has room.
//
// It trusts p as AppendPublish does; Append5 checks it first, properties
// included.
func AppendPublish5(dst []byte, p *Publish) []byte {
	flags := (p.QoS << 1) & flagQoS
	if p.Dup {
		flags |= flagDup
	}
	if p.Retain {
		flags |= flagRetain
	}
	n := propertiesLen(p.Properties)
	dst = append(dst, byte(TypePublish)<<4|flags)
	dst = appendRemainingLength(dst, publishBodyLen(p)+varintLen(n)+n)
	dst = append(dst, byte(len(p.Topic)>>8), byte(len(p.Topic)))
	dst = append(dst, p.Topic...)
	if p.QoS > 0 {
		dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	}
	dst = appendProperties(dst, p.Properties, n)
	return append(dst, p.Payload...)
}

// PublishSize5 is the number of bytes AppendPublish5 writes for p, the
// whole packet: what a client's Maximum Packet Size bounds (section
// 3.1.2.11.4). It allocates nothing.
func PublishSize5(p *Publish) int {
	n := propertiesLen(p.Properties)
	body := publishBodyLen(p) + varintLen(n) + n
	return 1 + varintLen(body) + body
}

// badCode reports a Reason Code that a packet type does not define.
func badCode(t Type, c ReasonCode) error {
	return fmt.Errorf("encoding %s: %w: reason code 0x%02x is not defined for it", t, ErrMalformed, byte(c))
}

// appendAck5 encodes PUBACK, PUBREC, PUBREL and PUBCOMP in their shortest
// form.
func appendAck5(dst []byte, t Type, flags byte, id uint16, code ReasonCode, props *Properties) ([]byte, error) {
	if id == 0 {
		return dst, fmt.Errorf("encoding %s: %w: packet id 0 [MQTT-2.2.1-3]", t, ErrMalformed)
	}
	if !validReasonCode(t, code) {
		return dst, badCode(t, code)
	}
	if props == nil && code == Success {
		return append(dst, byte(t)<<4|flags, 2, byte(id>>8), byte(id)), nil
	}
	n, err := checkProperties(props, t)
	if err != nil {
		return dst, err
	}
	if n == 0 {
		return append(dst, byte(t)<<4|flags, 3, byte(id>>8), byte(id), byte(code)), nil
	}
	dst, err = appendHeader(dst, t, flags, 3+varintLen(n)+n)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(id>>8), byte(id), byte(code))
	return appendProperties(dst, props, n), nil
}

// appendReasonOnly5 encodes DISCONNECT and AUTH in their shortest form.
func appendReasonOnly5(dst []byte, t Type, code ReasonCode, props *Properties) ([]byte, error) {
	if !validReasonCode(t, code) {
		return dst, badCode(t, code)
	}
	n, err := checkProperties(props, t)
	if err != nil {
		return dst, err
	}
	switch {
	case n == 0 && code == Success:
		return append(dst, byte(t)<<4, 0), nil
	case n == 0:
		return append(dst, byte(t)<<4, 1, byte(code)), nil
	}
	dst, err = appendHeader(dst, t, 0, 1+varintLen(n)+n)
	if err != nil {
		return dst, err
	}
	return appendProperties(append(dst, byte(code)), props, n), nil
}

func appendConnack5(dst []byte, p *Connack) ([]byte, error) {
	if !validReasonCode(TypeConnack, p.ReturnCode) {
		return dst, badCode(TypeConnack, p.ReturnCode)
	}
	n, err := checkProperties(p.Properties, TypeConnack)
	if err != nil {
		return dst, err
	}
	dst, err = appendHeader(dst, TypeConnack, 0, 2+varintLen(n)+n)
	if err != nil {
		return dst, err
	}
	var sp byte
	if p.SessionPresent {
		sp = 1
	}
	return appendProperties(append(dst, sp, byte(p.ReturnCode)), p.Properties, n), nil
}

// appendCodes5 encodes SUBACK and UNSUBACK.
func appendCodes5(dst []byte, t Type, id uint16, codes []ReasonCode, props *Properties) ([]byte, error) {
	if id == 0 {
		return dst, fmt.Errorf("encoding %s: %w: packet id 0 [MQTT-2.2.1-3]", t, ErrMalformed)
	}
	if len(codes) == 0 {
		return dst, fmt.Errorf("encoding %s: %w: no reason code", t, ErrMalformed)
	}
	for _, c := range codes {
		if !validReasonCode(t, c) {
			return dst, badCode(t, c)
		}
	}
	n, err := checkProperties(props, t)
	if err != nil {
		return dst, err
	}
	dst, err = appendHeader(dst, t, 0, 2+varintLen(n)+n+len(codes))
	if err != nil {
		return dst, err
	}
	dst = appendProperties(append(dst, byte(id>>8), byte(id)), props, n)
	for _, c := range codes {
		dst = append(dst, byte(c))
	}
	return dst, nil
}
