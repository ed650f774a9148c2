package packets

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
)

// FuzzReadPacket feeds any bytes to a Reader. It must never panic, and every
// packet it decodes must survive Append and a second decode unchanged.
//
// Its seeds are testdata/fuzz/FuzzReadPacket, one file per case of the
// packetstest catalogue (see TestFuzzSeedCorpus_MatchesCatalogue), and one
// PUBLISH too large to keep there.
func FuzzReadPacket(f *testing.F) {
	f.Add(AppendPublish(nil, largeSeed))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 1<<16)
		for {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			enc, err := Append(nil, p)
			if err != nil {
				t.Fatalf("Append(%#v) of a decoded packet: %v", p, err)
			}
			again, err := NewReader(bytes.NewReader(enc), 1<<16).ReadPacket()
			if err != nil {
				t.Fatalf("decoding re-encoded %#v: %v", p, err)
			}
			if !reflect.DeepEqual(p, again) {
				t.Fatalf("round trip changed the packet:\n %#v\n %#v", p, again)
			}
		}
	})
}

// largeSeed is a QoS 0 PUBLISH whose 70,000-byte body (a four-byte
// Remaining Length) is beyond the Reader's retained body buffer.
var largeSeed = &Publish{Topic: "big", Payload: bytes.Repeat([]byte("b"), 70_000)}

// FuzzPublishDifferential checks the hand-written PUBLISH decoder and
// AppendPublish against Paho's PublishPacket: on every body both decoders
// accept they must agree field by field, and AppendPublish must produce the
// bytes Paho's Write produces.
//
// Where they legitimately differ, the fast path is the stricter one and Paho
// accepts what the spec calls malformed: QoS 3 [MQTT-3.3.1-4], packet id 0
// [MQTT-2.3.1-1], DUP on QoS 0 [MQTT-3.3.1-2], ill-formed UTF-8 or U+0000 in
// the topic [MQTT-1.5.3-1], [MQTT-1.5.3-2], and a topic or packet id cut
// short by the end of the body, which Paho's single Read zero-pads (it then
// usually fails its own payload length check, but not always). The test
// asserts the one-sided implication: whatever the fast path accepts, Paho
// accepts too, with the same fields.
//
// Its seeds are testdata/fuzz/FuzzPublishDifferential, the catalogue's
// PUBLISH cases, and one PUBLISH too large to keep there.
func FuzzPublishDifferential(f *testing.F) {
	raw := AppendPublish(nil, largeSeed)
	f.Add(byte(0), raw[len(raw)-publishBodyLen(largeSeed):])
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		h := fixedHeader{typ: TypePublish, flags: flags & 0x0F, remaining: len(body)}
		ours, err := decodePublish(h, body, false)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		paho := &pahopackets.PublishPacket{FixedHeader: pahopackets.FixedHeader{
			MessageType: pahopackets.Publish, Dup: h.dup(), Qos: h.qos(), Retain: h.retain(), RemainingLength: len(body),
		}}
		if err := paho.Unpack(bytes.NewBuffer(body)); err != nil {
			t.Fatalf("fast path accepted %#v, Paho refused: %v", ours, err)
		}
		if ours.Topic != paho.TopicName || ours.PacketID != paho.MessageID || !bytes.Equal(ours.Payload, paho.Payload) ||
			ours.QoS != paho.Qos || ours.Dup != paho.Dup || ours.Retain != paho.Retain {
			t.Fatalf("decoders disagree:\n ours %#v\n paho %#v", ours, paho)
		}
		var want bytes.Buffer
		if err := paho.Write(&want); err != nil {
			t.Fatal(err)
		}
		if got := AppendPublish(nil, ours); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("AppendPublish =\n % x\nPaho Write =\n % x", got, want.Bytes())
		}
	})
}

// FuzzDecodeDifferential checks the decoders of every type but PUBLISH
// (which FuzzPublishDifferential covers) against oracleDecode, the previous
// decoding path: this package's structural checks followed by Paho's
// 3.1/3.1.1 Unpack. Both must accept or both refuse, with the same sentinel
// error (and, for an unsupported protocol, the same *Connect beside it);
// what both accept must decode to the same fields. Every accepted body must
// also encode back to exactly the bytes it came from, and to the bytes
// Paho's Write produces for it.
//
// The fixed header's flags are checked by checkFlags before any decoder
// runs, on both paths alike, so inputs whose flags it refuses are skipped.
// Its seeds are testdata/fuzz/FuzzDecodeDifferential, the catalogue's cases
// of every type but PUBLISH.
func FuzzDecodeDifferential(f *testing.F) {
	f.Fuzz(func(t *testing.T, first byte, body []byte) {
		h := fixedHeader{typ: Type(first >> 4), flags: first & 0x0F, remaining: len(body)}
		if h.typ == TypePublish || checkFlags(h.typ, h.flags) != nil || len(body) > MaxRemainingLength {
			return
		}
		ours, errOurs := decode(h, append([]byte(nil), body...), false, false, nil)
		theirs, errTheirs := oracleDecode(h, body)
		if (errOurs == nil) != (errTheirs == nil) {
			t.Fatalf("% x: decoders disagree:\n ours %#v, %v\n oracle %#v, %v", body, ours, errOurs, theirs, errTheirs)
		}
		if errOurs != nil {
			for _, sentinel := range []error{ErrMalformed, ErrUnsupportedProtocol} {
				if errors.Is(errOurs, sentinel) != errors.Is(errTheirs, sentinel) {
					t.Fatalf("% x: errors differ: ours %v, oracle %v", body, errOurs, errTheirs)
				}
			}
			if !errors.Is(errOurs, ErrMalformed) && !errors.Is(errOurs, ErrUnsupportedProtocol) {
				t.Fatalf("error %v wraps no sentinel", errOurs)
			}
		}
		if !reflect.DeepEqual(ours, theirs) {
			t.Fatalf("% x: decoders disagree:\n ours %#v\n oracle %#v", body, ours, theirs)
		}
		if errOurs != nil {
			return
		}
		enc, err := Append(nil, ours)
		if err != nil {
			t.Fatalf("Append(%#v): %v", ours, err)
		}
		want := appendRemainingLength([]byte{first}, len(body))
		want = append(want, body...)
		if !bytes.Equal(enc, want) {
			t.Fatalf("Append(decode(x)) =\n % x\nx =\n % x", enc, want)
		}
		cp, err := oracleUnpack(h, body)
		if err != nil {
			t.Fatal(err)
		}
		var paho bytes.Buffer
		if err := cp.Write(&paho); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, paho.Bytes()) {
			t.Fatalf("Append =\n % x\nPaho Write =\n % x", enc, paho.Bytes())
		}
	})
}
