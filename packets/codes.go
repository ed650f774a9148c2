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

// Reason Codes of MQTT 5.0 (section 2.4, Table 2-6). Values below 0x80 report
// success, 0x80 and above failure. Several names share a value, as in the
// specification: Success, NormalDisconnection and GrantedQoS0 are all 0x00.
const (
	Success                             ReasonCode = 0x00
	NormalDisconnection                 ReasonCode = 0x00
	DisconnectWithWill                  ReasonCode = 0x04
	NoMatchingSubscribers               ReasonCode = 0x10
	NoSubscriptionExisted               ReasonCode = 0x11
	ContinueAuthentication              ReasonCode = 0x18
	ReAuthenticate                      ReasonCode = 0x19
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolError                       ReasonCode = 0x82
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUserNameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	PacketIdentifierInUse               ReasonCode = 0x91
	PacketIdentifierNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// reasonCodes lists, for each MQTT 5.0 packet type that carries Reason
// Codes, the ones its section allows: CONNACK 3.2.2.2, PUBACK 3.4.2.1,
// PUBREC 3.5.2.1, PUBREL 3.6.2.1, PUBCOMP 3.7.2.1, SUBACK 3.9.3, UNSUBACK
// 3.11.3, DISCONNECT 3.14.2.1, AUTH 3.15.2.1. A sender MUST use one of them
// ([MQTT-3.2.2-8], [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1],
// [MQTT-3.7.2-1], [MQTT-3.9.3-2], [MQTT-3.11.3-2], [MQTT-3.14.2-1],
// [MQTT-3.15.2-1]).
var reasonCodes = [16][]ReasonCode{
	TypeConnack: {Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized,
		ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge,
		QuotaExceeded, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded},
	TypePuback: {Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid},
	TypePubrec: {Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid},
	TypePubrel:  {Success, PacketIdentifierNotFound},
	TypePubcomp: {Success, PacketIdentifierNotFound},
	TypeSuback: {GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError, ImplementationSpecificError,
		NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse, QuotaExceeded,
		SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported},
	TypeUnsuback: {Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicFilterInvalid, PacketIdentifierInUse},
	TypeDisconnect: {NormalDisconnection, DisconnectWithWill, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout,
		SessionTakenOver, TopicFilterInvalid, TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid,
		PacketTooLarge, MessageRateTooHigh, QuotaExceeded, AdministrativeAction, PayloadFormatInvalid,
		RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved, SharedSubscriptionsNotSupported,
		ConnectionRateExceeded, MaximumConnectTime, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported},
	TypeAuth: {Success, ContinueAuthentication, ReAuthenticate},
}

// validReasonCode reports whether c is one of the Reason Codes an MQTT 5.0
// packet of type t may carry.
func validReasonCode(t Type, c ReasonCode) bool {
	for _, v := range reasonCodes[t&0x0F] {
		if v == c {
			return true
		}
	}
	return false
}
