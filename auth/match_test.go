package auth

import (
	"testing"

	"github.com/bridgemq/server/topics"
)

func TestTopicMatches(t *testing.T) {
	tests := []struct {
		name, filter, topic string
		want                bool
	}{
		{"exact", "a/b", "a/b", true},
		{"exact differs", "a/b", "a/c", false},
		{"longer topic", "a", "a/b", false},
		{"shorter topic", "a/b", "a", false},
		{"plus one level MQTT_4_7_1_3", "a/+/c", "a/b/c", true},
		{"plus not two levels MQTT_4_7_1_3", "a/+", "a/b/c", false},
		{"plus matches empty level MQTT_4_7_1_3", "a/+", "a/", true},
		{"hash matches rest MQTT_4_7_1_2", "a/#", "a/b/c", true},
		{"hash matches parent MQTT_4_7_1_2", "a/#", "a", true},
		{"plus hash matches parent level", "a/+/#", "a/b", true},
		{"hash alone matches all", "#", "a/b", true},
		{"hash does not match dollar MQTT_4_7_2_1", "#", "$SYS/x", false},
		{"plus does not match dollar MQTT_4_7_2_1", "+/x", "$SYS/x", false},
		{"dollar filter matches dollar topic", "$SYS/#", "$SYS/x", true},
		{"dollar filter does not match plain topic", "$SYS/#", "SYS/x", false},
		{"leading slash is an empty level", "/a", "/a", true},
		{"leading slash plus", "+/a", "/a", true},
		{"spaces are literal", "room 101/+", "room 101/lights", true},
		{"empty filter", "", "a", false},
		{"empty topic", "a", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := topics.Match(tt.filter, tt.topic); got != tt.want {
				t.Errorf("topics.Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
}

// Cases follow Mosquitto's sub_matches_acl (lib/util_topic.c).
func TestSubMatchesACL(t *testing.T) {
	tests := []struct {
		name, acl, sub string
		want           bool
	}{
		{"literal equal", "a/b", "a/b", true},
		{"literal differs", "a/b", "a/c", false},
		{"hash covers hash", "#", "#", true},
		{"hash covers plus", "a/#", "a/+/c", true},
		{"hash covers parent", "a/#", "a", true},
		{"plus covers plus", "a/+", "a/+", true},
		{"plus covers literal", "a/+", "a/b", true},
		{"plus does not cover hash", "a/+", "a/#", false},
		{"literal does not cover plus", "a/b", "a/+", false},
		{"literal does not cover hash", "a/b", "a/#", false},
		{"literal does not cover hash at root", "test/nosubscribe", "#", false},
		{"plus hash covers parent", "a/+/#", "a/b", true},
		{"plus does not cover parent", "a/+", "a", false},
		{"shorter sub", "a/b/c", "a/b", false},
		{"longer sub", "a/b", "a/b/c", false},
		{"hash does not cover dollar", "#", "$SYS/#", false},
		{"dollar acl does not cover plain", "$SYS/#", "#", false},
		{"dollar acl covers dollar", "$SYS/#", "$SYS/broker/+", true},
		{"empty", "", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subMatchesACL(tt.acl, tt.sub); got != tt.want {
				t.Errorf("subMatchesACL(%q, %q) = %v, want %v", tt.acl, tt.sub, got, tt.want)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"a/b", true},
		{"#", true},
		{"+", true},
		{"a/+/b/#", true},
		{"/", true},
		{"room 101", true},
		{"devices/%c/#", true},
		{"", false},
		{"a/#/b", false}, // [MQTT-4.7.1-2] '#' last
		{"a#", false},    // [MQTT-4.7.1-2] '#' alone in its level
		{"a/b+", false},  // [MQTT-4.7.1-3] '+' alone in its level
		{"+a/b", false},
		{"##", false},
	}
	for _, tt := range tests {
		if got := topics.ValidateFilter(tt.filter) == nil; got != tt.want {
			t.Errorf("topics.ValidateFilter(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}
