package packets

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzReadPacket5 feeds any bytes to a Reader set to MQTT 5.0. It must
// never panic, every error must carry a Reason Code or be an I/O error, and
// every packet it decodes must survive Append5 and a second decode
// unchanged.
//
// Its seeds are testdata/fuzz/FuzzReadPacket5, the catalogue's 5.0 cases.
func FuzzReadPacket5(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 1<<16)
		r.SetVersion(Version5)
		for {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			enc, err := appendAsRead5(p)
			if err != nil {
				t.Fatalf("Append5(%#v) of a decoded packet: %v", p, err)
			}
			r2 := NewReader(bytes.NewReader(enc), 1<<16)
			r2.SetVersion(Version5)
			again, err := r2.ReadPacket()
			if err != nil {
				t.Fatalf("decoding re-encoded %#v: %v", p, err)
			}
			if !reflect.DeepEqual(p, again) {
				t.Fatalf("round trip changed the packet:\n %#v\n %#v", p, again)
			}
		}
	})
}

// FuzzDecodeDifferential5 checks the 5.0 decoders of every type but
// PUBLISH (FuzzPublishDifferential5 covers it) against paho.golang's, as
// oracle5_test.go describes:
//
//   - whatever the native decoder accepts, paho.golang accepts with the
//     same fields (but for the Subscription Identifiers it drops);
//   - Append5 of what it accepts decodes back to the same packet, and is
//     the input itself when the input was canonical (Append5 is idempotent
//     on its own output);
//   - whatever paho.golang accepts and the native decoder refuses is either
//     a value the specification forbids (Append5 refuses it too, or a
//     string is ill-formed UTF-8) or a structural leniency of paho.golang's
//     listed in oracle5_test.go: then the canonical encoding of what
//     paho.golang read is not the input, and the native decoder accepts it
//     with the same fields;
//   - every refusal wraps ErrMalformed or ErrProtocol, whose Reason Codes
//     are 0x81 and 0x82, or (a Topic Alias of 0) ErrTopicAliasInvalid, 0x94.
//
// Its seeds are testdata/fuzz/FuzzDecodeDifferential5, the catalogue's 5.0
// cases of every type but PUBLISH.
func FuzzDecodeDifferential5(f *testing.F) {
	f.Fuzz(func(t *testing.T, first byte, body []byte) {
		h := fixedHeader{typ: Type(first >> 4), flags: first & 0x0F, remaining: len(body)}
		if h.typ == TypePublish || checkFlags5(h.typ, h.flags) != nil || len(body) > MaxRemainingLength {
			return
		}
		differential5(t, h, body)
	})
}

// FuzzPublishDifferential5 is FuzzDecodeDifferential5 for the PUBLISH fast
// path, decodePublish5 and AppendPublish5. Beyond the field comparison,
// AppendPublish5 must write the bytes paho.golang's WriteTo writes, when
// the two agree on the order of the properties (paho.golang writes Topic
// Alias before Subscription Identifier; Append5 writes ascending
// identifiers).
//
// Its seeds are testdata/fuzz/FuzzPublishDifferential5, the catalogue's 5.0
// PUBLISH cases.
func FuzzPublishDifferential5(f *testing.F) {
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		h := fixedHeader{typ: TypePublish, flags: flags & 0x0F, remaining: len(body)}
		if checkFlags5(h.typ, h.flags) != nil || len(body) > MaxRemainingLength {
			return
		}
		ours := differential5(t, h, body)
		if ours == nil {
			return
		}
		p := ours.(*Publish)
		if p.Properties != nil && (len(p.Properties.SubscriptionIdentifiers) > 1 ||
			len(p.Properties.SubscriptionIdentifiers) == 1 && p.Properties.TopicAlias != nil) {
			return
		}
		cp, err := pahoUnpack5(h, body)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if _, err := cp.WriteTo(&want); err != nil {
			t.Fatal(err)
		}
		if got := AppendPublish5(nil, p); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("AppendPublish5 =\n % x\npaho.golang WriteTo =\n % x", got, want.Bytes())
		}
	})
}

// differential5 runs the checks of FuzzDecodeDifferential5 on one body and
// returns the native decoder's packet, nil when it refused the body.
func differential5(t *testing.T, h fixedHeader, body []byte) Packet {
	t.Helper()
	ours, errOurs := decode5(h, append([]byte(nil), body...), false, nil)
	if errOurs != nil {
		code, ok := CodeOf(errOurs)
		if !ok || (code != MalformedPacket && code != ProtocolError && code != UnsupportedProtocolVersion && code != TopicAliasInvalid) {
			t.Fatalf("% x: error %v carries no codec reason code", body, errOurs)
		}
	}
	if errOurs == nil {
		checkRoundTrip5(t, h, body, ours)
	}
	if h.typ == TypeConnect && !isLevel5Connect(body) {
		return ours // paho.golang reads every CONNECT as 5.0
	}
	theirs, errTheirs := pahoUnpack5(h, body)
	switch {
	case errOurs == nil && errTheirs != nil && pahoStricter(h, body):
	case errOurs == nil && errTheirs != nil:
		t.Fatalf("% x: native decoder accepted %#v, paho.golang refused: %v", body, ours, errTheirs)
	case errOurs == nil:
		if got := fromPaho5(theirs); !reflect.DeepEqual(lastSubscriptionIdentifier(ours), got) {
			t.Fatalf("% x: decoders disagree:\n native %#v\n paho   %#v", body, ours, got)
		}
	case errTheirs == nil:
		checkPahoLenient(t, h, body, fromPaho5(theirs), errOurs)
	}
	return ours
}

// checkRoundTrip5: Append5 of an accepted packet decodes back to it, and
// is the input unless the input was not canonical.
func checkRoundTrip5(t *testing.T, h fixedHeader, body []byte, p Packet) {
	t.Helper()
	enc, err := appendAsRead5(p)
	if err != nil {
		t.Fatalf("Append5(%#v): %v", p, err)
	}
	eh, ebody := splitPacket(t, enc)
	again, err := decode5(eh, ebody, false, nil)
	if err != nil {
		t.Fatalf("% x: decoding Append5's % x: %v", body, enc, err)
	}
	if !reflect.DeepEqual(again, p) {
		t.Fatalf("round trip changed the packet:\n %#v\n %#v", p, again)
	}
	if twice, _ := appendAsRead5(again); !bytes.Equal(twice, enc) {
		t.Fatalf("Append5 is not idempotent:\n % x\n % x", enc, twice)
	}
}

// appendAsRead5 encodes a packet a 5.0 Reader decoded: with Append5, but
// for a CONNECT of level 3 or 4, which a Reader decodes in its own format.
func appendAsRead5(p Packet) ([]byte, error) {
	if c, ok := p.(*Connect); ok && c.ProtocolVersion != Version5 {
		return Append(nil, p)
	}
	return Append5(nil, p)
}

// checkPahoLenient: paho.golang accepted what the native decoder refused
// with errOurs; what paho.golang read must be forbidden by value, or be the
// reading of a non-canonical encoding that the native decoder accepts once
// canonical.
func checkPahoLenient(t *testing.T, h fixedHeader, body []byte, theirs Packet, errOurs error) {
	t.Helper()
	enc, err := Append5(nil, theirs)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Append5 error %v wraps no sentinel", err)
		}
		return // a value the specification forbids
	}
	if !stringsValid(reflect.ValueOf(theirs)) {
		return // ill-formed UTF-8 [MQTT-1.5.4-1], [MQTT-1.5.4-2]
	}
	eh, ebody := splitPacket(t, enc)
	if eh.flags == h.flags && bytes.Equal(ebody, body) {
		t.Fatalf("% x: native decoder refused the canonical encoding of %#v: %v", body, theirs, errOurs)
	}
	again, err := decode5(eh, ebody, false, nil)
	if err != nil {
		t.Fatalf("% x: paho.golang read %#v, whose encoding % x the native decoder refuses: %v", body, theirs, enc, err)
	}
	if !reflect.DeepEqual(again, theirs) {
		t.Fatalf("% x: paho.golang read\n %#v\nits encoding decodes to\n %#v", body, theirs, again)
	}
}

// pahoStricter reports the inputs paho.golang refuses although the
// specification allows them: a DISCONNECT of Remaining Length 0, the
// shortest Normal Disconnection (section 3.14.2.1), which its Unpack fails
// to read a Reason Code from.
func pahoStricter(h fixedHeader, body []byte) bool {
	return h.typ == TypeDisconnect && len(body) == 0
}

// isLevel5Connect reports whether a CONNECT body starts with protocol name
// "MQTT" and level 5.
func isLevel5Connect(body []byte) bool {
	return len(body) >= 7 && string(body[:7]) == "\x00\x04MQTT\x05"
}

// splitPacket reads the fixed header of an encoded packet.
func splitPacket(t *testing.T, enc []byte) (fixedHeader, []byte) {
	t.Helper()
	br := bytes.NewReader(enc)
	h, err := readFixedHeader(br, true)
	if err != nil {
		t.Fatalf("fixed header of % x: %v", enc, err)
	}
	body := enc[len(enc)-br.Len():]
	if len(body) != h.remaining {
		t.Fatalf("% x: remaining length %d, body %d", enc, h.remaining, len(body))
	}
	return h, body
}
