package packets_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/packets/packetstest"
)

// The catalogue of packetstest run through this package's Reader and
// encoder: every case decodes to its Want or fails with its Err, and every
// valid one encodes back to its bytes.

func TestReadPacket_Catalogue(t *testing.T) {
	for _, tc := range packetstest.All() {
		t.Run(tc.Name, func(t *testing.T) {
			limit := tc.Max
			if limit == 0 {
				limit = packetstest.MaxPacket
			}
			r := packets.NewReader(bytes.NewReader(tc.Raw), limit)
			if tc.Version != 0 {
				r.SetVersion(tc.Version)
			}
			got, err := r.ReadPacket()
			if tc.Err != nil {
				if !errors.Is(err, tc.Err) {
					t.Fatalf("error = %v, want one wrapping %v", err, tc.Err)
				}
				if !reflect.DeepEqual(got, tc.Want) && !(got == nil && tc.Want == nil) {
					t.Fatalf("packet beside the error = %#v, want %#v", got, tc.Want)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.Want) {
				t.Fatalf("decoded\n %#v\nwant\n %#v", got, tc.Want)
			}
			if _, err := r.ReadPacket(); err != io.EOF {
				t.Fatalf("after the packet: error = %v, want io.EOF", err)
			}
		})
	}
}

func TestCatalogue_ReadMatchesReader(t *testing.T) {
	for _, tc := range packetstest.All() {
		got, err := tc.Read()
		if !errors.Is(err, tc.Err) || (tc.Err == nil && err != nil) {
			t.Errorf("%s: Case.Read error %v, want %v", tc.Name, err, tc.Err)
		}
		if !reflect.DeepEqual(got, tc.Want) && !(got == nil && tc.Want == nil) {
			t.Errorf("%s: Case.Read = %#v, want %#v", tc.Name, got, tc.Want)
		}
	}
}

func TestCatalogue_NamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range packetstest.All() {
		if seen[tc.Name] {
			t.Errorf("two cases named %q", tc.Name)
		}
		seen[tc.Name] = true
		if got := packetstest.Named(tc.Name); got.Name != tc.Name {
			t.Errorf("Named(%q) = %q", tc.Name, got.Name)
		}
	}
}

func TestCatalogue_NamedPanicsOnUnknownName(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Named of an unknown name did not panic")
		}
	}()
	packetstest.Named("no such packet")
}

// TestReadPacket_ErrorsCarryTheirReasonCode: every sentinel maps to the
// MQTT 5.0 Reason Code the server closes the connection with.
func TestReadPacket_ErrorsCarryTheirReasonCode(t *testing.T) {
	want := map[error]packets.ReasonCode{
		packets.ErrMalformed:           packets.MalformedPacket,
		packets.ErrProtocol:            packets.ProtocolError,
		packets.ErrPacketTooLarge:      packets.PacketTooLarge,
		packets.ErrUnsupportedProtocol: packets.UnsupportedProtocolVersion,
		packets.ErrTopicAliasInvalid:   packets.TopicAliasInvalid,
	}
	for _, tc := range packetstest.All() {
		code, ok := want[tc.Err]
		if !ok {
			continue
		}
		_, err := tc.Read()
		got, ok := packets.CodeOf(err)
		if !ok || got != code {
			t.Errorf("%s: CodeOf(%v) = 0x%02x, %v; want 0x%02x", tc.Name, err, byte(got), ok, byte(code))
		}
		var re *packets.ReasonError
		if !errors.As(err, &re) || re.Code != code {
			t.Errorf("%s: errors.As(%v) gives no *ReasonError with code 0x%02x", tc.Name, err, byte(code))
		}
	}
	if _, ok := packets.CodeOf(io.ErrUnexpectedEOF); ok {
		t.Error("CodeOf(io.ErrUnexpectedEOF) reports a reason code")
	}
}

func TestReadPacket_MalformedErrorsSayWhy(t *testing.T) {
	for _, tc := range packetstest.All() {
		if tc.Err != packets.ErrMalformed && tc.Err != packets.ErrProtocol && tc.Err != packets.ErrTopicAliasInvalid {
			continue
		}
		_, err := tc.Read()
		if msg := err.Error(); !strings.HasPrefix(msg, tc.Err.Error()+": ") &&
			!strings.Contains(msg, ": "+tc.Err.Error()+": ") {
			t.Errorf("%s: error %q carries no reason", tc.Name, msg)
		}
	}
}

func TestAppend_CatalogueRoundTrip(t *testing.T) {
	for _, tc := range packetstest.All() {
		if tc.Err != nil {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			enc, err := packets.AppendVersion(nil, tc.Want, tc.Version)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !tc.NonCanonical && !bytes.Equal(enc, tc.Raw) {
				t.Fatalf("Append =\n % x\nwant\n % x", enc, tc.Raw)
			}
			r := packets.NewReader(bytes.NewReader(enc), 0)
			r.SetVersion(tc.Version)
			got, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("decoding Append's output: %v", err)
			}
			if !reflect.DeepEqual(got, tc.Want) {
				t.Fatalf("round trip\n %#v\nwant\n %#v", got, tc.Want)
			}
		})
	}
}

func TestReadPacket_StreamOfPackets(t *testing.T) {
	var stream []byte
	var want []packets.Packet
	for _, tc := range packetstest.All() {
		if tc.Err == nil && tc.Version == 0 {
			stream = append(stream, tc.Raw...)
			want = append(want, tc.Want)
		}
	}
	r := packets.NewReader(bytes.NewReader(stream), packetstest.MaxPacket)
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
	first := packetstest.Packet(0x30, packetstest.Str("t"), "first payload")
	second := packetstest.Packet(0x30, packetstest.Str("t"), "SECOND PAYLOAD")
	r := packets.NewReader(bytes.NewReader(append(first, second...)), 0)
	p1, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	if got := string(p1.(*packets.Publish).Payload); got != "first payload" {
		t.Fatalf("first payload changed to %q", got)
	}
}

// TestReadPacket_DecodedFieldsDoNotAliasBuffer: the same for the fields of
// every other type that carries bytes or strings.
func TestReadPacket_DecodedFieldsDoNotAliasBuffer(t *testing.T) {
	for _, name := range []string{"suback_all_codes", "subscribe_three_filters", "unsubscribe_two_filters",
		"connect_311_will_username_password", "v5_connect_will_properties", "v5_connack_properties",
		"v5_publish_qos1_properties", "v5_subscribe_options", "v5_suback_codes", "v5_unsuback_codes",
		"v5_unsubscribe_properties", "v5_auth_continue", "v5_disconnect_use_another_server"} {
		tc := packetstest.Named(name)
		overwrite := bytes.Repeat([]byte{0xC0, 0}, len(tc.Raw)) // PINGREQs over the same buffer
		r := packets.NewReader(bytes.NewReader(append(append([]byte{}, tc.Raw...), overwrite...)), 0)
		r.SetVersion(tc.Version)
		got, err := r.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		for range len(tc.Raw) {
			if _, err := r.ReadPacket(); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(got, tc.Want) {
			t.Fatalf("%s changed to %#v after more reads", name, got)
		}
	}
}

func TestReadPacket_EOFMidPacketIsUnexpected(t *testing.T) {
	raw := packetstest.Packet(0x10, packetstest.ConnectHead("MQTT", 4, 0x02), packetstest.Str("client"))
	for cut := 1; cut < len(raw); cut++ {
		_, err := packets.NewReader(bytes.NewReader(raw[:cut]), 0).ReadPacket()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: error = %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz from the catalogue")

// catalogueSeeds returns the seed corpus files the catalogue implies for
// each fuzz target, by file name: every case for FuzzReadPacket, its flags
// and body for FuzzPublishDifferential (PUBLISH) and its first byte and body
// for FuzzDecodeDifferential (every other type); the 5.0 cases likewise for
// FuzzReadPacket5, FuzzPublishDifferential5 and FuzzDecodeDifferential5.
func catalogueSeeds() map[string]map[string]string {
	seeds := map[string]map[string]string{"FuzzReadPacket": {}, "FuzzPublishDifferential": {}, "FuzzDecodeDifferential": {},
		"FuzzReadPacket5": {}, "FuzzPublishDifferential5": {}, "FuzzDecodeDifferential5": {}}
	for _, tc := range packetstest.All() {
		if len(tc.Raw) > 4096 {
			continue // large cases would bloat the repository; f.Add seeds one
		}
		name := "catalogue_" + tc.Name
		seeds["FuzzReadPacket"][name] = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", tc.Raw)
		first, body, ok := splitFixedHeader(tc.Raw)
		if tc.Version == packets.Version5 {
			seeds["FuzzReadPacket5"][name] = seeds["FuzzReadPacket"][name]
		}
		switch {
		case !ok || (tc.Version != 0 && tc.Version != packets.Version5):
		case tc.Version == packets.Version5 && tc.Type() == packets.TypePublish:
			seeds["FuzzPublishDifferential5"][name] = fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", first&0x0F, body)
		case tc.Version == packets.Version5:
			seeds["FuzzDecodeDifferential5"][name] = fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", first, body)
		case tc.Type() == packets.TypePublish:
			seeds["FuzzPublishDifferential"][name] = fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", first&0x0F, body)
		default:
			seeds["FuzzDecodeDifferential"][name] = fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", first, body)
		}
	}
	return seeds
}

// splitFixedHeader returns the first byte and body of a raw packet whose
// Remaining Length matches its body.
func splitFixedHeader(raw []byte) (first byte, body []byte, ok bool) {
	n, mul := 0, 1
	for i := 1; i < len(raw) && i <= 4; i++ {
		n += int(raw[i]&0x7F) * mul
		if raw[i]&0x80 == 0 {
			if len(raw)-i-1 != n {
				return 0, nil, false
			}
			return raw[0], raw[i+1:], true
		}
		mul *= 128
	}
	return 0, nil, false
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
