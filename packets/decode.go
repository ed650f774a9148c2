package packets

// decodeConnack reads the acknowledge flags, whose bits 7-1 are reserved
// (section 3.2.2.1), and the return code.
func decodeConnack(s *scanner) (Packet, error) {
	flags, err := s.byte("acknowledge flags")
	if err != nil {
		return nil, err
	}
	if flags&0xFE != 0 {
		return nil, s.malformed("reserved acknowledge flag bits set: %08b", flags)
	}
	code, err := s.byte("return code")
	if err != nil {
		return nil, err
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	return &Connack{SessionPresent: flags&0x01 != 0, ReturnCode: ReasonCode(code)}, nil
}

// decodeIDPacket reads the packets whose whole body is a non-zero packet id:
// PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK.
func decodeIDPacket(s *scanner) (Packet, error) {
	id, err := s.packetID()
	if err != nil {
		return nil, err
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	if s.typ == TypeUnsuback {
		return &Unsuback{PacketID: id}, nil
	}
	return s.acks.ack(s.typ, id, 0, nil), nil
}

// decodeSubscribe: a packet id, for 5.0 properties, then one or more
// filters, each with its options: 3.1.1 a QoS byte with its six reserved
// bits 0 and QoS <= 2 [MQTT-3-8.3-4]; 5.0 the subscription options (section
// 3.8.3.1). No filter at all is malformed in 3.1.1 [MQTT-3.8.3-3], a
// protocol error in 5.0 [MQTT-3.8.3-2].
func decodeSubscribe(s *scanner, v5 bool) (Packet, error) {
	id, props, err := requestHead(s, TypeSubscribe, v5, "no topic filter [MQTT-3.8.3-3]", "no topic filter [MQTT-3.8.3-2]")
	if err != nil {
		return nil, err
	}
	// Each pair takes at least 4 bytes (length, one byte, QoS): the
	// capacity is bounded by the body, which the Reader has bounded.
	p := &Subscribe{PacketID: id, Properties: props, Subscriptions: make([]Subscription, 0, min(s.remaining()/4, 16))}
	for s.remaining() > 0 {
		f, err := s.filter()
		if err != nil {
			return nil, err
		}
		o, err := s.byte("subscription options")
		if err != nil {
			return nil, err
		}
		sub := Subscription{Filter: f, QoS: o}
		if v5 {
			err = subscriptionOptions(s, &sub, o)
		} else if o&0xFC != 0 || o > 2 {
			err = s.malformed("requested QoS byte %08b: reserved bits set or QoS above 2 [MQTT-3-8.3-4]", o)
		}
		if err != nil {
			return nil, err
		}
		p.Subscriptions = append(p.Subscriptions, sub)
	}
	return p, nil
}

// decodeUnsubscribe: a packet id, for 5.0 properties, then one or more
// filters [MQTT-3.10.3-2] (a protocol error in 5.0 when there is none).
func decodeUnsubscribe(s *scanner, v5 bool) (Packet, error) {
	id, props, err := requestHead(s, TypeUnsubscribe, v5, "no topic filter [MQTT-3.10.3-2]", "no topic filter [MQTT-3.10.3-2]")
	if err != nil {
		return nil, err
	}
	p := &Unsubscribe{PacketID: id, Properties: props, Filters: make([]string, 0, min(s.remaining()/3, 16))}
	for s.remaining() > 0 {
		f, err := s.filter()
		if err != nil {
			return nil, err
		}
		p.Filters = append(p.Filters, f)
	}
	return p, nil
}

// requestHead reads what SUBSCRIBE and UNSUBSCRIBE start with: the packet
// id and, for 5.0, the properties; a body with nothing after them is
// malformed (3.1.1, empty31) or a protocol error (5.0, empty5).
func requestHead(s *scanner, t Type, v5 bool, empty31, empty5 string) (uint16, *Properties, error) {
	id, err := s.packetID()
	if err != nil {
		return 0, nil, err
	}
	var props *Properties
	if v5 {
		if props, err = decodeProperties(s, t); err != nil {
			return 0, nil, err
		}
	}
	switch {
	case s.remaining() > 0:
		return id, props, nil
	case v5:
		return 0, nil, s.protocol("%s", empty5)
	default:
		return 0, nil, s.malformed("%s", empty31)
	}
}

// decodeSuback: a packet id, then one return code per filter of the
// SUBSCRIBE, each 0x00, 0x01, 0x02 or 0x80 [MQTT-3.9.3-2]. The codes are
// copied: the body may be the Reader's reusable buffer.
func decodeSuback(s *scanner) (Packet, error) {
	id, err := s.packetID()
	if err != nil {
		return nil, err
	}
	raw := s.b[s.off:]
	if len(raw) == 0 {
		return nil, s.malformed("no return code")
	}
	codes := make([]ReasonCode, len(raw))
	for i, b := range raw {
		if codes[i] = ReasonCode(b); !validSubackCode(codes[i]) {
			return nil, s.malformed("reserved return code 0x%02x [MQTT-3.9.3-2]", b)
		}
	}
	s.off = len(s.b)
	return &Suback{PacketID: id, ReturnCodes: codes}, nil
}

// decodeEmpty reads the packets without variable header or payload:
// PINGREQ, PINGRESP and DISCONNECT (sections 3.12, 3.13, 3.14).
func decodeEmpty(s *scanner) (Packet, error) {
	if err := s.end(); err != nil {
		return nil, err
	}
	switch s.typ {
	case TypePingreq:
		return &Pingreq{}, nil
	case TypePingresp:
		return &Pingresp{}, nil
	default:
		return &Disconnect{}, nil
	}
}
