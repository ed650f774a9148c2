// Package topicgen draws random topic names and filters for tests: empty
// levels, '$' levels, Redis glob metacharacters and levels that share
// prefixes, which is where matchers and Redis pattern translation go wrong.
package topicgen

import (
	"math/rand/v2"
	"strings"
)

// genLevels are the topic levels random tests draw from: empty levels,
// '$' levels, Redis glob metacharacters and levels that share prefixes.
var genLevels = []string{"", "a", "b", "ab", "$", "$a", "*", "?", "[", "]", `\`, "a*", "[^$]", "é"}

// RandLevel returns one topic level.
func RandLevel(r *rand.Rand) string { return genLevels[r.IntN(len(genLevels))] }

// RandTopic returns a valid topic name of 1 to 4 levels.
func RandTopic(r *rand.Rand) string {
	for {
		levels := make([]string, 1+r.IntN(4))
		for i := range levels {
			levels[i] = RandLevel(r)
		}
		if t := strings.Join(levels, "/"); t != "" {
			return t
		}
	}
}

// RandFilter returns a valid filter of 1 to 4 levels with wildcards.
func RandFilter(r *rand.Rand) string {
	levels := make([]string, 1+r.IntN(4))
	for i := range levels {
		switch x := r.IntN(10); {
		case x < 3:
			levels[i] = "+"
		case x < 5 && i == len(levels)-1:
			levels[i] = "#"
		default:
			levels[i] = RandLevel(r)
		}
	}
	if f := strings.Join(levels, "/"); f != "" {
		return f
	}
	return "#"
}

// Instantiate returns a topic that filter matches, chosen at random, and
// false when the draw happened to break the '$' rule, which match (the
// matcher under test's reference, topics.Match) decides.
func Instantiate(r *rand.Rand, filter string, match func(filter, topic string) bool) (string, bool) {
	var levels []string
	for _, l := range strings.Split(filter, "/") {
		switch l {
		case "+":
			levels = append(levels, RandLevel(r))
		case "#":
			for n := r.IntN(3); n > 0; n-- {
				levels = append(levels, RandLevel(r))
			}
		default:
			levels = append(levels, l)
		}
	}
	t := strings.Join(levels, "/")
	return t, t != "" && match(filter, t)
}

// MatchCases is the catalogue of filter/topic pairs every matcher in the
// package (Match, Trie, Retained, RedisSubscription) is checked against.
var MatchCases = []struct {
	Name, Filter, Topic string
	Want                bool
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
