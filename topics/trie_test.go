package topics

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/bridgemq/server/internal/topicgen"
)

func TestTrie_MatchCatalogue(t *testing.T) {
	for _, tt := range topicgen.MatchCases {
		t.Run(tt.Name, func(t *testing.T) {
			tr := NewTrie[string]()
			tr.Subscribe(tt.Filter, "c", 1)
			got := false
			tr.Match(tt.Topic, func(string, byte) { got = true })
			if got != tt.Want {
				t.Fatalf("trie with %q matched %q: %v, want %v", tt.Filter, tt.Topic, got, tt.Want)
			}
		})
	}
}

func TestTrie_SubscribeReplaces_MQTT_3_8_4_3(t *testing.T) {
	tr := NewTrie[string]()
	if !tr.Subscribe("a/+", "c1", 0) {
		t.Fatal("first subscriber: newFilter = false")
	}
	if tr.Subscribe("a/+", "c1", 2) {
		t.Fatal("same key again: newFilter = true")
	}
	if tr.Subscribe("a/+", "c2", 1) {
		t.Fatal("second key: newFilter = true")
	}
	got := map[string]byte{}
	n := 0
	tr.Match("a/x", func(k string, q byte) { got[k] = q; n++ })
	if want := map[string]byte{"c1": 2, "c2": 1}; n != 2 || !maps.Equal(got, want) {
		t.Fatalf("Match = %v in %d calls, want %v in 2", got, n, want)
	}
	if tr.Filters() != 1 || tr.Subscriptions() != 2 {
		t.Fatalf("Filters = %d, Subscriptions = %d, want 1 and 2 (a replaced subscription counts once)", tr.Filters(), tr.Subscriptions())
	}
	tr.Unsubscribe("a/+", "c1")
	tr.Unsubscribe("a/+", "c1") // not subscribed any more: no change
	if tr.Subscriptions() != 1 {
		t.Fatalf("Subscriptions after one unsubscribe = %d, want 1", tr.Subscriptions())
	}
}

func TestTrie_Unsubscribe(t *testing.T) {
	tr := NewTrie[int]()
	tr.Subscribe("a/#", 1, 1)
	tr.Subscribe("a/#", 2, 1)
	tests := []struct {
		filter            string
		key               int
		removed, lastOfIt bool
	}{
		{"a/#", 3, false, false},
		{"a/b", 1, false, false},
		{"a/#", 1, true, false},
		{"a/#", 1, false, false},
		{"a/#", 2, true, true},
		{"a/#", 2, false, false},
	}
	for i, tt := range tests {
		removed, empty := tr.Unsubscribe(tt.filter, tt.key)
		if removed != tt.removed || empty != tt.lastOfIt {
			t.Fatalf("step %d: Unsubscribe(%q, %d) = %v, %v; want %v, %v", i, tt.filter, tt.key, removed, empty, tt.removed, tt.lastOfIt)
		}
	}
	if tr.Filters() != 0 || !tr.root.empty() {
		t.Fatalf("after removing everything: Filters = %d, root empty = %v", tr.Filters(), tr.root.empty())
	}
}

// countNodes returns the number of nodes below n.
func countNodes[K comparable](n *trieNode[K]) int {
	c := 0
	for _, ch := range n.children {
		c += 1 + countNodes(ch)
	}
	for _, ch := range []*trieNode[K]{n.plus, n.hash} {
		if ch != nil {
			c += 1 + countNodes(ch)
		}
	}
	return c
}

func TestTrie_UnsubscribePrunes(t *testing.T) {
	tr := NewTrie[int]()
	tr.Subscribe("keep/x", 0, 0)
	base := countNodes(&tr.root)
	for i := range 1000 {
		f := fmt.Sprintf("churn/%d/+/x/#", i)
		tr.Subscribe(f, i, 1)
		tr.Subscribe("keep/x/"+f, i, 1)
		tr.Unsubscribe(f, i)
		tr.Unsubscribe("keep/x/"+f, i)
	}
	if got := countNodes(&tr.root); got != base {
		t.Fatalf("%d nodes after churn, want %d", got, base)
	}
}

// TestTrie_MatchesLikeMatch checks the trie against Match on random
// filters and topics: each matching (filter, key) is reported exactly once.
func TestTrie_MatchesLikeMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tr := NewTrie[int]()
	var filters []string
	for i := range 300 {
		f := topicgen.RandFilter(r)
		if i%3 == 0 {
			f = topicgen.RandTopic(r)
		}
		filters = append(filters, f)
		tr.Subscribe(f, i, byte(i%3))
	}
	for range 3000 {
		topic := topicgen.RandTopic(r)
		want := map[int]byte{}
		for i, f := range filters {
			if Match(f, topic) {
				want[i] = byte(i % 3)
			}
		}
		got := map[int]byte{}
		tr.Match(topic, func(k int, q byte) {
			if _, dup := got[k]; dup {
				t.Fatalf("topic %q: key %d reported twice", topic, k)
			}
			got[k] = q
		})
		if !maps.Equal(got, want) {
			t.Fatalf("topic %q: trie %v, Match %v", topic, got, want)
		}
	}
}

func TestTrie_SubscribersHighestQoS(t *testing.T) {
	tr := NewTrie[string]()
	tr.Subscribe("a/b", "c1", 0)
	tr.Subscribe("a/+", "c1", 2)
	tr.Subscribe("a/#", "c1", 1)
	tr.Subscribe("#", "c2", 1)
	tr.Subscribe("+/b", "c3", 0)
	tr.Subscribe("$SYS/#", "c4", 2)
	var dst Matches[string]
	tr.Subscribers("a/b", &dst)
	if got, want := matchMap(&dst), map[string]byte{"c1": 2, "c2": 1, "c3": 0}; !maps.Equal(got, want) || len(dst.List()) != len(want) {
		t.Fatalf("Subscribers(a/b) = %v, want %v, each once", dst.List(), want)
	}
	dst.Reset()
	tr.Subscribers("$SYS/load", &dst)
	if got, want := matchMap(&dst), map[string]byte{"c4": 2}; !maps.Equal(got, want) || len(dst.List()) != len(want) {
		t.Fatalf("Subscribers($SYS/load) = %v, want %v [MQTT-4.7.2-1]", dst.List(), want)
	}
}

func TestTrie_MatchDoesNotAllocate(t *testing.T) {
	tr := NewTrie[int]()
	for i := range 100 {
		tr.Subscribe(fmt.Sprintf("s/%d/+/t", i), i, 1)
		tr.Subscribe(fmt.Sprintf("s/%d/#", i), i, 1)
	}
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		tr.Match("s/42/x/t", func(int, byte) { n++ })
	})
	if allocs != 0 {
		t.Fatalf("Trie.Match allocates %v times", allocs)
	}
	if n == 0 {
		t.Fatal("no match reported")
	}
}

func TestTrie_Concurrent(t *testing.T) {
	tr := NewTrie[int]()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				f := fmt.Sprintf("a/%d/+", i%50)
				tr.Subscribe(f, w, 1)
				tr.Match("a/7/x", func(int, byte) {})
				var dst Matches[int]
				tr.Subscribers("a/3/y", &dst)
				tr.Unsubscribe(f, w)
			}
		})
	}
	wg.Wait()
	if tr.Filters() != 0 {
		t.Fatalf("Filters = %d after balanced churn", tr.Filters())
	}
}
