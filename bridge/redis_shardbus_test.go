package bridge

import (
	"strconv"
	"testing"
)

// The hash slots of Redis Cluster's specification (cluster-spec, "Hash
// tags") and of CLUSTER KEYSLOT on Redis 7.
func TestKeySlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"123456789", 12739}, // the CRC16 check value, 0x31C3
		{"", 0},
		{"foo", 12182},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"user1000", 3443},
		{"foo{}{bar}", 8363},    // an empty tag: the whole key is hashed
		{"foo{{bar}}zap", 4015}, // the tag is "{bar"
		{"{bar", 4015},
		{"foo{bar}{zap}", 5061}, // the first tag only
		{"bar", 5061},
	} {
		if got := keySlot(tc.key); got != tc.slot {
			t.Errorf("keySlot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
}

// Each shard's tag hashes to the centre of its sixteenth of the slot space,
// so that masters given equal slot ranges own equal numbers of shards.
func TestShardTags_SpreadOverTheSlotSpace(t *testing.T) {
	tags := shardTags()
	seen := map[string]bool{}
	for s, tag := range tags {
		if _, err := strconv.Atoi(tag); err != nil || seen[tag] {
			t.Fatalf("shard %d: tag %q is not a fresh decimal number", s, tag)
		}
		seen[tag] = true
		want := s*clusterSlots/streamShards + clusterSlots/streamShards/2
		if got := keySlot("mqtt:stream:{" + tag + "}"); got != want {
			t.Errorf("shard %d: stream key slot %d, want %d", s, got, want)
		}
		if keySlot("mqtt:bus:{"+tag+"}") != keySlot("mqtt:stream:{"+tag+"}") {
			t.Errorf("shard %d: channel and stream in different slots", s)
		}
	}
	// Three masters with redis-cli's ranges own 5, 6 and 5 shards.
	owned := [3]int{}
	for _, tag := range tags {
		switch slot := keySlot(tag); {
		case slot <= 5460:
			owned[0]++
		case slot <= 10922:
			owned[1]++
		default:
			owned[2]++
		}
	}
	if owned != [3]int{5, 6, 5} {
		t.Errorf("shards per master %v, want [5 6 5]", owned)
	}
}

func TestFilterShard(t *testing.T) {
	for _, tc := range []struct {
		filter string
		shard  int
		one    bool
	}{
		{"a/b/c", shardOf("a"), true},
		{"a", shardOf("a"), true},
		{"a/#", shardOf("a"), true},
		{"a/+/c", shardOf("a"), true},
		{"/a", shardOf(""), true},
		{"$SYS/#", shardOf("$SYS"), true},
		{"#", 0, false},
		{"+", 0, false},
		{"+/a", 0, false},
	} {
		s, one := filterShard(tc.filter)
		if one != tc.one || one && s != tc.shard {
			t.Errorf("filterShard(%q) = %d, %v; want %d, %v", tc.filter, s, one, tc.shard, tc.one)
		}
		if one && s != shardOf(tc.filter) && tc.filter[0] != '$' {
			// Every topic the filter matches has the filter's first level.
			t.Errorf("filterShard(%q) = %d, but shardOf its literal topic = %d", tc.filter, s, shardOf(tc.filter))
		}
	}
}

// One Redis or Sentinel keeps one publisher for every topic, with no
// reordering of answers; Redis Cluster has one publisher per stream shard,
// so that a stalled master holds back only its own shards' messages.
func TestPublishers_OnePerShardInClusterModeOnly(t *testing.T) {
	single := &Redis{}
	single.newPublishers()
	if single.pub == nil || single.pub.shard != -1 || single.ackOrder != nil || single.epochReads != nil {
		t.Fatalf("one Redis: publisher %+v, ack order %v, epoch watcher %v; want one publisher of every shard and nothing else",
			single.pub, single.ackOrder != nil, single.epochReads != nil)
	}
	for s := range single.shardPubs {
		if single.shardPubs[s] != nil {
			t.Fatalf("one Redis: shard %d has a publisher of its own", s)
		}
	}
	cluster := &Redis{bus: &shardBus{}}
	cluster.newPublishers()
	if cluster.pub != nil || cluster.ackOrder == nil || cluster.epochReads == nil {
		t.Fatal("Redis Cluster: want shard publishers, an ack order and an epoch watcher, and no single publisher")
	}
	for i := range 1000 {
		topic := "t" + strconv.Itoa(i) + "/x"
		if single.publisherOf(topic) != single.pub {
			t.Fatalf("one Redis: %q not on the one publisher", topic)
		}
		if p := cluster.publisherOf(topic); p.shard != shardOf(topic) || p != cluster.shardPubs[shardOf(topic)] {
			t.Fatalf("Redis Cluster: %q (shard %d) on the publisher of shard %d", topic, shardOf(topic), p.shard)
		}
	}
}
