package packets

import (
	"fmt"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
)

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
func supportedProtocol(name string, level byte) bool {
	return (name == ProtocolNameMQIsdp && level == Version31) ||
		(name == ProtocolNameMQTT && level == Version311)
}

// decodeConnect reads the protocol name and level itself, so an unsupported
// protocol is reported with what the server needs for its CONNACK 0x01
// [MQTT-3.1.2-2], then checks the flags and the payload structure and lets
// Paho unpack the fields.
func decodeConnect(h fixedHeader, body []byte) (Packet, error) {
	s := scanner{b: body, typ: TypeConnect}
	name, err := s.str("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := s.byte("protocol level")
	if err != nil {
		return nil, err
	}
	if !supportedProtocol(string(name), level) {
		return &Connect{ProtocolName: string(name), ProtocolVersion: level},
			fmt.Errorf("%w: protocol %q level %d [MQTT-3.1.2-2]", ErrUnsupportedProtocol, name, level)
	}
	if err := checkConnectRest(&s); err != nil {
		return nil, err
	}
	cp, err := unpackPaho(h, body)
	if err != nil {
		return nil, err
	}
	p := cp.(*pahopackets.ConnectPacket)
	c := &Connect{
		ProtocolName:    p.ProtocolName,
		ProtocolVersion: p.ProtocolVersion,
		CleanSession:    p.CleanSession,
		KeepAlive:       p.Keepalive,
		ClientID:        p.ClientIdentifier,
		UsernameFlag:    p.UsernameFlag,
		Username:        p.Username,
		PasswordFlag:    p.PasswordFlag,
		Password:        nilIfEmpty(p.Password),
	}
	if p.WillFlag {
		c.Will = &Will{Topic: p.WillTopic, Payload: nilIfEmpty(p.WillMessage), QoS: p.WillQos, Retain: p.WillRetain}
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
	if err := checkConnectFlags(flags); err != nil {
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

// checkConnectFlags enforces the rules on the connect flags byte.
func checkConnectFlags(flags byte) error {
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
	if flags&connectUsername == 0 && flags&connectPassword != 0 {
		return fmt.Errorf("%w: CONNECT password flag set without user name flag [MQTT-3.1.2-22]", ErrMalformed)
	}
	return nil
}

// nilIfEmpty gives empty binary fields one representation, nil, so decoded
// packets compare equal whatever path produced them.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
