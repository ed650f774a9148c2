package broker

import (
	"context"
	"fmt"

	"github.com/bridgemq/server/topics"
)

// RetainedChanged implements Receiver.
func (b *Broker) RetainedChanged(topic string, present bool) {
	if present {
		b.retained.Load().Set(topic, struct{}{})
	} else {
		b.retained.Load().Delete(topic)
	}
}

// ReplaceRetained implements Receiver: the mirror becomes names, built
// aside and swapped in whole, so that RetainedTopics never sees it half
// loaded.
func (b *Broker) ReplaceRetained(names []string) {
	fresh := topics.NewRetained[struct{}]()
	for _, n := range names {
		fresh.Set(n, struct{}{})
	}
	b.retained.Store(fresh)
}

// RetainedTopics returns the names of the topics whose retained messages
// filter matches, from the core's mirror, in O(matches). A new
// subscription to a wide filter then holds only the matching names at
// once, and reads the messages page by page as its client takes them
// [MQTT-3.3.1-6]. A filter that is not valid is refused [MQTT-4.7.1].
func (b *Broker) RetainedTopics(_ context.Context, filter string) ([]string, error) {
	if err := topics.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("retained %q: %w", filter, err)
	}
	var out []string
	b.retained.Load().Match(filter, func(topic string, _ struct{}) {
		out = append(out, topic)
	})
	b.local.Match(filter, func(topic string, _ *Message) {
		out = append(out, topic)
	})
	return out, nil
}

// RetainedMessages returns the retained messages of a prefix of topics as
// they are now, in the order of topics, leaving out the topics that no
// longer have one, and the length of that prefix. The prefix stops before
// the topic whose payload would take the page's payloads past maxBytes,
// but always holds the first topic, so a page of large messages is
// bounded by bytes, not by its count of topics; maxBytes ≤ 0 reads every
// topic.
func (b *Broker) RetainedMessages(ctx context.Context, topics []string, maxBytes int) ([]*Message, int, error) {
	if len(topics) == 0 {
		return nil, 0, nil
	}
	if b.local.Len() > 0 {
		return b.retainedMixed(ctx, topics, maxBytes)
	}
	n := len(topics)
	if maxBytes > 0 && n > 1 {
		sizes, err := b.store.RetainedSizes(ctx, topics)
		if err != nil {
			return nil, 0, fmt.Errorf("retained messages: %w", err)
		}
		n = pagePrefix(sizes, maxBytes)
	}
	msgs, err := b.store.RetainedRead(ctx, topics[:n])
	if err != nil {
		return nil, 0, fmt.Errorf("retained messages: %w", err)
	}
	return msgs, n, nil
}

// retainedMixed is RetainedMessages while this node holds retained
// messages of its own (PublishLocal): those come from memory, the others
// from the Store, in the order of topics.
func (b *Broker) retainedMixed(ctx context.Context, topics []string, maxBytes int) ([]*Message, int, error) {
	local := make([]*Message, len(topics))
	var stored []string
	for i, t := range topics {
		if m, ok := b.local.Get(t); ok {
			local[i] = m
		} else {
			stored = append(stored, t)
		}
	}
	n := len(topics)
	if maxBytes > 0 && n > 1 {
		sizes := make([]int, len(topics))
		var storedSizes []int
		if len(stored) > 0 {
			var err error
			if storedSizes, err = b.store.RetainedSizes(ctx, stored); err != nil {
				return nil, 0, fmt.Errorf("retained messages: %w", err)
			}
		}
		j := 0
		for i := range topics {
			if local[i] != nil {
				sizes[i] = local[i].Size()
			} else {
				sizes[i] = storedSizes[j]
				j++
			}
		}
		n = pagePrefix(sizes, maxBytes)
	}
	stored = stored[:0]
	for i := range n {
		if local[i] == nil {
			stored = append(stored, topics[i])
		}
	}
	var read []*Message
	if len(stored) > 0 {
		var err error
		if read, err = b.store.RetainedRead(ctx, stored); err != nil {
			return nil, 0, fmt.Errorf("retained messages: %w", err)
		}
	}
	out := make([]*Message, 0, n)
	j := 0
	for i := range n {
		switch {
		case local[i] != nil:
			out = append(out, local[i])
		case j < len(read) && read[j].Topic == topics[i]:
			out = append(out, read[j])
			j++
		}
	}
	return out, n, nil
}

// pagePrefix returns how many of sizes, in order, add up to at most
// maxBytes, and at least one; a negative size (no message) counts zero.
func pagePrefix(sizes []int, maxBytes int) int {
	total := 0
	for i, s := range sizes {
		if total += max(s, 0); total > maxBytes && i > 0 {
			return i
		}
	}
	return len(sizes)
}

// Retained returns the retained messages whose topics match filter, all
// at once.
func (b *Broker) Retained(ctx context.Context, filter string) ([]*Message, error) {
	names, err := b.RetainedTopics(ctx, filter)
	if err != nil {
		return nil, err
	}
	msgs, _, err := b.RetainedMessages(ctx, names, 0)
	return msgs, err
}
