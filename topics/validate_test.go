package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopicName(t *testing.T) {
	tests := []struct {
		name, topic string
		ok          bool
	}{
		{"simple", "a/b/c", true},
		{"leading slash", "/a", true},
		{"empty levels", "a//b", true},
		{"only slash", "/", true},
		{"dollar", "$SYS/broker", true},
		{"spaces", "a b/c d", true},
		{"utf8", "h\u00e9/\u65e5\u672c", true},
		{"max length", strings.Repeat("a", MaxLength), true},
		{"empty MQTT_4_7_3_1", "", false},
		{"plus MQTT_3_3_2_2", "a/+/b", false},
		{"hash MQTT_3_3_2_2", "a/#", false},
		{"plus inside level MQTT_4_7_1_1", "a+b", false},
		{"too long MQTT_4_7_3_3", strings.Repeat("a", MaxLength+1), false},
		{"NUL MQTT_1_5_3_2", "a\x00b", false},
		{"bad utf8 MQTT_1_5_3_1", "a\xffb", false},
		{"surrogate MQTT_1_5_3_1", "a\xed\xa0\x80", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTopicName(tt.topic)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateTopicName(%.40q) = %v, want ok=%v", tt.topic, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("error %v does not wrap ErrInvalidTopic", err)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		name, filter string
		ok           bool
	}{
		{"exact", "a/b", true},
		{"hash alone", "#", true},
		{"plus alone", "+", true},
		{"hash last", "a/b/#", true},
		{"plus levels", "+/+/c/+", true},
		{"plus then hash", "+/#", true},
		{"empty levels", "a//+/", true},
		{"leading slash hash", "/#", true},
		{"dollar", "$SYS/#", true},
		{"empty MQTT_4_7_3_1", "", false},
		{"hash not last MQTT_4_7_1_2", "a/#/b", false},
		{"hash inside level MQTT_4_7_1_2", "a/b#", false},
		{"hash prefix level MQTT_4_7_1_2", "a/#b", false},
		{"double hash MQTT_4_7_1_2", "##", false},
		{"plus inside level MQTT_4_7_1_3", "a/b+/c", false},
		{"plus suffix level MQTT_4_7_1_3", "+a", false},
		{"double plus MQTT_4_7_1_3", "a/++", false},
		{"NUL MQTT_1_5_3_2", "a/\x00", false},
		{"bad utf8 MQTT_1_5_3_1", "\xc3", false},
		{"too long MQTT_4_7_3_3", strings.Repeat("a", MaxLength+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateFilter(tt.filter)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateFilter(%.40q) = %v, want ok=%v", tt.filter, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("error %v does not wrap ErrInvalidFilter", err)
			}
		})
	}
}

func TestHasWildcard(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"a/b", false}, {"", false}, {"$SYS/x", false},
		{"+", true}, {"#", true}, {"a/+/b", true}, {"a/#", true},
	}
	for _, tt := range tests {
		if got := HasWildcard(tt.filter); got != tt.want {
			t.Errorf("HasWildcard(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}
