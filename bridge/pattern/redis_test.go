package pattern

import (
	"math/rand/v2"
	"testing"

	"github.com/bridgemq/server/internal/topicgen"
	"github.com/bridgemq/server/topics"
)

func TestRedisSubscription(t *testing.T) {
	tests := []struct {
		prefix, filter string
		name           string
		isPattern      bool
	}{
		{"mqtt:msg:", "a/b", "mqtt:msg:a/b", false},
		{"mqtt:msg:", "a/*/[x]", "mqtt:msg:a/*/[x]", false}, // a channel is literal
		{"mqtt:msg:", "a/+/c", "mqtt:msg:a/*/c", true},
		{"mqtt:msg:", "a/#", "mqtt:msg:a*", true},
		{"mqtt:msg:", "a/+/#", "mqtt:msg:a/*", true},
		{"mqtt:msg:", "#", "mqtt:msg:[^$]*", true},
		{"mqtt:msg:", "+", "mqtt:msg:[^$]*", true},
		{"mqtt:msg:", "+/x", "mqtt:msg:[^$]*x", true},
		{"mqtt:msg:", "+/+/x", "mqtt:msg:[^$]*/x", true},
		{"mqtt:msg:", "/#", "mqtt:msg:/*", true},
		{"mqtt:msg:", "/+", "mqtt:msg:/*", true},
		{"mqtt:msg:", "$SYS/#", "mqtt:msg:$SYS*", true},
		{"mqtt:msg:", "a*/?/+", `mqtt:msg:a\*/\?/*`, true},
		{"mqtt:msg:", `[a]\/#`, `mqtt:msg:\[a\]\\*`, true},
		{"m*[", "a/+", `m\*\[a/*`, true},
		{"m*[", "a", "m*[a", false},
	}
	for _, tt := range tests {
		name, isPattern := RedisSubscription(tt.prefix, tt.filter)
		if name != tt.name || isPattern != tt.isPattern {
			t.Errorf("RedisSubscription(%q, %q) = %q, %v; want %q, %v", tt.prefix, tt.filter, name, isPattern, tt.name, tt.isPattern)
		}
	}
}

// covered reports whether a Redis subscription (name, isPattern) receives a
// PUBLISH to channel.
func covered(name string, isPattern bool, channel string) bool {
	if isPattern {
		return GlobMatch(name, channel)
	}
	return name == channel
}

func TestRedisSubscription_Catalogue(t *testing.T) {
	for _, tt := range topicgen.MatchCases {
		name, isPattern := RedisSubscription("p:", tt.Filter)
		got := covered(name, isPattern, "p:"+tt.Topic)
		if tt.Want && !got {
			t.Errorf("%s: %q (from %q) misses %q", tt.Name, name, tt.Filter, tt.Topic)
		}
		// '$' topics must not reach a first-level wildcard [MQTT-4.7.2-1].
		if tt.Topic[0] == '$' && (tt.Filter[0] == '+' || tt.Filter[0] == '#') && got {
			t.Errorf("%s: %q (from %q) receives %q [MQTT-4.7.2-1]", tt.Name, name, tt.Filter, tt.Topic)
		}
	}
}

// TestRedisSubscription_NeverUnderDelivers_MQTT_4_7_2_1: for random filters
// and topics (with empty levels, '$' and glob metacharacters in levels and
// prefix), topics.Match(filter, topic) implies Redis delivers prefix+topic to the
// subscription; over-delivery is allowed. First-level wildcards never
// receive '$' topics.
func TestRedisSubscription_NeverUnderDelivers_MQTT_4_7_2_1(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	prefixes := []string{"", "mqtt:msg:", `m*[?]\:`, "$"}
	checked := 0
	for range 20000 {
		prefix := prefixes[r.IntN(len(prefixes))]
		filter := topicgen.RandFilter(r)
		name, isPattern := RedisSubscription(prefix, filter)
		for range 10 {
			topic, ok := topicgen.Instantiate(r, filter, topics.Match)
			if !ok {
				topic = topicgen.RandTopic(r)
			}
			got := covered(name, isPattern, prefix+topic)
			if topics.Match(filter, topic) {
				checked++
				if !got {
					t.Fatalf("filter %q matches %q but %q (pattern %v) misses %q", filter, topic, name, isPattern, prefix+topic)
				}
			}
			if got && topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
				t.Fatalf("%q (from %q) receives $ topic %q [MQTT-4.7.2-1]", name, filter, topic)
			}
		}
	}
	if checked < 50000 {
		t.Fatalf("only %d matching pairs checked", checked)
	}
}
