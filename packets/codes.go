package packets

// ReasonCode is the one-byte outcome a server reports for a request: the
// return code of a CONNACK and each return code of a SUBACK in MQTT 3.1 and
// 3.1.1. MQTT 5.0 calls the same byte a Reason Code and gives it to more
// packet types; its values join these constants when 5.0 is decoded.
//
// This file is the one definition of the codes: the session, the
// authorizer and the tests all use these names.
type ReasonCode byte

// CONNACK return codes of MQTT 3.1 / 3.1.1 (section 3.2.2.3). A server that
// refuses a connection sends one of the non-zero codes and then closes it
// [MQTT-3.2.2-5].
const (
	Accepted                   ReasonCode = 0x00 // connection accepted
	RefusedProtocolVersion     ReasonCode = 0x01 // unacceptable protocol level [MQTT-3.1.2-2]
	RefusedIdentifierRejected  ReasonCode = 0x02 // client identifier refused [MQTT-3.1.3-9]
	RefusedServerUnavailable   ReasonCode = 0x03 // the MQTT service is unavailable
	RefusedBadUsernamePassword ReasonCode = 0x04 // malformed user name or password
	RefusedNotAuthorized       ReasonCode = 0x05 // the client is not authorized to connect
)

// SUBACK return codes of MQTT 3.1 / 3.1.1 (section 3.9.3): the maximum QoS
// granted for a filter, or a failure [MQTT-3.9.3-2].
const (
	GrantedQoS0   ReasonCode = 0x00
	GrantedQoS1   ReasonCode = 0x01
	GrantedQoS2   ReasonCode = 0x02
	SubackFailure ReasonCode = 0x80 // the subscription was refused
)

// GrantedQoS returns the SUBACK return code that grants qos, 0 to 2.
func GrantedQoS(qos byte) ReasonCode { return ReasonCode(qos) }

// validSubackCode reports whether c may appear in a 3.1.1 SUBACK
// [MQTT-3.9.3-2].
func validSubackCode(c ReasonCode) bool {
	return c <= GrantedQoS2 || c == SubackFailure
}
