package packetstest

import (
	"bytes"
	"testing"
)

// TestRemainingLength_Boundaries_MQTT_2_2_3: the first and last value of
// each encoded length, as Table 2.4 lists them.
func TestRemainingLength_Boundaries_MQTT_2_2_3(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7F}},
		{128, []byte{0x80, 0x01}},
		{16_383, []byte{0xFF, 0x7F}},
		{16_384, []byte{0x80, 0x80, 0x01}},
		{2_097_151, []byte{0xFF, 0xFF, 0x7F}},
		{2_097_152, []byte{0x80, 0x80, 0x80, 0x01}},
		{268_435_455, []byte{0xFF, 0xFF, 0xFF, 0x7F}},
	}
	for _, tt := range tests {
		if got := RemainingLength(nil, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("RemainingLength(%d) = % x, want % x", tt.n, got, tt.want)
		}
	}
}

func TestPacket_ComputesRemainingLength(t *testing.T) {
	got := Packet(0x82, 0, 1, Str("a/b"), 1)
	want := []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 1}
	if !bytes.Equal(got, want) {
		t.Fatalf("Packet = % x, want % x", got, want)
	}
}

func TestCat_PanicsOnAnIntOutOfByteRange(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Cat(256) did not panic")
		}
	}()
	Cat(256)
}
