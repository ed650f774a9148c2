package topics

import "testing"

// matchCases is the catalogue of filter/topic pairs every matcher in the
// package (Match, Trie, Retained, RedisSubscription) is checked against.
var matchCases = []struct {
	name, filter, topic string
	want                bool
}{
	{"exact", "a/b", "a/b", true},
	{"exact differs", "a/b", "a/c", false},
	{"exact is not prefix", "a/b", "a/b/c", false},
	{"no normalisation, case sensitive MQTT_4_7_3_4", "A", "a", false},
	{"plus one level MQTT_4_7_1_3", "a/+/c", "a/b/c", true},
	{"plus not two levels MQTT_4_7_1_3", "a/+/c", "a/b/x/c", false},
	{"plus empty level MQTT_4_7_1_3", "a/+/c", "a//c", true},
	{"plus not parent MQTT_4_7_1_3", "a/+", "a", false},
	{"plus trailing empty level", "a/+", "a/", true},
	{"plus first empty level", "+/a", "/a", true},
	{"plus alone", "+", "a", true},
	{"plus alone not two levels", "+", "a/b", false},
	{"plus alone not leading slash", "+", "/a", false},
	{"plus plus leading slash", "+/+", "/a", true},
	{"hash everything MQTT_4_7_1_2", "#", "a/b/c", true},
	{"hash leading slash", "#", "/", true},
	{"hash children MQTT_4_7_1_2", "a/#", "a/b/c", true},
	{"hash parent MQTT_4_7_1_2", "a/#", "a", true},
	{"hash empty child", "a/#", "a/", true},
	{"hash not sibling", "a/#", "ab", false},
	{"hash not other", "a/#", "b/a", false},
	{"plus hash parent", "a/+/#", "a/b", true},
	{"plus hash not grandparent", "a/+/#", "a", false},
	{"slash hash", "/#", "/a", true},
	{"slash hash not plain", "/#", "a", false},
	{"empty levels exact", "a//b", "a//b", true},
	{"empty levels differ", "a//b", "a/b", false},
	{"dollar hash MQTT_4_7_2_1", "#", "$SYS/x", false},
	{"dollar plus MQTT_4_7_2_1", "+/x", "$SYS/x", false},
	{"dollar plus alone MQTT_4_7_2_1", "+", "$SYS", false},
	{"dollar literal MQTT_4_7_2_1", "$SYS/#", "$SYS/x", true},
	{"dollar literal plus MQTT_4_7_2_1", "$SYS/+", "$SYS/x", true},
	{"dollar deeper is fine MQTT_4_7_2_1", "a/+", "a/$x", true},
	{"dollar deeper hash MQTT_4_7_2_1", "a/#", "a/$x", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := Match(tt.filter, tt.topic); got != tt.want {
				t.Fatalf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
			}
		})
	}
}

func TestMatch_DoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		for _, tt := range matchCases {
			Match(tt.filter, tt.topic)
		}
	})
	if allocs != 0 {
		t.Fatalf("Match allocates %v times per run", allocs)
	}
}
