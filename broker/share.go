package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/bridgemq/server/topics"
)

// Shared Subscriptions (MQTT 5.0 section 4.8.2, accepted from 3.1.1
// clients too). A subscription to "$share/{ShareName}/{filter}" makes its
// client a member of the group named by the whole filter string: each
// message matching filter goes to one member of the group, cluster-wide.
// The core keeps the groups apart from the trie (shareTrie, by filter), so
// the one copy per client of the non-shared fan-out [MQTT-3.3.5-1] is
// unchanged, and a client holding both kinds gets a message through each.
// On a match the core asks its Cluster whether this node takes the
// message for the group (ClaimShared); if so, it hands it to the next live
// member in turn (round robin). A group's filter is routed through the
// Cluster like any other, once per group.

// shareGroup is one shared subscription group on this node. Its members
// are guarded by mu, a leaf lock: the fan-out never holds it while it takes
// a client's delivery lock.
type shareGroup struct {
	key    string // "$share/{ShareName}/{filter}", the group cluster-wide
	filter string // the filter messages are matched with

	mu      sync.Mutex
	members []shareMember
	next    int // round robin: the member the next message tries first
}

// shareMember is one client of a group, at the QoS it was granted.
type shareMember struct {
	c   *client
	qos byte
}

// subscribeLocked records c's subscription to filter at qos, in the trie
// or, for a Shared Subscription, in its group. It returns the filter the
// cluster must route now ("" for none): a filter new to the trie, or the
// filter of a new group. routeMu and c.mu are held; filter is valid.
func (b *Broker) subscribeLocked(c *client, filter string, qos byte) string {
	_, plain, shared, _ := topics.ParseShared(filter)
	if !shared {
		if b.subs.Subscribe(filter, c, qos) {
			return filter
		}
		return ""
	}
	g := b.shareGroups[filter]
	route := ""
	if g == nil {
		g = &shareGroup{key: filter, filter: plain}
		b.shareGroups[filter] = g
		b.shareTrie.Subscribe(plain, g, 0)
		b.shareCount.Add(1)
		route = plain
	}
	g.mu.Lock()
	found := false
	for i := range g.members {
		if g.members[i].c == c {
			g.members[i].qos, found = qos, true // [MQTT-3.8.4-3] replaces
		}
	}
	if !found {
		g.members = append(g.members, shareMember{c, qos})
	}
	n := len(g.members)
	g.mu.Unlock()
	if !found {
		b.shareSubs.Add(1)
		b.cluster.ShareMembers(filter, n)
	}
	return route
}

// unsubscribeLocked removes c's subscription to filter, if any, from the
// trie or its group. It returns the filter the cluster must unroute now
// ("" for none): a filter that lost its last subscriber in the trie, or
// the filter of a group that lost its last member. routeMu is held.
func (b *Broker) unsubscribeLocked(c *client, filter string) string {
	_, plain, shared, err := topics.ParseShared(filter)
	if !shared {
		if _, last := b.subs.Unsubscribe(filter, c); last {
			return filter
		}
		return ""
	}
	g := b.shareGroups[filter]
	if err != nil || g == nil {
		return ""
	}
	g.mu.Lock()
	removed := false
	for i := range g.members {
		if g.members[i].c == c {
			g.members = append(g.members[:i], g.members[i+1:]...)
			removed = true
			break
		}
	}
	n := len(g.members)
	g.mu.Unlock()
	if !removed {
		return ""
	}
	b.shareSubs.Add(-1)
	b.cluster.ShareMembers(filter, n)
	if n > 0 {
		return ""
	}
	delete(b.shareGroups, filter)
	b.shareTrie.Unsubscribe(plain, g)
	b.shareCount.Add(-1)
	return plain
}

// receiveShared offers msg to every group on this node whose filter it
// matches: the cluster decides whether this node takes it for the group
// (Cluster.ClaimShared), and if so the next live member gets it. A local
// message (PublishLocal: this node's $SYS figures) reaches no other node,
// so its groups take it without asking.
func (b *Broker) receiveShared(msg *Message, local bool) {
	var groups []*shareGroup
	b.shareTrie.Match(msg.Topic, func(g *shareGroup, _ byte) { groups = append(groups, g) })
	for _, g := range groups {
		if local {
			b.deliverShared(g, msg, false)
			continue
		}
		b.cluster.ClaimShared(g.key, msg, func() bool { return b.deliverShared(g, msg, false) })
	}
}

// deliverShared hands msg to one live member of g, starting with the next
// in turn; it reports false when none took it (none is connected, or each
// connection is closing), for the cluster to offer it to another node. A
// member takes it at the lower of its grant and msg.QoS. The cluster's
// Gate applies without a stream position: shared subscriptions are never
// replayed from a session's cursor. When the Gate holds it back from every
// member (a message replayed or delayed past a second, older than each
// member's subscription), it is owed to none, here or elsewhere: that
// counts as done. A message handed off (another member went away without
// completing it) skips the Gate: it went through the group's subscription
// when it was published, however old it is now, and is not the new
// member's replay.
func (b *Broker) deliverShared(g *shareGroup, msg *Message, handoff bool) bool {
	g.mu.Lock()
	tries := len(g.members)
	g.mu.Unlock()
	gated := 0
	for range tries {
		g.mu.Lock()
		if len(g.members) == 0 {
			g.mu.Unlock()
			return false
		}
		m := g.members[g.next%len(g.members)]
		g.next = (g.next + 1) % len(g.members)
		g.mu.Unlock()
		switch b.deliverMember(g, m.c, msg, m.qos, handoff) {
		case memberTook:
			return true
		case memberGated:
			gated++
		}
	}
	if tries > 0 && gated == tries {
		// Owed to none: the cluster forgets it was this node's.
		_ = b.cluster.SharedDone(context.Background(), []SharedDelivery{{Group: g.key, Delivery: Delivery{Message: msg}}}, false)
		return true
	}
	return false
}

// memberResult is what one member did with a shared message.
type memberResult uint8

const (
	memberTook    memberResult = iota
	memberGated                // the cluster's Gate held it back: older than the member's subscriptions
	memberRefused              // not connected, or its connection is closing
)

// deliverMember hands msg to c's live connection, under its delivery
// lock. A member that is not connected, or whose connection is closing,
// refuses it (the message then goes to another member, not to c's stored
// session). A connection that keeps each shared message's group
// (ShareSubscriber) is told g's.
func (b *Broker) deliverMember(g *shareGroup, c *client, msg *Message, granted byte, handoff bool) memberResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil {
		return memberRefused
	}
	if !handoff {
		var ok bool
		if granted, ok = c.gate.Gate(msg, NoPosition, granted); !ok {
			return memberGated // another member, subscribed before it, may take it
		}
	}
	qos := min(granted, msg.QoS)
	if !c.live.DeliverShared(msg, qos, g.key) {
		return memberRefused
	}
	return memberTook
}

// SharedDelivery is a message a shared subscription group handed one of
// its members, with the group: "$share/{ShareName}/{filter}".
type SharedDelivery struct {
	Group string
	Delivery
}

// HandBack gives each of ds, the messages shared subscription groups
// handed a member whose connection has ended and which that connection
// neither sent nor saw acknowledged, to another member of the same group
// (section 4.8.2): a live member on this node first (round robin; the
// ended connection refuses), then, through the cluster, a member on
// another node. With keep (a persistent session, which would get them
// back when it returns) a message goes to the cluster only when it knows
// of a member there, so that none waits in the cluster for a member that
// may never come while its session could have it; without keep (the
// session ends with its connection) the cluster takes all it can, and
// what nobody takes is lost with the session, counted. taken[i] reports
// whether ds[i] went to another member: the caller keeps the others, or
// loses them. It runs with no lock held, before the member's Detach.
func (b *Broker) HandBack(ctx context.Context, ds []SharedDelivery, keep bool) (taken []bool, err error) {
	taken = make([]bool, len(ds))
	rest := make(map[string][]int) // group → ds not taken on this node, in order
	var groups []string
	for i, d := range ds {
		if b.DeliverShared(d.Group, d.Message) {
			taken[i] = true
			continue
		}
		if rest[d.Group] == nil {
			groups = append(groups, d.Group)
		}
		rest[d.Group] = append(rest[d.Group], i)
	}
	var errs []error
	for _, group := range groups {
		idx := rest[group]
		if keep && !b.cluster.SharedElsewhere(group) {
			continue
		}
		msgs := make([]*Message, len(idx))
		for k, i := range idx {
			msgs[k] = ds[i].Message
		}
		ok, err := b.cluster.HandOffShared(ctx, group, msgs)
		if err != nil {
			errs = append(errs, fmt.Errorf("hand back %d messages of %s: %w", len(msgs), group, err))
		}
		if ok && err == nil {
			for _, i := range idx {
				taken[i] = true
			}
		}
	}
	n := 0
	for _, t := range taken {
		if t {
			n++
		}
	}
	b.shareHandedBack.Add(int64(n))
	if !keep {
		b.shareDropped.Add(int64(len(ds) - n))
	}
	return taken, errors.Join(errs...)
}

// SharedDone tells the cluster that the members that took ds from their
// groups are done with them (Cluster.SharedDone): a session calls it when
// a shared message is acknowledged (QoS 1), sent (QoS 0 and 2, with wait
// for QoS 2), dropped, or kept by its stored session.
func (b *Broker) SharedDone(ctx context.Context, ds []SharedDelivery, wait bool) error {
	if len(ds) == 0 {
		return nil
	}
	return b.cluster.SharedDone(ctx, ds, wait)
}

// DeliverShared implements Receiver: msg goes to the next live member of
// group on this node, as a handed-off message (no Gate). The group is
// found by matching msg's topic, which matches its filter.
func (b *Broker) DeliverShared(group string, msg *Message) bool {
	var g *shareGroup
	b.shareTrie.Match(msg.Topic, func(m *shareGroup, _ byte) {
		if m.key == group {
			g = m
		}
	})
	return g != nil && b.deliverShared(g, msg, true)
}
