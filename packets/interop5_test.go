package packets

import (
	"bytes"
	"reflect"
	"testing"

	paho5 "github.com/eclipse/paho.golang/packets"
)

// TestReadPacket_PahoGolangClientPackets: what a paho.golang client writes,
// a 5.0 Reader reads with the same fields. These are the packets an
// autopaho client sends and receives in a session.
func TestReadPacket_PahoGolangClientPackets(t *testing.T) {
	u8, u16, u32 := func(v byte) *byte { return &v }, func(v uint16) *uint16 { return &v }, func(v uint32) *uint32 { return &v }
	sid := 7
	tests := []struct {
		name string
		p    *paho5.ControlPacket
	}{
		{"connect", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.CONNECT}, Content: &paho5.Connect{
			ProtocolName: "MQTT", ProtocolVersion: 5, CleanStart: true, KeepAlive: 30, ClientID: "auto",
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p"),
			WillFlag: true, WillQOS: 1, WillTopic: "w", WillMessage: []byte("bye"),
			WillProperties: &paho5.Properties{WillDelayInterval: u32(5), User: []paho5.User{{Key: "k", Value: "v"}}},
			Properties: &paho5.Properties{SessionExpiryInterval: u32(60), ReceiveMaximum: u16(10), RequestProblemInfo: u8(1),
				MaximumPacketSize: u32(4096), TopicAliasMaximum: u16(3), User: []paho5.User{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}}}}},
		{"publish", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.PUBLISH}, Content: &paho5.Publish{
			QoS: 2, Retain: true, Topic: "t/1", PacketID: 9, Payload: []byte("x"), Properties: &paho5.Properties{
				PayloadFormat: u8(1), MessageExpiry: u32(30), ContentType: "text/plain", ResponseTopic: "r",
				CorrelationData: []byte{1, 2}, TopicAlias: u16(2), SubscriptionIdentifier: &sid}}}},
		{"puback", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.PUBACK}, Content: &paho5.Puback{
			PacketID: 3, ReasonCode: 0x10, Properties: &paho5.Properties{ReasonString: "none"}}}},
		{"pubrel", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.PUBREL, Flags: 2}, Content: &paho5.Pubrel{
			PacketID: 3, Properties: &paho5.Properties{}}}},
		{"subscribe", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.SUBSCRIBE, Flags: 2}, Content: &paho5.Subscribe{
			PacketID: 4, Properties: &paho5.Properties{SubscriptionIdentifier: &sid},
			Subscriptions: []paho5.SubOptions{{Topic: "a/#", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Topic: "$share/g/b", QoS: 2}}}}},
		{"unsubscribe", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.UNSUBSCRIBE, Flags: 2}, Content: &paho5.Unsubscribe{
			PacketID: 5, Topics: []string{"a/#"}, Properties: &paho5.Properties{User: []paho5.User{{Key: "k", Value: "v"}}}}}},
		{"disconnect", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.DISCONNECT}, Content: &paho5.Disconnect{
			ReasonCode: 0x04, Properties: &paho5.Properties{SessionExpiryInterval: u32(0)}}}},
		{"auth", &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.AUTH}, Content: &paho5.Auth{
			ReasonCode: 0x18, Properties: &paho5.Properties{AuthMethod: "SCRAM", AuthData: []byte("d")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if _, err := tt.p.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&buf, 0)
			r.AcceptVersion5(true)
			if tt.name != "connect" {
				r.SetVersion(Version5)
			}
			got, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("reading paho.golang's % x: %v", buf.Bytes(), err)
			}
			if want := fromPaho5(tt.p); !reflect.DeepEqual(got, want) {
				t.Fatalf("read\n %#v\nwant\n %#v", got, want)
			}
		})
	}
}

// TestPahoGolang_DropsWillMessageProperties records a paho.golang v0.23.0
// bug that end-to-end tests of will properties will meet: Connect.Buffers
// packs the Will Properties with Properties.Pack(CONNECT), which writes
// Payload Format Indicator, Message Expiry Interval, Content Type, Response
// Topic and Correlation Data only for PUBLISH, so a paho.golang client
// never sends them in its will (section 3.1.3.2 allows all five). Only
// Will Delay Interval and User Properties reach the server. If this test
// fails, paho.golang has fixed it.
func TestPahoGolang_DropsWillMessageProperties(t *testing.T) {
	expiry := uint32(60)
	cp := &paho5.ControlPacket{FixedHeader: paho5.FixedHeader{Type: paho5.CONNECT}, Content: &paho5.Connect{
		ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "c", WillFlag: true, WillTopic: "w",
		WillProperties: &paho5.Properties{ContentType: "text/plain", MessageExpiry: &expiry, WillDelayInterval: &expiry},
		Properties:     &paho5.Properties{}}}
	var buf bytes.Buffer
	if _, err := cp.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf, 0)
	r.AcceptVersion5(true)
	p, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	want := &Properties{WillDelayInterval: &expiry}
	if got := p.(*Connect).Will.Properties; !reflect.DeepEqual(got, want) {
		t.Fatalf("will properties from paho.golang = %+v, want only the will delay %+v", got, want)
	}
}
