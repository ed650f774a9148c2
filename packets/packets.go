// Package packets is the MQTT wire format: one in-memory model for MQTT 3.1,
// 3.1.1 (and, later, 5.0), a Reader that refuses oversized packets from the
// fixed header before allocating their body, and allocation-free encoders.
//
// Every packet type of MQTT 3.1 / 3.1.1 is decoded and encoded here, with
// every rule of the wire format checked on the way in and on the way out.
// Paho's 3.1/3.1.1 codec (github.com/eclipse/paho.mqtt.golang/packets) is
// used only by the tests, as the oracle of differential fuzzing: the
// decoders must accept what it accepts (once the rules it omits are
// applied), with the same fields, and the encoders must write its bytes.
package packets

import "fmt"

// Type is an MQTT control packet type, the high nibble of the first byte.
type Type byte

// The control packet types [MQTT-2.2.1].
const (
	TypeConnect     Type = 1
	TypeConnack     Type = 2
	TypePublish     Type = 3
	TypePuback      Type = 4
	TypePubrec      Type = 5
	TypePubrel      Type = 6
	TypePubcomp     Type = 7
	TypeSubscribe   Type = 8
	TypeSuback      Type = 9
	TypeUnsubscribe Type = 10
	TypeUnsuback    Type = 11
	TypePingreq     Type = 12
	TypePingresp    Type = 13
	TypeDisconnect  Type = 14
)

// Version is a protocol level, the byte a CONNECT carries after the
// protocol name. The wire format of every later packet on the connection
// depends on it: MQTT 5.0 adds properties and reason codes to most types.
type Version byte

// Protocol levels carried in CONNECT.
const (
	Version31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	Version311 Version = 4 // MQTT 3.1.1, protocol name "MQTT"
	Version5   Version = 5 // MQTT 5.0, protocol name "MQTT"
)

// String names the version as the specifications do.
func (v Version) String() string {
	switch v {
	case Version31:
		return "3.1"
	case Version311:
		return "3.1.1"
	case Version5:
		return "5.0"
	}
	return fmt.Sprintf("level %d", byte(v))
}

// Packet is any MQTT control packet.
type Packet interface {
	Type() Type
}

// Connect is the CONNECT packet.
type Connect struct {
	ProtocolName    string
	ProtocolVersion Version
	CleanSession    bool
	KeepAlive       uint16 // seconds
	ClientID        string
	Will            *Will // nil when the will flag is 0
	UsernameFlag    bool
	Username        string
	PasswordFlag    bool
	Password        []byte
}

// Will is the will message a CONNECT carries.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Connack is the CONNACK packet.
type Connack struct {
	SessionPresent bool
	ReturnCode     ReasonCode // one of the CONNACK codes of codes.go
}

// Publish is the PUBLISH packet.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // 0 for QoS 0
	Payload  []byte
}

// Puback acknowledges a QoS 1 PUBLISH.
type Puback struct{ PacketID uint16 }

// Pubrec is the first acknowledgement of a QoS 2 PUBLISH.
type Pubrec struct{ PacketID uint16 }

// Pubrel releases a QoS 2 PUBLISH.
type Pubrel struct{ PacketID uint16 }

// Pubcomp completes a QoS 2 exchange.
type Pubcomp struct{ PacketID uint16 }

// Subscription is one topic filter and its requested QoS in a SUBSCRIBE.
type Subscription struct {
	Filter string
	QoS    byte
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Subscriptions []Subscription
}

// Suback is the SUBACK packet: one return code per requested filter, in
// the order of the SUBSCRIBE [MQTT-3.9.3-1]: GrantedQoS(qos) or
// SubackFailure.
type Suback struct {
	PacketID    uint16
	ReturnCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID uint16
	Filters  []string
}

// Unsuback is the UNSUBACK packet.
type Unsuback struct{ PacketID uint16 }

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet.
type Disconnect struct{}

// Type implements Packet.
func (*Connect) Type() Type { return TypeConnect }

// Type implements Packet.
func (*Connack) Type() Type { return TypeConnack }

// Type implements Packet.
func (*Publish) Type() Type { return TypePublish }

// Type implements Packet.
func (*Puback) Type() Type { return TypePuback }

// Type implements Packet.
func (*Pubrec) Type() Type { return TypePubrec }

// Type implements Packet.
func (*Pubrel) Type() Type { return TypePubrel }

// Type implements Packet.
func (*Pubcomp) Type() Type { return TypePubcomp }

// Type implements Packet.
func (*Subscribe) Type() Type { return TypeSubscribe }

// Type implements Packet.
func (*Suback) Type() Type { return TypeSuback }

// Type implements Packet.
func (*Unsubscribe) Type() Type { return TypeUnsubscribe }

// Type implements Packet.
func (*Unsuback) Type() Type { return TypeUnsuback }

// Type implements Packet.
func (*Pingreq) Type() Type { return TypePingreq }

// Type implements Packet.
func (*Pingresp) Type() Type { return TypePingresp }

// Type implements Packet.
func (*Disconnect) Type() Type { return TypeDisconnect }
