package session

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
)

// newTestSession5 is newTestSession for a 5.0 connection, with what its
// CONNECT asked set by the caller on s.v5.
func newTestSession5(t *testing.T, maxInflight, maxQueued int) *Session {
	t.Helper()
	s := newTestSession(t, maxInflight, maxQueued)
	s.version = packets.Version5
	s.v5.problemInfo = true
	return s
}

// decodeAll5 decodes every 5.0 packet in buf.
func decodeAll5(t *testing.T, buf []byte) []packets.Packet {
	t.Helper()
	r := packets.NewReader(bytes.NewReader(buf), 0)
	r.SetVersion(packets.Version5)
	var out []packets.Packet
	for {
		p, err := r.ReadPacket()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("decode written bytes: %v", err)
		}
		out = append(out, p)
	}
}

func alias(a uint16) *packets.Properties { return &packets.Properties{TopicAlias: &a} }

// Section 3.3.2.3.4: a PUBLISH with a topic and an alias sets the alias,
// one with an empty topic uses it; an alias above the Topic Alias Maximum
// is 0x94 [MQTT-3.3.2-9], an empty topic with an alias not set on this
// connection a Protocol Error. The alias never stays on the packet.
func TestResolveAlias_SetUseAndRefuse_MQTT_3_3_2_9(t *testing.T) {
	type step struct {
		topic     string
		alias     uint16
		wantTopic string
		wantErr   error
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"topic and alias set it, empty topic uses it", 10, []step{
			{"a/b", 1, "a/b", nil}, {"", 1, "a/b", nil}, {"c", 10, "c", nil}, {"", 10, "c", nil}}},
		{"an alias is set again with a new topic", 10, []step{
			{"a", 3, "a", nil}, {"b", 3, "b", nil}, {"", 3, "b", nil}}},
		{"alias above the maximum is 0x94", 10, []step{{"a", 11, "", ErrTopicAliasInvalid}}},
		{"maximum 0 takes no alias", 0, []step{{"a", 1, "", ErrTopicAliasInvalid}}},
		{"empty topic with an unknown alias is a protocol error", 10, []step{
			{"a", 1, "a", nil}, {"", 2, "", ErrProtocolViolation}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession5(t, 10, 10)
			s.env.Config.TopicAliasMaximum = tt.max
			for i, st := range tt.steps {
				p := &packets.Publish{Topic: st.topic, Properties: alias(st.alias)}
				err := s.resolveAlias(p)
				if !errors.Is(err, st.wantErr) || (st.wantErr == nil) != (err == nil) {
					t.Fatalf("step %d: err %v, want %v", i, err, st.wantErr)
				}
				if err == nil && p.Topic != st.wantTopic {
					t.Fatalf("step %d: topic %q, want %q", i, p.Topic, st.wantTopic)
				}
				if p.Properties.TopicAlias != nil {
					t.Fatalf("step %d: the Topic Alias stays on the packet, to reach subscribers", i)
				}
			}
		})
	}
}

// [MQTT-3.3.2-7] aliases are the connection's: a new connection of the
// same client starts with none.
func TestResolveAlias_NotCarriedToTheNextConnection_MQTT_3_3_2_7(t *testing.T) {
	first := newTestSession5(t, 10, 10)
	first.env.Config.TopicAliasMaximum = 10
	if err := first.resolveAlias(&packets.Publish{Topic: "a", Properties: alias(1)}); err != nil {
		t.Fatal(err)
	}
	next := newTestSession5(t, 10, 10)
	next.env.Config.TopicAliasMaximum = 10
	if err := next.resolveAlias(&packets.Publish{Properties: alias(1)}); !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("alias of the previous connection used: err %v", err)
	}
}

// [MQTT-3.3.4-7] a 5.0 client may have at most the server's Receive
// Maximum QoS 1 and 2 PUBLISH flows open: a QoS 1 flow ends with the
// PUBACK, a QoS 2 one with a PUBREC of 0x80 or above or with the PUBCOMP.
// A QoS 2 PUBLISH re-sent before PUBREL opens none, and ids restored from
// a stored session do not count (the quota starts afresh, section 4.9).
func TestOpenInbound_ReceiveMaximum_MQTT_3_3_4_7(t *testing.T) {
	type op struct {
		kind    string // "pub1", "pub2", "puback", "pubrel", "refuse2"
		id      uint16
		wantErr bool
	}
	tests := []struct {
		name     string
		version  packets.Version
		restored []uint16
		ops      []op
	}{
		{"QoS 1 past the maximum", packets.Version5, nil, []op{
			{"pub1", 1, false}, {"pub1", 2, false}, {"pub1", 3, true}}},
		{"a PUBACK makes room", packets.Version5, nil, []op{
			{"pub1", 1, false}, {"pub1", 2, false}, {"puback", 1, false}, {"pub1", 3, false}, {"pub1", 4, true}}},
		{"QoS 2 counts until PUBCOMP, not PUBREC", packets.Version5, nil, []op{
			{"pub2", 1, false}, {"pub2", 2, false}, {"pub1", 3, true}}},
		{"PUBREL ends a QoS 2 flow", packets.Version5, nil, []op{
			{"pub2", 1, false}, {"pub2", 2, false}, {"pubrel", 1, false}, {"pub2", 3, false}, {"pub1", 4, true}}},
		{"a refusing PUBREC ends a QoS 2 flow", packets.Version5, nil, []op{
			{"pub2", 1, false}, {"pub2", 2, false}, {"refuse2", 2, false}, {"pub1", 3, false}}},
		{"a re-sent QoS 2 PUBLISH opens no flow", packets.Version5, nil, []op{
			{"pub2", 1, false}, {"pub2", 1, false}, {"pub2", 1, false}, {"pub1", 2, false}}},
		{"restored ids do not count", packets.Version5, []uint16{7, 8, 9}, []op{
			{"pub1", 1, false}, {"pub1", 2, false}, {"pubrel", 7, false}, {"pub1", 3, true}}},
		{"3.1.1 has no Receive Maximum", packets.Version311, nil, []op{
			{"pub1", 1, false}, {"pub1", 2, false}, {"pub2", 3, false}, {"pub1", 4, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, 2, 10)
			s.version = tt.version
			if tt.restored != nil {
				s.restore(&broker.StoredSession{AwaitingRelease: tt.restored})
			}
			for i, o := range tt.ops {
				var err error
				switch o.kind {
				case "pub1":
					_, err = s.openInbound(1, o.id)
				case "pub2":
					_, err = s.openInbound(2, o.id)
				case "puback":
					s.accepted(1, o.id, time.Time{}, nil)
				case "pubrel":
					s.onPubrel(o.id)
				case "refuse2":
					s.refusePublish(2, o.id, packets.NotAuthorized, "no")
				}
				if (err != nil) != o.wantErr || (err != nil && !errors.Is(err, ErrReceiveMaximumExceeded)) {
					t.Fatalf("op %d %s %d: err %v, want error %v", i, o.kind, o.id, err, o.wantErr)
				}
			}
		})
	}
}

// [MQTT-3.1.2-24] [MQTT-3.1.2-25] a PUBLISH larger than the client's
// Maximum Packet Size is not sent: it takes no packet id or inflight slot,
// is counted, and what follows it goes out.
func TestFill_ClientMaximumPacketSize_MQTT_3_1_2_25(t *testing.T) {
	s := newTestSession5(t, 10, 10)
	s.v5.maxPacket = 64
	big := &broker.Message{Topic: "t", Payload: bytes.Repeat([]byte("x"), 100), QoS: 1}
	exact := &broker.Message{Topic: "t", Payload: bytes.Repeat([]byte("y"), 64-8), QoS: 1} // 1+1 header, 3 topic, 2 id, 1 props
	for _, m := range []*broker.Message{big, message("small", 1), exact, big} {
		s.enqueue(outgoing{msg: m, qos: 1})
	}
	got := decodeAll5(t, s.fill(nil, false))
	if len(got) != 2 {
		t.Fatalf("sent %d packets, want the 2 that fit", len(got))
	}
	if p := got[1].(*packets.Publish); len(p.Payload) != 56 || p.PacketID != 2 {
		t.Fatalf("second packet %q id %d, want the one of exactly 64 bytes with id 2", p.Payload, p.PacketID)
	}
	if len(s.inflight) != 2 {
		t.Errorf("%d in flight, want 2: a dropped message takes no slot", len(s.inflight))
	}
	if n := s.env.Stats.DroppedTooLarge.Load(); n != 2 {
		t.Errorf("DroppedTooLarge = %d, want 2", n)
	}
	if s.queuedBytes != 0 {
		t.Errorf("queuedBytes %d after everything left the queue", s.queuedBytes)
	}
}

// Section 3.3.2.3.4: the server gives topics aliases while the client's
// Topic Alias Maximum allows, sends the topic with the alias once and then
// the alias alone; past the maximum it sends full topics, never a larger
// alias [MQTT-3.3.2-11].
func TestFill_TopicAliasesToClient_MQTT_3_3_2_11(t *testing.T) {
	s := newTestSession5(t, 10, 10)
	s.v5.aliasMaxOut = 2
	for _, topic := range []string{"a/1", "b/2", "a/1", "c/3", "b/2", "c/3"} {
		s.enqueue(outgoing{msg: message(topic, 0)})
	}
	type want struct {
		topic string
		alias uint16 // 0: none
	}
	wants := []want{{"a/1", 1}, {"b/2", 2}, {"", 1}, {"c/3", 0}, {"", 2}, {"c/3", 0}}
	got := decodeAll5(t, s.fill(nil, false))
	if len(got) != len(wants) {
		t.Fatalf("sent %d packets, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		p := got[i].(*packets.Publish)
		var a uint16
		if p.Properties != nil && p.Properties.TopicAlias != nil {
			a = *p.Properties.TopicAlias
		}
		if p.Topic != w.topic || a != w.alias {
			t.Errorf("packet %d: topic %q alias %d, want %q alias %d", i, p.Topic, a, w.topic, w.alias)
		}
	}
}

// An alias is not set by a PUBLISH that is not sent: a message too large
// for the client leaves the next one of its topic to set the alias.
func TestFill_TopicAliasNotSetByADroppedPublish(t *testing.T) {
	s := newTestSession5(t, 10, 10)
	s.v5.aliasMaxOut, s.v5.maxPacket = 5, 40
	s.enqueue(outgoing{msg: &broker.Message{Topic: "a", Payload: bytes.Repeat([]byte("x"), 50)}})
	s.enqueue(outgoing{msg: message("a", 0)})
	got := decodeAll5(t, s.fill(nil, false))
	if len(got) != 1 {
		t.Fatalf("sent %d packets, want 1", len(got))
	}
	if p := got[0].(*packets.Publish); p.Topic != "a" || p.Properties == nil || p.Properties.TopicAlias == nil {
		t.Fatalf("got topic %q properties %+v, want the topic with its new alias", p.Topic, p.Properties)
	}
}

// [MQTT-3.1.2-24] [MQTT-3.1.2-25] the client's Maximum Packet Size is
// checked on the PUBLISH as it is sent, Topic Alias included: an alias-only
// form larger than the full topic's (a topic of 1 byte) goes with the full
// topic instead, and one smaller (a longer topic) is sent where the full
// topic would not fit.
func TestFill_MaximumPacketSizeMeasuresTheAliasedForm_MQTT_3_1_2_24(t *testing.T) {
	tests := []struct {
		name     string
		topic    string
		payloads []int
		sent     int      // PUBLISH packets sent
		aliased  []string // per packet sent: "set" (topic and alias), "only" (alias), "full" (topic, no alias)
	}{
		// Topic "a": with the alias set 9+P bytes, alias only 8+P, full 6+P.
		{"alias only would be too large", "a", []int{31, 32, 33}, 3, []string{"set", "only", "full"}},
		// Topic "mp/x": with the alias set 12+P, alias only 8+P, full 9+P.
		{"alias only fits where the full topic does not", "mp/x", []int{28, 32}, 2, []string{"set", "only"}},
		// Nothing fits: dropped, and no alias is set by it.
		{"too large either way", "mp/x", []int{40, 28}, 1, []string{"set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession5(t, 10, 10)
			s.v5.aliasMaxOut, s.v5.maxPacket = 5, 40
			for _, n := range tt.payloads {
				s.enqueue(outgoing{msg: &broker.Message{Topic: tt.topic, Payload: bytes.Repeat([]byte("x"), n)}})
			}
			got := decodeAll5(t, s.fill(nil, false))
			if len(got) != tt.sent {
				t.Fatalf("sent %d packets, want %d", len(got), tt.sent)
			}
			for i, pk := range got {
				p := pk.(*packets.Publish)
				if size := packets.PublishSize5(p); size > s.v5.maxPacket {
					t.Fatalf("packet %d is %d bytes, over the client's %d", i, size, s.v5.maxPacket)
				}
				form := "full"
				switch {
				case p.Properties != nil && p.Properties.TopicAlias != nil && p.Topic == "":
					form = "only"
				case p.Properties != nil && p.Properties.TopicAlias != nil:
					form = "set"
				}
				if form != tt.aliased[i] {
					t.Fatalf("packet %d sent as %q (topic %q), want %q", i, form, p.Topic, tt.aliased[i])
				}
			}
		})
	}
}

// [MQTT-3.1.2-29] a client that sets Request Problem Information to 0 gets
// no Reason String on acknowledgements (CONNACK and DISCONNECT may still
// carry one); one that leaves the default gets it, unless the packet would
// then exceed its Maximum Packet Size [MQTT-3.4.2-2].
func TestAppendAck_ReasonString_MQTT_3_1_2_29(t *testing.T) {
	tests := []struct {
		name        string
		problemInfo bool
		maxPacket   int
		want        string
	}{
		{"asked (the default)", true, 0, "not authorized"},
		{"not asked", false, 0, ""},
		{"too large for the client", true, 10, ""},
		{"fits the client", true, 40, "not authorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession5(t, 10, 10)
			s.v5.problemInfo, s.v5.maxPacket = tt.problemInfo, tt.maxPacket
			s.refusePublish(1, 5, packets.NotAuthorized, "not authorized")
			got := decodeAll5(t, s.fill(nil, false))
			if len(got) != 1 {
				t.Fatalf("sent %d packets, want the PUBACK", len(got))
			}
			ack := got[0].(*packets.Puback)
			var reason string
			if ack.Properties != nil {
				reason = ack.Properties.ReasonString
			}
			if ack.ReasonCode != packets.NotAuthorized || reason != tt.want {
				t.Fatalf("PUBACK 0x%02x reason %q, want 0x87 reason %q", ack.ReasonCode, reason, tt.want)
			}
		})
	}
}

func TestReasonString_WellFormedAndBounded(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"tab\tand\nnewline", "tab and newline"},
		{"bad \xff byte", "bad   byte"},
		{strings.Repeat("é", 200), strings.Repeat("é", maxReasonString/2)},
	}
	for _, tt := range tests {
		if got := reasonString(tt.in); got != tt.want {
			t.Errorf("reasonString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// [MQTT-3.1.2-25] an unacknowledged message of a stored session that is too
// large for the Maximum Packet Size the client now states is not re-sent:
// it is done with as if it had been, and its packet id is free.
func TestRestore_InflightTooLargeForTheClientIsDropped_MQTT_3_1_2_25(t *testing.T) {
	s := newTestSession5(t, 10, 10)
	s.v5.maxPacket = 50
	big := &broker.Message{Topic: "t", Payload: bytes.Repeat([]byte("x"), 60), QoS: 1}
	s.restore(&broker.StoredSession{Inflight: []broker.Inflight{
		{PacketID: 1, Delivery: broker.Delivery{Message: big, QoS: 1}},
		{PacketID: 2, Delivery: broker.Delivery{Message: message("small", 1), QoS: 1}},
	}})
	got := decodeAll5(t, s.fill(nil, false))
	if len(got) != 1 || got[0].(*packets.Publish).PacketID != 2 || !got[0].(*packets.Publish).Dup {
		t.Fatalf("re-sent %v, want only packet 2 with DUP", got)
	}
	if _, held := s.inflight[1]; held {
		t.Error("the dropped message still holds packet id 1")
	}
	if n := s.env.Stats.DroppedTooLarge.Load(); n != 1 {
		t.Errorf("DroppedTooLarge = %d, want 1", n)
	}
}

// connect5 reads what a 5.0 CONNECT asks and states the server's answer in
// the CONNACK properties: Server Keep Alive only when -server-keep-alive
// differs from the client's [MQTT-3.2.2-21] [MQTT-3.2.2-22]; Topic Alias
// Maximum = -topic-alias-maximum; the aliases the server uses at most the
// client's Topic Alias Maximum [MQTT-3.1.2-26], none without one
// [MQTT-3.1.2-27]; Request Problem Information defaults to 1.
func TestConnect5_ReadsTheConnectAndStatesTheServer(t *testing.T) {
	type want struct {
		serverKeepAlive *uint16 // nil: absent
		keepAlive       time.Duration
		aliasMaxOut     uint16
		maxPacket       int
		problemInfo     bool
	}
	tests := []struct {
		name        string
		keepAlive   uint16
		props       *packets.Properties
		cfgKA       time.Duration
		cfgAliasMax int
		want        want
	}{
		{"defaults", 30, nil, 0, 10, want{nil, 30 * time.Second, 0, 0, true}},
		{"server keep alive differs", 30, nil, 5 * time.Second, 10, want{new(uint16(5)), 5 * time.Second, 0, 0, true}},
		{"server keep alive for a client asking 0", 0, nil, 5 * time.Second, 10, want{new(uint16(5)), 5 * time.Second, 0, 0, true}},
		{"server keep alive the client's", 5, nil, 5 * time.Second, 10, want{nil, 5 * time.Second, 0, 0, true}},
		{"client takes fewer aliases than the server", 30, &packets.Properties{TopicAliasMaximum: new(uint16(3))}, 0, 10, want{nil, 30 * time.Second, 3, 0, true}},
		{"client takes more aliases than the server", 30, &packets.Properties{TopicAliasMaximum: new(uint16(300))}, 0, 10, want{nil, 30 * time.Second, 10, 0, true}},
		{"server takes none", 30, &packets.Properties{TopicAliasMaximum: new(uint16(3))}, 0, 0, want{nil, 30 * time.Second, 0, 0, true}},
		{"maximum packet size and no problem information", 30,
			&packets.Properties{MaximumPacketSize: new(uint32(1000)), RequestProblemInformation: new(byte(0))}, 0, 10, want{nil, 30 * time.Second, 0, 1000, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, 10, 10)
			s.version = packets.Version5
			s.env.Config.ServerKeepAlive, s.env.Config.TopicAliasMaximum = tt.cfgKA, tt.cfgAliasMax
			s.keepAlive = time.Duration(tt.keepAlive) * time.Second // as handshake sets it
			p := s.connect5(&packets.Connect{ProtocolVersion: packets.Version5, KeepAlive: tt.keepAlive, Properties: tt.props})
			if (p.ServerKeepAlive == nil) != (tt.want.serverKeepAlive == nil) ||
				(p.ServerKeepAlive != nil && *p.ServerKeepAlive != *tt.want.serverKeepAlive) {
				t.Errorf("Server Keep Alive %v, want %v", deref(p.ServerKeepAlive), deref(tt.want.serverKeepAlive))
			}
			if p.TopicAliasMaximum == nil || int(*p.TopicAliasMaximum) != tt.cfgAliasMax {
				t.Errorf("Topic Alias Maximum %v, want %d", deref(p.TopicAliasMaximum), tt.cfgAliasMax)
			}
			got := want{p.ServerKeepAlive, s.keepAlive, s.v5.aliasMaxOut, s.v5.maxPacket, s.v5.problemInfo}
			got.serverKeepAlive = tt.want.serverKeepAlive // compared above
			if got != tt.want {
				t.Errorf("session: keep-alive %s, aliases out %d, max packet %d, problem info %v; want %s, %d, %d, %v",
					got.keepAlive, got.aliasMaxOut, got.maxPacket, got.problemInfo,
					tt.want.keepAlive, tt.want.aliasMaxOut, tt.want.maxPacket, tt.want.problemInfo)
			}
		})
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "absent"
	}
	return *p
}

// connect5 asks Clean Start and the Session Expiry Interval apart: Clean
// Start is the CONNECT's flag alone [MQTT-3.1.2-4] [MQTT-3.1.2-5], and an
// interval above 0 keeps the session, new or resumed, for that interval
// cut to -session-expiry [MQTT-3.1.2-23]; CONNACK states an interval only
// when it is not the client's (section 3.2.2.3.2), never 0 for a Clean
// Start session.
func TestConnect5_CleanStartAndSessionExpiry_MQTT_3_1_2_4(t *testing.T) {
	tests := []struct {
		name       string
		cleanStart bool
		expiry     *uint32 // nil: absent
		bound      time.Duration
		clean      bool          // the session ends with the connection
		kept       time.Duration // s.expiry: 0 for the bound
		connack    any           // CONNACK's Session Expiry Interval
	}{
		{"clean start, no interval", true, nil, time.Hour, true, 0, "absent"},
		{"clean start, interval kept", true, new(uint32(60)), time.Hour, false, time.Minute, "absent"},
		{"clean start, interval cut", true, new(uint32(7200)), time.Hour, false, time.Hour, uint32(3600)},
		{"resume, no interval", false, nil, time.Hour, true, 0, "absent"},
		{"resume, interval 0", false, new(uint32(0)), time.Hour, true, 0, "absent"},
		{"resume, interval kept", false, new(uint32(60)), time.Hour, false, time.Minute, "absent"},
		{"resume, never cut to the bound", false, new(uint32(0xFFFFFFFF)), time.Hour, false, 0, uint32(3600)},
		{"clean start, never and no bound", true, new(uint32(0xFFFFFFFF)), 0, false, 0, "absent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, 10, 10)
			s.version = packets.Version5
			s.env.Config.SessionExpiry = tt.bound
			s.clean, s.cleanStart = tt.cleanStart, tt.cleanStart // as handshake sets them
			var props *packets.Properties
			if tt.expiry != nil {
				props = &packets.Properties{SessionExpiryInterval: tt.expiry}
			}
			p := s.connect5(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: tt.cleanStart, Properties: props})
			if s.clean != tt.clean || s.cleanStart != tt.cleanStart || s.expiry != tt.kept {
				t.Errorf("clean %v, clean start %v, expiry %s; want %v, %v, %s", s.clean, s.cleanStart, s.expiry, tt.clean, tt.cleanStart, tt.kept)
			}
			if got := deref(p.SessionExpiryInterval); got != tt.connack {
				t.Errorf("CONNACK Session Expiry Interval %v, want %v", got, tt.connack)
			}
		})
	}
}

// onDisconnect5 applies a DISCONNECT's Session Expiry Interval to a session
// whatever its Clean Start (section 3.14.2.2.2): 0 ends it
// [MQTT-3.1.2-23], another value replaces the CONNECT's, cut to
// -session-expiry; one above 0 after a CONNECT's 0 is a protocol error
// [MQTT-3.14.2-2].
func TestOnDisconnect5_SessionExpiry_MQTT_3_14_2_2(t *testing.T) {
	tests := []struct {
		name       string
		cleanStart bool
		connect    uint32
		disconnect uint32
		clean      bool
		kept       time.Duration
		err        error
	}{
		{"clean start session shortened", true, 600, 5, false, 5 * time.Second, nil},
		{"clean start session lengthened, cut", true, 5, 7200, false, time.Hour, nil},
		{"clean start session ended", true, 600, 0, true, 10 * time.Minute, nil},
		{"resumed session ended", false, 600, 0, true, 10 * time.Minute, nil},
		{"never", false, 600, 0xFFFFFFFF, false, 0, nil},
		{"interval after CONNECT's 0", true, 0, 60, true, 0, ErrProtocolViolation},
		{"interval after CONNECT's 0, resumed", false, 0, 60, true, 0, ErrProtocolViolation},
		{"0 after CONNECT's 0", false, 0, 0, true, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t, 10, 10)
			s.version = packets.Version5
			s.env.Config.SessionExpiry = time.Hour
			s.clean, s.cleanStart = tt.cleanStart, tt.cleanStart
			s.connect5(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: tt.cleanStart,
				Properties: &packets.Properties{SessionExpiryInterval: new(tt.connect)}})
			err := s.onDisconnect5(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: new(tt.disconnect)}})
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if s.clean != tt.clean || s.expiry != tt.kept {
				t.Errorf("clean %v, expiry %s; want %v, %s", s.clean, s.expiry, tt.clean, tt.kept)
			}
		})
	}
}
