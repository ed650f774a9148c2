package packets

// The previous decoding path, kept as the oracle of the differential fuzz
// tests: this package's own structural checks (as they stood when Paho's
// 3.1/3.1.1 codec did the decoding) followed by Paho's Unpack. The native
// decoders must accept exactly what it accepts, with the same fields.

import (
	"bytes"
	"fmt"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
)

// oracleDecode is the decoder this package used before it decoded every
// type itself, kept as the oracle of FuzzDecodeDifferential: the body is
// scanned by checkBody, which enforces the structure Paho does not check,
// then unpacked by Paho's 3.1/3.1.1 codec and converted to the model.
func oracleDecode(h fixedHeader, body []byte) (Packet, error) {
	if h.typ == TypeConnect {
		return oracleConnect(h, body)
	}
	if err := checkBody(h.typ, body); err != nil {
		return nil, err
	}
	cp, err := oracleUnpack(h, body)
	if err != nil {
		return nil, err
	}
	switch p := cp.(type) {
	case *pahopackets.ConnackPacket:
		return &Connack{SessionPresent: p.SessionPresent, ReturnCode: ReasonCode(p.ReturnCode)}, nil
	case *pahopackets.PubackPacket:
		return &Puback{PacketID: p.MessageID}, nil
	case *pahopackets.PubrecPacket:
		return &Pubrec{PacketID: p.MessageID}, nil
	case *pahopackets.PubrelPacket:
		return &Pubrel{PacketID: p.MessageID}, nil
	case *pahopackets.PubcompPacket:
		return &Pubcomp{PacketID: p.MessageID}, nil
	case *pahopackets.SubscribePacket:
		if len(p.Topics) != len(p.Qoss) {
			return nil, fmt.Errorf("%w: SUBSCRIBE: %d filters but %d QoS bytes", ErrMalformed, len(p.Topics), len(p.Qoss))
		}
		s := &Subscribe{PacketID: p.MessageID, Subscriptions: make([]Subscription, len(p.Topics))}
		for i, f := range p.Topics {
			s.Subscriptions[i] = Subscription{Filter: f, QoS: p.Qoss[i]}
		}
		return s, nil
	case *pahopackets.SubackPacket:
		codes := make([]ReasonCode, len(p.ReturnCodes))
		for i, c := range p.ReturnCodes {
			codes[i] = ReasonCode(c)
		}
		return &Suback{PacketID: p.MessageID, ReturnCodes: codes}, nil
	case *pahopackets.UnsubscribePacket:
		return &Unsubscribe{PacketID: p.MessageID, Filters: p.Topics}, nil
	case *pahopackets.UnsubackPacket:
		return &Unsuback{PacketID: p.MessageID}, nil
	case *pahopackets.PingreqPacket:
		return &Pingreq{}, nil
	case *pahopackets.PingrespPacket:
		return &Pingresp{}, nil
	case *pahopackets.DisconnectPacket:
		return &Disconnect{}, nil
	}
	return nil, fmt.Errorf("%w: %s is not decoded by Paho", ErrMalformed, h.typ)
}

// oracleUnpack runs Paho's Unpack over body and checks that it consumed every
// byte, as checkBody guarantees it will.
//
// The body is wrapped in a bytes.Buffer, as Paho's own ReadPacket does, not a
// bytes.Reader: Paho reads a zero-length field with a zero-length Read, which
// a bytes.Reader at its end answers with io.EOF, so a CONNECT whose last
// field is an empty client id or password would fail.
func oracleUnpack(h fixedHeader, body []byte) (pahopackets.ControlPacket, error) {
	cp, err := pahopackets.NewControlPacketWithHeader(pahopackets.FixedHeader{
		MessageType:     byte(h.typ),
		Dup:             h.dup(),
		Qos:             h.qos(),
		Retain:          h.retain(),
		RemainingLength: len(body),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, h.typ, err)
	}
	buf := bytes.NewBuffer(body)
	if err := cp.Unpack(buf); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, h.typ, err)
	}
	if buf.Len() != 0 {
		return nil, fmt.Errorf("%w: %s: %d bytes left after decoding", ErrMalformed, h.typ, buf.Len())
	}
	return cp, nil
}

// checkBody enforces the structure of each body decoded by Paho: exact
// lengths, complete fields, non-zero packet ids, well-formed strings and no
// trailing bytes.
func checkBody(t Type, body []byte) error {
	s := scanner{b: body, typ: t}
	switch t {
	case TypeConnack:
		flags, err := s.byte("acknowledge flags")
		if err != nil {
			return err
		}
		// Bits 7-1 of the acknowledge flags are reserved (section 3.2.2.1).
		if flags&0xFE != 0 {
			return s.malformed("reserved acknowledge flag bits set: %08b", flags)
		}
		if _, err := s.byte("return code"); err != nil {
			return err
		}
	case TypePuback, TypePubrec, TypePubrel, TypePubcomp, TypeUnsuback:
		if _, err := s.packetID(); err != nil {
			return err
		}
	case TypeSubscribe:
		return checkSubscribe(&s)
	case TypeSuback:
		return checkSuback(&s)
	case TypeUnsubscribe:
		return checkUnsubscribe(&s)
	case TypePingreq, TypePingresp, TypeDisconnect:
		// No variable header and no payload (sections 3.12, 3.13, 3.14).
	}
	return s.end()
}

// checkSubscribe: a packet id, then one or more filter/QoS pairs
// [MQTT-3.8.3-3]; the QoS byte has its six reserved bits 0 and QoS <= 2
// [MQTT-3-8.3-4].
func checkSubscribe(s *scanner) error {
	if _, err := s.packetID(); err != nil {
		return err
	}
	if s.remaining() == 0 {
		return s.malformed("no topic filter [MQTT-3.8.3-3]")
	}
	for s.remaining() > 0 {
		if err := checkFilter(s); err != nil {
			return err
		}
		qos, err := s.byte("requested QoS")
		if err != nil {
			return err
		}
		if qos&0xFC != 0 || qos > 2 {
			return s.malformed("requested QoS byte %08b: reserved bits set or QoS above 2 [MQTT-3-8.3-4]", qos)
		}
	}
	return nil
}

// checkUnsubscribe: a packet id, then one or more filters [MQTT-3.10.3-2].
func checkUnsubscribe(s *scanner) error {
	if _, err := s.packetID(); err != nil {
		return err
	}
	if s.remaining() == 0 {
		return s.malformed("no topic filter [MQTT-3.10.3-2]")
	}
	for s.remaining() > 0 {
		if err := checkFilter(s); err != nil {
			return err
		}
	}
	return nil
}

// checkFilter reads one topic filter. An empty filter is refused here
// [MQTT-4.7.3-1] although wildcard rules belong to the topics package: Paho's
// UNSUBSCRIBE decoder stops at an empty string, so it cannot be carried.
func checkFilter(s *scanner) error {
	f, err := s.str("topic filter")
	if err != nil {
		return err
	}
	if len(f) == 0 {
		return s.malformed("empty topic filter [MQTT-4.7.3-1]")
	}
	return nil
}

// checkSuback: a packet id, then one return code per filter of the
// SUBSCRIBE, each 0x00, 0x01, 0x02 or 0x80 [MQTT-3.9.3-2].
func checkSuback(s *scanner) error {
	if _, err := s.packetID(); err != nil {
		return err
	}
	if s.remaining() == 0 {
		return s.malformed("no return code")
	}
	for s.remaining() > 0 {
		rc, _ := s.byte("return code")
		if rc > 2 && ReasonCode(rc) != SubackFailure {
			return s.malformed("reserved return code 0x%02x [MQTT-3.9.3-2]", rc)
		}
	}
	return nil
}

// oracleConnect reads the protocol name and level itself, so an unsupported
// protocol is reported with what the server needs for its CONNACK 0x01
// [MQTT-3.1.2-2], then checks the flags and the payload structure and lets
// Paho unpack the fields.
func oracleConnect(h fixedHeader, body []byte) (Packet, error) {
	s := scanner{b: body, typ: TypeConnect}
	name, err := s.str("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := s.byte("protocol level")
	if err != nil {
		return nil, err
	}
	if !supportedProtocol(string(name), Version(level)) {
		return &Connect{ProtocolName: string(name), ProtocolVersion: Version(level)},
			fmt.Errorf("%w: protocol %q level %d [MQTT-3.1.2-2]", ErrUnsupportedProtocol, name, level)
	}
	if err := checkConnectRest(&s); err != nil {
		return nil, err
	}
	cp, err := oracleUnpack(h, body)
	if err != nil {
		return nil, err
	}
	p := cp.(*pahopackets.ConnectPacket)
	c := &Connect{
		ProtocolName:    p.ProtocolName,
		ProtocolVersion: Version(p.ProtocolVersion),
		CleanSession:    p.CleanSession,
		KeepAlive:       p.Keepalive,
		ClientID:        p.ClientIdentifier,
		UsernameFlag:    p.UsernameFlag,
		Username:        p.Username,
		PasswordFlag:    p.PasswordFlag,
		Password:        cloneNonEmpty(p.Password),
	}
	if p.WillFlag {
		c.Will = &Will{Topic: p.WillTopic, Payload: cloneNonEmpty(p.WillMessage), QoS: p.WillQos, Retain: p.WillRetain}
	}
	return c, nil
}

// checkConnectRest checks the connect flags and the structure of everything
// after the protocol level.
func checkConnectRest(s *scanner) error {
	flags, err := s.byte("connect flags")
	if err != nil {
		return err
	}
	if err := checkConnectFlags(flags, false); err != nil {
		return err
	}
	if _, err := s.uint16("keep alive"); err != nil {
		return err
	}
	if _, err := s.str("client identifier"); err != nil {
		return err
	}
	if flags&connectWill != 0 {
		if _, err := s.str("will topic"); err != nil {
			return err
		}
		if _, err := s.binary("will message"); err != nil {
			return err
		}
	}
	if flags&connectUsername != 0 {
		if _, err := s.str("user name"); err != nil {
			return err
		}
	}
	if flags&connectPassword != 0 {
		if _, err := s.binary("password"); err != nil {
			return err
		}
	}
	return s.end()
}
