package packets

import (
	"bytes"
	"testing"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
)

// loopReader serves the same bytes over and over.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.b[l.off:])
		n += c
		l.off = (l.off + c) % len(l.b)
	}
	return n, nil
}

var benchPublish = &Publish{QoS: 1, Topic: "sensors/building-7/floor-3/temperature", PacketID: 42,
	Payload: bytes.Repeat([]byte("x"), 256)}

func BenchmarkReadPublish(b *testing.B) {
	raw := AppendPublish(nil, benchPublish)
	r := NewReader(&loopReader{b: raw}, 1<<20)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadPacket(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadPublishPaho(b *testing.B) {
	raw := AppendPublish(nil, benchPublish)
	src := &loopReader{b: raw}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pahopackets.ReadPacket(src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPublish(buf[:0], benchPublish)
	}
}

func BenchmarkAppendPuback(b *testing.B) {
	buf := make([]byte, 0, 16)
	pk := &Puback{PacketID: 7}
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = Append(buf[:0], pk); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAppendPublish_DoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendPublish(buf[:0], benchPublish) }); n != 0 {
		t.Fatalf("AppendPublish: %.0f allocations", n)
	}
	pk := &Puback{PacketID: 7}
	if n := testing.AllocsPerRun(100, func() { buf, _ = Append(buf[:0], pk) }); n != 0 {
		t.Fatalf("Append(PUBACK): %.0f allocations", n)
	}
}

// benchRead reads the packet p over and over, as a session reads its peer.
func benchRead(b *testing.B, p Packet) {
	raw, err := Append(nil, p)
	if err != nil {
		b.Fatal(err)
	}
	r := NewReader(&loopReader{b: raw}, 1<<20)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadPacket(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadConnect(b *testing.B) {
	benchRead(b, &Connect{ProtocolVersion: Version311, CleanSession: true, KeepAlive: 60, ClientID: "sensor-0042",
		Will: &Will{Topic: "status/sensor-0042", Payload: []byte("offline"), QoS: 1}, Username: "device", Password: []byte("secret")})
}

func BenchmarkReadSubscribe(b *testing.B) {
	benchRead(b, &Subscribe{PacketID: 9, Subscriptions: []Subscription{{Filter: "sensors/+/temperature", QoS: 1}, {Filter: "alerts/#", QoS: 2}}})
}

func BenchmarkReadPuback(b *testing.B) { benchRead(b, &Puback{PacketID: 7}) }

func BenchmarkReadPingreq(b *testing.B) { benchRead(b, &Pingreq{}) }

// benchPublish5 is benchPublish with the properties a 5.0 request carries.
var benchPublish5 = &Publish{QoS: 1, Topic: "sensors/building-7/floor-3/temperature", PacketID: 42,
	Payload: bytes.Repeat([]byte("x"), 256), Properties: &Properties{MessageExpiryInterval: new(uint32(60)),
		ContentType: "application/json", UserProperties: []UserProperty{{Name: "unit", Value: "celsius"}}}}

func BenchmarkReadPublish5(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    *Publish
	}{{"no_properties", benchPublish}, {"properties", benchPublish5}} {
		b.Run(tc.name, func(b *testing.B) {
			raw := AppendPublish5(nil, tc.p)
			r := NewReader(&loopReader{b: raw}, 1<<20)
			r.SetVersion(Version5)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.ReadPacket(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendPublish5(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPublish5(buf[:0], benchPublish5)
	}
}

func BenchmarkAppendPuback5(b *testing.B) {
	buf := make([]byte, 0, 64)
	pk := &Puback{PacketID: 7, ReasonCode: NotAuthorized, Properties: &Properties{ReasonString: "denied"}}
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = Append5(buf[:0], pk); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAppend5_DoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendPublish5(buf[:0], benchPublish5) }); n != 0 {
		t.Fatalf("AppendPublish5: %.0f allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf, _ = Append5(buf[:0], benchPublish5) }); n != 0 {
		t.Fatalf("Append5(PUBLISH): %.0f allocations", n)
	}
	for _, pk := range []Packet{&Puback{PacketID: 7}, &Puback{PacketID: 7, ReasonCode: NotAuthorized,
		Properties: &Properties{ReasonString: "denied"}}, &Disconnect{ReasonCode: SessionTakenOver},
		&Connack{Properties: &Properties{ReceiveMaximum: new(uint16(10))}}} {
		if n := testing.AllocsPerRun(100, func() { buf, _ = Append5(buf[:0], pk) }); n != 0 {
			t.Fatalf("Append5(%T): %.0f allocations", pk, n)
		}
	}
}
