package pattern

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/topicgen"
)

// coversDP is the quadratic dynamic programme covers replaced, kept as the
// reference the greedy version is checked against.
func coversDP(p, q glob) bool {
	w := len(q) + 1
	ok := make([]bool, (len(p)+1)*w)
	ok[len(p)*w+len(q)] = true
	for i := len(p) - 1; i >= 0; i-- {
		for j := len(q); j >= 0; j-- {
			var v bool
			switch p[i].kind {
			case tokStar:
				v = ok[(i+1)*w+j] || j < len(q) && ok[i*w+j+1]
			case tokNotDollar:
				v = j < len(q) && (q[j].kind == tokNotDollar || q[j].kind == tokLit && q[j].c != '$') && ok[(i+1)*w+j+1]
			default:
				v = j < len(q) && q[j] == p[i] && ok[(i+1)*w+j+1]
			}
			ok[i*w+j] = v
		}
	}
	return ok[0]
}

// TestCovers_AgreesWithDP checks the linear covers against the dynamic
// programme on random filter pairs and coarsenings.
func TestCovers_AgreesWithDP(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	s := NewPatternSet("x:", 0)
	agree := 0
	for range 30000 {
		p, q := filterGlob("x:", topicgen.RandFilter(r)), filterGlob("x:", topicgen.RandFilter(r))
		if r.IntN(3) == 0 {
			// a coarsening of q, as generalise makes
			if chain := s.coarsenings(newGlobPattern(q)); len(chain) > 0 {
				p = chain[r.IntN(len(chain))].g
			}
		}
		if got, want := covers(p, q), coversDP(p, q); got != want {
			t.Fatalf("covers(%s, %s) = %v, dynamic programme says %v", p, q, got, want)
		}
		if covers(p, q) {
			agree++
		}
	}
	if agree < 500 {
		t.Fatalf("only %d covering pairs drawn", agree)
	}
}

// TestCovers_LongFiltersLinear: two 30,000-byte filters are compared in
// linear time and memory; the dynamic programme needed 900 MB and seconds
// for them ("Bounded under abuse" item 2).
func TestCovers_LongFiltersLinear(t *testing.T) {
	a := filterGlob("mqtt:msg:", "L/+/"+strings.Repeat("a", 30000))
	b := filterGlob("mqtt:msg:", "L/+/"+strings.Repeat("b", 30000))
	c := filterGlob("mqtt:msg:", "L/+/"+strings.Repeat("a", 29999)+"/+/"+strings.Repeat("a", 30000))
	start := time.Now()
	for range 100 {
		if covers(a, b) || covers(b, a) || !covers(a, a) || covers(c, a) {
			t.Fatal("wrong answer")
		}
		if !covers(filterGlob("mqtt:msg:", "L/+/+/#"), c) {
			t.Fatal("L/+/+/# must cover the three-wildcard filter")
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("400 comparisons of 30,000-byte filters took %v", d)
	}
	allocs := testing.AllocsPerRun(10, func() { covers(a, b) })
	if allocs > 4 {
		t.Fatalf("covers allocates %v times", allocs)
	}
}
