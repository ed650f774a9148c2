package bridge

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/topics"
)

// loadRetainedIndex reads the set of retained topic names with SSCAN (the
// index, not a keyspace SCAN) into a fresh local mirror and swaps it in. It
// runs before the reader starts and then only on the reader goroutine, so
// no announcement is applied to a mirror about to be replaced.
func (r *Redis) loadRetainedIndex(ctx context.Context) error {
	fresh := topics.NewRetained[struct{}]()
	var cursor uint64
	for {
		names, next, err := r.rdb.SScan(ctx, r.retainIndexKey(), cursor, "", 1000).Result()
		if err != nil {
			return unavailable("load retained index", err)
		}
		for _, n := range names {
			fresh.Set(n, struct{}{})
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	r.retained.Store(fresh)
	return nil
}

// applyRetainAnnouncement keeps the local index current: "+topic" or
// "-topic".
func (r *Redis) applyRetainAnnouncement(a string) {
	if len(a) < 2 {
		return
	}
	switch a[0] {
	case '+':
		r.retained.Load().Set(a[1:], struct{}{})
	case '-':
		r.retained.Load().Delete(a[1:])
	}
}

// Retained returns the retained messages whose topics match filter, all at
// once: the local index finds the matching topics in
// O(matches), then one pipelined HGETALL per topic reads them.
func (r *Redis) Retained(ctx context.Context, filter string) ([]*Message, error) {
	names, err := r.RetainedTopics(ctx, filter)
	if err != nil {
		return nil, err
	}
	out, _, err := r.RetainedMessages(ctx, names, 0)
	if err != nil {
		return nil, fmt.Errorf("retained %q: %w", filter, err)
	}
	return out, nil
}

// RetainedTopics implements Bridge from the local mirror of the
// retained index, in O(matches) and without a round trip.
func (r *Redis) RetainedTopics(_ context.Context, filter string) ([]string, error) {
	if err := topics.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("retained %q: %w", filter, err)
	}
	var names []string
	r.retained.Load().Match(filter, func(topic string, _ struct{}) { names = append(names, topic) })
	return names, nil
}

// RetainedMessages implements Bridge: with maxBytes, one pipelined
// HSTRLEN per topic measures the payloads first, so that no more than a
// page's bytes (and at most one message beyond, when the first alone is
// larger) is ever read into memory; then one pipelined HGETALL per topic
// of the page. A payload replaced by a larger one between the two round
// trips can take the page past maxBytes by that difference, at most one
// -max-packet-size per message.
func (r *Redis) RetainedMessages(ctx context.Context, names []string, maxBytes int) ([]*Message, int, error) {
	if len(names) == 0 {
		return nil, 0, nil
	}
	if maxBytes > 0 && len(names) > 1 {
		n, err := r.retainedPrefix(ctx, names, maxBytes)
		if err != nil {
			return nil, 0, err
		}
		names = names[:n]
	}
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range names {
			p.HGetAll(ctx, r.retainKey(n))
		}
		return nil
	})
	if err != nil {
		return nil, 0, unavailable("read retained messages", err)
	}
	out := make([]*Message, 0, len(names))
	for i, c := range cmds {
		h := c.(*redis.MapStringStringCmd).Val()
		if len(h) == 0 {
			continue // cleared since the index said otherwise
		}
		m, err := retainedMessage(h)
		if err != nil {
			r.log.Error("skipping retained message that does not parse", "topic", names[i], "err", err)
			continue
		}
		out = append(out, m)
	}
	return out, len(names), nil
}

// retainedPrefix returns how many of names, in order, have payloads that
// add up to at most maxBytes (at least one).
func (r *Redis) retainedPrefix(ctx context.Context, names []string, maxBytes int) (int, error) {
	cmds, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range names {
			p.HStrLen(ctx, r.retainKey(n), "payload")
		}
		return nil
	})
	if err != nil {
		return 0, unavailable("measure retained messages", err)
	}
	size := 0
	for i, c := range cmds {
		if size += int(c.(*redis.IntCmd).Val()); size > maxBytes && i > 0 {
			return i, nil
		}
	}
	return len(names), nil
}

// retainedMessage reads an EMQX-layout retained hash.
func retainedMessage(h map[string]string) (*Message, error) {
	m := &Message{Topic: h["topic"], ClientID: h["from"], Payload: []byte(h["payload"]), Retain: true}
	if id, err := hex.DecodeString(h["id"]); err == nil && len(id) == len(m.ID) {
		copy(m.ID[:], id)
	}
	qos, err := strconv.Atoi(h["qos"])
	if err != nil || qos < 0 || qos > 2 {
		return nil, fmt.Errorf("retained %q: bad qos %q", m.Topic, h["qos"])
	}
	m.QoS = byte(qos)
	if ms, err := strconv.ParseInt(h["ts"], 10, 64); err == nil {
		m.Time = time.UnixMilli(ms)
	}
	if props := h["props"]; props != "" {
		if m.Properties, err = decodeProperties(props); err != nil {
			return nil, fmt.Errorf("retained %q: %w", m.Topic, err)
		}
	}
	return m, nil
}

var _ Bridge = (*Redis)(nil)
