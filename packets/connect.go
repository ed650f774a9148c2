package packets

import "fmt"

// Protocol names carried in CONNECT.
const (
	ProtocolNameMQIsdp = "MQIsdp" // MQTT 3.1, level 3
	ProtocolNameMQTT   = "MQTT"   // MQTT 3.1.1 (level 4) and 5.0 (level 5)
)

// Connect flag bits (section 3.1.2.3).
const (
	connectReserved     = 0x01
	connectCleanSession = 0x02
	connectWill         = 0x04
	connectWillQoS      = 0x18
	connectWillRetain   = 0x20
	connectPassword     = 0x40
	connectUsername     = 0x80
)

// supportedProtocol reports whether name and level are ones this codec
// decodes: "MQIsdp" level 3 or "MQTT" level 4.
func supportedProtocol(name string, level Version) bool {
	return (name == ProtocolNameMQIsdp && level == Version31) ||
		(name == ProtocolNameMQTT && level == Version311)
}

// decodeConnect reads the protocol name and level first, so an unsupported
// protocol is reported with what the server needs for its CONNACK 0x01
// [MQTT-3.1.2-2], then the flags, which must be consistent, and the fields
// they announce (section 3.1). A level 5 CONNECT ("MQTT", 5) is decoded
// only when accept5 is set, with its properties and will properties
// (section 3.1.2.11, 3.1.3.2); otherwise it is an unsupported protocol.
//
// A level 5 CONNECT that fails after its level is returned, like an
// unsupported one, as a *Connect with only ProtocolName and ProtocolVersion
// beside the error, so the server knows to answer with a 5.0 CONNACK
// carrying the error's Reason Code (section 4.13.1); a 3.1.1 one gives nil,
// since a 3.1.1 server closes the connection without a CONNACK.
func decodeConnect(s *scanner, accept5 bool) (Packet, error) {
	name, err := s.str("protocol name")
	if err != nil {
		return nil, err
	}
	b, err := s.byte("protocol level")
	if err != nil {
		return nil, err
	}
	level := Version(b)
	v5 := accept5 && level == Version5 && string(name) == ProtocolNameMQTT
	if !v5 && !supportedProtocol(string(name), level) {
		return &Connect{ProtocolName: string(name), ProtocolVersion: level},
			fmt.Errorf("%w: protocol %q level %d [MQTT-3.1.2-2]", ErrUnsupportedProtocol, name, level)
	}
	c, err := decodeConnectFields(s, string(name), level, v5)
	if err != nil && v5 {
		return &Connect{ProtocolName: string(name), ProtocolVersion: level}, err
	}
	return c, err
}

// decodeConnectFields reads what follows the protocol level.
func decodeConnectFields(s *scanner, name string, level Version, v5 bool) (Packet, error) {
	flags, err := s.byte("connect flags")
	if err != nil {
		return nil, err
	}
	if err := checkConnectFlags(flags, v5); err != nil {
		return nil, err
	}
	c := &Connect{
		ProtocolName:    name,
		ProtocolVersion: level,
		CleanSession:    flags&connectCleanSession != 0,
		UsernameFlag:    flags&connectUsername != 0,
		PasswordFlag:    flags&connectPassword != 0,
	}
	if c.KeepAlive, err = s.uint16("keep alive"); err != nil {
		return nil, err
	}
	if v5 {
		if c.Properties, err = decodeProperties(s, TypeConnect); err != nil {
			return nil, err
		}
	}
	id, err := s.str("client identifier")
	if err != nil {
		return nil, err
	}
	c.ClientID = string(id)
	if flags&connectWill != 0 {
		var willProps *Properties
		if v5 {
			if willProps, err = decodeProperties(s, willProperties); err != nil {
				return nil, err
			}
		}
		topic, err := s.str("will topic")
		if err != nil {
			return nil, err
		}
		msg, err := s.binary("will message")
		if err != nil {
			return nil, err
		}
		c.Will = &Will{Topic: string(topic), Payload: cloneNonEmpty(msg),
			QoS: (flags & connectWillQoS) >> 3, Retain: flags&connectWillRetain != 0, Properties: willProps}
	}
	if c.UsernameFlag {
		u, err := s.str("user name")
		if err != nil {
			return nil, err
		}
		c.Username = string(u)
	}
	if c.PasswordFlag {
		pw, err := s.binary("password")
		if err != nil {
			return nil, err
		}
		c.Password = cloneNonEmpty(pw)
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkConnectFlags enforces the rules on the connect flags byte. The rules
// are the same in 3.1.1 and 5.0 (where the will ones are [MQTT-3.1.2-11],
// [MQTT-3.1.2-13] and a will QoS of 3 is a Malformed Packet, section
// 3.1.2.6) but for one: 5.0 allows a password without a user name (section
// 3.1.2.9).
func checkConnectFlags(flags byte, v5 bool) error {
	if flags&connectReserved != 0 {
		return fmt.Errorf("%w: CONNECT reserved flag must be 0 [MQTT-3.1.2-3]", ErrMalformed)
	}
	willQoS := (flags & connectWillQoS) >> 3
	if flags&connectWill == 0 {
		if willQoS != 0 {
			return fmt.Errorf("%w: CONNECT will QoS must be 0 without a will [MQTT-3.1.2-11] [MQTT-3.1.2-13]", ErrMalformed)
		}
		if flags&connectWillRetain != 0 {
			return fmt.Errorf("%w: CONNECT will retain must be 0 without a will [MQTT-3.1.2-11] [MQTT-3.1.2-15]", ErrMalformed)
		}
	} else if willQoS == 3 {
		return fmt.Errorf("%w: CONNECT will QoS must not be 3 [MQTT-3.1.2-14]", ErrMalformed)
	}
	if !v5 && flags&connectUsername == 0 && flags&connectPassword != 0 {
		return fmt.Errorf("%w: CONNECT password flag set without user name flag [MQTT-3.1.2-22]", ErrMalformed)
	}
	return nil
}

// cloneNonEmpty copies a binary field out of the body, which the Reader may
// reuse, and gives an empty field one representation, nil, so decoded packets
// compare equal whatever their source.
func cloneNonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
