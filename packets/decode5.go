package packets

import (
	"fmt"
	"strings"
)

// decode5 turns the body of an MQTT 5.0 packet into a Packet, the 5.0
// counterpart of decode.
func decode5(h fixedHeader, body []byte, owned bool, acks *ackBlocks) (Packet, error) {
	if h.typ == TypePublish {
		p, err := decodePublish5(h, body, owned)
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
		return decodeConnect(&s, true)
	case TypeConnack:
		return decodeConnack5(&s)
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp:
		return decodeAck5(&s)
	case TypeSubscribe:
		return decodeSubscribe(&s, true)
	case TypeSuback, TypeUnsuback:
		return decodeCodes5(&s)
	case TypeUnsubscribe:
		return decodeUnsubscribe(&s, true)
	case TypePingreq, TypePingresp:
		return decodeEmpty(&s)
	case TypeDisconnect, TypeAuth:
		return decodeReasonOnly5(&s)
	}
	// checkFlags refuses type 0 before the body is read.
	return nil, s.malformed("reserved packet type")
}

// reasonCode reads a Reason Code and checks it is one the packet type
// allows.
func (s *scanner) reasonCode() (ReasonCode, error) {
	b, err := s.byte("reason code")
	if err != nil {
		return 0, err
	}
	if !validReasonCode(s.typ, ReasonCode(b)) {
		return 0, s.protocol("reason code 0x%02x is not defined for %s", b, s.typ)
	}
	return ReasonCode(b), nil
}

// propertiesAndEnd reads the properties that end a packet.
func propertiesAndEnd(s *scanner) (*Properties, error) {
	p, err := decodeProperties(s, s.typ)
	if err != nil {
		return nil, err
	}
	return p, s.end()
}

// decodeConnack5: acknowledge flags with bits 7-1 reserved [MQTT-3.2.2-1],
// a Reason Code and properties (section 3.2.2).
func decodeConnack5(s *scanner) (Packet, error) {
	flags, err := s.byte("acknowledge flags")
	if err != nil {
		return nil, err
	}
	if flags&0xFE != 0 {
		return nil, s.malformed("reserved acknowledge flag bits set: %08b [MQTT-3.2.2-1]", flags)
	}
	code, err := s.reasonCode()
	if err != nil {
		return nil, err
	}
	props, err := propertiesAndEnd(s)
	if err != nil {
		return nil, err
	}
	return &Connack{SessionPresent: flags&0x01 != 0, ReturnCode: code, Properties: props}, nil
}

// decodeAck5 reads PUBACK, PUBREC, PUBREL and PUBCOMP: a packet id, then a
// Reason Code and properties, both of which may be left out: a Remaining
// Length of 2 means Success without properties, and below 4 there is no
// Property Length (sections 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1).
func decodeAck5(s *scanner) (Packet, error) {
	id, err := s.packetID()
	if err != nil {
		return nil, err
	}
	var code ReasonCode
	var props *Properties
	if s.remaining() > 0 {
		if code, err = s.reasonCode(); err != nil {
			return nil, err
		}
		if s.remaining() > 0 {
			if props, err = propertiesAndEnd(s); err != nil {
				return nil, err
			}
		}
	}
	return s.acks.ack(s.typ, id, code, props), nil
}

// decodeReasonOnly5 reads DISCONNECT and AUTH: a Reason Code and
// properties, both left out for Success without properties (Remaining
// Length 0), the properties left out for Remaining Length 1 (sections
// 3.14.2, 3.15.2).
func decodeReasonOnly5(s *scanner) (Packet, error) {
	var code ReasonCode
	var props *Properties
	var err error
	if s.remaining() > 0 {
		if code, err = s.reasonCode(); err != nil {
			return nil, err
		}
		if s.remaining() > 0 {
			if props, err = propertiesAndEnd(s); err != nil {
				return nil, err
			}
		}
	}
	if s.typ == TypeAuth {
		return &Auth{ReasonCode: code, Properties: props}, nil
	}
	return &Disconnect{ReasonCode: code, Properties: props}, nil
}

// Subscription option bits (section 3.8.3.1).
const (
	optQoS               = 0x03
	optNoLocal           = 0x04
	optRetainAsPublished = 0x08
	optRetainHandling    = 0x30
	optReserved          = 0xC0
)

// sharedPrefix starts a Shared Subscription's filter (section 4.8.2).
const sharedPrefix = "$share/"

// subscriptionOptions reads a 5.0 subscription options byte o into sub
// (section 3.8.3.1).
func subscriptionOptions(s *scanner, sub *Subscription, o byte) error {
	sub.QoS, sub.NoLocal = o&optQoS, o&optNoLocal != 0
	sub.RetainAsPublished, sub.RetainHandling = o&optRetainAsPublished != 0, (o&optRetainHandling)>>4
	switch {
	case o&optReserved != 0:
		return s.malformed("subscription options %08b: reserved bits set [MQTT-3.8.3-5]", o)
	case sub.QoS == 3:
		return s.malformed("subscription options %08b: QoS 3 (section 3.8.3.1)", o)
	case sub.RetainHandling == 3:
		// "It is a Protocol Error to send a Retain Handling value of 3"
		// (section 3.8.3.1).
		return s.protocol("subscription options %08b: retain handling 3", o)
	case sub.NoLocal && strings.HasPrefix(sub.Filter, sharedPrefix):
		return s.protocol("No Local on shared subscription %q [MQTT-3.8.3-4]", sub.Filter)
	}
	return nil
}

// decodeCodes5 reads SUBACK and UNSUBACK: a packet id, properties, then one
// Reason Code per filter of the request (sections 3.9.3, 3.11.3).
func decodeCodes5(s *scanner) (Packet, error) {
	id, err := s.packetID()
	if err != nil {
		return nil, err
	}
	props, err := decodeProperties(s, s.typ)
	if err != nil {
		return nil, err
	}
	if s.remaining() == 0 {
		return nil, s.protocol("no reason code")
	}
	codes := make([]ReasonCode, 0, s.remaining())
	for s.remaining() > 0 {
		c, err := s.reasonCode()
		if err != nil {
			return nil, err
		}
		codes = append(codes, c)
	}
	if s.typ == TypeSuback {
		return &Suback{PacketID: id, ReturnCodes: codes, Properties: props}, nil
	}
	return &Unsuback{PacketID: id, ReasonCodes: codes, Properties: props}, nil
}

// decodePublish5 is the fast path for a 5.0 PUBLISH: topic name, packet id
// when QoS > 0, properties and the rest as payload (section 3.3). The
// payload is a view of body when owned, else a copy, as in decodePublish.
func decodePublish5(h fixedHeader, body []byte, owned bool) (*Publish, error) {
	qos := h.qos()
	if qos == 0 && h.dup() {
		return nil, fmt.Errorf("%w: PUBLISH DUP must be 0 for QoS 0 [MQTT-3.3.1-2]", ErrMalformed)
	}
	s := scanner{b: body, typ: TypePublish}
	topic, err := s.str("topic name")
	if err != nil {
		return nil, err
	}
	var id uint16
	if qos > 0 {
		if id, err = s.packetID(); err != nil {
			return nil, err
		}
	}
	p := &Publish{Dup: h.dup(), QoS: qos, Retain: h.retain(), Topic: string(topic), PacketID: id}
	if s.remaining() == 0 {
		return nil, s.malformed("property length missing (section 3.3.2.3)")
	}
	if s.b[s.off] != 0 {
		if p.Properties, err = decodeProperties(&s, TypePublish); err != nil {
			return nil, err
		}
	} else {
		s.off++
	}
	if payload := body[s.off:]; len(payload) > 0 {
		if owned {
			p.Payload = payload[:len(payload):len(payload)]
		} else {
			p.Payload = append(make([]byte, 0, len(payload)), payload...)
		}
	}
	return p, nil
}
