package topics

import (
	"math/rand/v2"
	"strings"
)

// genLevels are the topic levels random tests draw from: empty levels,
// '$' levels, Redis glob metacharacters and levels that share prefixes.
var genLevels = []string{"", "a", "b", "ab", "$", "$a", "*", "?", "[", "]", `\`, "a*", "[^$]", "é"}

func randLevel(r *rand.Rand) string { return genLevels[r.IntN(len(genLevels))] }

// randTopic returns a valid topic name of 1 to 4 levels.
func randTopic(r *rand.Rand) string {
	for {
		levels := make([]string, 1+r.IntN(4))
		for i := range levels {
			levels[i] = randLevel(r)
		}
		if t := strings.Join(levels, "/"); t != "" {
			return t
		}
	}
}

// randFilter returns a valid filter of 1 to 4 levels with wildcards.
func randFilter(r *rand.Rand) string {
	levels := make([]string, 1+r.IntN(4))
	for i := range levels {
		switch x := r.IntN(10); {
		case x < 3:
			levels[i] = "+"
		case x < 5 && i == len(levels)-1:
			levels[i] = "#"
		default:
			levels[i] = randLevel(r)
		}
	}
	if f := strings.Join(levels, "/"); f != "" {
		return f
	}
	return "#"
}

// instantiate returns a topic that filter matches, chosen at random, and
// false when the draw happened to break the '$' rule.
func instantiate(r *rand.Rand, filter string) (string, bool) {
	var levels []string
	for _, l := range strings.Split(filter, "/") {
		switch l {
		case "+":
			levels = append(levels, randLevel(r))
		case "#":
			for n := r.IntN(3); n > 0; n-- {
				levels = append(levels, randLevel(r))
			}
		default:
			levels = append(levels, l)
		}
	}
	t := strings.Join(levels, "/")
	return t, t != "" && Match(filter, t)
}
