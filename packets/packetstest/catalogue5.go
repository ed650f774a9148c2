package packetstest

import (
	"strings"

	"github.com/bridgemq/server/packets"
)

// cases5 are the MQTT 5.0 cases, read by a Reader set to packets.Version5.
// Their names start with v5_. Valid ones are written with their properties
// in ascending identifier order, the order packets.Append5 writes, unless
// marked NonCanonical. Where a rule has no normative statement id, the name
// or comment gives the section.
func cases5() []Case {
	v5 := packets.Version5
	users := []packets.UserProperty{{Name: "a", Value: "1"}, {Name: "a", Value: "2"}}
	userRaw := Cat(0x26, Str("a"), Str("1"), 0x26, Str("a"), Str("2"))
	cases := []Case{
		// CONNECT, valid.
		{Name: "v5_connect_minimal", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(), Str("c1")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, CleanSession: true, KeepAlive: 60, ClientID: "c1"}},
		{Name: "v5_connect_properties", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x00),
			Props(0x11, U32(3600), 0x17, 0, 0x19, 1, 0x21, U16(10), 0x22, U16(5), userRaw, 0x27, U32(1024)), Str("dev")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, KeepAlive: 60, ClientID: "dev",
				Properties: &packets.Properties{SessionExpiryInterval: Ptr[uint32](3600), RequestProblemInformation: Ptr[byte](0),
					RequestResponseInformation: Ptr[byte](1), ReceiveMaximum: Ptr[uint16](10), TopicAliasMaximum: Ptr[uint16](5),
					UserProperties: users, MaximumPacketSize: Ptr[uint32](1024)}}},
		{Name: "v5_connect_will_properties", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x2E), Props(), Str("c"),
			Props(0x01, 1, 0x02, U32(60), 0x03, Str("text/plain"), 0x08, Str("r/t"), 0x09, Str("id"), 0x18, U32(30), 0x26, Str("k"), Str("v")),
			Str("w/t"), Str("bye")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, CleanSession: true, KeepAlive: 60, ClientID: "c",
				Will: &packets.Will{Topic: "w/t", Payload: []byte("bye"), QoS: 1, Retain: true, Properties: &packets.Properties{
					PayloadFormatIndicator: Ptr[byte](1), MessageExpiryInterval: Ptr[uint32](60), ContentType: "text/plain",
					ResponseTopic: "r/t", CorrelationData: []byte("id"), WillDelayInterval: Ptr[uint32](30),
					UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}}}}},
		{Name: "v5_connect_authentication_method", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x82),
			Props(0x15, Str("SCRAM-SHA-1"), 0x16, Str("client-first")), Str("c"), Str("u")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, CleanSession: true, KeepAlive: 60, ClientID: "c",
				UsernameFlag: true, Username: "u",
				Properties: &packets.Properties{AuthenticationMethod: "SCRAM-SHA-1", AuthenticationData: []byte("client-first")}}},
		// 5.0 dropped 3.1.1's [MQTT-3.1.2-22]: a password alone is allowed (section 3.1.2.9).
		{Name: "v5_connect_password_without_username", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x42), Props(), Str("c"), Str("token")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, CleanSession: true, KeepAlive: 60, ClientID: "c",
				PasswordFlag: true, Password: []byte("token")}},
		{Name: "v5_connect_properties_out_of_order", NonCanonical: true, Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02),
			Props(0x21, U16(10), 0x11, U32(0)), Str("c")),
			Want: &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, CleanSession: true, KeepAlive: 60, ClientID: "c",
				Properties: &packets.Properties{SessionExpiryInterval: Ptr[uint32](0), ReceiveMaximum: Ptr[uint16](10)}}},

		// CONNECT, refused.
		{Name: "v5_connect_duplicate_session_expiry", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x11, U32(1), 0x11, U32(2)), Str("c")),
			Err: packets.ErrProtocol},
		{Name: "v5_connect_receive_maximum_0", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x21, U16(0)), Str("c")),
			Err: packets.ErrProtocol},
		{Name: "v5_connect_maximum_packet_size_0", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x27, U32(0)), Str("c")),
			Err: packets.ErrProtocol},
		{Name: "v5_connect_request_problem_information_2", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x17, 2), Str("c")),
			Err: packets.ErrProtocol},
		{Name: "v5_connect_topic_alias_not_allowed", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x23, U16(1)), Str("c")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_will_delay_in_connect_properties", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x18, U32(5)), Str("c")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_session_expiry_in_will_properties", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x06), Props(), Str("c"),
			Props(0x11, U32(5)), Str("w"), Str("m")), Err: packets.ErrMalformed},
		{Name: "v5_connect_unknown_property", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x05, 0), Str("c")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_property_length_five_bytes_MQTT_1_5_5", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), 0xFF, 0xFF, 0xFF, 0xFF, 0x01, Str("c")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_property_length_beyond_body", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), 0x20, 0x11, U32(1)),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_property_truncated", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02), Props(0x11, 0, 0), Str("c")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_missing_property_length", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02)),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_user_property_bad_utf8_MQTT_1_5_4_1", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x02),
			Props(0x26, Str("k"), Str("\xff")), Str("c")), Err: packets.ErrMalformed},
		{Name: "v5_connect_will_qos3", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x1E), Props(), Str("c"), Props(), Str("w"), Str("m")),
			Err: packets.ErrMalformed},
		{Name: "v5_connect_reserved_flag_MQTT_3_1_2_3", Raw: Packet(0x10, ConnectHead("MQTT", 5, 0x03), Props(), Str("c")),
			Err: packets.ErrMalformed},

		// CONNACK.
		{Name: "v5_connack_properties", Raw: Packet(0x20, 1, 0, Props(0x11, U32(7200), 0x12, Str("auto-1"), 0x13, U16(30),
			0x1A, Str("resp/"), 0x1F, Str("welcome"), 0x21, U16(100), 0x22, U16(10), 0x24, 1, 0x25, 0, userRaw,
			0x27, U32(65536), 0x28, 1, 0x29, 0, 0x2A, 1)),
			Want: &packets.Connack{SessionPresent: true, Properties: &packets.Properties{SessionExpiryInterval: Ptr[uint32](7200),
				AssignedClientIdentifier: "auto-1", ServerKeepAlive: Ptr[uint16](30), ResponseInformation: "resp/",
				ReasonString: "welcome", ReceiveMaximum: Ptr[uint16](100), TopicAliasMaximum: Ptr[uint16](10),
				MaximumQoS: Ptr[byte](1), RetainAvailable: Ptr[byte](0), UserProperties: users,
				MaximumPacketSize: Ptr[uint32](65536), WildcardSubscriptionAvailable: Ptr[byte](1),
				SubscriptionIdentifierAvailable: Ptr[byte](0), SharedSubscriptionAvailable: Ptr[byte](1)}}},
		{Name: "v5_connack_bad_authentication_method", Raw: Packet(0x20, 0, 0x8C, Props()),
			Want: &packets.Connack{ReturnCode: packets.BadAuthenticationMethod}},
		{Name: "v5_connack_use_another_server", Raw: Packet(0x20, 0, 0x9C, Props(0x1C, Str("lb:1883"))),
			Want: &packets.Connack{ReturnCode: packets.UseAnotherServer, Properties: &packets.Properties{ServerReference: "lb:1883"}}},
		{Name: "v5_connack_reserved_flags_MQTT_3_2_2_1", Raw: Packet(0x20, 2, 0, Props()), Err: packets.ErrMalformed},
		{Name: "v5_connack_311_return_code_1", Raw: Packet(0x20, 0, 1, Props()), Err: packets.ErrProtocol},
		{Name: "v5_connack_missing_property_length", Raw: Packet(0x20, 0, 0), Err: packets.ErrMalformed},
		{Name: "v5_connack_maximum_qos_2", Raw: Packet(0x20, 0, 0, Props(0x24, 2)), Err: packets.ErrProtocol},
		{Name: "v5_connack_receive_maximum_0", Raw: Packet(0x20, 0, 0, Props(0x21, U16(0))), Err: packets.ErrProtocol},
		{Name: "v5_connack_will_delay_not_allowed", Raw: Packet(0x20, 0, 0, Props(0x18, U32(1))), Err: packets.ErrMalformed},

		// PUBLISH.
		{Name: "v5_publish_qos0_no_properties", Raw: Packet(0x30, Str("a/b"), Props(), "hello"),
			Want: &packets.Publish{Topic: "a/b", Payload: []byte("hello")}},
		{Name: "v5_publish_qos1_properties", Raw: Packet(0x32, Str("req/1"), 0, 7, Props(0x01, 1, 0x02, U32(60),
			0x03, Str("application/json"), 0x08, Str("resp/1"), 0x09, Str("\x00\x01"), 0x0B, 1, 0x0B, 0x80, 0x01, 0x23, U16(3), userRaw), "{}"),
			Want: &packets.Publish{QoS: 1, Topic: "req/1", PacketID: 7, Payload: []byte("{}"), Properties: &packets.Properties{
				PayloadFormatIndicator: Ptr[byte](1), MessageExpiryInterval: Ptr[uint32](60), ContentType: "application/json",
				ResponseTopic: "resp/1", CorrelationData: []byte("\x00\x01"), SubscriptionIdentifiers: []uint32{1, 128},
				TopicAlias: Ptr[uint16](3), UserProperties: users}}},
		{Name: "v5_publish_topic_alias_empty_topic", Raw: Packet(0x35, Str(""), 0xFF, 0xFF, Props(0x23, U16(1)), "x"),
			Want: &packets.Publish{QoS: 2, Retain: true, PacketID: 0xFFFF, Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: Ptr[uint16](1)}}},
		{Name: "v5_publish_empty_payload", Raw: Packet(0x31, Str("t"), Props()),
			Want: &packets.Publish{Retain: true, Topic: "t"}},
		{Name: "v5_publish_topic_alias_0_MQTT_3_3_2_8", Raw: Packet(0x30, Str("t"), Props(0x23, U16(0))), Err: packets.ErrTopicAliasInvalid},
		{Name: "v5_publish_subscription_identifier_0", Raw: Packet(0x30, Str("t"), Props(0x0B, 0)), Err: packets.ErrProtocol},
		{Name: "v5_publish_subscription_identifier_five_bytes_MQTT_1_5_5", Raw: Packet(0x30, Str("t"), Props(0x0B, 0x80, 0x80, 0x80, 0x80, 0x01)),
			Err: packets.ErrMalformed},
		{Name: "v5_publish_duplicate_message_expiry", Raw: Packet(0x30, Str("t"), Props(0x02, U32(1), 0x02, U32(1))), Err: packets.ErrProtocol},
		{Name: "v5_publish_duplicate_topic_alias", Raw: Packet(0x30, Str("t"), Props(0x23, U16(1), 0x23, U16(2))), Err: packets.ErrProtocol},
		{Name: "v5_publish_session_expiry_not_allowed", Raw: Packet(0x30, Str("t"), Props(0x11, U32(1))), Err: packets.ErrMalformed},
		{Name: "v5_publish_payload_format_2", Raw: Packet(0x30, Str("t"), Props(0x01, 2)), Err: packets.ErrProtocol},
		{Name: "v5_publish_content_type_nul_MQTT_1_5_4_2", Raw: Packet(0x30, Str("t"), Props(0x03, Str("a\x00"))), Err: packets.ErrMalformed},
		{Name: "v5_publish_missing_property_length", Raw: Packet(0x30, Str("t")), Err: packets.ErrMalformed},
		{Name: "v5_publish_property_length_beyond_body", Raw: Packet(0x30, Str("t"), 9, 0x23, U16(1)), Err: packets.ErrMalformed},
		{Name: "v5_publish_qos1_id0_MQTT_2_2_1_3", Raw: Packet(0x32, Str("t"), 0, 0, Props()), Err: packets.ErrMalformed},
		{Name: "v5_publish_qos0_dup_MQTT_3_3_1_2", Raw: Packet(0x38, Str("t"), Props()), Err: packets.ErrMalformed},
		{Name: "v5_publish_topic_bad_utf8_MQTT_1_5_4_1", Raw: Packet(0x30, Str("\xc0\xaf"), Props()), Err: packets.ErrMalformed},
		{Name: "v5_publish_over_reader_limit", Raw: Packet(0x30, Str("t"), Props(), strings.Repeat("x", 20)), Max: 16, Err: packets.ErrPacketTooLarge},
		{Name: "v5_remaining_length_256MB", Raw: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, Err: packets.ErrPacketTooLarge},

		// PUBACK, PUBREC, PUBREL, PUBCOMP: the short forms [MQTT-3.4.2-1].
		{Name: "v5_puback_short_success", Raw: []byte{0x40, 2, 0, 1}, Want: &packets.Puback{PacketID: 1}},
		{Name: "v5_puback_reason_without_properties", Raw: []byte{0x40, 3, 0, 1, 0x10},
			Want: &packets.Puback{PacketID: 1, ReasonCode: packets.NoMatchingSubscribers}},
		{Name: "v5_puback_not_authorized_reason_string", Raw: Packet(0x40, 0, 2, 0x87, Props(0x1F, Str("denied"))),
			Want: &packets.Puback{PacketID: 2, ReasonCode: packets.NotAuthorized, Properties: &packets.Properties{ReasonString: "denied"}}},
		{Name: "v5_puback_success_empty_properties", NonCanonical: true, Raw: []byte{0x40, 4, 0, 1, 0, 0}, Want: &packets.Puback{PacketID: 1}},
		{Name: "v5_pubrec_quota_exceeded", Raw: []byte{0x50, 3, 0, 9, 0x97}, Want: &packets.Pubrec{PacketID: 9, ReasonCode: packets.QuotaExceeded}},
		{Name: "v5_pubrel_identifier_not_found", Raw: []byte{0x62, 3, 0, 1, 0x92}, Want: &packets.Pubrel{PacketID: 1, ReasonCode: packets.PacketIdentifierNotFound}},
		{Name: "v5_pubrec_reason_string", Raw: Packet(0x50, 0, 4, 0x10, Props(0x1F, Str("nobody"))),
			Want: &packets.Pubrec{PacketID: 4, ReasonCode: packets.NoMatchingSubscribers, Properties: &packets.Properties{ReasonString: "nobody"}}},
		{Name: "v5_pubrel_user_property", Raw: Packet(0x62, 0, 4, 0, Props(0x26, Str("k"), Str("v"))),
			Want: &packets.Pubrel{PacketID: 4, Properties: &packets.Properties{UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}}}},
		{Name: "v5_pubcomp_user_property", Raw: Packet(0x70, 0, 5, 0, Props(0x26, Str("k"), Str("v"))),
			Want: &packets.Pubcomp{PacketID: 5, Properties: &packets.Properties{UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}}}},
		{Name: "v5_puback_undefined_reason_code_MQTT_3_4_2_1", Raw: []byte{0x40, 3, 0, 1, 0x05}, Err: packets.ErrProtocol},
		{Name: "v5_pubrel_puback_only_code_MQTT_3_6_2_1", Raw: []byte{0x62, 3, 0, 1, 0x10}, Err: packets.ErrProtocol},
		{Name: "v5_puback_duplicate_reason_string", Raw: Packet(0x40, 0, 1, 0x80, Props(0x1F, Str("a"), 0x1F, Str("b"))), Err: packets.ErrProtocol},
		{Name: "v5_puback_property_not_allowed", Raw: Packet(0x40, 0, 1, 0, Props(0x23, U16(1))), Err: packets.ErrMalformed},
		{Name: "v5_puback_property_length_beyond_body", Raw: []byte{0x40, 5, 0, 1, 0, 5, 0x1F}, Err: packets.ErrMalformed},
		{Name: "v5_puback_trailing_after_properties", Raw: []byte{0x40, 5, 0, 1, 0, 0, 0}, Err: packets.ErrMalformed},
		{Name: "v5_puback_id0_MQTT_2_2_1_3", Raw: []byte{0x40, 2, 0, 0}, Err: packets.ErrMalformed},

		// SUBSCRIBE.
		{Name: "v5_subscribe_options", Raw: Packet(0x82, 0, 3, Props(0x0B, 5, 0x26, Str("k"), Str("v")),
			Str("a/+"), 0x2D, Str("b"), 0x10),
			Want: &packets.Subscribe{PacketID: 3, Properties: &packets.Properties{SubscriptionIdentifiers: []uint32{5},
				UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}},
				Subscriptions: []packets.Subscription{
					{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
					{Filter: "b", RetainHandling: 1}}}},
		{Name: "v5_subscribe_shared", Raw: Packet(0x82, 0, 4, Props(), Str("$share/g/t/#"), 2),
			Want: &packets.Subscribe{PacketID: 4, Subscriptions: []packets.Subscription{{Filter: "$share/g/t/#", QoS: 2}}}},
		{Name: "v5_subscribe_reserved_option_bits_MQTT_3_8_3_5", Raw: Packet(0x82, 0, 1, Props(), Str("a"), 0x41), Err: packets.ErrMalformed},
		{Name: "v5_subscribe_retain_handling_3", Raw: Packet(0x82, 0, 1, Props(), Str("a"), 0x30), Err: packets.ErrProtocol},
		{Name: "v5_subscribe_qos3", Raw: Packet(0x82, 0, 1, Props(), Str("a"), 0x03), Err: packets.ErrMalformed},
		{Name: "v5_subscribe_no_local_shared_MQTT_3_8_3_4", Raw: Packet(0x82, 0, 1, Props(), Str("$share/g/a"), 0x04), Err: packets.ErrProtocol},
		{Name: "v5_subscribe_two_subscription_identifiers", Raw: Packet(0x82, 0, 1, Props(0x0B, 1, 0x0B, 2), Str("a"), 0), Err: packets.ErrProtocol},
		{Name: "v5_subscribe_subscription_identifier_0", Raw: Packet(0x82, 0, 1, Props(0x0B, 0), Str("a"), 0), Err: packets.ErrProtocol},
		{Name: "v5_subscribe_no_filter_MQTT_3_8_3_2", Raw: Packet(0x82, 0, 1, Props()), Err: packets.ErrProtocol},
		{Name: "v5_subscribe_reason_string_not_allowed", Raw: Packet(0x82, 0, 1, Props(0x1F, Str("r")), Str("a"), 0), Err: packets.ErrMalformed},
		{Name: "v5_subscribe_311_layout", Raw: Packet(0x82, 0, 1, Str("a"), 1), Err: packets.ErrMalformed},

		// SUBACK.
		{Name: "v5_suback_codes", Raw: Packet(0x90, 0, 3, Props(0x1F, Str("partly")), 0, 1, 2, 0x80, 0x87, 0x8F, 0x97, 0x9E, 0xA1, 0xA2),
			Want: &packets.Suback{PacketID: 3, Properties: &packets.Properties{ReasonString: "partly"}, ReturnCodes: []packets.ReasonCode{
				packets.GrantedQoS0, packets.GrantedQoS1, packets.GrantedQoS2, packets.UnspecifiedError, packets.NotAuthorized,
				packets.TopicFilterInvalid, packets.QuotaExceeded, packets.SharedSubscriptionsNotSupported,
				packets.SubscriptionIdentifiersNotSupported, packets.WildcardSubscriptionsNotSupported}}},
		{Name: "v5_suback_undefined_code_MQTT_3_9_3_2", Raw: Packet(0x90, 0, 3, Props(), 0x03), Err: packets.ErrProtocol},
		{Name: "v5_suback_no_code", Raw: Packet(0x90, 0, 3, Props()), Err: packets.ErrProtocol},

		// UNSUBSCRIBE and UNSUBACK.
		{Name: "v5_unsubscribe_properties", Raw: Packet(0xA2, 0, 2, Props(0x26, Str("k"), Str("v")), Str("a/#"), Str("b")),
			Want: &packets.Unsubscribe{PacketID: 2, Filters: []string{"a/#", "b"},
				Properties: &packets.Properties{UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}}}},
		{Name: "v5_unsubscribe_no_filter_MQTT_3_10_3_2", Raw: Packet(0xA2, 0, 2, Props()), Err: packets.ErrProtocol},
		{Name: "v5_unsubscribe_subscription_identifier_not_allowed", Raw: Packet(0xA2, 0, 2, Props(0x0B, 1), Str("a")), Err: packets.ErrMalformed},
		{Name: "v5_unsuback_codes", Raw: Packet(0xB0, 0, 2, Props(), 0x00, 0x11, 0x87),
			Want: &packets.Unsuback{PacketID: 2, ReasonCodes: []packets.ReasonCode{packets.Success, packets.NoSubscriptionExisted, packets.NotAuthorized}}},
		{Name: "v5_unsuback_reason_string", Raw: Packet(0xB0, 0, 2, Props(0x1F, Str("denied"), 0x26, Str("k"), Str("v")), 0x87),
			Want: &packets.Unsuback{PacketID: 2, ReasonCodes: []packets.ReasonCode{packets.NotAuthorized},
				Properties: &packets.Properties{ReasonString: "denied", UserProperties: []packets.UserProperty{{Name: "k", Value: "v"}}}}},
		{Name: "v5_unsuback_undefined_code_MQTT_3_11_3_2", Raw: Packet(0xB0, 0, 2, Props(), 0x01), Err: packets.ErrProtocol},

		// PINGREQ, PINGRESP.
		{Name: "v5_pingreq", Raw: []byte{0xC0, 0}, Want: &packets.Pingreq{}},
		{Name: "v5_pingresp", Raw: []byte{0xD0, 0}, Want: &packets.Pingresp{}},
		{Name: "v5_pingreq_trailing_byte", Raw: []byte{0xC0, 1, 0}, Err: packets.ErrMalformed},

		// DISCONNECT, short forms (section 3.14.2.1).
		{Name: "v5_disconnect_normal_short", Raw: []byte{0xE0, 0}, Want: &packets.Disconnect{}},
		{Name: "v5_disconnect_with_will", Raw: []byte{0xE0, 1, 0x04}, Want: &packets.Disconnect{ReasonCode: packets.DisconnectWithWill}},
		{Name: "v5_disconnect_use_another_server", Raw: Packet(0xE0, 0x9C, Props(0x1C, Str("lb:1883"), 0x1F, Str("draining"))),
			Want: &packets.Disconnect{ReasonCode: packets.UseAnotherServer, Properties: &packets.Properties{ServerReference: "lb:1883", ReasonString: "draining"}}},
		{Name: "v5_disconnect_session_expiry", Raw: Packet(0xE0, 0, Props(0x11, U32(0))),
			Want: &packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: Ptr[uint32](0)}}},
		{Name: "v5_disconnect_undefined_code_MQTT_3_14_2_1", Raw: []byte{0xE0, 1, 0x01}, Err: packets.ErrProtocol},
		{Name: "v5_disconnect_topic_alias_not_allowed", Raw: Packet(0xE0, 0, Props(0x23, U16(1))), Err: packets.ErrMalformed},
		{Name: "v5_disconnect_flags_MQTT_2_1_3_1", Raw: []byte{0xE1, 0}, Err: packets.ErrMalformed},

		// AUTH.
		{Name: "v5_auth_success_short", Raw: []byte{0xF0, 0}, Want: &packets.Auth{}},
		{Name: "v5_auth_continue", Raw: Packet(0xF0, 0x18, Props(0x15, Str("SCRAM-SHA-1"), 0x16, Str("server-first"))),
			Want: &packets.Auth{ReasonCode: packets.ContinueAuthentication, Properties: &packets.Properties{
				AuthenticationMethod: "SCRAM-SHA-1", AuthenticationData: []byte("server-first")}}},
		{Name: "v5_auth_undefined_code_MQTT_3_15_2_1", Raw: []byte{0xF0, 1, 0x87}, Err: packets.ErrProtocol},
		{Name: "v5_auth_flags_MQTT_2_1_3_1", Raw: []byte{0xF1, 0}, Err: packets.ErrMalformed},
		{Name: "v5_auth_duplicate_method", Raw: Packet(0xF0, 0x19, Props(0x15, Str("a"), 0x15, Str("a"))), Err: packets.ErrProtocol},
	}
	for i := range cases {
		cases[i].Version = v5
		// A refused 5.0 CONNECT comes with its name and level, for a 5.0
		// CONNACK with the error's Reason Code.
		if cases[i].Type() == packets.TypeConnect && cases[i].Err != nil && cases[i].Want == nil {
			cases[i].Want = &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: v5}
		}
	}
	return cases
}
