package packets

import "errors"

// ReasonError is the type of the codec's sentinel errors: each carries the
// MQTT 5.0 Reason Code a server sends (in CONNACK before the session starts,
// in DISCONNECT after) when it closes a connection for that error. Every
// error the Reader or Append returns for a protocol problem wraps exactly one
// of them with the specific reason, so callers test them with errors.Is and
// read the code with errors.As or CodeOf.
type ReasonError struct {
	Code ReasonCode
	text string
}

// Error implements error.
func (e *ReasonError) Error() string { return e.text }

// Sentinel errors of the codec.
var (
	// ErrMalformed reports a packet that breaks the wire format: bad flags,
	// truncated or overlong fields, ill-formed UTF-8, a zero packet id, a
	// property a packet type may not carry, and so on (MQTT 5.0 Reason Code
	// 0x81). An MQTT 3.1.1 server closes the connection without a reply
	// [MQTT-4.8.0-1].
	ErrMalformed error = &ReasonError{MalformedPacket, "malformed packet"}

	// ErrProtocol reports an MQTT 5.0 packet that is well formed but breaks
	// a rule of the protocol: a property given twice, a Receive Maximum of
	// 0, Retain Handling 3 and the other cases the specification calls a
	// Protocol Error (Reason Code 0x82).
	ErrProtocol error = &ReasonError{ProtocolError, "protocol error"}

	// ErrPacketTooLarge reports a packet whose Remaining Length exceeds the
	// Reader's limit (Reason Code 0x95). It is detected from the fixed
	// header alone, before any of the body is read or allocated.
	ErrPacketTooLarge error = &ReasonError{PacketTooLarge, "packet too large"}

	// ErrUnsupportedProtocol reports a CONNECT with a protocol name or level
	// this codec does not speak. The Reader returns it together with a
	// *Connect holding ProtocolName and ProtocolVersion so the server can
	// answer CONNACK 0x01 (3.1.1) or 0x84 (5.0) [MQTT-3.1.2-2].
	ErrUnsupportedProtocol error = &ReasonError{UnsupportedProtocolVersion, "unsupported protocol"}

	// ErrTopicAliasInvalid reports a PUBLISH with a Topic Alias of 0, which
	// is not permitted [MQTT-3.3.2-8] (Reason Code 0x94, as for an alias
	// above the receiver's Topic Alias Maximum, which the session checks).
	ErrTopicAliasInvalid error = &ReasonError{TopicAliasInvalid, "topic alias invalid"}
)

// CodeOf returns the Reason Code err maps to, and false when err wraps none
// of the codec's sentinels (an I/O error, say).
func CodeOf(err error) (ReasonCode, bool) {
	var re *ReasonError
	if errors.As(err, &re) {
		return re.Code, true
	}
	return 0, false
}
