// Package packets is the MQTT wire format: one in-memory model for MQTT 3.1,
// 3.1.1 and 5.0, a Reader that refuses oversized packets from the fixed
// header before allocating their body, and allocation-free encoders.
//
// Every packet type of MQTT 3.1 / 3.1.1 and 5.0 is decoded and encoded here,
// with every rule of the wire format checked on the way in and on the way
// out. The model is one set of types for all versions: what 5.0 adds
// (Properties, Reason Codes on acknowledgements, subscription options, AUTH)
// are fields that stay zero (nil Properties) for 3.1 and 3.1.1.
//
// Paho's codecs are used only by the tests, as oracles of differential
// fuzzing: github.com/eclipse/paho.mqtt.golang/packets for 3.1/3.1.1 and
// github.com/eclipse/paho.golang/packets for 5.0. The decoders must accept
// what they accept (once the rules they omit are applied), with the same
// fields, and the encoders must write bytes they read back the same.
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
	TypeAuth        Type = 15 // MQTT 5.0 only; reserved in 3.1.1
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
	// CleanSession is bit 1 of the connect flags: Clean Session in 3.1.1,
	// Clean Start in 5.0 [MQTT-3.1.2-4], where the session's lifetime is
	// the Session Expiry Interval property instead.
	CleanSession bool
	KeepAlive    uint16 // seconds
	ClientID     string
	Will         *Will // nil when the will flag is 0
	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
	// Properties of a 5.0 CONNECT (section 3.1.2.11); nil for 3.1.1 and
	// for an empty property list.
	Properties *Properties
}

// Will is the will message a CONNECT carries.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Properties are the 5.0 Will Properties (section 3.1.3.2), nil when
	// there are none.
	Properties *Properties
}

// Connack is the CONNACK packet.
type Connack struct {
	SessionPresent bool
	// ReturnCode is the 3.1.1 Connect Return Code or the 5.0 Reason Code.
	ReturnCode ReasonCode
	Properties *Properties // 5.0 only
}

// Publish is the PUBLISH packet.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // 0 for QoS 0
	Payload  []byte
	// Properties of a 5.0 PUBLISH (section 3.3.2.3), nil when there are
	// none and always for 3.1.1.
	Properties *Properties
}

// Puback acknowledges a QoS 1 PUBLISH. ReasonCode and Properties are
// 5.0's; a 3.1.1 PUBACK has them zero.
type Puback struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties *Properties
}

// Pubrec is the first acknowledgement of a QoS 2 PUBLISH.
type Pubrec struct {
	PacketID   uint16
	ReasonCode ReasonCode // 5.0 only
	Properties *Properties
}

// Pubrel releases a QoS 2 PUBLISH.
type Pubrel struct {
	PacketID   uint16
	ReasonCode ReasonCode // 5.0 only
	Properties *Properties
}

// Pubcomp completes a QoS 2 exchange.
type Pubcomp struct {
	PacketID   uint16
	ReasonCode ReasonCode // 5.0 only
	Properties *Properties
}

// Subscription is one topic filter of a SUBSCRIBE and its options: the
// requested QoS and, in 5.0, the other subscription options of section
// 3.8.3.1 (zero in 3.1.1).
type Subscription struct {
	Filter string
	QoS    byte
	// NoLocal: do not send this client its own publications [MQTT-3.8.3-3].
	NoLocal bool
	// RetainAsPublished: keep the RETAIN flag of forwarded messages.
	RetainAsPublished bool
	// RetainHandling: 0 send retained messages at subscribe, 1 only if the
	// subscription is new, 2 never.
	RetainHandling byte
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Subscriptions []Subscription
	Properties    *Properties // 5.0 only
}

// Suback is the SUBACK packet: one return code per requested filter, in
// the order of the SUBSCRIBE [MQTT-3.9.3-1]: GrantedQoS(qos) or
// SubackFailure in 3.1.1, any SUBACK Reason Code in 5.0.
type Suback struct {
	PacketID    uint16
	ReturnCodes []ReasonCode
	Properties  *Properties // 5.0 only
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID   uint16
	Filters    []string
	Properties *Properties // 5.0 only
}

// Unsuback is the UNSUBACK packet. ReasonCodes (one per filter of the
// UNSUBSCRIBE, in order) and Properties are 5.0's; nil in 3.1.1.
type Unsuback struct {
	PacketID    uint16
	ReasonCodes []ReasonCode
	Properties  *Properties
}

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet. ReasonCode and Properties are 5.0's,
// where either side may send it; zero in 3.1.1.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties *Properties
}

// Auth is the MQTT 5.0 AUTH packet of enhanced authentication (section
// 3.15).
type Auth struct {
	ReasonCode ReasonCode
	Properties *Properties
}

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

// Type implements Packet.
func (*Auth) Type() Type { return TypeAuth }
