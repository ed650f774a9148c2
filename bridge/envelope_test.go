package bridge

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleMessage() *Message {
	return &Message{
		ID:       ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Topic:    "sensors/kitchen/temp",
		Payload:  []byte("21.5\x00\xff binary"),
		QoS:      1,
		Retain:   true,
		ClientID: "thermo-1",
		Node:     "node-a",
		Time:     time.UnixMilli(1_700_000_000_123),
	}
}

// sampleMessage5 is sampleMessage with every MQTT 5.0 property that travels.
func sampleMessage5() *Message {
	m := sampleMessage()
	one, expiry := byte(1), uint32(3600)
	m.Properties = &Properties{PayloadFormat: &one, MessageExpiry: &expiry, ContentType: "text/plain",
		ResponseTopic: "reply/to", CorrelationData: []byte{0, 1, 0xff},
		UserProperties: []UserProperty{{Name: "k", Value: "v"}, {Name: "k", Value: "v2"}, {Name: "", Value: ""}}}
	return m
}

func TestEnvelope_RoundTrip(t *testing.T) {
	long := strings.Repeat("x", 300) // a length that needs a two-byte varint
	tests := []struct {
		name     string
		msg      *Message
		streamID string
	}{
		{"full", sampleMessage(), ""},
		{"with stream id", sampleMessage(), "1700000000123-7"},
		{"empty fields", &Message{Topic: "a"}, ""},
		{"qos2 no retain", &Message{Topic: "a/b", QoS: 2, Payload: []byte(long), ClientID: long}, "0-1"},
		{"empty payload retain", &Message{Topic: "t", Retain: true, Payload: []byte{}}, ""},
		{"5.0 properties", sampleMessage5(), ""},
		{"5.0 properties with stream id", sampleMessage5(), "1700000000123-8"},
		{"5.0 empty properties", &Message{Topic: "a", Properties: &Properties{}}, "0-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := AppendEnvelope(nil, tt.msg, tt.streamID)
			if tt.streamID == "" && len(buf) != EnvelopeSize(tt.msg) {
				t.Fatalf("EnvelopeSize = %d, encoded %d bytes", EnvelopeSize(tt.msg), len(buf))
			}
			var got Message
			sid, err := DecodeEnvelope(string(buf), &got)
			if err != nil {
				t.Fatalf("DecodeEnvelope: %v", err)
			}
			if sid != tt.streamID {
				t.Fatalf("stream id = %q, want %q", sid, tt.streamID)
			}
			want := *tt.msg
			if got.ID != want.ID || got.Topic != want.Topic || got.QoS != want.QoS || got.Retain != want.Retain ||
				got.ClientID != want.ClientID || got.Node != want.Node || !got.Time.Equal(want.Time) ||
				!bytes.Equal(got.Payload, want.Payload) {
				t.Fatalf("decoded %+v, want %+v", got, want)
			}
			if !reflect.DeepEqual(got.Properties, want.Properties) {
				t.Fatalf("decoded properties %+v, want %+v", got.Properties, want.Properties)
			}
			wantVersion := EnvelopeVersion
			if want.Properties != nil {
				wantVersion = EnvelopeVersionProperties
			}
			if buf[0] != wantVersion {
				t.Fatalf("version %d, want %d", buf[0], wantVersion)
			}
		})
	}
}

// TestEnvelope_StreamIDAppendedByConcatenation checks the property the Lua
// publish script relies on: appending len+id to an envelope without a stream
// id yields the envelope with that id.
func TestEnvelope_StreamIDAppendedByConcatenation(t *testing.T) {
	m := sampleMessage()
	id := "1700000000123-42"
	concat := string(AppendEnvelope(nil, m, "")) + string([]byte{byte(len(id))}) + id
	if concat != string(AppendEnvelope(nil, m, id)) {
		t.Fatal("concatenated stream id differs from encoded one")
	}
}

// An envelope of the previous release (version 1, no properties section)
// still decodes, so replicas of two releases can share one Redis during a
// rolling upgrade; a message without properties is still written as one.
func TestEnvelope_Version1StillDecodes(t *testing.T) {
	// Bytes as the release before MQTT 5.0 properties wrote them.
	v1 := "\x01" + string(sampleMessage().ID[:]) + "\x05" + "\x00\x00\x01\x8b\xcf\xe5\x68\x7b" +
		"\x06node-a" + "\x08thermo-1" + "\x14sensors/kitchen/temp" + "\x0d21.5\x00\xff binary" + "\x031-1"
	var m Message
	sid, err := DecodeEnvelope(v1, &m)
	if err != nil || sid != "1-1" || m.Properties != nil || m.Topic != "sensors/kitchen/temp" || !m.Time.Equal(sampleMessage().Time) {
		t.Fatalf("decoded %+v, %q, %v", m, sid, err)
	}
	if got := string(AppendEnvelope(nil, sampleMessage(), "1-1")); got != v1 {
		t.Fatalf("a message without properties encodes as %q, want the version 1 bytes %q", got, v1)
	}
}

func TestDecodeEnvelope_Rejects(t *testing.T) {
	good := AppendEnvelope(nil, sampleMessage(), "1-1")
	withVersion := func(v byte) string { b := bytes.Clone(good); b[0] = v; return string(b) }
	good5 := AppendEnvelope(nil, sampleMessage5(), "")
	withSection := func(section string) string {
		b := AppendEnvelope(nil, &Message{Topic: "t"}, "")
		b[0] = EnvelopeVersionProperties
		return string(b) + string([]byte{byte(len(section))}) + section
	}
	withPresence := func(p byte) string { return withSection(string([]byte{p, 0, 0, 0, 0})) }
	withUserCount := func(n byte) string { return withSection(string([]byte{0, 0, 0, 0, n, 0, 0})) }
	withFlags := func(f byte) string { b := bytes.Clone(good); b[17] = f; return string(b) }
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrEnvelopeTruncated},
		{"unknown version", withVersion(3), ErrEnvelopeVersion},
		{"version zero", withVersion(0), ErrEnvelopeVersion},
		{"qos 3", withFlags(3), ErrEnvelopeMalformed},
		{"unknown flag", withFlags(0x10), ErrEnvelopeMalformed},
		{"fixed part cut", string(good[:10]), ErrEnvelopeTruncated},
		{"payload cut", string(good[:len(good)-8]), ErrEnvelopeTruncated},
		{"stream id cut", string(good[:len(good)-1]), ErrEnvelopeMalformed},
		{"trailing garbage", string(good) + "x", ErrEnvelopeMalformed},
		{"zero-length stream id", string(AppendEnvelope(nil, sampleMessage(), "")) + "\x00", ErrEnvelopeMalformed},
		{"varint overflow", string(good[:envelopeFixed]) + strings.Repeat("\xff", 11), ErrEnvelopeMalformed},
		{"properties cut", string(good5[:len(good5)-4]), ErrEnvelopeTruncated},
		{"unknown presence bit", withPresence(0x04), ErrEnvelopeMalformed},
		{"too many user properties", withUserCount(100), ErrEnvelopeTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			_, err := DecodeEnvelope(tt.in, &m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeEnvelope error = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzEnvelopeDecode(f *testing.F) {
	f.Add(string(AppendEnvelope(nil, sampleMessage(), "")))
	f.Add(string(AppendEnvelope(nil, sampleMessage(), "1-2")))
	f.Add(string(AppendEnvelope(nil, &Message{}, "")))
	f.Add(string(AppendEnvelope(nil, sampleMessage5(), "")))
	f.Add(string(AppendEnvelope(nil, sampleMessage5(), "1-3")))
	f.Add(string(AppendEnvelope(nil, &Message{Properties: &Properties{}}, "")))
	f.Add("\x01")
	f.Add("\x010000000000000000\x0000000000\x00\x00\x80\x00\x00") // non-minimal varint
	f.Fuzz(func(t *testing.T, in string) {
		var m Message
		sid, err := DecodeEnvelope(in, &m)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes (the time field
		// is the one lossy part: only whole milliseconds survive, and
		// they are what was decoded).
		if out := string(AppendEnvelope(nil, &m, sid)); out != in {
			t.Fatalf("re-encoded %q, decoded from %q", out, in)
		}
	})
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	m := sampleMessage()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEnvelope(buf[:0], m, "1700000000123-7")
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	in := string(AppendEnvelope(nil, sampleMessage(), "1700000000123-7"))
	var m Message
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEnvelope(in, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEnvelope_DecodeAllocations: every replica decodes every message it
// receives, so decoding allocates the payload and nothing else (the strings
// are views of the envelope), and with 5.0 properties only what they hold.
// A field name joined into an error message on every call once cost four
// allocations more per message.
func TestEnvelope_DecodeAllocations(t *testing.T) {
	tests := []struct {
		name string
		msg  *Message
		max  float64
	}{
		{"3.1.1 message: the payload", sampleMessage(), 1},
		// The payload, the Properties, its Payload Format and Message
		// Expiry pointers, the Correlation Data, the User Properties.
		{"5.0 properties: what they hold", sampleMessage5(), 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := string(AppendEnvelope(nil, tt.msg, "1700000000123-7"))
			var m Message
			got := testing.AllocsPerRun(200, func() {
				if _, err := DecodeEnvelope(in, &m); err != nil {
					t.Fatal(err)
				}
			})
			if got > tt.max {
				t.Errorf("DecodeEnvelope made %.0f allocations, want at most %.0f", got, tt.max)
			}
		})
	}
}
