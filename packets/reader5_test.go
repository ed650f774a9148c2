package packets

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// connect5 is a level 5 CONNECT with properties and a will.
var connect5 = &Connect{ProtocolName: "MQTT", ProtocolVersion: Version5, CleanSession: true, KeepAlive: 30, ClientID: "c5",
	Properties: &Properties{SessionExpiryInterval: new(uint32(300)), ReceiveMaximum: new(uint16(20))},
	Will:       &Will{Topic: "w", Payload: []byte("gone"), QoS: 1, Properties: &Properties{WillDelayInterval: new(uint32(10))}}}

// TestReader_Level5ConnectRefusedUntilAccepted_MQTT_3_1_2_2: a Reader that
// has not been told to accept 5.0 reports a level 5 CONNECT as an
// unsupported protocol, so a server that does not serve 5.0 answers it with
// CONNACK 0x01 as before; AcceptVersion5 decodes it.
func TestReader_Level5ConnectRefusedUntilAccepted_MQTT_3_1_2_2(t *testing.T) {
	raw, err := Append5(nil, connect5)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewReader(bytes.NewReader(raw), 0).ReadPacket()
	if !errors.Is(err, ErrUnsupportedProtocol) {
		t.Fatalf("without AcceptVersion5: %v, want ErrUnsupportedProtocol", err)
	}
	if want := (&Connect{ProtocolName: "MQTT", ProtocolVersion: Version5}); !reflect.DeepEqual(p, want) {
		t.Fatalf("packet beside the error = %#v, want %#v", p, want)
	}
	r := NewReader(bytes.NewReader(raw), 0)
	r.AcceptVersion5(true)
	if p, err = r.ReadPacket(); err != nil || !reflect.DeepEqual(p, connect5) {
		t.Fatalf("with AcceptVersion5: %#v, %v; want %#v", p, err, connect5)
	}
}

// TestReader_After5ConnectTheConnectionSpeaks5: once the session calls
// SetVersion with the CONNECT's level, every later packet decodes in the 5.0
// format, AUTH included.
func TestReader_After5ConnectTheConnectionSpeaks5(t *testing.T) {
	rest := []Packet{
		&Publish{QoS: 1, Topic: "t", PacketID: 1, Payload: []byte("p"),
			Properties: &Properties{UserProperties: []UserProperty{{Name: "k", Value: "v"}}}},
		&Puback{PacketID: 9, ReasonCode: NoMatchingSubscribers},
		&Subscribe{PacketID: 2, Subscriptions: []Subscription{{Filter: "a/#", QoS: 2, NoLocal: true, RetainHandling: 2}}},
		&Auth{ReasonCode: ReAuthenticate, Properties: &Properties{AuthenticationMethod: "m"}},
		&Disconnect{ReasonCode: DisconnectWithWill},
	}
	stream, err := Append5(nil, connect5)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rest {
		if stream, err = Append5(stream, p); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(bytes.NewReader(stream), 0)
	r.AcceptVersion5(true)
	c, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	r.SetVersion(c.(*Connect).ProtocolVersion)
	for i, want := range rest {
		got, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("packet %d = %#v, want %#v", i, got, want)
		}
	}
	if _, err := r.ReadPacket(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

// TestReader_AuthIsReservedBefore5_MQTT_2_1_3_1: type 15 is AUTH in 5.0
// only; a 3.1.1 connection sending it breaks the fixed header rules.
func TestReader_AuthIsReservedBefore5_MQTT_2_1_3_1(t *testing.T) {
	_, err := NewReader(bytes.NewReader([]byte{0xF0, 0}), 0).ReadPacket()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("AUTH on 3.1.1: %v, want ErrMalformed", err)
	}
}

// TestReader_OversizedV5BeforeBody: the limit holds for 5.0 as it does for
// 3.1.1, from the fixed header alone.
func TestReader_OversizedV5BeforeBody(t *testing.T) {
	src := &endlessReader{prefix: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}}
	r := NewReader(src, 1<<10)
	r.SetVersion(Version5)
	if _, err := r.ReadPacket(); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("err = %v, want ErrPacketTooLarge", err)
	}
	if code, _ := CodeOf(ErrPacketTooLarge); code != PacketTooLarge {
		t.Fatalf("code = 0x%02x", byte(code))
	}
}

func TestAppendVersion_ChoosesTheFormat(t *testing.T) {
	p := &Puback{PacketID: 3, ReasonCode: NotAuthorized, Properties: &Properties{ReasonString: "no"}}
	v311, _ := AppendVersion(nil, p, Version311)
	if want := []byte{0x40, 2, 0, 3}; !bytes.Equal(v311, want) {
		t.Fatalf("3.1.1: % x, want % x (5.0 fields left out)", v311, want)
	}
	v5, _ := AppendVersion(nil, p, Version5)
	if want := []byte{0x40, 9, 0, 3, 0x87, 5, 0x1F, 0, 2, 'n', 'o'}; !bytes.Equal(v5, want) {
		t.Fatalf("5.0: % x, want % x", v5, want)
	}
}

// TestAppend5_ShortForms_MQTT_3_4_2_1: Success without properties takes a
// Remaining Length of 2 (acks) or 0 (DISCONNECT, AUTH); a Reason Code
// without properties 3 or 1.
func TestAppend5_ShortForms_MQTT_3_4_2_1(t *testing.T) {
	tests := []struct {
		p    Packet
		want []byte
	}{
		{&Puback{PacketID: 1}, []byte{0x40, 2, 0, 1}},
		{&Pubrec{PacketID: 1, ReasonCode: QuotaExceeded}, []byte{0x50, 3, 0, 1, 0x97}},
		{&Pubrel{PacketID: 1, Properties: &Properties{}}, []byte{0x62, 3, 0, 1, 0}},
		{&Pubcomp{PacketID: 1, ReasonCode: PacketIdentifierNotFound}, []byte{0x70, 3, 0, 1, 0x92}},
		{&Disconnect{}, []byte{0xE0, 0}},
		{&Disconnect{ReasonCode: SessionTakenOver}, []byte{0xE0, 1, 0x8E}},
		{&Auth{}, []byte{0xF0, 0}},
		{&Connack{}, []byte{0x20, 3, 0, 0, 0}},
	}
	for _, tt := range tests {
		got, err := Append5(nil, tt.p)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("Append5(%#v) = % x, %v; want % x", tt.p, got, err, tt.want)
		}
	}
}

func TestAppend5_RefusesWhatTheReaderRefuses(t *testing.T) {
	long := strings.Repeat("x", 0x10000)
	tests := []struct {
		name string
		p    Packet
	}{
		{"publish_topic_alias_0_MQTT_3_3_2_8", &Publish{Topic: "t", Properties: &Properties{TopicAlias: new(uint16(0))}}},
		{"publish_session_expiry_not_allowed", &Publish{Topic: "t", Properties: &Properties{SessionExpiryInterval: new(uint32(1))}}},
		{"publish_subscription_identifier_0", &Publish{Topic: "t", Properties: &Properties{SubscriptionIdentifiers: []uint32{0}}}},
		{"publish_subscription_identifier_too_big", &Publish{Topic: "t", Properties: &Properties{SubscriptionIdentifiers: []uint32{MaxSubscriptionIdentifier + 1}}}},
		{"publish_payload_format_2", &Publish{Topic: "t", Properties: &Properties{PayloadFormatIndicator: new(byte(2))}}},
		{"publish_qos1_id0_MQTT_2_2_1_3", &Publish{QoS: 1, Topic: "t"}},
		{"publish_user_property_too_long", &Publish{Topic: "t", Properties: &Properties{UserProperties: []UserProperty{{Name: long}}}}},
		{"connect_receive_maximum_0", &Connect{ClientID: "c", Properties: &Properties{ReceiveMaximum: new(uint16(0))}}},
		{"connect_will_delay_outside_will", &Connect{ClientID: "c", Properties: &Properties{WillDelayInterval: new(uint32(1))}}},
		{"connect_session_expiry_in_will", &Connect{ClientID: "c", Will: &Will{Topic: "w", Properties: &Properties{SessionExpiryInterval: new(uint32(1))}}}},
		{"connect_will_qos3", &Connect{ClientID: "c", Will: &Will{Topic: "w", QoS: 3}}},
		{"connack_maximum_packet_size_0", &Connack{Properties: &Properties{MaximumPacketSize: new(uint32(0))}}},
		{"connack_311_return_code", &Connack{ReturnCode: RefusedNotAuthorized}},
		{"puback_undefined_code_MQTT_3_4_2_1", &Puback{PacketID: 1, ReasonCode: 0x05}},
		{"pubrel_puback_code_MQTT_3_6_2_1", &Pubrel{PacketID: 1, ReasonCode: NotAuthorized}},
		{"puback_id0", &Puback{}},
		{"subscribe_retain_handling_3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainHandling: 3}}}},
		{"subscribe_no_local_shared_MQTT_3_8_3_4", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$share/g/a", NoLocal: true}}}},
		{"subscribe_two_identifiers", &Subscribe{PacketID: 1, Properties: &Properties{SubscriptionIdentifiers: []uint32{1, 2}},
			Subscriptions: []Subscription{{Filter: "a"}}}},
		{"subscribe_empty_MQTT_3_8_3_2", &Subscribe{PacketID: 1}},
		{"subscribe_empty_filter_MQTT_4_7_3_1", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{}}}},
		{"unsubscribe_empty_MQTT_3_10_3_2", &Unsubscribe{PacketID: 1}},
		{"suback_no_code", &Suback{PacketID: 1}},
		{"suback_undefined_code_MQTT_3_9_3_2", &Suback{PacketID: 1, ReturnCodes: []ReasonCode{3}}},
		{"unsuback_undefined_code_MQTT_3_11_3_2", &Unsuback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS1}}},
		{"disconnect_undefined_code_MQTT_3_14_2_1", &Disconnect{ReasonCode: 0x01}},
		{"disconnect_topic_alias_not_allowed", &Disconnect{Properties: &Properties{TopicAlias: new(uint16(1))}}},
		{"auth_undefined_code_MQTT_3_15_2_1", &Auth{ReasonCode: NotAuthorized}},
		{"nil_publish", (*Publish)(nil)},
		{"nil_auth", (*Auth)(nil)},
	}
	for _, tt := range tests {
		dst := []byte("keep")
		out, err := Append5(dst, tt.p)
		if err == nil {
			t.Errorf("%s: Append5 accepted %#v: % x", tt.name, tt.p, out)
			continue
		}
		if tt.p != nil && !strings.HasPrefix(tt.name, "nil_") && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v does not wrap ErrMalformed", tt.name, err)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst changed to %q", tt.name, out)
		}
	}
}

// TestPublishSize5_IsTheEncodedLength: the size a server compares with a
// client's Maximum Packet Size is what AppendPublish5 writes, across the
// lengths where the Remaining Length and Property Length grow a byte.
func TestPublishSize5_IsTheEncodedLength(t *testing.T) {
	alias := uint16(3)
	for _, payload := range []int{0, 100, 127, 128, 16383, 16384, 70000} {
		for _, props := range []*Properties{nil, {TopicAlias: &alias}, {ContentType: strings.Repeat("c", 130)}} {
			for qos := byte(0); qos <= 2; qos++ {
				p := &Publish{QoS: qos, PacketID: 1, Topic: "a/b", Payload: make([]byte, payload), Properties: props}
				if got, want := PublishSize5(p), len(AppendPublish5(nil, p)); got != want {
					t.Errorf("payload %d props %+v QoS %d: PublishSize5 = %d, encoded %d", payload, props, qos, got, want)
				}
			}
		}
	}
}
