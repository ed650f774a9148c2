package topics

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/bridgemq/server/internal/topicgen"
)

func TestRetained_SetGetDelete(t *testing.T) {
	r := NewRetained[string]()
	r.Set("a/b", "1")
	r.Set("a/b", "2") // [MQTT-3.3.1-5] replaces
	r.Set("a", "p")
	r.Set("/x", "e")
	if v, ok := r.Get("a/b"); !ok || v != "2" {
		t.Fatalf("Get(a/b) = %q, %v", v, ok)
	}
	if _, ok := r.Get("a/b/c"); ok {
		t.Fatal("Get(a/b/c) found a value")
	}
	if r.Len() != 3 {
		t.Fatalf("Len = %d, want 3", r.Len())
	}
	if r.Delete("a/c") || r.Delete("a/b/c") {
		t.Fatal("Delete of an absent topic reported true")
	}
	if !r.Delete("a/b") || r.Delete("a/b") {
		t.Fatal("Delete(a/b) twice: want true then false [MQTT-3.3.1-10]")
	}
	if _, ok := r.Get("a"); !ok || r.Len() != 2 {
		t.Fatalf("parent lost or Len = %d after deleting a child", r.Len())
	}
	r.Delete("a")
	r.Delete("/x")
	if r.Len() != 0 || r.root.children != nil {
		t.Fatalf("store not pruned: Len = %d, children = %v", r.Len(), r.root.children)
	}
}

func TestRetained_MatchCatalogue(t *testing.T) {
	for _, tt := range topicgen.MatchCases {
		t.Run(tt.Name, func(t *testing.T) {
			r := NewRetained[int]()
			r.Set(tt.Topic, 1)
			got := false
			r.Match(tt.Filter, func(topic string, _ int) { got = topic == tt.Topic })
			if got != tt.Want {
				t.Fatalf("retained %q matched by %q: %v, want %v", tt.Topic, tt.Filter, got, tt.Want)
			}
		})
	}
}

func TestRetained_MatchesLikeMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := NewRetained[string]()
	var topics []string
	for range 500 {
		tp := topicgen.RandTopic(rng)
		r.Set(tp, tp)
		topics = append(topics, tp)
	}
	for range 2000 {
		f := topicgen.RandFilter(rng)
		want := map[string]string{}
		for _, tp := range topics {
			if Match(f, tp) {
				want[tp] = tp
			}
		}
		got := map[string]string{}
		r.Match(f, func(tp, v string) {
			if _, dup := got[tp]; dup {
				t.Fatalf("filter %q: %q visited twice", f, tp)
			}
			got[tp] = v
		})
		if !maps.Equal(got, want) {
			t.Fatalf("filter %q: Retained.Match %v, Match %v", f, got, want)
		}
	}
}

// TestRetained_WildcardLookupVisitsOnlyMatches proves a wildcard lookup
// costs O(matches), not O(store): over 100k topics, the nodes visited stay
// proportional to the few that match.
func TestRetained_WildcardLookupVisitsOnlyMatches(t *testing.T) {
	r := NewRetained[int]()
	for i := range 100_000 {
		r.Set(fmt.Sprintf("site/%d/sensor/%d/temp", i%1000, i), i)
	}
	r.Set("$SYS/uptime", 0)
	tests := []struct {
		filter     string
		matches    int
		maxVisited int
	}{
		{"site/7/sensor/+/temp", 100, 3 + 2*100},
		{"site/7/#", 100, 2 + 3*100},
		{"site/+/sensor/4242/temp", 1, 1 + 2*1000 + 2},
		{"site/7/sensor/7/temp", 1, 5},
		{"nothing/#", 0, 0},
	}
	for _, tt := range tests {
		n := 0
		visited := r.match(tt.filter, func(string, int) { n++ })
		if n != tt.matches || visited > tt.maxVisited {
			t.Errorf("%q: %d matches (want %d), %d nodes visited (want ≤ %d)", tt.filter, n, tt.matches, visited, tt.maxVisited)
		}
	}
}

func TestRetained_Concurrent(t *testing.T) {
	r := NewRetained[int]()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				tp := fmt.Sprintf("w/%d/%d", w, i%20)
				r.Set(tp, i)
				r.Match("w/+/#", func(string, int) {})
				r.Get(tp)
				r.Delete(tp)
			}
		})
	}
	wg.Wait()
	if r.Len() != 0 {
		t.Fatalf("Len = %d after balanced churn", r.Len())
	}
}
