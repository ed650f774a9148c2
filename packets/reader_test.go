package packets

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func readOne(tp tpacket) (Packet, error) {
	max := tp.max
	if max == 0 {
		max = testMaxPacket
	}
	r := NewReader(bytes.NewReader(tp.raw), max)
	if tp.version != 0 {
		r.SetVersion(tp.version)
	}
	return r.ReadPacket()
}

func TestReadPacket_Catalogue(t *testing.T) {
	for _, tp := range tpackets {
		t.Run(tp.name, func(t *testing.T) {
			max := tp.max
			if max == 0 {
				max = testMaxPacket
			}
			r := NewReader(bytes.NewReader(tp.raw), max)
			if tp.version != 0 {
				r.SetVersion(tp.version)
			}
			got, err := r.ReadPacket()
			if tp.err != nil {
				if !errors.Is(err, tp.err) {
					t.Fatalf("error = %v, want one wrapping %v", err, tp.err)
				}
				if !reflect.DeepEqual(got, tp.want) && !(got == nil && tp.want == nil) {
					t.Fatalf("packet beside the error = %#v, want %#v", got, tp.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tp.want) {
				t.Fatalf("decoded\n %#v\nwant\n %#v", got, tp.want)
			}
			if _, err := r.ReadPacket(); err != io.EOF {
				t.Fatalf("after the packet: error = %v, want io.EOF", err)
			}
		})
	}
}

func TestReadPacket_MalformedErrorsSayWhy(t *testing.T) {
	for _, tp := range tpackets {
		if tp.err != ErrMalformed {
			continue
		}
		_, err := readOne(tp)
		if msg := err.Error(); !strings.HasPrefix(msg, ErrMalformed.Error()+": ") && !strings.Contains(msg, ": "+ErrMalformed.Error()+": ") {
			t.Errorf("%s: error %q carries no reason", tp.name, msg)
		}
	}
}

func TestAppend_CatalogueRoundTrip(t *testing.T) {
	for _, tp := range tpackets {
		if tp.err != nil {
			continue
		}
		t.Run(tp.name, func(t *testing.T) {
			enc, err := Append(nil, tp.want)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !tp.nonCanonical && !bytes.Equal(enc, tp.raw) {
				t.Fatalf("Append =\n % x\nwant\n % x", enc, tp.raw)
			}
			got, err := NewReader(bytes.NewReader(enc), 0).ReadPacket()
			if err != nil {
				t.Fatalf("decoding Append's output: %v", err)
			}
			if !reflect.DeepEqual(got, tp.want) {
				t.Fatalf("round trip\n %#v\nwant\n %#v", got, tp.want)
			}
		})
	}
}

func TestAppend_AppendsToDst(t *testing.T) {
	dst := []byte("prefix")
	out, err := Append(dst, &Puback{PacketID: 5})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte("prefix\x40\x02\x00\x05"); !bytes.Equal(out, want) {
		t.Fatalf("Append = %q, want %q", out, want)
	}
}

// TestReadPacket_OversizedBeforeBody_MQTT_2_2_3: a fixed header announcing
// 256 MB fails at once with ErrPacketTooLarge, without reading or allocating
// the body.
func TestReadPacket_OversizedBeforeBody_MQTT_2_2_3(t *testing.T) {
	header := []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F} // PUBLISH, 268,435,455 bytes
	src := &endlessReader{prefix: header}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := NewReader(src, 1<<20).ReadPacket()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("error = %v, want ErrPacketTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("allocated %d bytes before refusing the packet", grew)
	}
	if src.served > 4096 {
		t.Fatalf("read %d bytes from the stream: more than one buffer fill", src.served)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := NewReader(bytes.NewReader(header), 1<<20).ReadPacket(); !errors.Is(err, ErrPacketTooLarge) {
			t.Fatal(err)
		}
	})
	// NewReader's struct and its small input buffer, plus the error.
	if allocs > 8 {
		t.Fatalf("%.0f allocations per oversized packet", allocs)
	}
}

// endlessReader serves prefix, then zero bytes forever, counting them.
type endlessReader struct {
	prefix []byte
	served int
}

func (e *endlessReader) Read(p []byte) (int, error) {
	n := copy(p, e.prefix)
	e.prefix = e.prefix[n:]
	clear(p[n:])
	e.served += len(p)
	return len(p), nil
}

func TestReadPacket_DefaultLimitIsProtocolMaximum(t *testing.T) {
	r := NewReader(bytes.NewReader(nil), 0)
	if r.max != MaxRemainingLength {
		t.Fatalf("limit = %d, want %d", r.max, MaxRemainingLength)
	}
}

func TestReadPacket_StreamOfPackets(t *testing.T) {
	var stream []byte
	var want []Packet
	for _, tp := range tpackets {
		if tp.err == nil && tp.version == 0 {
			stream = append(stream, tp.raw...)
			want = append(want, tp.want)
		}
	}
	r := NewReader(bytes.NewReader(stream), testMaxPacket)
	for i, w := range want {
		got, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("packet %d = %#v, want %#v", i, got, w)
		}
	}
	if _, err := r.ReadPacket(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// TestReadPacket_PayloadDoesNotAliasBuffer: the Reader reuses its body
// buffer, so a payload handed out earlier must not change.
func TestReadPacket_PayloadDoesNotAliasBuffer(t *testing.T) {
	first := pkt(0x30, lp("t"), "first payload")
	second := pkt(0x30, lp("t"), "SECOND PAYLOAD")
	r := NewReader(bytes.NewReader(append(first, second...)), 0)
	p1, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	if got := string(p1.(*Publish).Payload); got != "first payload" {
		t.Fatalf("first payload changed to %q", got)
	}
}

func TestReadPacket_EOFMidPacketIsUnexpected(t *testing.T) {
	raw := pkt(0x10, connectHead("MQTT", 4, 0x02), lp("client"))
	for cut := 1; cut < len(raw); cut++ {
		_, err := NewReader(bytes.NewReader(raw[:cut]), 0).ReadPacket()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: error = %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestReadPacket_SetVersion311Decodes(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte{0xC0, 0}), 0)
	r.SetVersion(Version311)
	if p, err := r.ReadPacket(); err != nil || p.Type() != TypePingreq {
		t.Fatalf("ReadPacket = %v, %v", p, err)
	}
}

func TestAppend_RefusesMalformed(t *testing.T) {
	long := strings.Repeat("x", 0x10000)
	tests := []struct {
		name string
		p    Packet
	}{
		{"publish_qos3_MQTT_3_3_1_4", &Publish{QoS: 3, Topic: "t", PacketID: 1}},
		{"publish_qos1_id0_MQTT_2_3_1_1", &Publish{QoS: 1, Topic: "t"}},
		{"publish_qos0_dup_MQTT_3_3_1_2", &Publish{Dup: true, Topic: "t"}},
		{"publish_topic_too_long", &Publish{Topic: long}},
		{"puback_id0_MQTT_2_3_1_1", &Puback{}},
		{"pubrec_id0_MQTT_2_3_1_1", &Pubrec{}},
		{"pubrel_id0_MQTT_2_3_1_1", &Pubrel{}},
		{"pubcomp_id0_MQTT_2_3_1_1", &Pubcomp{}},
		{"unsuback_id0_MQTT_2_3_1_1", &Unsuback{}},
		{"subscribe_empty_MQTT_3_8_3_3", &Subscribe{PacketID: 1}},
		{"subscribe_qos3_MQTT_3_8_3_4", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{"a", 3}}}},
		{"subscribe_id0_MQTT_2_3_1_1", &Subscribe{Subscriptions: []Subscription{{"a", 0}}}},
		{"subscribe_filter_too_long", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{long, 0}}}},
		{"suback_empty", &Suback{PacketID: 1}},
		{"suback_id0_MQTT_2_3_1_1", &Suback{ReturnCodes: []ReasonCode{GrantedQoS0}}},
		{"suback_reserved_code_MQTT_3_9_3_2", &Suback{PacketID: 1, ReturnCodes: []ReasonCode{3}}},
		{"unsubscribe_empty_MQTT_3_10_3_2", &Unsubscribe{PacketID: 1}},
		{"unsubscribe_id0_MQTT_2_3_1_1", &Unsubscribe{Filters: []string{"a"}}},
		{"connect_password_without_username_MQTT_3_1_2_22", &Connect{ProtocolVersion: 4, Password: []byte("p")}},
		{"connect_will_qos3_MQTT_3_1_2_14", &Connect{ProtocolVersion: 4, Will: &Will{Topic: "w", QoS: 3}}},
		{"connect_client_id_too_long", &Connect{ProtocolVersion: 4, ClientID: long}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte{1, 2}
			out, err := Append(dst, tt.p)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
			if !bytes.Equal(out, dst) {
				t.Fatalf("dst changed to % x", out)
			}
		})
	}
}

func TestAppend_NilPacket(t *testing.T) {
	for _, p := range []Packet{nil, (*Publish)(nil), (*Puback)(nil), (*Connect)(nil), (*Subscribe)(nil)} {
		if _, err := Append(nil, p); err == nil {
			t.Errorf("Append(%T nil) succeeded", p)
		}
	}
}

func TestAppend_ConnectDerivesProtocolName(t *testing.T) {
	tests := []struct {
		version Version
		name    string
	}{{Version31, "MQIsdp"}, {Version311, "MQTT"}}
	for _, tt := range tests {
		enc, err := Append(nil, &Connect{ProtocolVersion: tt.version, CleanSession: true, ClientID: "c", Username: "u", Password: []byte("p")})
		if err != nil {
			t.Fatal(err)
		}
		got, err := NewReader(bytes.NewReader(enc), 0).ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		want := &Connect{ProtocolName: tt.name, ProtocolVersion: tt.version, CleanSession: true, ClientID: "c",
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("level %d: decoded %#v, want %#v", tt.version, got, want)
		}
	}
}

func TestAppend_ConnectUnsupportedLevelIsRefusedByReader_MQTT_3_1_2_2(t *testing.T) {
	enc, err := Append(nil, &Connect{ProtocolVersion: 7, ClientID: "c", CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewReader(bytes.NewReader(enc), 0).ReadPacket()
	if !errors.Is(err, ErrUnsupportedProtocol) {
		t.Fatalf("error = %v, want ErrUnsupportedProtocol", err)
	}
	if c := p.(*Connect); c.ProtocolName != "MQTT" || c.ProtocolVersion != 7 {
		t.Fatalf("connect = %#v", c)
	}
}

func TestTypeString(t *testing.T) {
	tests := map[Type]string{TypeConnect: "CONNECT", TypeDisconnect: "DISCONNECT", 0: "type 0", 15: "type 15"}
	for typ, want := range tests {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", byte(typ), got, want)
		}
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz from the catalogue")

// catalogueSeeds returns the seed corpus files the catalogue implies for
// each fuzz target, by file name: every catalogued packet for
// FuzzReadPacket, and its first byte and body for FuzzDecodeDifferential
// (every type but PUBLISH).
func catalogueSeeds() map[string]map[string]string {
	seeds := map[string]map[string]string{"FuzzReadPacket": {}, "FuzzDecodeDifferential": {}}
	for _, tp := range tpackets {
		if len(tp.raw) > 4096 {
			continue // large cases would bloat the repository; f.Add seeds them
		}
		name := "catalogue_" + tp.name
		seeds["FuzzReadPacket"][name] = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", tp.raw)
		if len(tp.raw) > 0 && Type(tp.raw[0]>>4) != TypePublish && tp.version == 0 {
			if _, body, ok := splitFixedHeader(tp.raw); ok {
				seeds["FuzzDecodeDifferential"][name] = fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", tp.raw[0], body)
			}
		}
	}
	return seeds
}

// TestFuzzSeedCorpus_MatchesCatalogue keeps testdata/fuzz in step with the
// catalogue: one file per catalogued packet, valid or not, for each fuzz
// target. Run with -update-corpus after changing the catalogue.
func TestFuzzSeedCorpus_MatchesCatalogue(t *testing.T) {
	for target, files := range catalogueSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, want := range files {
			path := filepath.Join(dir, name)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestFuzzSeedCorpus -update-corpus)", err)
			}
			if string(got) != want {
				t.Fatalf("%s is out of date (run go test -run TestFuzzSeedCorpus -update-corpus)", path)
			}
		}
	}
}

// TestReadPacket_LargeBodyCostsWhatArrives: a peer that announces a body
// within the limit but sends little of it makes the Reader allocate in
// proportion to what arrived, not to what was announced.
func TestReadPacket_LargeBodyCostsWhatArrives(t *testing.T) {
	const announced = 1 << 20
	header := []byte{0x30}
	header = appendRemainingLength(header, announced)
	stream := append(header, 0x00, 0x01, 'a') // topic "a", then the stream ends
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := NewReader(bytes.NewReader(stream), announced).ReadPacket()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<10 {
		t.Fatalf("allocated %d bytes for a body announced as %d with 3 bytes sent", grew, announced)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// The gate sees each packet's type and Remaining Length after the fixed
// header and before any of the body is read; its error is ReadPacket's.
func TestReader_GateRunsBeforeBody(t *testing.T) {
	pub, err := Append(nil, &Publish{QoS: 1, PacketID: 7, Topic: "a/b", Payload: bytes.Repeat([]byte("x"), 100<<10)})
	if err != nil {
		t.Fatal(err)
	}
	ping, _ := Append(nil, &Pingreq{})
	src := &countingReader{r: bytes.NewReader(append(append([]byte{}, ping...), pub...))}
	r := NewReader(src, 1<<20)
	type call struct {
		t         Type
		remaining int
		readSoFar int
	}
	var calls []call
	stop := errors.New("no room")
	r.SetGate(func(t Type, remaining int) error {
		calls = append(calls, call{t, remaining, src.n})
		if t == TypePublish {
			return stop
		}
		return nil
	})
	if _, err := r.ReadPacket(); err != nil {
		t.Fatalf("PINGREQ: %v", err)
	}
	if _, err := r.ReadPacket(); !errors.Is(err, stop) {
		t.Fatalf("PUBLISH with a refusing gate: err %v, want it to wrap the gate's", err)
	}
	if len(calls) != 2 || calls[0].t != TypePingreq || calls[1].t != TypePublish || calls[1].remaining != len(pub)-4 {
		t.Fatalf("gate calls %+v", calls)
	}
	// The PUBLISH body (100 KiB) was not read: at most the buffered
	// read-ahead of the fixed header is.
	if read := src.n - len(ping); read >= 64<<10 {
		t.Fatalf("%d bytes of the PUBLISH read before the gate said no", read)
	}
}
