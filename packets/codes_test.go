package packets

import "testing"

// TestSubackCodes_MQTT_3_9_3_2: a SUBACK carries a granted QoS 0..2 or the
// failure 0x80; every other value is reserved, refused by the decoder and
// the encoder alike.
func TestSubackCodes_MQTT_3_9_3_2(t *testing.T) {
	tests := []struct {
		code  ReasonCode
		valid bool
	}{
		{GrantedQoS0, true}, {GrantedQoS1, true}, {GrantedQoS2, true}, {SubackFailure, true},
		{0x03, false}, {0x7F, false}, {0x81, false}, {0xFF, false},
	}
	for _, tt := range tests {
		if got := validSubackCode(tt.code); got != tt.valid {
			t.Errorf("validSubackCode(0x%02x) = %v, want %v", byte(tt.code), got, tt.valid)
		}
		_, err := Append(nil, &Suback{PacketID: 1, ReturnCodes: []ReasonCode{tt.code}})
		if (err == nil) != tt.valid {
			t.Errorf("Append(SUBACK 0x%02x): error %v, want valid=%v", byte(tt.code), err, tt.valid)
		}
	}
}

func TestGrantedQoS_IsTheQoS(t *testing.T) {
	for qos, want := range []ReasonCode{GrantedQoS0, GrantedQoS1, GrantedQoS2} {
		if got := GrantedQoS(byte(qos)); got != want {
			t.Errorf("GrantedQoS(%d) = 0x%02x, want 0x%02x", qos, byte(got), byte(want))
		}
	}
}

// TestConnackCodes_MQTT_3_2_2_3: the values of Table 3.1.
func TestConnackCodes_MQTT_3_2_2_3(t *testing.T) {
	codes := []ReasonCode{Accepted, RefusedProtocolVersion, RefusedIdentifierRejected,
		RefusedServerUnavailable, RefusedBadUsernamePassword, RefusedNotAuthorized}
	for want, c := range codes {
		if int(c) != want {
			t.Errorf("code %d has value 0x%02x", want, byte(c))
		}
	}
}

func TestVersionString(t *testing.T) {
	tests := map[Version]string{Version31: "3.1", Version311: "3.1.1", Version5: "5.0", 7: "level 7"}
	for v, want := range tests {
		if got := v.String(); got != want {
			t.Errorf("Version(%d).String() = %q, want %q", byte(v), got, want)
		}
	}
}
