package packets

import (
	"io"
	"strings"
)

// tpacket is one named raw packet of the catalogue with its decoded form or
// the error a Reader must return for it. Every test and the fuzz seed corpus
// draw from this one list, so "what a malformed SUBSCRIBE looks like" is
// written down once.
type tpacket struct {
	name string
	raw  []byte
	// want is the decoded packet; for ErrUnsupportedProtocol, the *Connect
	// returned beside the error.
	want Packet
	// err is the sentinel the Reader's error wraps; nil for a valid packet.
	err error
	// max is the Reader's size limit; 0 means testMaxPacket.
	max int
	// version is passed to SetVersion before reading when non-zero.
	version Version
	// nonCanonical marks valid raw bytes that Append does not reproduce
	// byte for byte (an overlong remaining length, say).
	nonCanonical bool
}

// testMaxPacket is the Reader limit the catalogue runs with.
const testMaxPacket = 1 << 20

// lp returns s as a length-prefixed string (section 1.5.3).
func lp(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// cat concatenates bytes, ints (as single bytes), strings and byte slices.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case int:
			if v < 0 || v > 255 {
				panic("cat: int out of byte range")
			}
			b = append(b, byte(v))
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic("cat: unsupported part")
		}
	}
	return b
}

// pkt builds a packet from its first byte and body parts, computing the
// Remaining Length.
func pkt(first byte, body ...any) []byte {
	b := cat(body...)
	return append(appendRemainingLength([]byte{first}, len(b)), b...)
}

// connectBody is a 3.1.1 CONNECT variable header with the given flags and
// keep alive 60.
func connectHead(name string, level, flags byte) []byte {
	return cat(lp(name), level, flags, 0, 60)
}

var tpackets = []tpacket{
	// CONNECT, valid.
	{name: "connect_311_minimal", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("c1")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c1"}},
	{name: "connect_311_empty_client_id_last_field", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60}},
	{name: "connect_311_persistent_session", raw: pkt(0x10, connectHead("MQTT", 4, 0x00), lp("dev-7")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, KeepAlive: 60, ClientID: "dev-7"}},
	{name: "connect_31_mqisdp", raw: pkt(0x10, connectHead("MQIsdp", 3, 0x02), lp("old")),
		want: &Connect{ProtocolName: "MQIsdp", ProtocolVersion: 3, CleanSession: true, KeepAlive: 60, ClientID: "old"}},
	{name: "connect_311_will_qos1_retain", raw: pkt(0x10, connectHead("MQTT", 4, 0x2E), lp("c"), lp("w/t"), lp("bye")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			Will: &Will{Topic: "w/t", Payload: []byte("bye"), QoS: 1, Retain: true}}},
	{name: "connect_311_will_qos2_empty_message", raw: pkt(0x10, connectHead("MQTT", 4, 0x16), lp("c"), lp("w"), lp("")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			Will: &Will{Topic: "w", QoS: 2}}},
	{name: "connect_311_username_only", raw: pkt(0x10, connectHead("MQTT", 4, 0x82), lp("c"), lp("alice")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			UsernameFlag: true, Username: "alice"}},
	{name: "connect_311_username_password", raw: pkt(0x10, connectHead("MQTT", 4, 0xC2), lp("c"), lp("alice"), lp("s\x00cret")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("s\x00cret")}},
	{name: "connect_311_empty_username_empty_password", raw: pkt(0x10, connectHead("MQTT", 4, 0xC2), lp("c"), lp(""), lp("")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			UsernameFlag: true, PasswordFlag: true}},
	{name: "connect_311_will_username_password", raw: pkt(0x10, connectHead("MQTT", 4, 0xCE), lp("c"), lp("w"), lp("m"), lp("u"), lp("p")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "c",
			Will: &Will{Topic: "w", Payload: []byte("m"), QoS: 1}, UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")}},
	{name: "connect_31_will_username_password", raw: pkt(0x10, connectHead("MQIsdp", 3, 0xF6), lp("c"), lp("w"), lp("m"), lp("u"), lp("p")),
		want: &Connect{ProtocolName: "MQIsdp", ProtocolVersion: 3, CleanSession: true, KeepAlive: 60, ClientID: "c",
			Will: &Will{Topic: "w", Payload: []byte("m"), QoS: 2, Retain: true}, UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")}},
	{name: "connect_311_noncharacter_accepted_MQTT_1_5_3_3", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("é\uFFFF")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 4, CleanSession: true, KeepAlive: 60, ClientID: "é\uFFFF"}},

	// CONNECT, unsupported protocol: the server answers CONNACK 0x01.
	{name: "connect_mqtt_level5_unsupported_MQTT_3_1_2_2", raw: pkt(0x10, connectHead("MQTT", 5, 0x02), 0, lp("c")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 5}, err: ErrUnsupportedProtocol},
	{name: "connect_unknown_name_MQTT_3_1_2_2", raw: pkt(0x10, connectHead("MQTX", 4, 0x02), lp("c")),
		want: &Connect{ProtocolName: "MQTX", ProtocolVersion: 4}, err: ErrUnsupportedProtocol},
	{name: "connect_mqisdp_level4_unsupported_MQTT_3_1_2_2", raw: pkt(0x10, connectHead("MQIsdp", 4, 0x02), lp("c")),
		want: &Connect{ProtocolName: "MQIsdp", ProtocolVersion: 4}, err: ErrUnsupportedProtocol},
	{name: "connect_mqtt_level3_unsupported_MQTT_3_1_2_2", raw: pkt(0x10, connectHead("MQTT", 3, 0x02), lp("c")),
		want: &Connect{ProtocolName: "MQTT", ProtocolVersion: 3}, err: ErrUnsupportedProtocol},

	// CONNECT, malformed.
	{name: "connect_reserved_flag_MQTT_3_1_2_3", raw: pkt(0x10, connectHead("MQTT", 4, 0x03), lp("c")), err: ErrMalformed},
	{name: "connect_will_qos3_MQTT_3_1_2_14", raw: pkt(0x10, connectHead("MQTT", 4, 0x1E), lp("c"), lp("w"), lp("m")), err: ErrMalformed},
	{name: "connect_no_will_qos1_MQTT_3_1_2_13", raw: pkt(0x10, connectHead("MQTT", 4, 0x0A), lp("c")), err: ErrMalformed},
	{name: "connect_no_will_retain_MQTT_3_1_2_15", raw: pkt(0x10, connectHead("MQTT", 4, 0x22), lp("c")), err: ErrMalformed},
	{name: "connect_password_without_username_MQTT_3_1_2_22", raw: pkt(0x10, connectHead("MQTT", 4, 0x42), lp("c"), lp("p")), err: ErrMalformed},
	{name: "connect_client_id_bad_utf8_MQTT_1_5_3_1", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("a\xffb")), err: ErrMalformed},
	{name: "connect_client_id_surrogate_MQTT_1_5_3_1", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("\xed\xa0\x80")), err: ErrMalformed},
	{name: "connect_client_id_nul_MQTT_1_5_3_2", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("a\x00")), err: ErrMalformed},
	{name: "connect_username_bad_utf8_MQTT_1_5_3_1", raw: pkt(0x10, connectHead("MQTT", 4, 0x82), lp("c"), lp("\xc0\xaf")), err: ErrMalformed},
	{name: "connect_will_topic_nul_MQTT_1_5_3_2", raw: pkt(0x10, connectHead("MQTT", 4, 0x06), lp("c"), lp("w\x00"), lp("m")), err: ErrMalformed},
	{name: "connect_client_id_length_beyond_body", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), 0, 9, "abc"), err: ErrMalformed},
	{name: "connect_trailing_garbage", raw: pkt(0x10, connectHead("MQTT", 4, 0x02), lp("c"), "xx"), err: ErrMalformed},
	{name: "connect_will_message_missing", raw: pkt(0x10, connectHead("MQTT", 4, 0x06), lp("c"), lp("w")), err: ErrMalformed},
	{name: "connect_will_topic_missing", raw: pkt(0x10, connectHead("MQTT", 4, 0x06), lp("c")), err: ErrMalformed},
	{name: "connect_username_missing", raw: pkt(0x10, connectHead("MQTT", 4, 0x82), lp("c")), err: ErrMalformed},
	{name: "connect_missing_connect_flags", raw: pkt(0x10, lp("MQTT"), 4), err: ErrMalformed},
	{name: "connect_password_missing", raw: pkt(0x10, connectHead("MQTT", 4, 0xC2), lp("c"), lp("u")), err: ErrMalformed},
	{name: "connect_truncated_in_protocol_name", raw: pkt(0x10, 0, 4, "MQ"), err: ErrMalformed},
	{name: "connect_missing_keep_alive", raw: pkt(0x10, lp("MQTT"), 4, 0x02, 0), err: ErrMalformed},
	{name: "connect_fixed_header_flags_MQTT_2_2_2_2", raw: pkt(0x11, connectHead("MQTT", 4, 0x02), lp("c")), err: ErrMalformed},

	// CONNACK.
	{name: "connack_accepted", raw: []byte{0x20, 2, 0, 0}, want: &Connack{}},
	{name: "connack_session_present", raw: []byte{0x20, 2, 1, 0}, want: &Connack{SessionPresent: true}},
	{name: "connack_not_authorized", raw: []byte{0x20, 2, 0, 5}, want: &Connack{ReturnCode: RefusedNotAuthorized}},
	{name: "connack_reserved_ack_flags", raw: []byte{0x20, 2, 2, 0}, err: ErrMalformed},
	{name: "connack_trailing_byte", raw: []byte{0x20, 3, 0, 0, 0}, err: ErrMalformed},
	{name: "connack_truncated_body", raw: []byte{0x20, 1, 0}, err: ErrMalformed},
	{name: "connack_refused_protocol_version", raw: []byte{0x20, 2, 0, 1}, want: &Connack{ReturnCode: RefusedProtocolVersion}},
	{name: "connack_unknown_return_code_kept", raw: []byte{0x20, 2, 0, 6}, want: &Connack{ReturnCode: 6}},
	{name: "connack_flags_MQTT_2_2_2_2", raw: []byte{0x21, 2, 0, 0}, err: ErrMalformed},

	// PUBLISH.
	{name: "publish_qos0", raw: pkt(0x30, lp("a/b"), "hello"),
		want: &Publish{Topic: "a/b", Payload: []byte("hello")}},
	{name: "publish_qos1_dup", raw: pkt(0x3A, lp("a/b"), 0, 7, "x"),
		want: &Publish{Dup: true, QoS: 1, Topic: "a/b", PacketID: 7, Payload: []byte("x")}},
	{name: "publish_qos2_retain_max_id", raw: pkt(0x35, lp("t"), 0xFF, 0xFF, "\x00\x01binary"),
		want: &Publish{QoS: 2, Retain: true, Topic: "t", PacketID: 0xFFFF, Payload: []byte("\x00\x01binary")}},
	{name: "publish_qos0_empty_payload", raw: pkt(0x31, lp("del/me")),
		want: &Publish{Retain: true, Topic: "del/me"}},
	{name: "publish_qos1_empty_payload", raw: pkt(0x32, lp("t"), 0, 1),
		want: &Publish{QoS: 1, Topic: "t", PacketID: 1}},
	{name: "publish_unicode_topic", raw: pkt(0x30, lp("温度/€"), "22"),
		want: &Publish{Topic: "温度/€", Payload: []byte("22")}},
	{name: "publish_empty_topic_left_to_topics_package", raw: pkt(0x30, lp(""), "p"),
		want: &Publish{Payload: []byte("p")}},
	{name: "publish_two_byte_remaining_length", raw: pkt(0x30, lp("t"), strings.Repeat("z", 200)),
		want: &Publish{Topic: "t", Payload: []byte(strings.Repeat("z", 200))}},
	{name: "publish_body_beyond_retained_buffer", raw: pkt(0x30, lp("big"), strings.Repeat("b", retainedBodyLimit+10)),
		want: &Publish{Topic: "big", Payload: []byte(strings.Repeat("b", retainedBodyLimit+10))}},
	{name: "publish_qos3_MQTT_3_3_1_4", raw: pkt(0x36, lp("t"), 0, 1), err: ErrMalformed},
	{name: "publish_qos1_id0_MQTT_2_3_1_1", raw: pkt(0x32, lp("t"), 0, 0, "x"), err: ErrMalformed},
	{name: "publish_qos0_dup_MQTT_3_3_1_2", raw: pkt(0x38, lp("t"), "x"), err: ErrMalformed},
	{name: "publish_topic_length_beyond_body", raw: pkt(0x30, 0, 10, "abc"), err: ErrMalformed},
	{name: "publish_topic_bad_utf8_MQTT_1_5_3_1", raw: pkt(0x30, lp("a/\xfe"), "x"), err: ErrMalformed},
	{name: "publish_topic_nul_MQTT_1_5_3_2", raw: pkt(0x30, lp("a\x00b"), "x"), err: ErrMalformed},
	{name: "publish_qos1_truncated_packet_id", raw: pkt(0x32, lp("t"), 7), err: ErrMalformed},
	{name: "publish_body_one_byte", raw: pkt(0x30, 0), err: ErrMalformed},
	{name: "publish_over_reader_limit", raw: pkt(0x30, lp("t"), strings.Repeat("x", 20)), max: 16, err: ErrPacketTooLarge},

	// PUBACK, PUBREC, PUBREL, PUBCOMP.
	{name: "puback", raw: []byte{0x40, 2, 0x12, 0x34}, want: &Puback{PacketID: 0x1234}},
	{name: "pubrec", raw: []byte{0x50, 2, 0, 1}, want: &Pubrec{PacketID: 1}},
	{name: "pubrel", raw: []byte{0x62, 2, 0xFF, 0xFF}, want: &Pubrel{PacketID: 0xFFFF}},
	{name: "pubcomp", raw: []byte{0x70, 2, 0, 9}, want: &Pubcomp{PacketID: 9}},
	{name: "puback_id0_MQTT_2_3_1_1", raw: []byte{0x40, 2, 0, 0}, err: ErrMalformed},
	{name: "puback_flags_MQTT_2_2_2_2", raw: []byte{0x42, 2, 0, 1}, err: ErrMalformed},
	{name: "pubrel_flags_0000_MQTT_3_6_1_1", raw: []byte{0x60, 2, 0, 1}, err: ErrMalformed},
	{name: "pubrec_trailing_byte", raw: []byte{0x50, 3, 0, 1, 0}, err: ErrMalformed},
	{name: "pubcomp_truncated_id", raw: []byte{0x70, 1, 0}, err: ErrMalformed},
	{name: "pubcomp_id0_MQTT_2_3_1_1", raw: []byte{0x70, 2, 0, 0}, err: ErrMalformed},

	// SUBSCRIBE.
	{name: "subscribe_one_filter", raw: pkt(0x82, 0, 1, lp("a/+"), 1),
		want: &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a/+", QoS: 1}}}},
	{name: "subscribe_three_filters", raw: pkt(0x82, 0x01, 0x00, lp("a/#"), 0, lp("$SYS/x"), 2, lp("b"), 1),
		want: &Subscribe{PacketID: 256, Subscriptions: []Subscription{{"a/#", 0}, {"$SYS/x", 2}, {"b", 1}}}},
	{name: "subscribe_unicode_filter_qos2", raw: pkt(0x82, 0xAB, 0xCD, lp("温度/+/€"), 2),
		want: &Subscribe{PacketID: 0xABCD, Subscriptions: []Subscription{{Filter: "温度/+/€", QoS: 2}}}},
	{name: "subscribe_filter_nul_MQTT_1_5_3_2", raw: pkt(0x82, 0, 1, lp("a\x00"), 0), err: ErrMalformed},
	{name: "subscribe_trailing_byte_after_qos", raw: pkt(0x82, 0, 1, lp("a"), 0, 0), err: ErrMalformed},
	{name: "subscribe_truncated_packet_id", raw: pkt(0x82, 0), err: ErrMalformed},
	{name: "subscribe_no_filter_MQTT_3_8_3_3", raw: pkt(0x82, 0, 1), err: ErrMalformed},
	{name: "subscribe_qos3_MQTT_3_8_3_4", raw: pkt(0x82, 0, 1, lp("a"), 3), err: ErrMalformed},
	{name: "subscribe_qos_reserved_bits_MQTT_3_8_3_4", raw: pkt(0x82, 0, 1, lp("a"), 0x41), err: ErrMalformed},
	{name: "subscribe_flags_0000_MQTT_3_8_1_1", raw: pkt(0x80, 0, 1, lp("a"), 0), err: ErrMalformed},
	{name: "subscribe_id0_MQTT_2_3_1_1", raw: pkt(0x82, 0, 0, lp("a"), 0), err: ErrMalformed},
	{name: "subscribe_missing_qos", raw: pkt(0x82, 0, 1, lp("a")), err: ErrMalformed},
	{name: "subscribe_filter_bad_utf8_MQTT_1_5_3_1", raw: pkt(0x82, 0, 1, lp("\x80"), 0), err: ErrMalformed},
	{name: "subscribe_empty_filter_MQTT_4_7_3_1", raw: pkt(0x82, 0, 1, lp(""), 0), err: ErrMalformed},
	{name: "subscribe_filter_length_beyond_body", raw: pkt(0x82, 0, 1, 0, 9, "ab", 0), err: ErrMalformed},

	// SUBACK.
	{name: "suback_all_codes", raw: []byte{0x90, 6, 0, 3, 0, 1, 2, 0x80},
		want: &Suback{PacketID: 3, ReturnCodes: []ReasonCode{GrantedQoS0, GrantedQoS1, GrantedQoS2, SubackFailure}}},
	{name: "suback_single_failure", raw: []byte{0x90, 3, 0xFF, 0xFE, 0x80},
		want: &Suback{PacketID: 0xFFFE, ReturnCodes: []ReasonCode{SubackFailure}}},
	{name: "suback_flags_MQTT_2_2_2_2", raw: []byte{0x92, 3, 0, 3, 0}, err: ErrMalformed},
	{name: "suback_reserved_code_MQTT_3_9_3_2", raw: []byte{0x90, 3, 0, 3, 3}, err: ErrMalformed},
	{name: "suback_no_code", raw: []byte{0x90, 2, 0, 3}, err: ErrMalformed},
	{name: "suback_id0_MQTT_2_3_1_1", raw: []byte{0x90, 3, 0, 0, 0}, err: ErrMalformed},

	// UNSUBSCRIBE and UNSUBACK.
	{name: "unsubscribe_one_filter", raw: pkt(0xA2, 0, 2, lp("a/#")),
		want: &Unsubscribe{PacketID: 2, Filters: []string{"a/#"}}},
	{name: "unsubscribe_two_filters", raw: pkt(0xA2, 0, 2, lp("a"), lp("b/+/c")),
		want: &Unsubscribe{PacketID: 2, Filters: []string{"a", "b/+/c"}}},
	{name: "unsubscribe_filter_bad_utf8_MQTT_1_5_3_1", raw: pkt(0xA2, 0, 2, lp("a/\xc3")), err: ErrMalformed},
	{name: "unsubscribe_truncated_packet_id", raw: pkt(0xA2, 7), err: ErrMalformed},
	{name: "unsubscribe_no_filter_MQTT_3_10_3_2", raw: pkt(0xA2, 0, 2), err: ErrMalformed},
	{name: "unsubscribe_flags_0000_MQTT_3_10_1_1", raw: pkt(0xA0, 0, 2, lp("a")), err: ErrMalformed},
	{name: "unsubscribe_truncated_filter", raw: pkt(0xA2, 0, 2, 0, 5, "ab"), err: ErrMalformed},
	{name: "unsubscribe_empty_filter_MQTT_4_7_3_1", raw: pkt(0xA2, 0, 2, lp("a"), lp("")), err: ErrMalformed},
	{name: "unsubscribe_id0_MQTT_2_3_1_1", raw: pkt(0xA2, 0, 0, lp("a")), err: ErrMalformed},
	{name: "unsuback", raw: []byte{0xB0, 2, 0, 2}, want: &Unsuback{PacketID: 2}},
	{name: "unsuback_trailing_byte", raw: []byte{0xB0, 3, 0, 2, 0}, err: ErrMalformed},
	{name: "unsuback_flags_MQTT_2_2_2_2", raw: []byte{0xB2, 2, 0, 2}, err: ErrMalformed},
	{name: "unsuback_id0_MQTT_2_3_1_1", raw: []byte{0xB0, 2, 0, 0}, err: ErrMalformed},

	// PINGREQ, PINGRESP, DISCONNECT.
	{name: "pingreq", raw: []byte{0xC0, 0}, want: &Pingreq{}},
	{name: "pingresp", raw: []byte{0xD0, 0}, want: &Pingresp{}},
	{name: "disconnect", raw: []byte{0xE0, 0}, want: &Disconnect{}},
	{name: "pingreq_overlong_remaining_length", raw: []byte{0xC0, 0x80, 0x80, 0x00}, want: &Pingreq{}, nonCanonical: true},
	{name: "disconnect_with_body", raw: []byte{0xE0, 1, 0}, err: ErrMalformed},
	{name: "pingresp_with_body", raw: []byte{0xD0, 2, 0, 0}, err: ErrMalformed},
	{name: "disconnect_flags_MQTT_2_2_2_2", raw: []byte{0xE2, 0}, err: ErrMalformed},
	{name: "pingreq_flags_MQTT_2_2_2_2", raw: []byte{0xC1, 0}, err: ErrMalformed},

	// Fixed header.
	{name: "type0_reserved", raw: []byte{0x00, 0}, err: ErrMalformed},
	{name: "type15_reserved", raw: []byte{0xF0, 0}, err: ErrMalformed},
	{name: "remaining_length_five_bytes", raw: []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, err: ErrMalformed},
	{name: "remaining_length_256MB", raw: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, err: ErrPacketTooLarge},
	{name: "truncated_body", raw: []byte{0x30, 10, 0, 3, 'a'}, err: io.ErrUnexpectedEOF},
	{name: "truncated_remaining_length", raw: []byte{0x30, 0x80}, err: io.ErrUnexpectedEOF},
	{name: "empty_stream", raw: []byte{}, err: io.EOF},
	{name: "version5_not_decoded", raw: []byte{0xC0, 0}, version: Version5, err: ErrUnsupportedProtocol},
}
