package packets

import "errors"

// Sentinel errors of the codec. Every error the Reader or Append returns for
// a protocol problem wraps exactly one of these with the specific reason, so
// callers test them with errors.Is.
var (
	// ErrMalformed reports a packet that breaks the wire format: bad flags,
	// truncated or overlong fields, ill-formed UTF-8, a zero packet id, and
	// so on. The server closes the connection without a reply
	// [MQTT-2.2.2-2], [MQTT-1.5.3-1].
	ErrMalformed = errors.New("malformed packet")

	// ErrPacketTooLarge reports a packet whose Remaining Length exceeds the
	// Reader's limit. It is detected from the fixed header alone, before any
	// of the body is read or allocated.
	ErrPacketTooLarge = errors.New("packet too large")

	// ErrUnsupportedProtocol reports a CONNECT with a protocol name or level
	// this codec does not speak. The Reader returns it together with a
	// *Connect holding ProtocolName and ProtocolVersion so the server can
	// answer CONNACK 0x01 [MQTT-3.1.2-2].
	ErrUnsupportedProtocol = errors.New("unsupported protocol")
)
